"""The job lifecycle: the transition table, compare-and-set, retries, failures, cancel."""
from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from jobs.lifecycle import runner
from jobs.lifecycle.runner import run_stage
from jobs.lifecycle.services import ActionNotAllowed, cancel_job, retry_job, submit_job
from jobs.lifecycle.transitions import TRANSITIONS, IllegalTransition, StaleTransition, transition
from jobs.models import PIPELINE, Job, Status

from .conftest import make_video, wait_for_status, worker_in_process


def upload(owner, tmp_path, **kwargs):
    path = make_video(tmp_path / "clip.mp4", frames=6)
    job, created = submit_job(owner, SimpleUploadedFile("clip.mp4", path.read_bytes(), "video/mp4"), **kwargs)
    assert created
    return job


def test_table_covers_every_status_and_only_known_ones():
    assert set(TRANSITIONS) == set(Status.values)
    assert all(target in Status.values for targets in TRANSITIONS.values() for target in targets)
    for current, following in zip(PIPELINE, PIPELINE[1:]):
        assert following in TRANSITIONS[current]
    assert TRANSITIONS[Status.EXIT] == frozenset()


@pytest.mark.django_db
def test_illegal_transition_raises_and_changes_nothing(owner, tmp_path, redis_clean):
    job = upload(owner, tmp_path)
    with pytest.raises(IllegalTransition):
        transition(job.pk, Status.ENQUEUE, Status.EXIT)
    with pytest.raises(IllegalTransition):
        transition(job.pk, Status.EXIT, Status.ENQUEUE)
    job.refresh_from_db()
    assert job.status == Status.ENQUEUE and job.events.count() == 1


@pytest.mark.django_db
def test_compare_and_set_rejects_a_second_identical_move(owner, tmp_path, redis_clean):
    job = upload(owner, tmp_path)
    moved = transition(job.pk, Status.ENQUEUE, Status.PREPROCESSING)
    assert moved.version == job.version + 1 and moved.started_at is not None
    with pytest.raises(StaleTransition):
        transition(job.pk, Status.ENQUEUE, Status.PREPROCESSING)
    assert list(job.events.values_list("to_status", flat=True)) == [Status.ENQUEUE, Status.PREPROCESSING]


@pytest.mark.django_db(transaction=True)
def test_duplicate_stage_message_is_ignored(owner, tmp_path, redis_clean):
    job = upload(owner, tmp_path)
    run_stage("preprocess", job.pk)
    job.refresh_from_db()
    assert job.status == Status.PREPROCESSING_COMPLETE
    version = job.version
    run_stage("preprocess", job.pk)  # a redelivered message
    job.refresh_from_db()
    assert job.status == Status.PREPROCESSING_COMPLETE and job.version == version
    assert job.events.filter(to_status=Status.PREPROCESSING).count() == 1


@pytest.mark.django_db(transaction=True)
def test_stage_that_fails_once_is_retried_and_the_job_exits(owner, tmp_path, redis_clean, settings, monkeypatch):
    settings.GEDGE_RETRY_BACKOFF_MS = 50
    real = runner.STAGE_BODIES["inference"]
    calls = []

    def flaky(job, progress):
        calls.append(job.iteration)
        if len(calls) == 1:
            raise RuntimeError("GPU fell off the bus")
        return real(job, progress)

    monkeypatch.setitem(runner.STAGE_BODIES, "inference", flaky)
    with worker_in_process(threads=2):
        job = upload(owner, tmp_path)
        job = wait_for_status(job.pk, {Status.EXIT, Status.FAILED}, timeout=60)
    assert job.status == Status.EXIT, job.error
    assert job.iteration == 1 and calls == [0, 1]
    statuses = list(job.events.values_list("to_status", flat=True))
    # Only the failed stage re-ran: preprocessing happened once.
    assert statuses.count(Status.PREPROCESSING) == 1 and statuses.count(Status.INFERENCING) == 2
    retry_event = job.events.get(from_status=Status.INFERENCING, to_status=Status.PREPROCESSING_COMPLETE)
    assert "GPU fell off the bus" in retry_event.message and retry_event.iteration == 1
    assert (job.result_dir / "annotated.mp4").exists()


@pytest.mark.django_db(transaction=True)
def test_stage_that_always_fails_ends_failed_after_the_limit(owner, tmp_path, redis_clean, settings,
                                                              monkeypatch):
    settings.GEDGE_RETRY_BACKOFF_MS = 20
    settings.GEDGE_MAX_ITERATIONS = 2

    def broken(job, progress):
        raise ValueError("encoder exploded")

    monkeypatch.setitem(runner.STAGE_BODIES, "postprocess", broken)
    with worker_in_process(threads=2):
        job = upload(owner, tmp_path)
        job = wait_for_status(job.pk, {Status.EXIT, Status.FAILED}, timeout=60)
    assert job.status == Status.FAILED
    assert job.iteration == 2 and job.failed_stage == "postprocess"
    assert "encoder exploded" in job.error and "3 times" in job.error
    assert job.events.filter(to_status=Status.POSTPROCESSING).count() == 3
    assert job.ended_at is not None

    # A person retries the dead letter from the failed stage; with the fault gone it finishes.
    monkeypatch.undo()
    with worker_in_process(threads=2):
        retried = retry_job(job, by="owner")
        assert retried.status == Status.INFERENCING_COMPLETE and retried.iteration == 0
        job = wait_for_status(job.pk, {Status.EXIT, Status.FAILED}, timeout=60)
    assert job.status == Status.EXIT and job.events.filter(to_status=Status.PREPROCESSING).count() == 1


@pytest.mark.django_db(transaction=True)
def test_unusable_input_fails_at_once_without_retries(owner, tmp_path, redis_clean, settings):
    job = upload(owner, tmp_path)
    job.source_path.write_bytes(b"this is not a video any more")  # e.g. the file was damaged after upload
    run_stage("preprocess", job.pk)
    job.refresh_from_db()
    assert job.status == Status.FAILED and job.iteration == 0
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
    job = upload(owner, tmp_path)
    real = runner.STAGE_BODIES["preprocess"]

    def cancel_midway(job_, progress):
        def progress_then_cancel(done, total):
            if done >= 1 and Job.objects.get(pk=job_.pk).status != Status.CANCELLED:
                cancel_job(Job.objects.get(pk=job_.pk))
            progress(done, total)

        return real(job_, progress_then_cancel)

    monkeypatch.setitem(runner.STAGE_BODIES, "preprocess", cancel_midway)
    run_stage("preprocess", job.pk)
    job.refresh_from_db()
    assert job.status == Status.CANCELLED and job.ended_at is not None
    assert not job.work_dir.exists()
    with pytest.raises(ActionNotAllowed):
        cancel_job(job)
    assert retry_job(job).status == Status.ENQUEUE
