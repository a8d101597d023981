"""The job lifecycle over segments: the transition tables, the derived job status, compare-and-set, retries,
failures, cancel, backpressure and the work-storage budget (workers in this process, real PostgreSQL and
Redis; tests/test_topology.py and tests/test_faults.py run separate worker processes)."""
from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from jobs.lifecycle import runner
from jobs.lifecycle.runner import plan_job, run_segment_stage
from jobs.lifecycle.services import ActionNotAllowed, cancel_job, retry_job, submit_job
from jobs.lifecycle.transitions import (
    SEGMENT_TRANSITIONS,
    TRANSITIONS,
    IllegalTransition,
    StaleTransition,
    derived_status,
    transition,
)
from jobs.models import PIPELINE, Job, Segment, Status

from .conftest import make_video, wait_for_status, worker_in_process
from .helpers_media import street_with_keyframes

S = Status


def upload(owner, path, **kwargs):
    job, created = submit_job(owner, SimpleUploadedFile(path.name, path.read_bytes(), "video/mp4"), **kwargs)
    assert created
    return job


def small(owner, tmp_path, frames=6, **kwargs):
    return upload(owner, make_video(tmp_path / "clip.mp4", frames=frames), **kwargs)


def job_statuses(job):
    return list(job.events.filter(segment__isnull=True).values_list("to_status", flat=True))


def test_tables_cover_every_status_and_only_known_ones():
    assert set(TRANSITIONS) == set(Status.values) == set(SEGMENT_TRANSITIONS) | {S.EXIT}
    assert all(target in Status.values for targets in TRANSITIONS.values() for target in targets)
    for current, following in zip(PIPELINE, PIPELINE[1:], strict=False):
        assert TRANSITIONS[current] == {following, S.FAILED, S.CANCELLED}  # the job only moves forward
    assert TRANSITIONS[S.EXIT] == frozenset()
    assert TRANSITIONS[S.FAILED] == TRANSITIONS[S.CANCELLED] == {S.ENQUEUE}
    # A segment may go back from a running status to its ready one (retry, hand-back, expired lease).
    assert SEGMENT_TRANSITIONS[S.INFERENCING] == {S.INFERENCING_COMPLETE, S.PREPROCESSING_COMPLETE, S.FAILED,
                                                  S.CANCELLED}


@pytest.mark.parametrize(("segments", "current", "expected"), [
    ([S.ENQUEUE, S.ENQUEUE], S.ENQUEUE, S.ENQUEUE),
    ([S.PREPROCESSING, S.ENQUEUE], S.ENQUEUE, S.PREPROCESSING),
    # segment 0 is already being inferred: the job is still preprocessing until every segment is
    ([S.INFERENCING, S.PREPROCESSING], S.PREPROCESSING, S.PREPROCESSING),
    ([S.INFERENCING, S.PREPROCESSING_COMPLETE], S.PREPROCESSING, S.INFERENCING),
    ([S.PREPROCESSING_COMPLETE, S.PREPROCESSING_COMPLETE], S.PREPROCESSING, S.PREPROCESSING_COMPLETE),
    # a segment retried back to Enqueue does not move the job back
    ([S.ENQUEUE, S.POSTPROCESSING_COMPLETE], S.PREPROCESSING, S.PREPROCESSING),
    ([S.POSTPROCESSING_COMPLETE] * 3, S.POSTPROCESSING, S.POSTPROCESSING_COMPLETE),
])
def test_the_job_status_is_the_earliest_stage_not_all_segments_completed(segments, current, expected):
    assert derived_status(segments, current) == expected


@pytest.mark.django_db
def test_illegal_transition_raises_and_changes_nothing(owner, tmp_path, redis_clean):
    job = small(owner, tmp_path)
    with pytest.raises(IllegalTransition):
        transition(job.pk, S.ENQUEUE, S.EXIT)
    with pytest.raises(IllegalTransition):
        transition(job.pk, S.EXIT, S.ENQUEUE)
    job.refresh_from_db()
    assert job.status == S.ENQUEUE and job.events.count() == 1


@pytest.mark.django_db
def test_compare_and_set_rejects_a_second_identical_move(owner, tmp_path, redis_clean):
    job = small(owner, tmp_path)
    moved = transition(job.pk, S.ENQUEUE, S.PREPROCESSING)
    assert moved.version == job.version + 1 and moved.started_at is not None
    with pytest.raises(StaleTransition):
        transition(job.pk, S.ENQUEUE, S.PREPROCESSING)
    assert job_statuses(job) == [S.ENQUEUE, S.PREPROCESSING]


@pytest.mark.django_db(transaction=True)
def test_duplicate_plan_and_stage_messages_are_ignored(owner, tmp_path, redis_clean):
    job = small(owner, tmp_path)
    plan_job(job.pk)
    plan_job(job.pk)  # a redelivered planning message
    assert job.segments.count() == 1
    segment = job.segments.get()
    run_segment_stage("preprocess", segment.pk)
    segment.refresh_from_db()
    job.refresh_from_db()
    assert segment.status == S.PREPROCESSING_COMPLETE and job.status == S.PREPROCESSING_COMPLETE
    version = job.version
    run_segment_stage("preprocess", segment.pk)  # a redelivered stage message
    job.refresh_from_db()
    assert job.version == version and job.events.filter(segment=0, to_status=S.PREPROCESSING).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_multi_segment_job_passes_the_eight_statuses_in_order_with_the_boxes_of_an_unsegmented_run(
        owner, tmp_path, redis_clean, settings):
    from jobs.workers.detector import get_detector
    from stages.pipeline import process_video_file

    settings.GEDGE_SEGMENT_S = 0.5
    settings.GEDGE_SEGMENTS_IN_FLIGHT = 2
    settings.GEDGE_PROGRESS_INTERVAL_S = 0
    source = street_with_keyframes(tmp_path / "street.mp4", every=15)
    with worker_in_process(threads=3):
        job = upload(owner, source)
        job = wait_for_status(job.pk, {S.EXIT, S.FAILED}, timeout=180)
    assert job.status == S.EXIT, job.error
    assert job_statuses(job) == list(PIPELINE)
    assert job.segments.count() == 6 and job.window == 2 and job.frame_count == 84
    assert job.preprocess_done == job.inference_done == job.postprocess_done == 84 and job.progress == 1.0
    assert set(job.segments.values_list("status", flat=True)) == {S.POSTPROCESSING_COMPLETE}
    # Every segment went through the three stages, each a JobEvent of its own.
    for index in range(6):
        steps = list(job.events.filter(segment=index).values_list("to_status", flat=True))
        assert steps == list(PIPELINE[1:7]), (index, steps)
    # The results: the input's frame count, and the boxes of one unsegmented run of the same video.
    doc = json.loads((job.result_dir / "detections.json").read_text())
    alone = process_video_file(source, tmp_path / "alone", get_detector(), segment_s=3600)
    assert alone["segments"] == 1
    straight = json.loads((tmp_path / "alone" / "detections.json").read_text())
    assert [f["index"] for f in doc["frames"]] == list(range(84))
    assert doc["frames"] == straight["frames"] and doc["summary"] == straight["summary"]
    # ... and the same tracks: the tracker's state passed from segment to segment, so ids run on across the
    # cuts (every 15 frames) as they do in one pass.
    assert doc["tracks"] == straight["tracks"] and doc["summary"]["objects"]["person"] > 0
    assert any(t["first_frame"] < 15 <= t["last_frame"] for t in doc["tracks"])
    assert all(b["track_id"] > 0 for f in doc["frames"] for b in f["boxes"] if b["score"] >= 0.6)
    assert job.summary["detections"] == straight["summary"]["detections"] > 0
    import av

    with av.open(str(job.result_dir / "annotated.mp4")) as video:
        stream = video.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert sum(1 for _ in video.decode(stream)) == 84
    assert not job.work_dir.exists()
    # At most two segments held frames at once (the window); frames were never larger than the source.
    one_segment = 15 * 416 * 234 * 3
    assert 0 < job.work_bytes_peak <= 2 * one_segment + 4096


@pytest.mark.django_db(transaction=True)
def test_a_stage_that_fails_once_retries_that_segment_only(owner, tmp_path, redis_clean, settings, monkeypatch):
    settings.GEDGE_RETRY_BACKOFF_MS = 50
    settings.GEDGE_SEGMENT_S = 1.0
    real = runner.STAGE_BODIES["inference"]
    calls = []

    def flaky(job, segment, progress):
        calls.append((segment.index, segment.iteration))
        if segment.index == 1 and segment.iteration == 0:
            raise RuntimeError("GPU fell off the bus")
        return real(job, segment, progress)

    monkeypatch.setitem(runner.STAGE_BODIES, "inference", flaky)
    source = street_with_keyframes(tmp_path / "street.mp4", every=30)
    with worker_in_process(threads=2):
        job = upload(owner, source)
        job = wait_for_status(job.pk, {S.EXIT, S.FAILED}, timeout=120)
    assert job.status == S.EXIT, job.error
    assert job.segments.count() == 3 and job.iteration == 1
    assert sorted(calls) == [(0, 0), (1, 0), (1, 1), (2, 0)]
    assert job_statuses(job) == list(PIPELINE)
    # Only segment 1's inference ran again; its preprocessing happened once.
    seg1 = list(job.events.filter(segment=1).values_list("to_status", flat=True))
    assert seg1.count(S.PREPROCESSING) == 1 and seg1.count(S.INFERENCING) == 2
    retry = job.events.get(segment=1, from_status=S.INFERENCING, to_status=S.PREPROCESSING_COMPLETE)
    assert "GPU fell off the bus" in retry.message and retry.iteration == 1
    assert job.segments.get(index=1).iteration == 1
    assert (job.result_dir / "annotated.mp4").exists()


@pytest.mark.django_db(transaction=True)
def test_a_stage_that_always_fails_ends_the_job_failed_after_the_limit(owner, tmp_path, redis_clean, settings,
                                                                       monkeypatch):
    settings.GEDGE_RETRY_BACKOFF_MS = 20
    settings.GEDGE_MAX_ITERATIONS = 2

    def broken(job, segment, progress):
        raise ValueError("encoder exploded")

    monkeypatch.setitem(runner.STAGE_BODIES, "postprocess", broken)
    with worker_in_process(threads=2):
        job = small(owner, tmp_path)
        job = wait_for_status(job.pk, {S.EXIT, S.FAILED}, timeout=60)
    assert job.status == S.FAILED
    assert job.iteration == 2 and job.failed_stage == "postprocess"
    assert "encoder exploded" in job.error and "3 times" in job.error
    assert job.events.filter(segment=0, to_status=S.POSTPROCESSING).count() == 3
    assert job.ended_at is not None and not job.work_dir.exists()

    # A person retries it: planned again from the start; with the fault gone it finishes.
    monkeypatch.undo()
    with worker_in_process(threads=2):
        retried = retry_job(job, by="owner")
        assert retried.status == S.ENQUEUE and retried.iteration == 0 and not retried.segments.exists()
        job = wait_for_status(job.pk, {S.EXIT, S.FAILED}, timeout=60)
    assert job.status == S.EXIT and job.iteration == 0


@pytest.mark.django_db(transaction=True)
def test_unusable_input_fails_at_once_without_retries(owner, tmp_path, redis_clean):
    job = small(owner, tmp_path)
    job.source_path.write_bytes(b"this is not a video any more")  # e.g. the file was damaged after upload
    plan_job(job.pk)
    job.refresh_from_db()
    assert job.status == S.FAILED and job.iteration == 0
    assert "not a readable video" in job.error and job.failed_stage == "preprocess"


@pytest.mark.django_db
def test_non_video_upload_is_refused_at_once(api, redis_clean):
    response = api.post("/api/jobs/", {"video": SimpleUploadedFile("notes.mp4", b"hello, world\n" * 50)},
                        format="multipart")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "not_a_video"
    assert Job.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_cancel_stops_a_running_stage_at_the_next_batch_and_cleans_up(owner, tmp_path, redis_clean, settings,
                                                                     monkeypatch):
    settings.GEDGE_PROGRESS_INTERVAL_S = 0
    job = small(owner, tmp_path, frames=40)
    plan_job(job.pk)
    real = runner.STAGE_BODIES["preprocess"]

    def cancel_midway(job_, segment, progress):
        def progress_then_cancel(done, total):
            if done >= 1 and Job.objects.get(pk=job_.pk).status != S.CANCELLED:
                cancel_job(Job.objects.get(pk=job_.pk))
            progress(done, total)

        return real(job_, segment, progress_then_cancel)

    monkeypatch.setitem(runner.STAGE_BODIES, "preprocess", cancel_midway)
    run_segment_stage("preprocess", job.segments.get().pk)
    job.refresh_from_db()
    assert job.status == S.CANCELLED and job.ended_at is not None
    assert job.segments.get().status == S.CANCELLED
    assert not job.work_dir.exists()
    with pytest.raises(ActionNotAllowed):
        cancel_job(job)
    assert retry_job(job).status == S.ENQUEUE


@pytest.mark.django_db(transaction=True)
def test_a_job_whose_one_segment_exceeds_the_work_budget_fails_at_once(owner, tmp_path, redis_clean, settings):
    settings.GEDGE_WORK_BUDGET_BYTES = 1_000_000  # 1 MB: less than one 320x240 segment of 40 frames
    job = small(owner, tmp_path, frames=40)
    plan_job(job.pk)
    job.refresh_from_db()
    assert job.status == S.FAILED and not job.segments.exists()
    assert "work-storage budget" in job.error and "GEDGE_WORK_BUDGET_BYTES" in job.error


@pytest.mark.django_db(transaction=True)
def test_the_budget_narrows_the_window_and_later_segments_wait(owner, tmp_path, redis_clean, settings):
    settings.GEDGE_SEGMENT_S = 0.5
    one_segment = 15 * 416 * 234 * 3
    settings.GEDGE_WORK_BUDGET_BYTES = int(1.5 * one_segment)  # room for one segment's frames at a time
    job = upload(owner, street_with_keyframes(tmp_path / "street.mp4", every=15))
    plan_job(job.pk)
    job.refresh_from_db()
    assert job.window == 1
    dispatched = list(job.segments.exclude(message_id="").values_list("index", flat=True))
    assert dispatched == [0], "backpressure: later segments wait for room, they do not fail"
    with worker_in_process(threads=3):
        job = wait_for_status(job.pk, {S.EXIT, S.FAILED}, timeout=180)
    assert job.status == S.EXIT, job.error
    assert 0 < job.work_bytes_peak <= settings.GEDGE_WORK_BUDGET_BYTES


@pytest.mark.django_db(transaction=True)
def test_a_tiny_video_is_not_scaled_up_on_disk(owner, tmp_path, redis_clean):
    job = upload(owner, make_video(tmp_path / "tiny.mp4", width=16, height=16, frames=30))
    plan_job(job.pk)
    segment = job.segments.get()
    run_segment_stage("preprocess", segment.pk)
    segment.refresh_from_db()
    assert segment.status == S.PREPROCESSING_COMPLETE
    frames = job.job_dir / segment.artifacts["frames"] / "frames"
    stored = sum(p.stat().st_size for p in frames.glob("chunk_*.npy"))
    assert segment.work_bytes == stored and stored < 30 * 16 * 16 * 3 + 4096  # 16x16, not 416x416
    assert Segment.objects.filter(job=job).count() == 1


@pytest.mark.django_db
def test_a_job_with_less_left_goes_to_the_head_of_a_queue(owner):
    from jobs.lifecycle.transitions import STAGES, goes_first
    from tests.helpers_media import make_job

    def job_with(segments: int, status=S.ENQUEUE, queued: int = 0):
        job = make_job(owner, S.PREPROCESSING)
        Segment.objects.bulk_create([
            Segment(job=job, index=i, first_frame=i * 10, frame_count=10, start_pts=i, time_base="1/30",
                    status=status, message_id=f"m{job.pk}-{i}" if i < queued else "")
            for i in range(segments)])
        return job

    pre = STAGES["preprocess"]
    long = job_with(12, queued=6)  # a long job: six segments queued for preprocessing
    assert goes_first(long.pk, pre) is False, "alone in the queue: first in, first out"
    short = job_with(1, queued=1)
    assert goes_first(short.pk, pre) is True  # 1 segment left against 12: ahead of the long job
    assert goes_first(long.pk, pre) is False  # and the long job's next ones stay behind it
    # At inference, what counts is what each job has left to infer.
    inf = STAGES["inference"]
    assert goes_first(short.pk, inf) is False, "nothing else waits for inference yet"
    Segment.objects.filter(job=long, index__lt=2).update(status=S.PREPROCESSING_COMPLETE)
    assert goes_first(short.pk, inf) is True
    two = job_with(2, status=S.PREPROCESSING_COMPLETE, queued=2)
    assert goes_first(two.pk, inf) is True and goes_first(long.pk, inf) is False


@pytest.mark.django_db
def test_a_running_stage_gives_way_to_a_job_with_less_left(owner):
    from jobs.lifecycle.transitions import GIVE_BACK, GO, PAUSE, STAGES, can_give_way, fair_turn
    from tests.helpers_media import make_job

    def job_with(segments: int, running: str = ""):
        job = make_job(owner, S.PREPROCESSING)
        Segment.objects.bulk_create([
            Segment(job=job, index=i, first_frame=i * 10, frame_count=10, start_pts=i, time_base="1/30",
                    status=S.INFERENCING if i == 0 and running else S.ENQUEUE, lease_owner=running if i == 0 else "")
            for i in range(segments)])
        return job

    inference, cpu = [STAGES["inference"]], [STAGES["preprocess"], STAGES["postprocess"]]  # the two Pods
    long = job_with(12, running="edge-1:10:1")
    assert fair_turn(long.pk, inference, "edge-1") == GO, "nothing else runs"
    short = job_with(1)
    assert fair_turn(long.pk, inference, "edge-1") == GO, "the short job is not in a queue yet"
    from datetime import timedelta

    from django.utils import timezone

    Segment.objects.filter(job=short).update(message_id="m1", dispatched_at=timezone.now())
    # 1 segment left against 12, just sent for preprocessing: a CPU worker (preprocess and postprocess queues)
    # gives its segment back, whichever of the two stages it runs; the inference worker pauses (the hand-off is
    # under way: the short job's stage is about to have the cores).
    assert fair_turn(long.pk, cpu, "edge-1") == GIVE_BACK and fair_turn(long.pk, inference, "edge-1") == PAUSE
    # Waiting for longer than a hand-off takes, the message has no free worker: pausing would not help.
    Segment.objects.filter(job=short).update(dispatched_at=timezone.now() - timedelta(seconds=10))
    assert fair_turn(long.pk, cpu, "edge-1") == GIVE_BACK and fair_turn(long.pk, inference, "edge-1") == GO

    Segment.objects.filter(job=short).update(dispatched_at=timezone.now() + timedelta(seconds=5))
    assert fair_turn(long.pk, cpu, "edge-1") == GO, "a retry waiting out its backoff is not due: no churn"
    Segment.objects.filter(job=short).update(status=S.PREPROCESSING, lease_owner="edge-1:11:1", message_id="")
    assert fair_turn(long.pk, inference, "edge-1") == PAUSE  # running here: leave it the cores
    assert fair_turn(short.pk, inference, "edge-1") == GO  # and never the other way round
    assert fair_turn(long.pk, inference, "edge-2") == GO, "another host's cores are not shared"
    Segment.objects.filter(job=short).update(status=S.POSTPROCESSING_COMPLETE, lease_owner="")
    assert fair_turn(long.pk, inference, "edge-1") == GO
    # A new job's plan waits on the preprocess queue: its segments are counted from its duration.
    planned = make_job(owner, S.ENQUEUE)
    Job.objects.filter(pk=planned.pk).update(duration_s=3.0, message_id="plan-1", dispatched_at=timezone.now())
    assert fair_turn(long.pk, cpu, "edge-1") == GIVE_BACK and fair_turn(long.pk, inference, "edge-1") == PAUSE
    Job.objects.filter(pk=planned.pk).update(duration_s=3600.0)  # an hour: more left than the long job
    assert fair_turn(long.pk, cpu, "edge-1") == GO
    # Only a job with more than one segment left can meet one with fewer: a one-segment job's stages skip
    # every give-way query, and the long job's last segment does too.
    assert can_give_way(long.pk) and not can_give_way(short.pk)
    Segment.objects.filter(job=long, index__gt=0).update(status=S.POSTPROCESSING_COMPLETE)
    assert not can_give_way(long.pk)


@pytest.mark.django_db
def test_one_waiting_message_makes_one_worker_give_way(owner, monkeypatch):
    """Each waiting message of a shorter job is claimed by the first thread of a worker process that gives way
    for it: a second thread of that process pauses instead (the shorter job is about to run there), and a claim
    nobody acted on lapses. (Each process claims for itself: another may hold the message in its prefetch.)"""
    import time

    from django.utils import timezone

    from jobs.lifecycle import transitions
    from jobs.lifecycle.transitions import GIVE_BACK, PAUSE, STAGES, fair_turn
    from tests.helpers_media import make_job

    monkeypatch.setattr(transitions, "GIVE_WAY_CLAIM_S", 1)
    cpu = [STAGES["preprocess"], STAGES["postprocess"]]
    jobs = {}
    for name, count in (("long", 12), ("short", 1)):
        jobs[name] = make_job(owner, S.PREPROCESSING)
        Segment.objects.bulk_create([Segment(job=jobs[name], index=i, first_frame=i * 10, frame_count=10,
                                             start_pts=i, time_base="1/30", status=S.ENQUEUE,
                                             message_id=f"{name}-{i}", dispatched_at=timezone.now())
                                     for i in range(count)])
    long = jobs["long"].pk
    assert fair_turn(long, cpu, "edge-1", "edge-1:20:1") == GIVE_BACK
    assert fair_turn(long, cpu, "edge-1", "edge-1:20:1") == GIVE_BACK, "its own claim holds"
    assert fair_turn(long, cpu, "edge-1", "edge-1:20:2") == PAUSE
    time.sleep(1.2)
    assert fair_turn(long, cpu, "edge-1", "edge-1:20:2") == GIVE_BACK, "the first claim lapsed"
    # A second waiting segment of a shorter job is a second message to claim.
    two = make_job(owner, S.PREPROCESSING)
    Segment.objects.bulk_create([Segment(job=two, index=i, first_frame=i * 10, frame_count=10, start_pts=i,
                                         time_base="1/30", status=S.ENQUEUE, message_id=f"two-{i}",
                                         dispatched_at=timezone.now()) for i in range(2)])
    assert fair_turn(long, cpu, "edge-1", "edge-1:20:3") == GIVE_BACK
    assert fair_turn(long, cpu, "edge-1", "edge-1:20:4") == GIVE_BACK
    assert fair_turn(long, cpu, "edge-1", "edge-1:20:5") == PAUSE


@pytest.mark.django_db
def test_a_stage_message_behind_a_shorter_waiting_job_goes_back_to_its_queue_unstarted(owner, redis_clean):
    from jobs.lifecycle.runner import run_segment_stage
    from tests.helpers_media import make_job

    def job_with(segments: int):
        job = make_job(owner, S.PREPROCESSING)
        Segment.objects.bulk_create([
            Segment(job=job, index=i, first_frame=i * 10, frame_count=10, start_pts=i, time_base="1/30",
                    status=S.ENQUEUE, message_id=f"m{job.pk}-{i}") for i in range(segments)])
        return job

    long = job_with(12)
    job_with(1)  # a short job, waiting for preprocessing
    first = Segment.objects.get(job=long, index=0)
    run_segment_stage("preprocess", first.pk)  # the worker took the long job's message first
    first.refresh_from_db()
    assert first.status == S.ENQUEUE and first.attempt == 0, "not started"
    assert first.message_id != f"m{long.pk}-0", "sent again, behind the short job"
    assert not long.events.exists()


@pytest.mark.django_db
def test_a_segment_after_one_postprocessed_without_tracking_fails_its_job_with_the_reason(owner, redis_clean):
    """A job in flight across an upgrade: its segment 0 finished before tracking existed."""
    from jobs.lifecycle.transitions import segment_transition
    from tests.helpers_media import make_job

    job = make_job(owner, S.POSTPROCESSING)
    first, second = Segment.objects.bulk_create([
        Segment(job=job, index=i, first_frame=i * 10, frame_count=10, start_pts=i, time_base="1/30", status=status)
        for i, status in enumerate((S.POSTPROCESSING_COMPLETE, S.INFERENCING))])
    segment_transition(second.pk, S.INFERENCING, S.INFERENCING_COMPLETE)
    second.refresh_from_db()
    assert second.message_id, "sent, not left waiting for a state that will never come"
    run_segment_stage("postprocess", second.pk)
    job.refresh_from_db()
    assert job.status == S.FAILED and "without tracking" in job.error and "retry" in job.error
