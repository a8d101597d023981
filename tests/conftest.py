"""The test world and the real processes the tests run against.

Settings come from the environment as in production (`make test` sets DATABASE_URL and REDIS_URL to the
local PostgreSQL and Redis). pytest-django creates the test database; worker and web processes started
here are pointed at that same database, so tests that use them need committed data (transactional_db).

Test world: ``owner`` (uploads jobs), ``other`` (a second ordinary user), ``staff`` (sees everything).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from stages.synthetic import make_video  # noqa: F401 - re-exported for the tests

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
STREET = SHARED / "media" / "street.mp4"
MODEL = SHARED / "models" / "yolox_nano.onnx"
PASSWORD = "test-password-123"


def pytest_configure(config):
    if not os.environ.get("DATABASE_URL", "").startswith("postgres") or not os.environ.get("REDIS_URL"):
        raise pytest.UsageError("run the tests with `make test` (it sets DATABASE_URL and REDIS_URL)")
    missing = [str(path) for path in (MODEL, STREET) if not path.is_file()]
    if missing:  # without them, tests that load the model would wait for it until pytest-timeout stops them
        raise pytest.UsageError("the tests use the real model and video from the shared folder beside the "
                                f"project; not found: {', '.join(missing)}")


@pytest.fixture(autouse=True)
def media_root(tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MEDIA_ROOT.mkdir()
    return settings.MEDIA_ROOT


@pytest.fixture
def redis_clean():
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()


def _user(django_user_model, name, **extra):
    return django_user_model.objects.create_user(username=name, password=PASSWORD, **extra)


@pytest.fixture
def owner(django_user_model):
    return _user(django_user_model, "owner")


@pytest.fixture
def other(django_user_model):
    return _user(django_user_model, "other")


@pytest.fixture
def staff(django_user_model):
    """An operator: admin access and the permissions to see and change every job (not a superuser)."""
    from django.contrib.auth.models import Permission

    user = _user(django_user_model, "staff", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="jobs",
                                                         codename__in=["view_job", "change_job"]))
    return user


def token_for(user) -> str:
    from rest_framework.authtoken.models import Token

    return Token.objects.get_or_create(user=user)[0].key


@pytest.fixture
def api(owner):
    """A DRF client logged in as ``owner`` by token."""
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(owner)}")
    return client


def content_of(response) -> bytes:
    """A streamed response's body. Files are sent from asynchronous iterators (as Daphne needs them), which
    the synchronous test client hands back as they are."""
    from asgiref.sync import async_to_sync

    async def gather() -> bytes:
        return b"".join([part async for part in response])

    if not response.streaming:
        return response.content
    return async_to_sync(gather)() if response.is_async else b"".join(response.streaming_content)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def service_env(media_root: Path, **extra) -> dict[str, str]:
    """The environment of a web or worker process pointed at the test database."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    env = dict(os.environ)
    env.update(
        DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        GEDGE_MEDIA_ROOT=str(media_root),
        GEDGE_RETRY_BACKOFF_MS="200",
        DRAMATIQ_NPROCS="1",
        DRAMATIQ_NTHREADS="1",
        PYTHONUNBUFFERED="1",
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


class Processes:
    """Real OS processes (web, workers) started for a test and stopped after it."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "wb")
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def worker(self, queues: list[str], env: dict[str, str], name: str | None = None) -> subprocess.Popen:
        args = [sys.executable, "manage.py", "rundramatiq", "--queues", *queues]
        return self.start(name or "worker-" + "-".join(queues), args, env)

    def web(self, env: dict[str, str], port: int) -> subprocess.Popen:
        proc = self.start("web", [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                                  "gedge_site.asgi:application"], env)
        wait_for_port(port)
        return proc

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.read_text(errors='replace')[-4000:]}"
                         for p in sorted(self.log_dir.glob("*.log")))

    def stop(self) -> None:
        for _, proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for _, proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")


@pytest.fixture
def processes(tmp_path):
    procs = Processes(tmp_path)
    yield procs
    procs.stop()


@contextmanager
def worker_in_process(threads: int = 1):
    """A Dramatiq worker in this process on the configured (Redis) broker, for tests that patch stage code."""
    import dramatiq

    import jobs.actors  # noqa: F401

    worker = dramatiq.Worker(dramatiq.get_broker(), worker_threads=threads, worker_timeout=100)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


def wait_for_status(job_id: int, statuses, timeout: float = 120, logs=None):
    from jobs.models import Job

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = Job.objects.get(pk=job_id)
        if job.status in statuses:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} stuck in {job.status}" + (f"\n{logs()}" if logs else ""))
