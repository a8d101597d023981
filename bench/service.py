"""The full service as a user deploys it: Daphne + one Dramatiq worker process per queue, on PostgreSQL and
Redis, driven only through HTTP and the WebSocket, as a browser would.

The benchmark has its own database (created and migrated if missing), Redis DB index, Dramatiq namespace
and channel prefix, so it never touches a developer's or the test suite's data:

    GEDGE_BENCH_DATABASE_URL  default postgres://postgres@127.0.0.1:5432/gedge_bench
    GEDGE_BENCH_REDIS_URL     default redis://127.0.0.1:6379/13
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import requests

from .stats import tree_peak_mb

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
QUEUES = ("preprocess", "inference", "postprocess")
ONE_PER_QUEUE = {queue: (queue,) for queue in QUEUES}
BENCH_USER = "bench"


def default_model() -> str:
    return os.environ.get("GEDGE_MODEL_PATH") or str(SHARED / "models" / "yolox_nano.onnx")


def bench_env(media_root: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=os.environ.get("GEDGE_BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/gedge_bench"),
        REDIS_URL=os.environ.get("GEDGE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13"),
        DJANGO_SECRET_KEY=os.environ.get(
            "DJANGO_SECRET_KEY", "gedge-bench-only-secret-key-never-used-in-production-0123"),
        # Production settings over plain HTTP on one machine (no TLS-ending ingress in front).
        GEDGE_SECURE_SSL_REDIRECT="false",
        GEDGE_SECURE_COOKIES="false",
        GEDGE_MODEL_PATH=default_model(),
        GEDGE_DRAMATIQ_NAMESPACE="gedge-bench",
        GEDGE_CHANNELS_PREFIX="gedge-bench",
        GEDGE_MEDIA_ROOT=str(media_root),
        GEDGE_CACHE_PREFIX="gedge-bench",
        GEDGE_WORKER_STATE_DIR=str(media_root.parent / "worker"),
        GEDGE_LOG_LEVEL="WARNING",
        # The benchmark is the load generator: the per-user submit throttle would measure itself.
        GEDGE_SUBMIT_RATE="100000/min",
        GEDGE_MAX_ACTIVE_JOBS_PER_USER="1000",
        # One process, one thread per queue: the deployment shape of the design (one Pod per stage).
        DRAMATIQ_NPROCS="1",
        DRAMATIQ_NTHREADS="1",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def ensure_database(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')


def setup_django(env: dict[str, str]) -> None:
    """Configure this process's Django on the benchmark's database (to migrate and to mint a session)."""
    for key, value in env.items():
        if key.startswith(("GEDGE_", "DJANGO_")) or key in ("DATABASE_URL", "REDIS_URL"):
            os.environ[key] = value
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gedge_site.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    ensure_database(env["DATABASE_URL"])
    call_command("migrate", "--noinput", verbosity=0)


def credentials() -> tuple[str, str]:
    """(API token, session cookie) of the benchmark user; jobs from earlier runs are deleted."""
    from django.contrib.auth import get_user_model
    from django.test import Client
    from rest_framework.authtoken.models import Token

    user, _ = get_user_model().objects.get_or_create(username=BENCH_USER)
    user.jobs.all().delete()
    token = Token.objects.get_or_create(user=user)[0].key
    client = Client()
    client.force_login(user)
    return token, client.cookies["sessionid"].value


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Push:
    received: float  # time.time() when the client read it
    job: dict
    committed_at: float | None = None  # time.time() on the server right after the transition's commit


@dataclass
class SocketClient:
    """A browser tab: one WebSocket on /ws/jobs/, every job.update recorded with its arrival time."""

    url: str
    cookie: str
    origin: str
    pushes: list[Push] = field(default_factory=list)
    _ready: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _error: BaseException | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError(f"WebSocket did not connect: {self._error!r}")

    async def _run(self) -> None:
        import websockets

        try:
            async with websockets.connect(self.url, additional_headers={"Cookie": f"sessionid={self.cookie}"},
                                          origin=self.origin, max_size=None) as ws:
                await ws.recv()  # the snapshot
                self._ready.set()
                while not self._stop.is_set():
                    try:
                        raw = await asyncio.wait_for(ws.recv(), 0.2)
                    except TimeoutError:
                        continue
                    received = time.time()
                    message = json.loads(raw)
                    if message.get("type") == "job.update":
                        self.pushes.append(Push(received, message["job"], message.get("committed_at")))
        except BaseException as exc:  # noqa: BLE001 - reported by start() / stop()
            self._error = exc
            self._ready.set()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def for_job(self, job_id: int) -> list[Push]:
        return [p for p in list(self.pushes) if p.job["id"] == job_id]


def push_delay_s(push: Push) -> float:
    """Arrival minus the server's time right after the transition committed (same machine, same clock)."""
    if push.committed_at is not None:
        return push.received - push.committed_at
    return push.received - datetime.fromisoformat(push.job["updated_at"].replace("Z", "+00:00")).timestamp()


class Service:
    """Web + workers started for one measurement and stopped after it; also the HTTP and WebSocket client."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.http = requests.Session()
        self.socket: SocketClient | None = None

    def _start(self, name: str, args: list[str], env: dict[str, str]) -> None:
        log = open(self.log_dir / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def start_web(self, token: str, cookie: str, command: list[str] | None = None, **extra_env: str) -> None:
        """Daphne on the service's port (or ``command`` after the interpreter: embedded_service's)."""
        command = command or ["-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), "gedge_site.asgi:application"]
        self._start("web", [sys.executable, *command], {**self.env, **extra_env})
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(self.base + "/healthz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline or self.procs["web"].poll() is not None:
                raise RuntimeError("web did not start:\n" + self.logs())
            time.sleep(0.2)
        self.token = token
        self.http.headers["Authorization"] = f"Token {token}"
        self.socket = SocketClient(f"ws://127.0.0.1:{self.port}/ws/jobs/", cookie, self.base)
        self.socket.start()

    def start_workers(self, layout: dict[str, tuple[str, ...]] | None = None, **extra_env: str) -> None:
        """One worker process per entry of ``layout`` (its name: the queues it consumes); by default one per
        queue (ONE_PER_QUEUE)."""
        env = {**self.env, **extra_env}
        for name, queues in (layout or ONE_PER_QUEUE).items():
            # Dramatiq's Prometheus exporter: a port and a metrics folder of its own per worker, as each
            # Pod has, or the second worker's exporter dies on "address in use".
            metrics_dir = self.log_dir / f"prometheus-{name}"
            metrics_dir.mkdir(exist_ok=True)
            worker_env = {**env, "dramatiq_prom_port": str(free_port()), "dramatiq_prom_db": str(metrics_dir),
                          "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
            self._start(f"worker-{name}", [sys.executable, "manage.py", "rundramatiq", "--queues", *queues],
                        worker_env)

    def stop_workers(self) -> None:
        self._stop_procs("worker-")

    def _stop_procs(self, prefix: str) -> None:
        for name in [n for n in self.procs if n.startswith(prefix)]:
            proc = self.procs.pop(name)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def worker_peak_mb(self) -> dict[str, float]:
        return {name.removeprefix("worker-"): tree_peak_mb(proc.pid) for name, proc in self.procs.items()
                if name.startswith("worker-")}

    def submit(self, video: Path) -> tuple[int, float, float]:
        """POST the video; (job id, time the request started, time the 201 arrived)."""
        sent = time.time()
        with open(video, "rb") as fh:
            response = self.http.post(self.base + "/api/jobs/", files={"video": (video.name, fh, "video/mp4")},
                                      timeout=120)
        if response.status_code != 201:
            raise RuntimeError(f"upload refused: {response.status_code} {response.text[:500]}")
        return response.json()["id"], sent, time.time()

    def get_job(self, job_id: int) -> dict:
        """The job as the API shows it; {} where the API did not answer 200 (asked again later)."""
        response = self.http.get(f"{self.base}/api/jobs/{job_id}/", timeout=30)
        return response.json() if response.status_code == 200 else {}

    def wait_done(self, job_ids: list[int], timeout: float) -> dict[int, dict]:
        """Wait for every job to end; the socket is watched, the API polled now and then (pushes may drop)."""
        done: dict[int, dict] = {}
        deadline = time.monotonic() + timeout
        last_poll = 0.0
        while len(done) < len(job_ids):
            for push in list(self.socket.pushes if self.socket is not None else ()):
                if push.job["id"] in job_ids and push.job["status"] in ("Exit", "Failed", "Cancelled"):
                    done.setdefault(push.job["id"], push.job)
            if time.monotonic() - last_poll > (2 if self.socket is not None else 0.25):
                last_poll = time.monotonic()
                for job_id in set(job_ids) - set(done):
                    job = self.get_job(job_id)
                    if job.get("status") in ("Exit", "Failed", "Cancelled"):
                        done[job_id] = job
            dead = [name for name, proc in self.procs.items() if proc.poll() is not None]
            if dead:
                # Something outside the benchmark stopped a process (see its log): the figures would be void.
                raise RuntimeError(f"{', '.join(dead)} stopped during the run:\n{self.logs()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"jobs {sorted(set(job_ids) - set(done))} not done:\n{self.logs()}")
            time.sleep(0.02)
        failed = {i: j.get("error") for i, j in done.items() if j["status"] != "Exit"}
        if failed:
            raise RuntimeError(f"jobs did not reach Exit: {failed}\n{self.logs()}")
        return done

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.log_dir.glob("*.log")))

    def stop(self) -> None:
        if self.socket is not None:
            self.socket.stop()
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


class Bench:
    """Owns the benchmark's media folder and database user; starts fresh Services on demand."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="gedge-bench-"))
        self.env = bench_env(self.tmp / "media")
        setup_django(self.env)
        self.token, self.cookie = credentials()
        import redis

        self.redis = redis.Redis.from_url(self.env["REDIS_URL"])

    def service(self, workers: bool = True, web_env: dict[str, str] | None = None, **worker_env: str) -> Service:
        self.redis.flushdb()  # no stale messages from an earlier service
        log_dir = self.tmp / f"logs-{time.monotonic_ns()}"
        log_dir.mkdir()
        service = Service(self.env, log_dir)
        try:
            service.start_web(self.token, self.cookie, **(web_env or {}))
            if workers:
                service.start_workers(**worker_env)
        except BaseException:
            service.stop()
            raise
        return service

    def close(self) -> None:
        self.redis.flushdb()
        shutil.rmtree(self.tmp, ignore_errors=True)


def embedded_service(folder: Path, threads: int = 3) -> Service:
    """`make run`'s service in a folder of its own: one ``manage.py run_embedded`` process (Daphne with
    Dramatiq's in-process broker and ``threads`` worker threads for all queues, the reaper thread, the
    in-memory channel layer) on a fresh SQLite database, no Redis; driven over HTTP and the WebSocket as the
    production-like Service is."""
    folder.mkdir(parents=True)
    env = {key: value for key, value in bench_env(folder / "media").items()
           if key not in ("REDIS_URL", "CHANNELS_REDIS_URL", "CACHE_REDIS_URL")}
    env.update(DATABASE_URL=f"sqlite:///{folder / 'db.sqlite3'}", GEDGE_WORKER_STATE_DIR=str(folder / "worker"))
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    mint = ("from django.contrib.auth import get_user_model; from django.test import Client; "
            "from rest_framework.authtoken.models import Token; "
            f"u = get_user_model().objects.get_or_create(username={BENCH_USER!r})[0]; c = Client(); "
            "c.force_login(u); print(Token.objects.get_or_create(user=u)[0].key, c.cookies['sessionid'].value)")
    done = subprocess.run([sys.executable, "manage.py", "shell", "-c", mint], cwd=ROOT, env=env, check=True,
                          capture_output=True, text=True)
    token, cookie = done.stdout.split()[-2:]
    log_dir = folder / "logs"
    log_dir.mkdir()
    service = Service(env, log_dir)
    try:
        service.start_web(token, cookie, command=["manage.py", "run_embedded", "--port", str(service.port),
                                                "--worker-threads", str(threads)])
    except BaseException:
        service.stop()
        raise
    return service
