"""Nothing lost, segment by segment: leases, attempt fencing, the reaper, hand-back on SIGTERM, SIGKILL and
cancel through real worker processes, and a short fault run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import timedelta

import av
import pytest
import redis
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db.models import Q
from django.utils import timezone

from jobs.lifecycle import runner
from jobs.lifecycle.reaper import reap, waiting_message_ids
from jobs.lifecycle.runner import plan_job, run_segment_stage
from jobs.lifecycle.services import end_job, submit_job
from jobs.lifecycle.transitions import (
    STAGES,
    JobInterrupted,
    StaleTransition,
    record_progress,
    segment_transition,
)
from jobs.models import PIPELINE, Job, JobEvent, Segment, Status

from .conftest import ROOT, free_port, make_video, service_env, wait_for_status

pytestmark = pytest.mark.django_db(transaction=True)
S = Status


def upload(user, tmp_path, frames=6, every=0, name="clip.mp4", **size):
    """A synthetic clip at 25 fps; ``every``: a keyframe every that many frames (cut at GEDGE_SEGMENT_S)."""
    options = {"g": str(every), "x264-params": "scenecut=0"} if every else None
    path = make_video(tmp_path / name, frames=frames, options=options, **size)
    job, _ = submit_job(user, SimpleUploadedFile(name, path.read_bytes(), "video/mp4"))
    return job


def planned(user, tmp_path, settings, frames=45, every=15, window=6, **kwargs) -> Job:
    """A job cut into segments (45 frames, a keyframe every 15, 0.5 s segments: 3 of 15 frames), planned."""
    settings.GEDGE_SEGMENT_S = 0.5
    settings.GEDGE_SEGMENTS_IN_FLIGHT = window
    job = upload(user, tmp_path, frames=frames, every=every, **kwargs)
    plan_job(job.pk)
    job.refresh_from_db()
    return job


def queue_order(queue: str) -> list[str]:
    """Message ids in the order workers will take them (Dramatiq's Redis broker pops the list's head)."""
    return [message.message_id for message in queued(queue)]


def queued(queue: str):
    import dramatiq
    from dramatiq import Message

    broker = dramatiq.get_broker()
    keys = broker.client.lrange(f"{broker.namespace}:{queue}", 0, -1)
    return [Message.decode(p) for p in broker.client.hmget(f"{broker.namespace}:{queue}.msgs", keys)] if keys else []


def decoded_frames(path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def assert_nothing_lost(job: Job) -> None:
    """The results hold every input frame once: annotated.mp4 decodes to the upload's frame count and
    detections.json has the indexes 0..N-1, each once; every segment completed each stage once."""
    frames = decoded_frames(job.source_path)
    assert job.frame_count == frames and decoded_frames(job.result_dir / "annotated.mp4") == frames
    doc = json.loads((job.result_dir / "detections.json").read_text())
    assert [f["index"] for f in doc["frames"]] == list(range(frames))
    done = Q()
    for stage in STAGES.values():
        done |= Q(from_status=stage.running, to_status=stage.complete)
    completions = Counter(job.events.filter(done, segment__isnull=False).values_list("segment", "to_status"))
    assert set(completions.values()) == {1} and len(completions) == 3 * job.segment_count, completions


def segment_events(job: Job, index: int) -> list[tuple[str, str]]:
    return list(job.events.filter(segment=index).values_list("to_status", "message"))


def test_submit_records_the_planning_message_then_the_segment_messages(owner, tmp_path, redis_clean, settings):
    settings.GEDGE_SEGMENT_S = 0.5
    settings.GEDGE_SEGMENTS_IN_FLIGHT = 2
    job = upload(owner, tmp_path, frames=45, every=15)
    assert job.message_id and queue_order("preprocess") == [job.message_id]
    assert [m.actor_name for m in queued("preprocess")] == ["plan_job"]
    redis_clean.flushdb()  # a worker took the planning message
    plan_job(job.pk)
    job.refresh_from_db()
    segments = list(job.segments.order_by("index"))
    assert job.segment_count == len(segments) == 3 and job.window == 2
    # The first two (the window) are sent, each message recorded on its segment; the third waits for room.
    assert [bool(s.message_id) for s in segments] == [True, True, False]
    assert all(s.dispatched_at is not None for s in segments[:2]) and segments[2].dispatched_at is None
    assert [(m.message_id, m.actor_name, list(m.args)) for m in queued("preprocess")] == [
        (s.message_id, "preprocess_segment", [s.pk]) for s in segments[:2]]
    assert set(queue_order("preprocess")) <= waiting_message_ids("preprocess")


def test_an_expired_segment_lease_is_redispatched_with_an_iteration(owner, tmp_path, redis_clean, settings):
    job = planned(owner, tmp_path, settings)
    redis_clean.flushdb()  # the segments' messages were taken by a worker that then died
    waiting = upload(owner, tmp_path, name="waiting.mp4")  # a job that has not started yet
    first = job.segments.get(index=0)
    first, _ = segment_transition(first.pk, S.ENQUEUE, S.PREPROCESSING, lease_owner="host:4242:1")
    assert first.attempt == 1 and first.heartbeat_at is not None and first.lease_owner == "host:4242:1"
    assert reap()["expired"] == 0  # a fresh lease is left alone
    Segment.objects.filter(pk=first.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=60))
    assert reap()["expired"] == 1
    first.refresh_from_db()
    job.refresh_from_db()
    assert first.status == S.ENQUEUE and first.iteration == 1 and first.lease_owner == ""
    assert job.iteration == 1 and job.status == S.PREPROCESSING  # the job does not move back
    event = job.events.filter(segment=0).last()
    assert (event.from_status, event.to_status, event.iteration) == (S.PREPROCESSING, S.ENQUEUE, 1)
    assert "lease expired" in event.message and "host:4242:1" in event.message
    # The other segments were not touched: their leases were never taken.
    assert set(job.segments.exclude(index=0).values_list("status", "iteration")) == {(S.ENQUEUE, 0)}
    # Work taken back from a dead worker goes to the head of the queue, before jobs not yet started.
    assert queue_order("preprocess") == [first.message_id, waiting.message_id]


def test_an_expired_segment_lease_past_the_limit_fails_the_job(owner, tmp_path, redis_clean, settings):
    settings.GEDGE_MAX_ITERATIONS = 1
    job = planned(owner, tmp_path, settings)
    second = job.segments.get(index=1)
    Segment.objects.filter(pk=second.pk).update(iteration=1)
    segment_transition(second.pk, S.ENQUEUE, S.PREPROCESSING, lease_owner="host:4242:1")
    Segment.objects.filter(pk=second.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=60))
    assert reap()["failed"] == 1
    job.refresh_from_db()
    assert job.status == S.FAILED and job.failed_stage == "preprocess"
    assert "segment 1" in job.error and "lease expired" in job.error and "gave up after 2 attempts" in job.error
    assert set(job.segments.values_list("status", flat=True)) == {S.FAILED}
    assert not job.work_dir.exists()
    counts = reap()  # an ended job is left alone
    assert (counts["expired"], counts["redispatched"], counts["failed"], counts["skipped"]) == (0, 0, 0, 0)


def test_a_lost_segment_message_is_sent_again_but_a_waiting_one_is_not(owner, tmp_path, redis_clean, settings):
    settings.GEDGE_REDISPATCH_AFTER_S = 0
    job = planned(owner, tmp_path, settings, window=2)
    sent = dict(job.segments.values_list("index", "message_id"))
    assert sent[0] and sent[1] and sent[2] == ""  # segment 2 waits for room in the window: no message
    assert reap()["redispatched"] == 0  # still waiting in the queue
    redis_clean.flushdb()  # Redis restarted and lost the queue
    assert reap()["redispatched"] == 2
    again = dict(job.segments.values_list("index", "message_id"))
    assert again[0] not in ("", sent[0]) and again[1] not in ("", sent[1])
    assert again[2] == "" and job.segments.get(index=2).dispatched_at is None, "a segment without room waits"
    assert sorted(queue_order("preprocess")) == sorted([again[0], again[1]])
    assert reap()["redispatched"] == 0


def test_a_lost_planning_message_is_sent_again(owner, tmp_path, redis_clean, settings):
    settings.GEDGE_REDISPATCH_AFTER_S = 0
    job = upload(owner, tmp_path)
    assert reap()["redispatched"] == 0  # still waiting in the queue
    redis_clean.flushdb()
    assert reap()["redispatched"] == 1
    first = job.message_id
    job.refresh_from_db()
    assert job.message_id != first and queue_order("preprocess") == [job.message_id]
    assert [m.actor_name for m in queued("preprocess")] == ["plan_job"]
    assert reap()["redispatched"] == 0
    plan_job(job.pk)
    assert job.segments.count() == 1 and reap()["redispatched"] == 0  # planned: no planning message needed


def test_a_stale_attempt_cannot_write_over_a_newer_one(owner, tmp_path, redis_clean, monkeypatch):
    job = upload(owner, tmp_path)
    plan_job(job.pk)
    segment = job.segments.get()
    real = runner.STAGE_BODIES["preprocess"]

    def paused_worker(job_, segment_, progress):
        fields = real(job_, segment_, progress)
        # While this worker was stalled its lease expired and another attempt took the segment over.
        segment_transition(segment_.pk, S.PREPROCESSING, S.ENQUEUE, attempt=segment_.attempt, message="reaped")
        segment_transition(segment_.pk, S.ENQUEUE, S.PREPROCESSING, lease_owner="newer")
        return fields

    monkeypatch.setitem(runner.STAGE_BODIES, "preprocess", paused_worker)
    run_segment_stage("preprocess", segment.pk)
    segment.refresh_from_db()
    job.refresh_from_db()
    assert segment.status == S.PREPROCESSING and segment.attempt == 2 and segment.lease_owner == "newer"
    assert segment.artifacts == {} and segment.stage_ms == {}  # the stale completion wrote nothing
    assert job.status == S.PREPROCESSING and not job.events.filter(to_status=S.PREPROCESSING_COMPLETE).exists()
    with pytest.raises(StaleTransition):
        segment_transition(segment.pk, S.PREPROCESSING, S.PREPROCESSING_COMPLETE, attempt=1)
    with pytest.raises(JobInterrupted):
        record_progress(segment.pk, S.PREPROCESSING, 1, {"preprocess_done": 1})
    # Nor can the stale attempt end the job that the newer one owns.
    assert not end_job(job, S.FAILED, "stale", only_if_segment=(segment.pk, S.PREPROCESSING, 1))
    job.refresh_from_db()
    assert job.status == S.PREPROCESSING
    # Each attempt writes under its own name: the stale one's frames are not the newer one's.
    assert (segment.dir / "a1-preprocess").is_dir() and not (segment.dir / "a2-preprocess").exists()


def test_postprocessing_complete_left_behind_is_finalised(owner, tmp_path, redis_clean, settings, monkeypatch):
    settings.GEDGE_REDISPATCH_AFTER_S = 0
    job = planned(owner, tmp_path, settings)
    real = runner._after_complete

    def dies_before_joining(job_, segment, stage):
        if stage.name != "postprocess":
            real(job_, segment, stage)

    # The worker dies right after the last segment's postprocessing completed, before the parts were joined.
    monkeypatch.setattr(runner, "_after_complete", dies_before_joining)
    for segment in job.segments.order_by("index"):
        for stage in ("preprocess", "inference", "postprocess"):
            run_segment_stage(stage, segment.pk)
    job.refresh_from_db()
    assert job.segment_count == 3 and job.segments_done == 3
    assert job.status == S.POSTPROCESSING_COMPLETE and not job.result_dir.exists()
    monkeypatch.undo()
    assert reap()["finalized"] == 1
    job.refresh_from_db()
    assert job.status == S.EXIT and job.summary["detections"] >= 0
    assert list(job.events.filter(segment__isnull=True).values_list("to_status", flat=True)) == list(PIPELINE)
    assert_nothing_lost(job)  # the three parts joined
    assert not job.work_dir.exists()
    assert reap()["finalized"] == 0


def slow_stage_env(media_root, stage: str, seconds: float, **extra) -> dict[str, str]:
    """Workers' environment: 0.5 s segments, and ``stage`` sleeping ``seconds`` once for
    each 32 frames it begins (jobs.workers.faults), so it is still running when the test acts, however fast this
    machine is."""
    return service_env(media_root, GEDGE_SEGMENT_S="0.5", GEDGE_PROGRESS_INTERVAL_S="0",
                       GEDGE_FAULT_SLOW_STAGE=f"{stage}:{seconds}", dramatiq_queue_prefetch="1", **extra)


def wait_for_segment(job: Job, running: str, logs, timeout: float = 120) -> Segment:
    """The first segment found in ``running`` with some frames done."""
    field = next(stage.progress_field for stage in STAGES.values() if stage.running == running)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        segment = job.segments.filter(status=running, **{f"{field}__gt": 0}).first()
        if segment is not None:
            return segment
        job.refresh_from_db()
        assert job.status not in (S.EXIT, S.FAILED, S.CANCELLED), (job.status, job.error, logs())
        time.sleep(0.05)
    raise AssertionError(f"no segment of job {job.pk} reached {running}\n{logs()}")


def test_sigterm_during_inference_hands_the_segment_back(owner, tmp_path, media_root, processes, redis_clean):
    # Two segments of 33 frames (two chunks: 32 and 1); inference sleeps 1 s per 32 frames begun: the stage is still
    # running when Dramatiq's worker process gets to its shutdown (it looks once a second).
    env = slow_stage_env(media_root, "inference", 1.0)
    processes.worker(["preprocess", "postprocess"], env)
    first = processes.worker(["inference"], env, name="inference-1")
    job = upload(owner, tmp_path, frames=66, every=33)
    segment = wait_for_segment(job, S.INFERENCING, processes.logs)
    first.send_signal(signal.SIGTERM)  # what Kubernetes does to a Pod being moved or scaled down
    processes.worker(["inference"], env, name="inference-2")
    assert first.wait(timeout=60) == 0, "the worker must stop cleanly within the grace period"
    job = wait_for_status(job.pk, {S.EXIT, S.FAILED}, timeout=180, logs=processes.logs)
    assert job.status == S.EXIT, job.error
    assert job.segment_count == 2 and job.iteration == 0, "a hand-back is not a failure"
    steps = segment_events(job, segment.index)
    handed = [i for i, (status, message) in enumerate(steps) if "handed back" in message]
    assert len(handed) == 1 and steps[handed[0]][0] == S.PREPROCESSING_COMPLETE, steps
    assert [status for status, _ in steps].count(S.INFERENCING) == 2
    assert job.segments.get(index=segment.index).iteration == 0
    assert job.inference_done == job.postprocess_done == job.frame_count == 66
    assert_nothing_lost(job)


def test_a_worker_killed_mid_segment_loses_nothing(owner, tmp_path, media_root, processes, redis_clean):
    """SIGKILL (the OOM killer, a lost node): the segment's lease expires, the reaper re-dispatches it, another
    worker runs it again; the job reaches Exit with every frame once."""
    env = slow_stage_env(media_root, "inference", 0.5, GEDGE_LEASE_TTL_S="2", GEDGE_REDISPATCH_AFTER_S="2")
    processes.worker(["preprocess", "postprocess"], env)
    first = processes.worker(["inference"], env, name="inference-1")
    processes.start("reaper", [sys.executable, "manage.py", "run_reaper", "--interval", "0.5"], env)
    job = upload(owner, tmp_path, frames=99, every=33)  # three segments of 33 frames: two chunks each
    segment = wait_for_segment(job, S.INFERENCING, processes.logs)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    processes.worker(["inference"], env, name="inference-2")
    job = wait_for_status(job.pk, {S.EXIT, S.FAILED}, timeout=180, logs=processes.logs)
    assert job.status == S.EXIT, job.error
    assert job.segment_count == 3
    killed = job.segments.get(index=segment.index)
    steps = segment_events(job, segment.index)
    assert any(status == S.PREPROCESSING_COMPLETE and "lease expired" in message for status, message in steps), steps
    assert killed.iteration >= 1 and job.iteration >= 1
    assert job.inference_done == job.postprocess_done == job.frame_count == 99
    assert_nothing_lost(job)


def test_cancel_mid_job_through_real_workers_removes_the_work_folder(api, owner, tmp_path, media_root, processes,
                                                                    redis_clean):
    env = slow_stage_env(media_root, "inference", 0.5)
    processes.worker(["preprocess"], env)
    processes.worker(["inference"], env)
    processes.worker(["postprocess"], env)
    job = upload(owner, tmp_path, frames=99, every=33)
    segment = wait_for_segment(job, S.INFERENCING, processes.logs)
    assert job.work_dir.is_dir()
    response = api.post(f"/api/jobs/{job.pk}/cancel/")
    assert response.status_code == 200, response.content
    job.refresh_from_db()
    assert job.status == S.CANCELLED
    cancelled_at = job.events.last().at
    # The running inference stops at its next chunk and removes what it wrote meanwhile.
    log = processes.log_dir / "worker-inference.log"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and f"inference of segment {segment.index} stopped" not in log.read_text():
        time.sleep(0.1)
    assert f"inference of segment {segment.index} stopped" in log.read_text(), processes.logs()
    time.sleep(1)
    assert not job.work_dir.exists(), list(job.work_dir.rglob("*"))
    assert not (job.result_dir / "annotated.mp4").exists()
    assert set(job.segments.values_list("status", flat=True)) <= {S.CANCELLED, S.POSTPROCESSING_COMPLETE}
    assert job.segments.get(index=segment.index).status == S.CANCELLED
    assert not JobEvent.objects.filter(job=job, at__gt=cancelled_at).exists(), "nothing ran after the cancel"


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
             "--restart-redis-at", "6", "--restart-postgres-at", "-1", "--timeout", "450",
             "--redis-restart-cmd", restart, "--logs", str(tmp_path / "logs")],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=540,
        )
    finally:
        subprocess.run(f"redis-cli -p {port} shutdown nosave", shell=True, check=False)
    output = result.stdout
    assert result.returncode == 0, output + result.stderr[-3000:]
    report = json.loads(output[: output.rindex("}") + 1])
    print("\nshort fault run:", json.dumps(report, indent=1))
    assert report["jobs_submitted"] == 8 and report["stuck"] == 0
    # Two jobs in three are cut into segments (60 frames, a keyframe every 15, 0.5 s segments: four).
    assert report["multi_segment_jobs"] >= 4 and report["segments"] >= 8 + 3 * 4
    assert report["duplicate_stage_completions"] == 0 and report["outputs_that_fail_to_decode"] == 0
    # Every Exit job's results hold each input frame once, whichever segments were killed mid-stage.
    assert report["lost_frames"] == 0 and report["doubled_frames"] == 0, report["frame_problems"]
    assert report["reached_exit"] == 7 and report["failed"] == 1  # only the poison job fails
    assert report["poison_job"].startswith("Failed") and "gave up" in report["poison_job"]
    # The job failed on the first lost attempt past the limit of one of its segments (each of its segments
    # crashes its worker). Every attempt of its poison stage ended in a crash, or in one of the test's own
    # kills where that landed on the worker holding the segment (a kill may also land just after the crash,
    # while the worker's parent process is going down).
    assert f"gave up after {settings.GEDGE_MAX_ITERATIONS + 1} attempts" in report["poison_job"]
    assert report["poison_segment_restarts"] == settings.GEDGE_MAX_ITERATIONS
    crashes, killed = report["worker_crashes_by_poison"], report["poison_attempts_killed"]
    assert 1 <= report["poison_attempts"] - killed <= crashes <= report["poison_attempts"], report
    # Kills come 4 s after every worker is up again: one at least, more where the machine is slower.
    assert report["redis_restarted"] and report["workers_sigkilled"] >= 1
    if report["segments_interrupted_by_kills"]:  # a kill landed mid-stage: that segment resumed elsewhere
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
