"""Nothing lost: leases, fencing, the reaper, hand-back on SIGTERM, and a short fault run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta

import pytest
import redis
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from jobs.lifecycle import runner
from jobs.lifecycle.reaper import reap, waiting_message_ids
from jobs.lifecycle.runner import run_stage
from jobs.lifecycle.services import submit_job
from jobs.lifecycle.transitions import JobInterrupted, StaleTransition, record_progress, transition
from jobs.models import Job, Status

from .conftest import ROOT, free_port, make_video, service_env, wait_for_status

pytestmark = pytest.mark.django_db(transaction=True)


def upload(user, tmp_path, frames=6, **size):
    path = make_video(tmp_path / "clip.mp4", frames=frames, **size)
    job, _ = submit_job(user, SimpleUploadedFile("clip.mp4", path.read_bytes(), "video/mp4"))
    return job


def queued_ids(client, queue: str) -> list[str]:
    return sorted(waiting_message_ids(queue))


def test_submit_records_the_message_and_it_is_queued(owner, tmp_path, redis_clean):
    job = upload(owner, tmp_path)
    assert job.message_id and queued_ids(redis_clean, "preprocess") == [job.message_id]
    assert job.message_id in waiting_message_ids("preprocess")


def queue_order(queue: str) -> list[str]:
    """Message ids in the order workers will take them (Dramatiq's Redis broker pops the list's head)."""
    import dramatiq
    from dramatiq import Message

    broker = dramatiq.get_broker()
    keys = broker.client.lrange(f"{broker.namespace}:{queue}", 0, -1)
    return [Message.decode(p).message_id for p in broker.client.hmget(f"{broker.namespace}:{queue}.msgs", keys)]


def test_expired_lease_is_redispatched_with_an_iteration(owner, tmp_path, redis_clean, settings):
    job = upload(owner, tmp_path)
    redis_clean.flushdb()  # the first message was taken by a worker that then died
    waiting = upload(owner, tmp_path)  # a job that has not started yet
    job = transition(job.pk, Status.ENQUEUE, Status.PREPROCESSING, lease_owner="host:4242:1")
    assert job.attempt == 1 and job.heartbeat_at is not None
    assert reap()["expired"] == 0  # a fresh lease is left alone
    Job.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=60))
    assert reap()["expired"] == 1
    job.refresh_from_db()
    assert job.status == Status.ENQUEUE and job.iteration == 1
    assert "lease expired" in job.events.last().message and "host:4242:1" in job.events.last().message
    # Work taken back from a dead worker goes to the head of the queue, before jobs not yet started.
    assert queue_order("preprocess") == [job.message_id, waiting.message_id]


def test_expired_lease_past_the_limit_fails_the_job(owner, tmp_path, redis_clean, settings):
    settings.GEDGE_MAX_ITERATIONS = 1
    job = upload(owner, tmp_path)
    Job.objects.filter(pk=job.pk).update(iteration=1)
    transition(job.pk, Status.ENQUEUE, Status.PREPROCESSING)
    Job.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=60))
    assert reap()["failed"] == 1
    job.refresh_from_db()
    assert job.status == Status.FAILED and "gave up" in job.error and job.failed_stage == "preprocess"


def test_lost_message_is_sent_again_but_a_waiting_one_is_not(owner, tmp_path, redis_clean, settings):
    settings.GEDGE_REDISPATCH_AFTER_S = 0
    job = upload(owner, tmp_path)
    assert reap()["redispatched"] == 0  # still waiting in the queue
    redis_clean.flushdb()  # Redis restarted and lost the queue
    assert reap()["redispatched"] == 1
    job.refresh_from_db()
    assert queued_ids(redis_clean, "preprocess") == [job.message_id]
    assert reap()["redispatched"] == 0


def test_a_stale_attempt_cannot_write_over_a_newer_one(owner, tmp_path, redis_clean, monkeypatch):
    job = upload(owner, tmp_path)
    real = runner.STAGE_BODIES["preprocess"]
    takeover = {}

    def paused_worker(job_, progress):
        fields = real(job_, progress)
        # While this worker was stalled its lease expired and another attempt took the job over.
        transition(job_.pk, Status.PREPROCESSING, Status.ENQUEUE, attempt=job_.attempt, message="reaped")
        takeover["job"] = transition(job_.pk, Status.ENQUEUE, Status.PREPROCESSING, lease_owner="newer")
        return fields

    monkeypatch.setitem(runner.STAGE_BODIES, "preprocess", paused_worker)
    run_stage("preprocess", job.pk)
    job.refresh_from_db()
    assert job.status == Status.PREPROCESSING and job.attempt == 2 and job.lease_owner == "newer"
    assert job.artifacts == {} and job.stage_ms == {}  # the stale completion wrote nothing
    with pytest.raises(StaleTransition):
        transition(job.pk, Status.PREPROCESSING, Status.PREPROCESSING_COMPLETE, attempt=1)
    with pytest.raises(JobInterrupted):
        record_progress(job.pk, Status.PREPROCESSING, 1, {"preprocess_done": 1})
    # Each attempt writes under its own name: the stale one's frames are not the newer one's.
    assert (job.work_dir / "a1-preprocess").is_dir() and not (job.work_dir / "a2-preprocess").exists()


def test_postprocessing_complete_left_behind_is_finalised(owner, tmp_path, redis_clean, settings, monkeypatch):
    settings.GEDGE_REDISPATCH_AFTER_S = 0
    job = upload(owner, tmp_path)
    run_stage("preprocess", job.pk)
    run_stage("inference", job.pk)
    # The worker dies right after postprocessing completed, before the results were moved into place.
    monkeypatch.setattr(runner, "_after_complete", lambda job, stage: None)
    run_stage("postprocess", job.pk)
    job.refresh_from_db()
    assert job.status == Status.POSTPROCESSING_COMPLETE and not job.result_dir.exists()
    monkeypatch.undo()
    assert reap()["finalized"] == 1
    job.refresh_from_db()
    assert job.status == Status.EXIT and (job.result_dir / "annotated.mp4").exists()
    assert not job.work_dir.exists()


def test_sigterm_during_inference_hands_the_job_back(owner, tmp_path, media_root, processes, redis_clean):
    # Inference sleeps 0.3 s per chunk of 32 frames: the stage is still running when Dramatiq's worker
    # process gets to its shutdown (it looks once a second), however fast this machine infers.
    env = service_env(media_root, GEDGE_PROGRESS_INTERVAL_S="0", GEDGE_FAULT_SLOW_STAGE="inference:0.3")
    processes.worker(["preprocess"], env)
    processes.worker(["postprocess"], env)
    first = processes.worker(["inference"], env, name="inference-1")
    job = upload(owner, tmp_path, frames=240, width=640, height=360)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.status == Status.INFERENCING and job.inference_done > 0:
            break
        time.sleep(0.05)
    assert job.status == Status.INFERENCING, processes.logs()
    first.send_signal(signal.SIGTERM)  # what Kubernetes does to a Pod being moved or scaled down
    processes.worker(["inference"], env, name="inference-2")
    assert first.wait(timeout=60) == 0, "the worker must stop cleanly within the grace period"
    job = wait_for_status(job.pk, {Status.EXIT, Status.FAILED}, timeout=180, logs=processes.logs)
    assert job.status == Status.EXIT, job.error
    assert job.iteration == 0, "a hand-back is not a failure"
    messages = list(job.events.values_list("message", flat=True))
    assert any("handed back" in m for m in messages), messages
    assert job.events.filter(to_status=Status.INFERENCING).count() == 2
    assert job.inference_done == job.postprocess_done == job.frame_count == 240
    assert len(json.loads((job.result_dir / "detections.json").read_text())["frames"]) == 240


def test_short_fault_run(tmp_path, redis_clean):
    """The fault command, shortened: worker SIGKILLs, a poison job, and a Redis restart (a private Redis)."""
    from django.conf import settings

    port = free_port()
    start = (f"redis-server --port {port} --bind 127.0.0.1 --save '' --appendonly no --daemonize yes "
             f"--pidfile {tmp_path}/redis.pid --logfile {tmp_path}/redis.log")
    subprocess.run(start, shell=True, check=True)
    client = redis.Redis(port=port)
    for _ in range(50):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.1)
    restart = f"redis-cli -p {port} shutdown nosave; sleep 1; {start}"
    env = service_env(tmp_path / "media", REDIS_URL=f"redis://127.0.0.1:{port}/0")
    try:
        result = subprocess.run(
            [sys.executable, "manage.py", "fault_test", "--jobs", "8", "--frames", "60", "--kill-every", "4",
             "--restart-redis-at", "6", "--restart-postgres-at", "-1", "--timeout", "300",
             "--redis-restart-cmd", restart, "--logs", str(tmp_path / "logs")],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=420,
        )
    finally:
        subprocess.run(f"redis-cli -p {port} shutdown nosave", shell=True, check=False)
    output = result.stdout
    assert result.returncode == 0, output + result.stderr[-3000:]
    report = json.loads(output[: output.rindex("}") + 1])
    print("\nshort fault run:", json.dumps(report, indent=1))
    assert report["jobs_submitted"] == 8 and report["stuck"] == 0
    assert report["duplicate_stage_completions"] == 0 and report["outputs_that_fail_to_decode"] == 0
    assert report["reached_exit"] == 7 and report["failed"] == 1  # only the poison job fails
    assert report["poison_job"].startswith("Failed") and "gave up" in report["poison_job"]
    # The job failed on its first lost attempt past the limit. Every attempt of its poison stage ended in a
    # crash, or in one of the test's own kills where that landed on the worker holding the job (a kill may
    # also land just after the crash, while the worker's parent process is going down).
    assert f"gave up after {settings.GEDGE_MAX_ITERATIONS + 1} attempts" in report["poison_job"]
    crashes, killed = report["worker_crashes_by_poison"], report["poison_attempts_killed"]
    assert 1 <= report["poison_attempts"] - killed <= crashes <= report["poison_attempts"], report
    assert report["redis_restarted"] and report["workers_sigkilled"] >= 2
    if report["jobs_interrupted_by_kills"]:  # a kill landed mid-stage: that job resumed elsewhere
        assert report["max_recovery_wait_s"] < 60


def test_uploads_during_a_redis_outage_get_503_and_create_nothing(api, settings, monkeypatch, redis_clean):
    import dramatiq
    from redis.exceptions import ConnectionError as RedisConnectionError

    def down(*args, **kwargs):
        raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(dramatiq.get_broker().client, "ping", down)
    path = make_video(settings.MEDIA_ROOT / "clip.mp4", frames=3)
    with open(path, "rb") as fh:
        response = api.post("/api/jobs/", {"video": fh}, format="multipart")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable" and "queue" in response.json()["error"]["message"]
    assert Job.objects.count() == 0
    assert not any((settings.MEDIA_ROOT / "uploads").rglob("*.mp4")), "nothing stored"


def test_uploads_during_a_database_outage_get_503(api, settings, monkeypatch):
    from django.db import OperationalError

    from jobs.lifecycle import services

    def down(**fields):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(services, "create_job", down)
    path = make_video(settings.MEDIA_ROOT / "clip.mp4", frames=3)
    with open(path, "rb") as fh:
        response = api.post("/api/jobs/", {"video": fh}, format="multipart")
    assert response.status_code == 503 and response.json()["error"]["code"] == "unavailable"
    assert Job.objects.count() == 0
    assert not any((settings.MEDIA_ROOT / "uploads").rglob("*.mp4")), "no stray upload left behind"


def test_a_killed_fault_run_leaves_no_process_behind(tmp_path):
    """The fault command killed outright (as a test's timeout or an operator would): the workers and reaper it
    started end with it, instead of staying to take the messages of whatever runs next. Its processes are
    found by a marker in their environment."""
    marker = uuid.uuid4().hex
    env = service_env(tmp_path / "media", GEDGE_TEST_MARKER=marker,
                      GEDGE_DRAMATIQ_NAMESPACE=f"gedge-test-{marker[:8]}")

    def marked() -> list[int]:
        pids = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/environ", "rb") as fh:
                    if f"GEDGE_TEST_MARKER={marker}".encode() in fh.read().split(b"\0"):
                        pids.append(int(pid))
            except OSError:  # gone meanwhile, or not ours to read
                pass
        return pids

    run = subprocess.Popen(
        [sys.executable, "manage.py", "fault_test", "--jobs", "2", "--frames", "30", "--kill-every", "1000",
         "--restart-redis-at", "-1", "--restart-postgres-at", "-1", "--no-poison", "--timeout", "120",
         "--logs", str(tmp_path / "logs")],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        # The command itself, its workers (each a Dramatiq process and its forked worker) and the reaper.
        while len(set(marked()) - {run.pid}) < 4 and time.monotonic() < deadline and run.poll() is None:
            time.sleep(0.2)
        started = set(marked()) - {run.pid}
        assert len(started) >= 4, started
        run.kill()
        run.wait(10)
        deadline = time.monotonic() + 60
        while marked() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not marked(), "processes of the killed fault run are still running"
    finally:
        for pid in marked():
            os.kill(pid, signal.SIGKILL)
