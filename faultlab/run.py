"""The fault run: many jobs through real worker processes while workers die and services restart.

A test tool, not part of the product: it kills processes and restarts Redis and PostgreSQL through a shell.
It is neither in the package nor in the images, and `manage.py fault_test` exists only where
GEDGE_FAULT_LAB=1 (`make test` sets it).

Runs against the configured PostgreSQL and Redis (production settings). Worker processes are started here
with the same command as the Pods (`manage.py rundramatiq --queues ...`) and restarted after they die, as
Kubernetes would; the reaper runs as its own process (`manage.py run_reaper`), as its Deployment does.
Prints figures; `python manage.py fault_test --help` for the knobs.
"""
from __future__ import annotations

import ctypes
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import av
from django.conf import settings
from django.db import close_old_connections
from django.db.models import Q

from jobs.lifecycle.services import submit_job
from jobs.lifecycle.transitions import STAGE_BY_RUNNING, STAGES
from jobs.models import TERMINAL, Job, JobEvent, Status
from stages.synthetic import make_video

ROOT = Path(__file__).resolve().parent.parent
POISON = "poison-pill"
POISON_STAGE = "inference"  # the stage whose start the poison job crashes
QUEUES = (("preprocess",), ("inference",), ("postprocess",))


@dataclass
class FaultConfig:
    jobs: int = 50
    frames: int = 45
    size: tuple[int, int] = (320, 240)
    kill_every_s: float = 4.0
    restart_redis_at_s: float | None = 20.0
    restart_postgres_at_s: float | None = 40.0
    poison: bool = True
    lease_ttl_s: float = 6.0
    redispatch_after_s: float = 8.0
    timeout_s: float = 900.0
    seed: int = 7
    redis_restart_cmd: str = ""  # a shell command that restarts Redis (default: shutdown + the machine's start)
    postgres_restart_cmd: str = ""


@dataclass
class Worker:
    queues: tuple[str, ...]
    proc: subprocess.Popen | None = None
    died_at: float | None = None


@dataclass
class Report:
    submitted: int = 0
    exit: int = 0
    failed: dict[int, str] = field(default_factory=dict)
    stuck: dict[int, str] = field(default_factory=dict)
    duplicate_completions: int = 0
    undecodable: dict[int, str] = field(default_factory=dict)
    kills: int = 0
    worker_crashes: int = 0
    poison_attempts: int = 0  # times the poison job's crashing stage started
    poison_attempts_killed: int = 0  # kills of a worker that held the poison job in that stage
    recovery_s: list[float] = field(default_factory=list)  # kill -> the stage running again elsewhere
    takeover_s: list[float] = field(default_factory=list)  # kill -> lease expired and re-dispatched
    redis_restarted: bool = False
    postgres_restarted: bool = False
    seconds: float = 0.0
    poison_status: str = ""

    def as_dict(self) -> dict:
        recovery = sorted(self.recovery_s)
        return {
            "jobs_submitted": self.submitted,
            "reached_exit": self.exit,
            "failed": len(self.failed),
            "failed_reasons": {str(k): v for k, v in self.failed.items()},
            "stuck": len(self.stuck),
            "stuck_jobs": {str(k): v for k, v in self.stuck.items()},
            "duplicate_stage_completions": self.duplicate_completions,
            "outputs_that_fail_to_decode": len(self.undecodable),
            "workers_sigkilled": self.kills,
            "worker_crashes_by_poison": self.worker_crashes,
            "poison_attempts": self.poison_attempts,
            "poison_attempts_killed": self.poison_attempts_killed,
            "jobs_interrupted_by_kills": len(recovery),
            "max_recovery_wait_s": round(recovery[-1], 2) if recovery else None,
            "median_recovery_wait_s": round(recovery[len(recovery) // 2], 2) if recovery else None,
            "max_lease_takeover_s": round(max(self.takeover_s), 2) if self.takeover_s else None,
            "redis_restarted": self.redis_restarted,
            "postgres_restarted": self.postgres_restarted,
            "poison_job": self.poison_status,
            "seconds": round(self.seconds, 1),
        }


def _retrying(func, *args, attempts: int = 60, **kwargs):
    """Run a database call from this harness, riding out a PostgreSQL restart."""
    for i in range(attempts):
        try:
            close_old_connections()
            return func(*args, **kwargs)
        except Exception:  # noqa: BLE001 - the database is restarting: wait and try again
            if i == attempts - 1:
                raise
            from django.db import connection

            connection.close()
            time.sleep(0.5)


class FaultRun:
    def __init__(self, config: FaultConfig, log_dir: Path) -> None:
        self.config = config
        self.log_dir = log_dir
        self.rng = random.Random(config.seed)  # noqa: S311 - a reproducible choice of victims, not crypto
        self.workers = [Worker(q) for q in QUEUES] + [Worker(("preprocess", "postprocess"))]
        self.reaper: subprocess.Popen | None = None
        self.report = Report()
        self.pending_recovery: list[tuple[int, float]] = []  # (job id, kill time)
        self.crash_log = log_dir.resolve() / "poison-crashes.log"  # one line per crash, written by the worker

    # --- processes ---

    def env(self) -> dict[str, str]:
        env = dict(os.environ)  # DATABASE_URL and REDIS_URL (credentials included) as this command got them
        env.update(
            GEDGE_MEDIA_ROOT=str(settings.MEDIA_ROOT),
            GEDGE_LEASE_TTL_S=str(self.config.lease_ttl_s),
            GEDGE_REDISPATCH_AFTER_S=str(self.config.redispatch_after_s),
            GEDGE_REAPER_INTERVAL_S="1",
            GEDGE_RETRY_BACKOFF_MS="300",
            GEDGE_FAULT_CRASH_MARKER=POISON,
            GEDGE_FAULT_CRASH_STAGE=POISON_STAGE,
            GEDGE_FAULT_CRASH_LOG=str(self.crash_log),
            GEDGE_PROGRESS_INTERVAL_S="0.5",
            GEDGE_INTRA_OP_THREADS="1",
            DRAMATIQ_NPROCS="1",
            DRAMATIQ_NTHREADS="1",
            dramatiq_queue_prefetch="1",
            PYTHONUNBUFFERED="1",
        )
        return env

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "ab")
        return subprocess.Popen([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env(), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_end_with_parent(os.getpid()))

    def start_worker(self, worker: Worker) -> None:
        worker.proc = self._spawn("worker-" + "-".join(worker.queues), ["rundramatiq", "--queues", *worker.queues])
        worker.died_at = None

    def supervise(self, now: float) -> None:
        """Restart dead workers a second after they died, as Kubernetes restarts a crashed container."""
        for worker in self.workers:
            if worker.proc is not None and worker.proc.poll() is not None and worker.died_at is None:
                worker.died_at = now
            if worker.died_at is not None and now - worker.died_at >= 1.0:
                self.start_worker(worker)
        if self.reaper is not None and self.reaper.poll() is not None:
            self.reaper = self._spawn("reaper", ["run_reaper", "--interval", "1"])

    def kill_random_worker(self, now: float) -> None:
        alive = [w for w in self.workers if w.proc is not None and w.proc.poll() is None]
        if not alive:
            return
        running = _retrying(lambda: list(Job.objects.filter(status__in=list(STAGE_BY_RUNNING))
                                          .values_list("pk", "lease_owner", "status")))
        worker = self.rng.choice(alive)
        pids = _group_pids(worker.proc.pid)
        held = [(job_id, status) for job_id, owner, status in running if any(f":{pid}:" in owner for pid in pids)]
        self.pending_recovery.extend((job_id, now) for job_id, _ in held)
        self.report.poison_attempts_killed += (self.poison_id, STAGES[POISON_STAGE].running) in held
        os.killpg(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait()
        worker.died_at = now
        self.report.kills += 1

    def stop_all(self) -> None:
        procs = [w.proc for w in self.workers if w.proc is not None] + [self.reaper]
        for proc in procs:
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            if proc is None:
                continue
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    # --- services ---

    def restart_redis(self) -> None:
        cmd = self.config.redis_restart_cmd or (
            f"redis-cli -u {settings.REDIS_URL} shutdown nosave >/dev/null 2>&1; sleep 1; "
            "redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save '' --appendonly no "
            "--dir /var/lib/redis --logfile /var/log/redis/ci.log"
        )
        subprocess.run(cmd, shell=True, check=False)  # noqa: S602 - operator-supplied command
        self.report.redis_restarted = _wait(lambda: subprocess.run(
            ["redis-cli", "-u", settings.REDIS_URL, "ping"], capture_output=True).returncode == 0)

    def restart_postgres(self) -> None:
        cmd = self.config.postgres_restart_cmd or (
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | head -n1) main restart -m fast"
        )
        subprocess.run(cmd, shell=True, check=False)  # noqa: S602
        self.report.postgres_restarted = _wait(lambda: subprocess.run(
            ["pg_isready", "-h", "127.0.0.1", "-q"]).returncode == 0)

    # --- the run ---

    def submit_all(self, user) -> list[int]:
        from django.core.files.uploadedfile import SimpleUploadedFile
        from django.test.utils import override_settings

        ids = []
        # All jobs are queued at once on purpose: the per-user cap on active jobs is not what is tested here.
        with tempfile.TemporaryDirectory() as tmp, override_settings(GEDGE_MAX_ACTIVE_JOBS_PER_USER=0):
            for i in range(self.config.jobs):
                poison = self.config.poison and i == self.config.jobs // 3
                name = f"{POISON}-{i}.mp4" if poison else f"fault-{i}.mp4"
                path = make_video(Path(tmp) / name, width=self.config.size[0], height=self.config.size[1],
                                  frames=self.config.frames)
                upload = SimpleUploadedFile(name, path.read_bytes(), "video/mp4")
                job, _ = submit_job(user, upload)
                ids.append(job.pk)
                if poison:
                    self.poison_id = job.pk
        return ids

    def run(self) -> Report:
        from django.contrib.auth import get_user_model

        started = time.monotonic()
        self.poison_id = None
        self.crash_log.unlink(missing_ok=True)  # a log folder given twice counts this run's crashes only
        user, _ = get_user_model().objects.get_or_create(username="fault-test")
        try:
            for worker in self.workers:
                self.start_worker(worker)
            self.reaper = self._spawn("reaper", ["run_reaper", "--interval", "1"])
            ids = self.submit_all(user)
            self.report.submitted = len(ids)
            t0 = time.monotonic()
            next_kill = t0 + self.config.kill_every_s
            redis_at = t0 + self.config.restart_redis_at_s if self.config.restart_redis_at_s is not None else None
            pg_at = t0 + self.config.restart_postgres_at_s if self.config.restart_postgres_at_s is not None else None
            while time.monotonic() - t0 < self.config.timeout_s:
                now = time.monotonic()
                self.supervise(now)
                if now >= next_kill:
                    self.kill_random_worker(now)
                    next_kill = now + self.config.kill_every_s
                if redis_at is not None and now >= redis_at:
                    self.restart_redis()
                    redis_at = None
                if pg_at is not None and now >= pg_at:
                    self.restart_postgres()
                    pg_at = None
                active = _retrying(lambda: Job.objects.filter(pk__in=ids).exclude(status__in=list(TERMINAL))
                                   .count())
                if active == 0 and redis_at is None and pg_at is None:
                    break
                time.sleep(0.25)
        finally:
            self.stop_all()
        self.report.seconds = time.monotonic() - started
        self.collect(ids, t0)
        return self.report

    def collect(self, ids: list[int], t0: float) -> None:
        jobs = _retrying(lambda: list(Job.objects.filter(pk__in=ids)))
        wall_offset = time.time() - time.monotonic()
        for job in jobs:
            if job.status == Status.EXIT:
                self.report.exit += 1
                problem = _decode_problem(job)
                if problem:
                    self.report.undecodable[job.pk] = problem
            elif job.status == Status.FAILED:
                self.report.failed[job.pk] = job.error
            else:
                self.report.stuck[job.pk] = job.status
        # A stage completes when its running status moves on to its complete status (a move back to the
        # ready status after a lost lease is a retry, not a completion).
        done = Q(to_status=Status.EXIT)
        for stage in STAGE_BY_RUNNING.values():
            done |= Q(from_status=stage.running, to_status=stage.complete)
        completions = Counter(JobEvent.objects.filter(done, job_id__in=ids).values_list("job_id", "to_status"))
        self.report.duplicate_completions = sum(n - 1 for n in completions.values() if n > 1)
        for job_id, killed_at in self.pending_recovery:
            killed_wall = killed_at + wall_offset
            restart = (JobEvent.objects.filter(job_id=job_id, to_status__in=list(STAGE_BY_RUNNING) + [Status.FAILED])
                       .order_by("at").values_list("at", flat=True))
            later = [at.timestamp() for at in restart if at.timestamp() > killed_wall]
            if later:
                self.report.recovery_s.append(later[0] - killed_wall)
            taken_back = (JobEvent.objects.filter(job_id=job_id, message__contains="lease expired",
                                                  at__gt=datetime.fromtimestamp(killed_wall, UTC))
                          .order_by("at").values_list("at", flat=True).first())
            if taken_back is not None:
                self.report.takeover_s.append(taken_back.timestamp() - killed_wall)
        if self.poison_id is not None:
            poison = Job.objects.get(pk=self.poison_id)
            self.report.poison_status = f"{poison.status} after {poison.iteration} restarts: {poison.error}"
            self.report.poison_attempts = JobEvent.objects.filter(
                job_id=self.poison_id, to_status=STAGES[POISON_STAGE].running).count()
        # Counted from the crash record, not from the workers' logs: a worker's last log line goes through
        # Dramatiq's pipe to its parent, and a kill of that parent right after the crash loses it.
        self.report.worker_crashes = (len(self.crash_log.read_text().splitlines())
                                      if self.crash_log.exists() else 0)


def _decode_problem(job: Job) -> str:
    path = job.result_dir / "annotated.mp4"
    try:
        with av.open(str(path)) as container:
            frames = sum(1 for _ in container.decode(video=0))
    except Exception as exc:  # noqa: BLE001 - any failure to decode is the finding
        return f"{exc.__class__.__name__}: {exc}"
    if frames != job.frame_count:
        return f"{frames} frames decoded, {job.frame_count} expected"
    doc = json.loads((job.result_dir / "detections.json").read_text())
    if len(doc["frames"]) != job.frame_count:
        return "detections.json frame count differs"
    return ""


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid:
                    pids.append(int(entry))
            except ProcessLookupError:
                continue
    return pids


def _wait(check, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.3)
    return False


PR_SET_PDEATHSIG = 1


def _end_with_parent(parent: int):
    """For the spawned process, before it execs (Linux): SIGTERM when this command ends, however it ends.

    A run killed by its caller (a test's timeout, an operator's SIGKILL) then leaves no worker or reaper
    behind to take messages meant for whatever runs next; the Dramatiq process stops its forked workers on
    that SIGTERM as on any other. The signal is kept across the exec. Elsewhere: nothing (the old
    behaviour)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only calls it

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent ended before the line above: no signal would come
            os._exit(1)

    return preexec
