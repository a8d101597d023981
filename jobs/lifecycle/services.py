"""What people and operators ask of jobs (the API, the pages, the admin, the commands): submit, cancel, retry;
and the two steps every path shares: finishing a job and removing its work files."""
from __future__ import annotations

import json
import os
import shutil
from datetime import timedelta
from typing import Any

import dramatiq
from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import F, Sum
from django.utils import timezone

from jobs.models import ACTIVE, TERMINAL, Job, JobEvent, Segment, Status, Track, Upload
from stages.errors import UnprocessableInput
from stages.postprocess import ANNOTATED, DETECTIONS_JSON, assemble_parts, read_detection_facts
from stages.tracking import TrackerSettings

from .broadcast import push_job
from .regions import RegionError, add_regions, checked, count_job_regions
from .transitions import StaleTransition, create_job, transition
from .uploads import UploadTooLarge, adopt_upload, clean_original_name, discard_upload, job_type, store_upload


class ActionNotAllowed(Exception):
    """Cancel or retry asked of a job in a status that does not allow it."""


class QuotaExceeded(Exception):
    """The upload would take the user past GEDGE_USER_QUOTA_BYTES of stored uploads and results."""

    def __init__(self, used: int, incoming: int, limit: int) -> None:
        gb = 1024**3
        super().__init__(f"this upload ({incoming / gb:.2f} GiB) would take your stored videos and results past "
                         f"your quota of {limit / gb:.2f} GiB ({used / gb:.2f} GiB used); cancel or wait for older "
                         f"jobs to expire")
        self.used, self.limit = used, limit


class TooManyActiveJobs(Exception):
    """The user already has GEDGE_MAX_ACTIVE_JOBS_PER_USER jobs that have not ended."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"you already have {limit} jobs that have not ended; wait for one to finish or cancel one")
        self.limit = limit


MODEL_FACTS = "model.json"  # what inference writes beside a segment's detections: the model's facts


def tracker_settings() -> TrackerSettings:
    """The tracker's parameters from the GEDGE_TRACK_* settings; recorded in each job's params at submit."""
    return TrackerSettings(high_score=settings.GEDGE_TRACK_HIGH_SCORE, match_cost=settings.GEDGE_TRACK_MATCH_COST,
                           low_match_iou=settings.GEDGE_TRACK_LOW_MATCH_IOU,
                           new_track_score=settings.GEDGE_TRACK_NEW_SCORE, lost_s=settings.GEDGE_TRACK_LOST_S,
                           trail=settings.GEDGE_TRACK_TRAIL)


def video_facts(job: Job) -> dict[str, Any]:
    """The video facts of detections.json."""
    return {"width": job.width, "height": job.height, "fps": job.fps, "frame_count": job.frame_count,
            "duration_s": job.duration_s, "type": job.type}


def finalize_job(job: Job) -> Job:
    """Postprocessing_complete -> Exit: join the segments' parts into the results, drop the work folder.

    Idempotent, so the reaper can finish a job whose worker died between any two steps.
    """
    results = [job.result_dir / ANNOTATED, job.result_dir / DETECTIONS_JSON]
    if not all(path.exists() for path in results):
        segments = list(job.segments.order_by("index"))
        parts = [job.job_dir / segment.artifacts["part"] for segment in segments]
        model = json.loads((job.job_dir / segments[0].artifacts["detections"] / MODEL_FACTS).read_text())
        staging = job.job_dir / "assembling"
        shutil.rmtree(staging, ignore_errors=True)
        assemble_parts(parts, staging, {"video": video_facts(job), "model": model, "parameters": job.params})
        job.result_dir.mkdir(parents=True, exist_ok=True)
        for path in results:  # detections.json last: both present means the results are complete
            os.replace(staging / path.name, path)
        shutil.rmtree(staging, ignore_errors=True)
    cleanup_work(job)
    facts = read_detection_facts(job.result_dir / DETECTIONS_JSON)
    summary, tracks = facts["summary"], facts.get("tracks", [])
    with transaction.atomic():
        Track.objects.filter(job=job).delete()
        Track.objects.bulk_create([
            Track(job=job, track_id=t["id"], class_name=t["class"], first_frame=t["first_frame"],
                  last_frame=t["last_frame"], first_ms=t["first_ms"], last_ms=t["last_ms"], frames=t["frames"],
                  score=t["score"], path=t["path"]) for t in tracks], batch_size=1000)
        count_job_regions(job)
        return transition(job.pk, Status.POSTPROCESSING_COMPLETE, Status.EXIT, message="results ready",
                          fields={"summary": {"detections": summary["detections"], "per_class": summary["per_class"],
                                              "objects": summary.get("objects", {}),
                                              "tracks": summary.get("tracks", 0)},
                                  "result_bytes": sum(path.stat().st_size for path in results)})


def cleanup_work(job: Job) -> None:
    shutil.rmtree(job.work_dir, ignore_errors=True)
    shutil.rmtree(job.job_dir / "assembling", ignore_errors=True)


def end_job(job: Job, to_status: str, message: str, *, fields: dict[str, Any] | None = None,
            only_if_segment: tuple[int, str, int] | None = None) -> bool:
    """Fail or cancel a job from whatever active status it is in, then remove its work files; False where it
    had already ended. ``only_if_segment`` (segment id, status, attempt): only while that segment attempt is
    still current, so a stale attempt cannot end a job that another attempt now owns."""
    for _ in range(5):  # the status may move under us; re-read and try again
        with transaction.atomic():
            current = Job.objects.select_for_update().get(pk=job.pk)
            if current.status in TERMINAL:
                return False
            if only_if_segment is not None:
                segment_id, status, attempt = only_if_segment
                if not Segment.objects.filter(pk=segment_id, status=status, attempt=attempt).exists():
                    return False
            try:
                transition(job.pk, current.status, to_status, message=message, fields=fields)
            except StaleTransition:
                continue
        cleanup_work(job)
        return True
    raise ActionNotAllowed("the job is changing too fast; try again")


def cancel_job(job: Job) -> Job:
    """Cancel a job that has not ended; its running segment stages stop at their next batch boundary."""
    job.refresh_from_db()
    if job.status in TERMINAL or not end_job(job, Status.CANCELLED, "cancelled by " + job.user.username):
        raise ActionNotAllowed(f"a job that is {job.status} cannot be cancelled")
    job.refresh_from_db()
    return job


def retry_job(job: Job, by: str = "") -> Job:
    """Send a Failed or Cancelled job back to Enqueue: it is planned and processed again from the start (its
    work files were removed when it ended)."""
    job.refresh_from_db()
    if job.status not in (Status.FAILED, Status.CANCELLED):
        raise ActionNotAllowed(f"a job that is {job.status} cannot be retried")
    if job.expired_at is not None:
        raise ActionNotAllowed("this job's upload was deleted when it expired; upload the video again")
    fields: dict[str, Any] = {"iteration": 0, "failed_stage": "", "ended_at": None,
                              "preprocess_done": 0, "inference_done": 0, "postprocess_done": 0, "stage_ms": {},
                              "window": 0, "segment_count": 0, "segments_done": 0, "work_bytes_peak": 0,
                              "summary": {}}
    try:
        with transaction.atomic():
            _lock_user(job.user)
            _check_active_cap(job.user)  # a retry makes a job active again: the same cap as an upload
            moved = transition(job.pk, job.status, Status.ENQUEUE, fields=fields,
                               message=f"retry{' by ' + by if by else ''}: planned again from the start")
            Segment.objects.filter(job_id=job.pk).delete()
    except StaleTransition as exc:
        raise ActionNotAllowed("the job changed; reload and try again") from exc
    cleanup_work(job)
    return moved


def _check_queue_reachable() -> None:
    """Refuse an upload (503) while Redis is down rather than accept a job no worker can be told about."""
    client = getattr(dramatiq.get_broker(), "client", None)
    if client is not None:
        client.ping()


def _lock_user(user) -> None:
    """One user's submissions and retries take turns here, so two at once cannot both slip under a cap.
    _meta.model, not type(user): a session user is a SimpleLazyObject, which has no manager."""
    user._meta.model.objects.select_for_update().filter(pk=user.pk).values_list("pk", flat=True).get()


def stored_bytes(user, ignore: Upload | None = None) -> int:
    """What the user keeps on storage: uploads and results of jobs not yet expired, and the declared length
    of resumable uploads in progress (reserved when they start)."""
    totals = Job.objects.filter(user=user, expired_at__isnull=True).aggregate(
        uploads=Sum("size_bytes"), results=Sum("result_bytes"))
    pending = Upload.objects.filter(user=user, job__isnull=True)
    if ignore is not None:
        pending = pending.exclude(pk=ignore.pk)
    reserved = pending.aggregate(total=Sum("length"))["total"] or 0
    return (totals["uploads"] or 0) + (totals["results"] or 0) + reserved


def _check_quota(user, incoming: int, ignore: Upload | None = None) -> None:
    limit = settings.GEDGE_USER_QUOTA_BYTES
    if limit and (used := stored_bytes(user, ignore)) + incoming > limit:
        raise QuotaExceeded(used, incoming, limit)


def _check_active_cap(user) -> None:
    limit = settings.GEDGE_MAX_ACTIVE_JOBS_PER_USER
    if limit and Job.objects.filter(user=user, status__in=ACTIVE).count() >= limit:
        raise TooManyActiveJobs(limit)


def submit_job(user, uploaded, *, client_token: str = "", enhance: bool = False,
               regions: list[dict] | None = None) -> tuple[Job, bool]:
    """Store and probe an upload and create its job; (existing job, False) for a repeated client_token.

    Raises TooManyActiveJobs where the user is at GEDGE_MAX_ACTIVE_JOBS_PER_USER, QuotaExceeded past
    GEDGE_USER_QUOTA_BYTES.
    """
    if client_token and (existing := Job.objects.filter(user=user, client_token=client_token).first()):
        return existing, False
    _check_active_cap(user)  # refuse before spending time storing and probing the file
    _check_quota(user, uploaded.size or 0)
    _check_queue_reachable()
    path, info, size = store_upload(user.pk, uploaded)
    return _create_job(user, path, info, size, clean_original_name(uploaded.name or ""), client_token, enhance,
                       regions=regions)


def _create_job(user, path: str, info, size: int, name: str, client_token: str, enhance: bool,
                upload: Upload | None = None, regions: list[dict] | None = None) -> tuple[Job, bool]:
    """The job of a stored, probed upload (``path`` relative to MEDIA_ROOT), under the user's caps, with its
    counting lines and zones (checked against the video's size; RegionError where one does not fit)."""
    try:
        for spec in regions or ():
            checked((info.width, info.height), spec.get("name"), spec.get("kind"), spec.get("points"))
        with transaction.atomic():
            _lock_user(user)
            _check_active_cap(user)
            _check_quota(user, size, ignore=upload)
            job = create_job(
                user=user, path=path, type=job_type(name, info), original_name=name, size_bytes=size,
                client_token=client_token, width=info.width, height=info.height, fps=info.fps,
                frame_count=info.frame_count, duration_s=info.duration_s,
                params={"enhance": enhance, "tracker": tracker_settings().as_dict()},
            )
            if regions:
                add_regions(job, regions, record=False)
            if upload is not None:
                Upload.objects.filter(pk=upload.pk).update(job=job)
    except (TooManyActiveJobs, QuotaExceeded, RegionError, DatabaseError):  # IntegrityError included: no stray file
        discard_upload(path)
        if client_token:  # the same token raced in from a parallel request: that one's job is the answer
            existing = Job.objects.filter(user=user, client_token=client_token).first()
            if existing is not None:
                return existing, False
        raise
    return job, True


# --- resumable uploads (the tus protocol: jobs/web/tus.py) ---


class UploadConflict(Exception):
    """A chunk sent at an offset the upload is not at (tus answers 409 with the offset to resume from)."""


def start_upload(user, length: int, filename: str, *, client_token: str = "", enhance: bool = False) -> Upload:
    """Reserve a resumable upload of ``length`` bytes: its size, the user's caps and quota are checked now,
    before a byte is sent."""
    if length <= 0:
        raise UnprocessableInput("the file is empty")
    if length > settings.GEDGE_MAX_UPLOAD_BYTES:
        raise UploadTooLarge()
    _check_active_cap(user)
    _check_quota(user, length)
    _check_queue_reachable()
    upload = Upload.objects.create(user=user, length=length, filename=clean_original_name(filename),
                                   client_token=client_token, enhance=enhance)
    upload.path.parent.mkdir(parents=True, exist_ok=True)
    upload.path.touch()
    return upload


def append_upload(upload_id, user, offset: int, data: bytes) -> Upload:
    """Write one chunk at ``offset``; the last one turns the upload into a job (exactly once: the chunk that
    completes it and the job are one transaction on the upload's row)."""
    with transaction.atomic():
        upload = Upload.objects.select_for_update().get(pk=upload_id, user=user)
        if upload.job_id is not None or offset != upload.offset:
            raise UploadConflict(f"the upload is at byte {upload.offset}, not {offset}")
        if offset + len(data) > upload.length:
            raise UnprocessableInput(f"the chunk goes past the declared length of {upload.length} bytes")
        with open(upload.path, "r+b") as fh:
            fh.seek(offset)
            fh.write(data)
        upload.offset = offset + len(data)
        Upload.objects.filter(pk=upload.pk).update(offset=upload.offset, updated_at=timezone.now())
    if upload.offset == upload.length:
        return _finish_upload(upload)
    return upload


def finish_if_complete(upload: Upload) -> Upload:
    """An upload whose last chunk arrived but whose job was not made (the web process died in between)
    becomes its job now: a client that resumes asks for the offset (HEAD) and is answered with the job."""
    if upload.offset == upload.length and upload.job_id is None:
        return _finish_upload(upload)
    return upload


def _finish_upload(upload: Upload) -> Upload:
    if upload.client_token and (existing := Job.objects.filter(user=upload.user,
                                                                client_token=upload.client_token).first()):
        Upload.objects.filter(pk=upload.pk).update(job=existing)
        upload.path.unlink(missing_ok=True)
        upload.job = existing
        return upload
    try:
        path, info = adopt_upload(upload.user_id, upload.path)
    except BaseException:
        upload.delete()  # refused: nothing is left behind (adopt_upload removed the file)
        raise
    upload.job, _ = _create_job(upload.user, path, info, upload.length, upload.filename, upload.client_token,
                                upload.enhance, upload=upload)
    return upload


def delete_upload(upload: Upload) -> None:
    upload.path.unlink(missing_ok=True)
    upload.delete()


def drop_stale_uploads(now=None) -> int:
    """Unfinished uploads nobody added to for GEDGE_UPLOAD_EXPIRY_S are deleted (the reaper, every pass)."""
    now = now or timezone.now()
    stale = Upload.objects.filter(job__isnull=True,
                                  updated_at__lt=now - timedelta(seconds=settings.GEDGE_UPLOAD_EXPIRY_S))
    count = 0
    for upload in stale[:200]:
        delete_upload(upload)
        count += 1
    return count


def expire_jobs(now=None, limit: int = 200) -> int:
    """Delete the upload and results of jobs that ended more than GEDGE_RETENTION_DAYS ago; the row stays,
    marked expired (its facts, events and summary remain). Returns how many expired (at most ``limit`` a call:
    the reaper calls it every pass)."""
    days = settings.GEDGE_RETENTION_DAYS
    if not days:
        return 0
    now = now or timezone.now()
    due = Job.objects.filter(status__in=list(TERMINAL), ended_at__lt=now - timedelta(days=days),
                             expired_at__isnull=True).order_by("ended_at")[:limit]
    count = 0
    for job in due:
        if not Job.objects.filter(pk=job.pk, expired_at__isnull=True).update(expired_at=now,
                                                                             version=F("version") + 1):
            continue
        job.source_path.unlink(missing_ok=True)
        shutil.rmtree(job.job_dir, ignore_errors=True)
        JobEvent.objects.create(job=job, from_status=job.status, to_status=job.status, iteration=job.iteration,
                                message=f"expired: upload and results deleted after {days:g} days")
        job.refresh_from_db()
        push_job(job)
        count += 1
    return count
