"""The fault run: many jobs through real worker processes while workers die and services restart.

A test tool, not part of the product: it kills processes and restarts Redis and PostgreSQL through a shell.
It is neither in the package nor in the images, and `manage.py fault_test` exists only where
GEDGE_FAULT_LAB=1 (`make test` sets it).

Runs against the configured PostgreSQL and Redis (production settings). Worker processes are started here
with the same command as the Pods (`manage.py rundramatiq --queues ...`) and restarted after they die, as
Kubernetes would; the reaper runs as its own process (`manage.py run_reaper`), as its Deployment does.

A random worker is SIGKILLed ``kill_every_s`` after every worker is up (booted and consuming) again, so the
kills keep coming however slowly workers boot on the machine at hand, and work still gets done between them.
Two jobs in three are cut into several segments (their videos have a keyframe every ``keyframe_every``
frames and the workers cut at GEDGE_SEGMENT_S = ``segment_s``), so kills land between and inside segments of
one job. Every Exit job's results are checked frame by frame: annotated.mp4 decodes to the input's frame
count and detections.json holds the indexes 0..N-1 once each (lost and doubled frames).
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

from jobs.lifecycle.services import end_job, submit_job
from jobs.lifecycle.transitions import STAGE_BY_RUNNING, STAGES
from jobs.models import TERMINAL, Job, JobEvent, Segment, Status
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
    segment_s: float = 0.5  # GEDGE_SEGMENT_S of the workers
    keyframe_every: int = 15  # frames between keyframes of the multi-segment jobs' videos (0: one segment each)
    lease_ttl_s: float = 6.0
    redispatch_after_s: float = 8.0
    timeout_s: float = 900.0
    seed: int = 7
    redis_restart_cmd: str = ""  # a shell command that restarts Redis (default: shutdown + the machine's start)
    postgres_restart_cmd: str = ""


READY_LINE = b"Worker process is ready for action"  # Dramatiq's, once a worker process consumes


@dataclass
class Worker:
    queues: tuple[str, ...]
    proc: subprocess.Popen | None = None
    died_at: float | None = None
    log: Path | None = None
    log_offset: int = 0  # where this start's lines begin in the log
    ready: bool = False

    @property
    def name(self) -> str:
        return "worker-" + "-".join(self.queues)

    def is_ready(self) -> bool:
        """Booted and consuming (its log says so since this start): a worker that may hold work."""
        if not self.ready and self.log is not None and self.log.exists():
            with open(self.log, "rb") as fh:
                fh.seek(self.log_offset)
                self.ready = READY_LINE in fh.read()
        return self.ready


@dataclass
class Report:
    submitted: int = 0
    exit: int = 0
    failed: dict[int, str] = field(default_factory=dict)
    stuck: dict[int, str] = field(default_factory=dict)
    duplicate_completions: int = 0
    undecodable: dict[int, str] = field(default_factory=dict)
    segments: int = 0  # over all jobs
    multi_segment_jobs: int = 0
    lost_frames: int = 0  # over all Exit jobs: input frames missing from annotated.mp4 or detections.json
    doubled_frames: int = 0  # ... and frames there more than once (or out of the input's range)
    frame_problems: dict[int, str] = field(default_factory=dict)
    kills: int = 0
    worker_crashes: int = 0
    poison_attempts: int = 0  # times the poison job's crashing stage started
    poison_attempts_killed: int = 0  # kills of a worker that held the poison job in that stage
    recovery_s: list[float] = field(default_factory=list)  # kill -> the segment's stage running again elsewhere
    takeover_s: list[float] = field(default_factory=list)  # kill -> the segment's lease expired, re-dispatched
    redis_restarted: bool = False
    postgres_restarted: bool = False
    seconds: float = 0.0
    poison_status: str = ""
    poison_segment_restarts: int = 0  # restarts of the poison job's segment that gave up
    interrupted_segments: set[tuple[int, int]] = field(default_factory=set)  # (job id, segment index)

    @property
    def interrupted_jobs(self) -> set[int]:
        return {job_id for job_id, _ in self.interrupted_segments}

    def as_dict(self) -> dict:
        recovery = sorted(self.recovery_s)
        return {
            "jobs_submitted": self.submitted,
            "reached_exit": self.exit,
            "failed": len(self.failed),
            "failed_reasons": {str(k): v for k, v in self.failed.items()},
            "stuck": len(self.stuck),
            "stuck_jobs": {str(k): v for k, v in self.stuck.items()},
            "segments": self.segments,
            "multi_segment_jobs": self.multi_segment_jobs,
            "duplicate_stage_completions": self.duplicate_completions,
            "outputs_that_fail_to_decode": len(self.undecodable),
            "undecodable_outputs": {str(k): v for k, v in self.undecodable.items()},
            "lost_frames": self.lost_frames,
            "doubled_frames": self.doubled_frames,
            "frame_problems": {str(k): v for k, v in self.frame_problems.items()},
            "workers_sigkilled": self.kills,
            "worker_crashes_by_poison": self.worker_crashes,
            "poison_attempts": self.poison_attempts,
            "poison_attempts_killed": self.poison_attempts_killed,
            "jobs_interrupted_by_kills": len(self.interrupted_jobs),
            "segments_interrupted_by_kills": len(self.interrupted_segments),
            "max_recovery_wait_s": round(recovery[-1], 2) if recovery else None,
            "median_recovery_wait_s": round(recovery[len(recovery) // 2], 2) if recovery else None,
            "max_lease_takeover_s": round(max(self.takeover_s), 2) if self.takeover_s else None,
            "redis_restarted": self.redis_restarted,
            "postgres_restarted": self.postgres_restarted,
            "poison_job": self.poison_status,
            "poison_segment_restarts": self.poison_segment_restarts,
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
        self.pending_recovery: list[tuple[int, int, float]] = []  # (job id, segment index, kill time)
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
            GEDGE_SEGMENT_S=str(self.config.segment_s),
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
        worker.log = self.log_dir / f"{worker.name}.log"
        worker.log_offset = worker.log.stat().st_size if worker.log.exists() else 0
        worker.ready = False
        worker.proc = self._spawn(worker.name, ["rundramatiq", "--queues", *worker.queues])
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

    def all_up(self) -> bool:
        return all(w.proc is not None and w.proc.poll() is None and w.is_ready() for w in self.workers)

    def kill_random_worker(self, now: float) -> None:
        alive = [w for w in self.workers if w.proc is not None and w.proc.poll() is None]
        if not alive:
            return
        worker = self.rng.choice(alive)
        pids = _group_pids(worker.proc.pid)
        # The segments this worker holds: running, under a lease taken by one of its processes (the lease
        # owner is host:pid:thread).
        running = _retrying(lambda: list(Segment.objects.filter(status__in=list(STAGE_BY_RUNNING))
                                          .values_list("job_id", "index", "lease_owner", "status")))
        held = [(job_id, index, status) for job_id, index, owner, status in running
                if any(f":{pid}:" in owner for pid in pids)]
        self.pending_recovery.extend((job_id, index, now) for job_id, index, _ in held)
        self.report.poison_attempts_killed += sum(
            1 for job_id, _, status in held if job_id == self.poison_id and status == STAGES[POISON_STAGE].running)
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
                # Two jobs in three have keyframes close enough to be cut into segments; the others have one
                # keyframe, so one segment. The poison job has two or so (each of its segments crashes its
                # inference worker, so fewer keep the run short).
                every = self.config.keyframe_every if i % 3 != 2 else 0
                if poison:
                    every = 2 * self.config.keyframe_every
                options = {"g": str(every), "x264-params": "scenecut=0"} if every else None
                path = make_video(Path(tmp) / name, width=self.config.size[0], height=self.config.size[1],
                                  frames=self.config.frames, options=options)
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
        # Jobs an earlier run left unfinished (it was stopped, or its figures showed them stuck) would compete
        # with this run's for the workers, and the reaper would keep sending their messages again.
        for leftover in Job.objects.filter(user=user).exclude(status__in=list(TERMINAL)):
            end_job(leftover, Status.CANCELLED, "left by an earlier fault run")
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
                # A kill comes kill_every_s after every worker is up again (booted and consuming): on a slow
                # or busy machine, where a worker takes longer than that to boot, kills at a fixed rate would
                # leave no worker running long enough to finish anything.
                if not self.all_up():
                    next_kill = max(next_kill, now + self.config.kill_every_s)
                elif now >= next_kill:
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
                check = check_results(job)
                if check.undecodable:
                    self.report.undecodable[job.pk] = check.undecodable
                self.report.lost_frames += check.lost
                self.report.doubled_frames += check.doubled
                if check.problems:
                    self.report.frame_problems[job.pk] = "; ".join(check.problems)
            elif job.status == Status.FAILED:
                self.report.failed[job.pk] = job.error
            else:
                self.report.stuck[job.pk] = job.status
        per_job = Counter(Segment.objects.filter(job_id__in=ids).values_list("job_id", flat=True))
        self.report.segments = sum(per_job.values())
        self.report.multi_segment_jobs = sum(1 for n in per_job.values() if n > 1)
        # A segment's stage completes when its running status moves on to its complete status (a move back
        # to the ready status after a lost lease is a retry, not a completion); a job completes at Exit.
        done = Q(segment__isnull=True, to_status=Status.EXIT)
        for stage in STAGE_BY_RUNNING.values():
            done |= Q(segment__isnull=False, from_status=stage.running, to_status=stage.complete)
        completions = Counter(JobEvent.objects.filter(done, job_id__in=ids)
                              .values_list("job_id", "segment", "to_status"))
        self.report.duplicate_completions = sum(n - 1 for n in completions.values() if n > 1)
        for job_id, index, killed_at in self.pending_recovery:
            self.report.interrupted_segments.add((job_id, index))
            killed = datetime.fromtimestamp(killed_at + wall_offset, UTC)
            later = JobEvent.objects.filter(job_id=job_id, at__gt=killed).order_by("at")
            # Running again elsewhere: the segment's next start of a stage, or its job's end.
            restart = later.filter(Q(segment=index, to_status__in=list(STAGE_BY_RUNNING))
                                   | Q(segment__isnull=True, to_status__in=[Status.FAILED, Status.CANCELLED]))
            first = restart.values_list("at", flat=True).first()
            if first is not None:
                self.report.recovery_s.append((first - killed).total_seconds())
            # Taken over: the reaper found the segment's lease expired (a job-level event where it gave up).
            taken = later.filter(Q(segment=index) | Q(segment__isnull=True, message__contains=f"of segment {index}:"),
                                 message__contains="lease expired")
            first = taken.values_list("at", flat=True).first()
            if first is not None:
                self.report.takeover_s.append((first - killed).total_seconds())
        if self.poison_id is not None:
            poison = Job.objects.get(pk=self.poison_id)
            restarts = poison.segments.order_by("-iteration").values_list("index", "iteration").first() or (0, 0)
            self.report.poison_segment_restarts = restarts[1]
            self.report.poison_status = (f"{poison.status} after {restarts[1]} restarts of segment {restarts[0]} "
                                         f"({poison.iteration} over its {poison.segment_count} segments): "
                                         f"{poison.error}")
            self.report.poison_attempts = JobEvent.objects.filter(
                job_id=self.poison_id, segment__isnull=False, to_status=STAGES[POISON_STAGE].running).count()
        # Counted from the crash record, not from the workers' logs: a worker's last log line goes through
        # Dramatiq's pipe to its parent, and a kill of that parent right after the crash loses it.
        self.report.worker_crashes = (len(self.crash_log.read_text().splitlines())
                                      if self.crash_log.exists() else 0)


@dataclass
class ResultCheck:
    lost: int = 0  # input frames missing from the results
    doubled: int = 0  # frames in the results more than once, or that the input does not have
    undecodable: str = ""
    problems: list[str] = field(default_factory=list)


def _decoded_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def check_results(job: Job) -> ResultCheck:
    """An Exit job's results against its input: annotated.mp4 decodes to as many frames as the uploaded
    video, and detections.json holds each frame index 0..N-1 exactly once. A frame missing from either is
    lost, one there twice (or past the input's end) doubled; counted once per frame where both show it."""
    check = ResultCheck()
    expected = _decoded_frames(job.source_path)
    video_lost = video_doubled = 0
    try:
        decoded = _decoded_frames(job.result_dir / "annotated.mp4")
    except Exception as exc:  # noqa: BLE001 - any failure to decode is the finding
        check.undecodable = f"{exc.__class__.__name__}: {exc}"
    else:
        video_lost, video_doubled = max(0, expected - decoded), max(0, decoded - expected)
        if decoded != expected:
            check.problems.append(f"annotated.mp4: {decoded} frames decoded, the input has {expected}")
    doc = json.loads((job.result_dir / "detections.json").read_text())
    seen = Counter(frame["index"] for frame in doc["frames"])
    missing = sum(1 for i in range(expected) if i not in seen)
    extra = sum(n - 1 if 0 <= i < expected else n for i, n in seen.items())
    if missing or extra:
        check.problems.append(f"detections.json: {missing} of the input's {expected} frame indexes missing, "
                              f"{extra} doubled or out of range")
    if job.frame_count != expected:
        check.problems.append(f"the job says {job.frame_count} frames, the input has {expected}")
    check.lost, check.doubled = max(video_lost, missing), max(video_doubled, extra)
    return check


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
