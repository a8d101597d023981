"""What people and operators ask of jobs (the API, the pages, the admin, the commands): submit, cancel, retry;
and the two steps every path shares: finishing a job and removing its work files."""
from __future__ import annotations

import os
import shutil
from typing import Any

import dramatiq
from django.conf import settings
from django.db import DatabaseError, transaction

from jobs.models import ACTIVE, TERMINAL, Job, Status
from stages.postprocess import ANNOTATED, DETECTIONS_JSON

from .transitions import STAGE_BY_RUNNING, STAGES, StaleTransition, create_job, transition
from .uploads import clean_original_name, discard_upload, job_type, store_upload


class ActionNotAllowed(Exception):
    """Cancel or retry asked of a job in a status that does not allow it."""


class TooManyActiveJobs(Exception):
    """The user already has GEDGE_MAX_ACTIVE_JOBS_PER_USER jobs that have not ended."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"you already have {limit} jobs that have not ended; wait for one to finish or cancel one")
        self.limit = limit


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
