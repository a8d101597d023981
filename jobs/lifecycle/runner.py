"""Running one stage of one job in a worker: the actors call :func:`run_stage`.

A stage moves its job from its ready status to its running status (a compare-and-set: a duplicate or late
message changes nothing), runs the plain stage code from ``stages/`` under a lease, and on success moves the
job to the stage's complete status, which dispatches the next stage. A crash is retried with a backoff and
counted in ``iteration``; an input or model error fails the job; a stopping worker hands the job back.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings

from jobs.models import Job, Status
from jobs.workers import stage_metrics
from jobs.workers.detector import get_detector, model_input_size
from jobs.workers.faults import maybe_crash, maybe_slow
from stages.errors import ModelError, UnprocessableInput
from stages.inference import run_inference
from stages.postprocess import EncoderSettings, postprocess_detections
from stages.preprocess import preprocess_video
from stages.video import probe_video

from .broadcast import push_job
from .leases import HandBack, Lease, owner_name
from .services import cleanup_work, finalize_job
from .transitions import STAGES, JobInterrupted, Stage, StaleTransition, record_progress, transition
from .uploads import video_limits

logger = logging.getLogger(__name__)
MODEL_FACTS = "model.json"


# --- stage bodies: job row in, stage function called, fields for the completing transition out ---


def _preprocess(job: Job, progress: Callable[[int, int], None]) -> dict[str, Any]:
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
    stage_metrics.observe_stage(stage.name, stage_ms[stage.name] / 1000, fields.get(stage.progress_field, 0))
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
    stage_metrics.count_retry(stage.name)


def _fail(job: Job, stage: Stage, reason: str) -> None:
    try:
        transition(job.pk, stage.running, Status.FAILED, fields={"error": reason, "failed_stage": stage.name},
                   message=reason, attempt=job.attempt)
    except StaleTransition:
        return
    stage_metrics.count_failure(stage.name)


