"""What the views, the admin, the commands and the actors call: submit, cancel, retry, run a stage."""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dramatiq
from django.conf import settings
from django.db import DatabaseError, transaction

from stages.errors import ModelError, UnprocessableInput
from stages.inference import run_inference
from stages.postprocess import ANNOTATED, DETECTIONS_JSON, EncoderSettings, postprocess_detections
from stages.preprocess import preprocess_video
from stages.video import probe_video

from . import metrics
from .broadcast import push_job
from .detector import get_detector, model_input_size
from .faults import maybe_crash, maybe_slow
from .leases import HandBack, Lease, owner_name
from .models import ACTIVE, TERMINAL, Job, Status
from .transitions import (
    STAGE_BY_RUNNING,
    STAGES,
    JobInterrupted,
    Stage,
    StaleTransition,
    record_progress,
    transition,
)

logger = logging.getLogger(__name__)
MODEL_FACTS = "model.json"


class ActionNotAllowed(Exception):
    """Cancel or retry asked of a job in a status that does not allow it."""


class TooManyActiveJobs(Exception):
    """The user already has GEDGE_MAX_ACTIVE_JOBS_PER_USER jobs that have not ended."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"you already have {limit} jobs that have not ended; wait for one to finish or cancel one")
        self.limit = limit


# --- stage bodies: job row in, stage function called, fields for the completing transition out ---


def _preprocess(job: Job, progress: Callable[[int, int], None]) -> dict[str, Any]:
    from .uploads import video_limits

    limits = video_limits()
    info = probe_video(job.source_path, limits)
    out = attempt_dir(job, "preprocess")
    result = preprocess_video(
        job.source_path, out, model_input_size(),
        enhance=bool(job.params.get("enhance")), expected_frames=info.frame_count,
        limits=limits, progress=progress,
    )
    return {"width": result.width, "height": result.height, "fps": result.fps, "frame_count": result.frame_count,
            "duration_s": info.duration_s, "preprocess_done": result.frame_count,
            "artifacts": {"frames": _rel(job, out)}}


def _inference(job: Job, progress: Callable[[int, int], None]) -> dict[str, Any]:
    detector = get_detector()
    frames, out = job.job_dir / job.artifacts["frames"], attempt_dir(job, "inference")
    result = run_inference(frames, detector, progress=progress, out_dir=out)
    (out / MODEL_FACTS).write_text(json.dumps(detector.facts))
    params = {**job.params, **detector.parameters}
    return {"model_name": detector.name, "model_sha256": detector.sha256, "params": params,
            "inference_done": result.frame_count, "artifacts": {**job.artifacts, "detections": _rel(job, out)}}


def _postprocess(job: Job, progress: Callable[[int, int], None]) -> dict[str, Any]:
    detections, out = job.job_dir / job.artifacts["detections"], attempt_dir(job, "postprocess")
    model = json.loads((detections / MODEL_FACTS).read_text())
    video = {"width": job.width, "height": job.height, "fps": job.fps, "frame_count": job.frame_count,
             "duration_s": job.duration_s, "type": job.type}
    result = postprocess_detections(
        job.source_path, detections, out, video=video, model=model, parameters=job.params,
        encoder=EncoderSettings(preset=settings.GEDGE_X264_PRESET, crf=settings.GEDGE_X264_CRF),
        progress=progress,
    )
    return {"summary": {"detections": result.detections, "per_class": result.per_class},
            "postprocess_done": result.frame_count, "artifacts": {**job.artifacts, "result": _rel(job, out)}}


def attempt_dir(job: Job, stage: str) -> Path:
    """Each stage attempt writes under its own name, so a stale attempt never touches a newer one's files."""
    path = job.work_dir / f"a{job.attempt}-{stage}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _rel(job: Job, path: Path) -> str:
    return str(path.relative_to(job.job_dir))


def _after_complete(job: Job, stage: Stage) -> None:
    """Once the completing transition won, drop what the next stage no longer needs; publish results."""
    if stage.name == "inference":
        shutil.rmtree(job.job_dir / job.artifacts["frames"], ignore_errors=True)
    elif stage.name == "postprocess":
        finalize_job(job)


def finalize_job(job: Job) -> Job:
    """Postprocessing_complete -> Exit: move the winning attempt's results into place, drop the work folder.

    Idempotent, so the reaper can finish a job whose worker died between the two steps.
    """
    source = job.job_dir / job.artifacts.get("result", "-")
    job.result_dir.mkdir(parents=True, exist_ok=True)
    for name in (ANNOTATED, DETECTIONS_JSON):
        if (source / name).exists():
            os.replace(source / name, job.result_dir / name)
    cleanup_work(job)
    return transition(job.pk, Status.POSTPROCESSING_COMPLETE, Status.EXIT, message="results ready")


STAGE_BODIES: dict[str, Callable[[Job, Callable[[int, int], None]], dict[str, Any]]] = {
    "preprocess": _preprocess,
    "inference": _inference,
    "postprocess": _postprocess,
}


class _Progress:
    """Stores frames done at most every GEDGE_PROGRESS_INTERVAL_S and pushes it.

    Raises JobInterrupted (cancelled, lease lost) or HandBack (worker stopping) at batch boundaries.
    """

    def __init__(self, job: Job, stage: Stage, lease: Lease) -> None:
        self.job, self.stage, self.lease = job, stage, lease
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        maybe_slow(self.stage.name)
        self.lease.check()
        now = time.monotonic()
        if done < total and now - self.last < settings.GEDGE_PROGRESS_INTERVAL_S:
            return
        self.last = now
        fields: dict[str, Any] = {self.stage.progress_field: done}
        if total and total != self.job.frame_count and self.stage.name == "preprocess":
            fields["frame_count"] = total
        job = record_progress(self.job.pk, self.stage.running, self.job.attempt, fields)
        self.job.frame_count = job.frame_count
        push_job(job)


def run_stage(stage_name: str, job_id: int) -> None:
    """Run one stage of one job; safe to call twice with the same message (the second is ignored)."""
    stage = STAGES[stage_name]
    try:
        job = transition(job_id, stage.ready, stage.running, message=f"{stage.name} started",
                         lease_owner=owner_name())
    except StaleTransition:
        logger.info("duplicate or late %s message ignored", stage.name, extra={"job_id": job_id})
        return
    maybe_crash(job.original_name, stage.name, job.pk)
    started = time.perf_counter()
    try:
        with Lease(job.pk, stage.running, job.attempt) as lease:
            fields = STAGE_BODIES[stage.name](job, _Progress(job, stage, lease))
            lease.check()
    except JobInterrupted:
        job.refresh_from_db()
        logger.info("%s stopped: job is %s", stage.name, job.status, extra={"job_id": job_id})
        if job.status == Status.CANCELLED:
            cleanup_work(job)
        return
    except HandBack:
        _hand_back(job, stage)
        return
    except (UnprocessableInput, ModelError) as exc:
        _fail(job, stage, str(exc) if isinstance(exc, UnprocessableInput) else f"model: {exc}")
        return
    except Exception as exc:  # noqa: BLE001 - any crash of stage code is retried, then fails the job
        logger.exception("%s crashed", stage.name, extra={"job_id": job_id})
        _retry_or_fail(job, stage, f"{exc.__class__.__name__}: {exc}")
        return
    stage_ms = {**job.stage_ms, stage.name: round((time.perf_counter() - started) * 1000)}
    try:
        job = transition(job_id, stage.running, stage.complete, fields={**fields, "stage_ms": stage_ms},
                         message=f"{stage.name} done", attempt=job.attempt)
    except StaleTransition:
        logger.info("%s finished but the job moved on (cancelled?)", stage.name, extra={"job_id": job_id})
        return
    metrics.observe_stage(stage.name, stage_ms[stage.name] / 1000, fields.get(stage.progress_field, 0))
    _after_complete(job, stage)


def _hand_back(job: Job, stage: Stage) -> None:
    """Worker shutdown: return the job to its ready status for another worker; not an error, no iteration."""
    try:
        transition(job.pk, stage.running, stage.ready, attempt=job.attempt, dispatch_front=True,
                   message=f"{stage.name} handed back: worker shutting down")
    except StaleTransition:
        pass


def _retry_or_fail(job: Job, stage: Stage, reason: str) -> None:
    iteration = job.iteration + 1
    if iteration > settings.GEDGE_MAX_ITERATIONS:
        _fail(job, stage, f"{stage.name} failed {iteration} times; last error: {reason}")
        return
    delay = settings.GEDGE_RETRY_BACKOFF_MS * 2 ** (iteration - 1)
    try:
        transition(job.pk, stage.running, stage.ready, fields={"iteration": iteration, "error": reason},
                   message=f"{stage.name} failed ({reason}); retry {iteration} in {delay / 1000:g} s",
                   dispatch_delay_ms=delay, attempt=job.attempt)
    except StaleTransition:  # the lease was taken over meanwhile: the newer attempt owns the job
        return
    metrics.count_retry(stage.name)


def _fail(job: Job, stage: Stage, reason: str) -> None:
    try:
        transition(job.pk, stage.running, Status.FAILED, fields={"error": reason, "failed_stage": stage.name},
                   message=reason, attempt=job.attempt)
    except StaleTransition:
        return
    metrics.count_failure(stage.name)


def cleanup_work(job: Job) -> None:
    shutil.rmtree(job.work_dir, ignore_errors=True)


def cancel_job(job: Job) -> Job:
    """Cancel a job that has not ended; a running stage stops at its next batch boundary."""
    for _ in range(5):  # the status may move under us; re-read and try again
        job.refresh_from_db()
        if job.status in TERMINAL:
            raise ActionNotAllowed(f"a job that is {job.status} cannot be cancelled")
        try:
            job = transition(job.pk, job.status, Status.CANCELLED, message="cancelled by " + job.user.username)
        except StaleTransition:
            continue
        if job.status not in STAGE_BY_RUNNING:
            cleanup_work(job)
        return job
    raise ActionNotAllowed("the job is changing too fast to cancel; try again")


def retry_job(job: Job, by: str = "") -> Job:
    """Send a Failed or Cancelled job back, from the failed stage where its input is still there."""
    job.refresh_from_db()
    if job.status == Status.FAILED and job.failed_stage in STAGES and _stage_input_present(job):
        target = STAGES[job.failed_stage].ready
    elif job.status in (Status.FAILED, Status.CANCELLED):
        target = Status.ENQUEUE
    else:
        raise ActionNotAllowed(f"a job that is {job.status} cannot be retried")
    fields: dict[str, Any] = {"iteration": 0, "failed_stage": "", "ended_at": None}
    if target == Status.ENQUEUE:
        fields.update(preprocess_done=0, inference_done=0, postprocess_done=0, stage_ms={})
    try:
        return transition(job.pk, job.status, target, fields=fields,
                          message=f"retry{' by ' + by if by else ''} from {target}")
    except StaleTransition as exc:
        raise ActionNotAllowed("the job changed; reload and try again") from exc


def _stage_input_present(job: Job) -> bool:
    if job.failed_stage == "preprocess":
        return True
    key = "frames" if job.failed_stage == "inference" else "detections"
    return key in job.artifacts and (job.job_dir / job.artifacts[key]).is_dir()


def _check_queue_reachable() -> None:
    """Refuse an upload (503) while Redis is down rather than accept a job no worker can be told about."""
    client = getattr(dramatiq.get_broker(), "client", None)
    if client is not None:
        client.ping()


def _check_active_cap(user) -> None:
    limit = settings.GEDGE_MAX_ACTIVE_JOBS_PER_USER
    if limit and Job.objects.filter(user=user, status__in=ACTIVE).count() >= limit:
        raise TooManyActiveJobs(limit)


def submit_job(user, uploaded, *, client_token: str = "", enhance: bool = False) -> tuple[Job, bool]:
    """Store and probe an upload and create its job; (existing job, False) for a repeated client_token.

    Raises TooManyActiveJobs where the user is at GEDGE_MAX_ACTIVE_JOBS_PER_USER.
    """
    from .transitions import create_job
    from .uploads import clean_original_name, discard_upload, job_type, store_upload

    if client_token:
        existing = Job.objects.filter(user=user, client_token=client_token).first()
        if existing is not None:
            return existing, False
    _check_active_cap(user)  # refuse before spending time storing and probing the file
    _check_queue_reachable()
    path, info, size = store_upload(user.pk, uploaded)
    name = clean_original_name(uploaded.name or "")
    try:
        with transaction.atomic():
            # One user's submissions take turns here, so two at once cannot both slip under the cap.
            # _meta.model, not type(user): a session user is a SimpleLazyObject, which has no manager.
            user._meta.model.objects.select_for_update().filter(pk=user.pk).values_list("pk", flat=True).get()
            _check_active_cap(user)
            job = create_job(
                user=user, path=path, type=job_type(name, info), original_name=name, size_bytes=size,
                client_token=client_token, width=info.width, height=info.height, fps=info.fps,
                frame_count=info.frame_count, duration_s=info.duration_s, params={"enhance": enhance},
            )
    except (TooManyActiveJobs, DatabaseError):  # IntegrityError included; an outage leaves no stray file
        discard_upload(path)
        if client_token:  # the same token raced in from a parallel request: that one's job is the answer
            existing = Job.objects.filter(user=user, client_token=client_token).first()
            if existing is not None:
                return existing, False
        raise
    return job, True
