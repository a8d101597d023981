"""Job records: the paper's Table 1 plus what users and operators need.

Table 1 -> fields: # = id, User = user, Path = path, Type = type, Status = status,
Start Time = started_at, End Time = ended_at, Iteration = iteration.
Transitions are applied only by jobs.lifecycle.transitions (compare-and-set on ``status``).
"""
from __future__ import annotations

import uuid
from pathlib import Path

from django.conf import settings
from django.db import models


class Status(models.TextChoices):
    ENQUEUE = "Enqueue"
    PREPROCESSING = "Preprocessing"
    PREPROCESSING_COMPLETE = "Preprocessing_complete"
    INFERENCING = "Inferencing"
    INFERENCING_COMPLETE = "Inferencing_complete"
    POSTPROCESSING = "Postprocessing"
    POSTPROCESSING_COMPLETE = "Postprocessing_complete"
    EXIT = "Exit"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


# The paper's eight statuses, in pipeline order.
PIPELINE = (
    Status.ENQUEUE,
    Status.PREPROCESSING,
    Status.PREPROCESSING_COMPLETE,
    Status.INFERENCING,
    Status.INFERENCING_COMPLETE,
    Status.POSTPROCESSING,
    Status.POSTPROCESSING_COMPLETE,
    Status.EXIT,
)
TERMINAL = frozenset({Status.EXIT, Status.FAILED, Status.CANCELLED})
ACTIVE = frozenset(set(Status) - TERMINAL)
RUNNING = frozenset({Status.PREPROCESSING, Status.INFERENCING, Status.POSTPROCESSING})


class JobQuerySet(models.QuerySet):
    def visible_to(self, user) -> JobQuerySet:
        """Users who see every job (jobs.access: a superuser, or given jobs.view_job in admin, by group) see
        them all; everyone else only their own (another user's job answers 404 everywhere). is_staff alone
        grants nothing."""
        from .access import sees_every_job

        jobs = self.select_related("user")
        if not user.is_active:
            return jobs.none()
        return jobs if sees_every_job(user) else jobs.filter(user=user)


class Job(models.Model):
    objects = JobQuerySet.as_manager()

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="jobs")
    path = models.CharField(max_length=500, help_text="Stored upload, relative to MEDIA_ROOT")
    type = models.CharField(max_length=100, help_text="Extension and probed container format, e.g. mp4/mov")
    status = models.CharField(max_length=32, choices=Status.choices, default=Status.ENQUEUE, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    iteration = models.PositiveIntegerField(default=0, help_text="Restarts after errors")

    original_name = models.CharField(max_length=255, blank=True)
    size_bytes = models.BigIntegerField(default=0)
    client_token = models.CharField(max_length=100, blank=True, default="")

    width = models.PositiveIntegerField(default=0)
    height = models.PositiveIntegerField(default=0)
    fps = models.FloatField(default=0)
    frame_count = models.PositiveIntegerField(default=0)
    duration_s = models.FloatField(default=0)

    preprocess_done = models.PositiveIntegerField(default=0)
    inference_done = models.PositiveIntegerField(default=0)
    postprocess_done = models.PositiveIntegerField(default=0)
    stage_ms = models.JSONField(default=dict, blank=True, help_text="Wall time per stage, ms")

    error = models.TextField(blank=True, default="")
    failed_stage = models.CharField(max_length=32, blank=True, default="")

    model_name = models.CharField(max_length=100, blank=True, default="")
    model_sha256 = models.CharField(max_length=64, blank=True, default="")
    params = models.JSONField(default=dict, blank=True, help_text="Parameters used (thresholds, enhancement)")
    summary = models.JSONField(default=dict, blank=True, help_text="Detections per class")

    version = models.PositiveBigIntegerField(default=1, help_text="Grows with every change pushed to browsers")

    # The planning message (the job's first message, on the preprocess queue), so the reaper can tell a lost
    # message from one still queued. Stage messages are per segment (Segment.message_id).
    message_id = models.CharField(max_length=64, blank=True, default="")
    dispatched_at = models.DateTimeField(null=True, blank=True)
    # Most segments of this job that may be in flight at once (set at planning: GEDGE_SEGMENTS_IN_FLIGHT,
    # lowered to what the work-storage budget allows).
    window = models.PositiveIntegerField(default=0)
    segment_count = models.PositiveIntegerField(default=0, help_text="Segments the video was cut into")
    segments_done = models.PositiveIntegerField(default=0, help_text="Segments through all three stages")
    work_bytes_peak = models.BigIntegerField(default=0, help_text="Most bytes of frames on shared storage at once")
    result_bytes = models.BigIntegerField(default=0, help_text="Bytes of the result files")
    expired_at = models.DateTimeField(null=True, blank=True,
                                      help_text="When the upload and results were deleted (GEDGE_RETENTION_DAYS)")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["user", "-id"]), models.Index(fields=["ended_at"])]
        constraints = [
            models.UniqueConstraint(fields=["user", "client_token"], condition=~models.Q(client_token=""),
                                    name="unique_client_token_per_user"),
        ]

    def __str__(self) -> str:
        return f"Job {self.pk} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def job_dir(self) -> Path:
        return Path(settings.MEDIA_ROOT) / "jobs" / str(self.pk)

    @property
    def work_dir(self) -> Path:
        """Intermediate artifacts between stages; removed when the job ends."""
        return self.job_dir / "work"

    @property
    def result_dir(self) -> Path:
        return self.job_dir / "result"

    @property
    def source_path(self) -> Path:
        return Path(settings.MEDIA_ROOT) / self.path

    @property
    def progress(self) -> float:
        """0..1 over the three stages, each weighted equally."""
        if not self.frame_count:
            return 1.0 if self.status == Status.EXIT else 0.0
        done = min(self.preprocess_done, self.frame_count) + min(self.inference_done, self.frame_count)
        done += min(self.postprocess_done, self.frame_count)
        return round(done / (3 * self.frame_count), 4)

    @property
    def duration_ms(self) -> int | None:
        if self.started_at and self.ended_at:
            return int((self.ended_at - self.started_at).total_seconds() * 1000)
        return None


class Segment(models.Model):
    """A run of a job's frames that goes through the three stages on its own (stages/segments.py cuts them).

    ``status`` takes the job statuses from Enqueue to Postprocessing_complete (a segment's own pipeline), or
    Failed / Cancelled when its job ended first. ``attempt`` grows with every stage start and fences writes: a
    stage attempt may only write while the row still carries its number and a recent ``heartbeat_at`` (its
    lease, jobs/lifecycle/leases.py). ``iteration`` counts this segment's restarts after errors.
    """

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="segments")
    index = models.PositiveIntegerField()
    first_frame = models.PositiveIntegerField()
    frame_count = models.PositiveIntegerField()
    start_pts = models.BigIntegerField()
    end_pts = models.BigIntegerField(null=True, blank=True)
    start_s = models.FloatField(default=0)
    time_base = models.CharField(max_length=40, help_text="The video stream's time base of the pts, e.g. 1/12800")
    status = models.CharField(max_length=32, choices=Status.choices, default=Status.ENQUEUE)
    iteration = models.PositiveIntegerField(default=0)
    attempt = models.PositiveIntegerField(default=0)
    lease_owner = models.CharField(max_length=200, blank=True, default="")
    heartbeat_at = models.DateTimeField(null=True, blank=True, db_index=True)
    message_id = models.CharField(max_length=64, blank=True, default="")
    dispatched_at = models.DateTimeField(null=True, blank=True)
    preprocess_done = models.PositiveIntegerField(default=0)
    inference_done = models.PositiveIntegerField(default=0)
    postprocess_done = models.PositiveIntegerField(default=0)
    stage_ms = models.JSONField(default=dict, blank=True)
    work_bytes = models.BigIntegerField(default=0, help_text="Bytes of frames this segment holds on storage")
    # Where each stage attempt left its output, relative to the job folder (attempt-specific names).
    artifacts = models.JSONField(default=dict, blank=True)
    # The tracker after this segment's frames (stages/tracking.py), which the next segment continues from.
    tracker_state = models.JSONField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["job", "index"]
        constraints = [models.UniqueConstraint(fields=["job", "index"], name="unique_segment_index")]
        indexes = [models.Index(fields=["status", "heartbeat_at"])]

    def __str__(self) -> str:
        return f"Job {self.job_id} segment {self.index} ({self.status})"

    @property
    def dir(self) -> Path:
        return self.job.work_dir / f"s{self.index}"

    @property
    def end_frame(self) -> int:
        return self.first_frame + self.frame_count


class Track(models.Model):
    """One tracked object of a finished job (detections.json's ``tracks``), for the paginated, filtered API."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="tracks")
    track_id = models.PositiveIntegerField()
    class_name = models.CharField(max_length=100)
    first_frame = models.PositiveIntegerField()
    last_frame = models.PositiveIntegerField()
    first_ms = models.FloatField()
    last_ms = models.FloatField()
    frames = models.PositiveIntegerField(help_text="Boxes seen")
    score = models.FloatField(help_text="Best score")
    path = models.JSONField(default=list, blank=True, help_text="[frame, x, y] bottom centres, sampled")

    class Meta:
        ordering = ["job", "track_id"]
        constraints = [models.UniqueConstraint(fields=["job", "track_id"], name="unique_track_per_job")]
        indexes = [models.Index(fields=["job", "class_name", "track_id"]), models.Index(fields=["job", "first_ms"])]

    def __str__(self) -> str:
        return f"Job {self.job_id} track {self.track_id} ({self.class_name})"


class Region(models.Model):
    """A counting line (two points) or zone (a polygon) of a job, in pixels of the original video; ``counts``
    is what stages/counting.py found over the job's tracks (empty until the job has them)."""

    class Kind(models.TextChoices):
        LINE = "line"
        ZONE = "zone"

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="regions")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    points = models.JSONField(help_text="[[x, y], ...]: two for a line, 3 to 64 for a zone")
    counts = models.JSONField(default=dict, blank=True)
    counted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["job", "id"]
        constraints = [models.UniqueConstraint(fields=["job", "name"], name="unique_region_name_per_job")]

    def __str__(self) -> str:
        return f"Job {self.job_id} {self.kind} {self.name}"


class JobEvent(models.Model):
    """A job's status change, or (``segment`` set) one of its segments' (from_status/to_status are then the
    segment's)."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="events")
    segment = models.PositiveIntegerField(null=True, blank=True, help_text="Segment index; empty for the job")
    from_status = models.CharField(max_length=32, blank=True, default="")
    to_status = models.CharField(max_length=32, choices=Status.choices)
    at = models.DateTimeField(auto_now_add=True, db_index=True)
    iteration = models.PositiveIntegerField(default=0)
    message = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        where = f"{self.job_id}" if self.segment is None else f"{self.job_id}/s{self.segment}"
        return f"{where}: {self.from_status or '-'} -> {self.to_status}"


class Upload(models.Model):
    """A resumable upload in progress (the tus protocol, jobs/web/tus.py): the bytes received so far are on
    shared storage; once ``offset`` reaches ``length`` the file is probed and becomes a job, exactly once."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="uploads")
    length = models.BigIntegerField()
    offset = models.BigIntegerField(default=0)
    filename = models.CharField(max_length=255, blank=True, default="")
    client_token = models.CharField(max_length=100, blank=True, default="")
    enhance = models.BooleanField(default=False)
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    def __str__(self) -> str:
        return f"Upload {self.pk} ({self.offset}/{self.length})"

    @property
    def path(self) -> Path:
        return Path(settings.MEDIA_ROOT) / "uploads" / str(self.user_id) / f".tus-{self.pk}.part"
