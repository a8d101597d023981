"""A job's counting lines and zones: given at submit or drawn later, counted over the job's stored tracks.

Counting reads the finished job's detections.json (every box with its track id) once, in stages/counting.py:
no inference, no worker. Adding, changing or deleting a region recounts it at once and is a JobEvent
(``from_status`` = ``to_status``: not a status change) with what was counted.
"""
from __future__ import annotations

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from jobs.models import Job, JobEvent, Region
from stages.counting import count_regions, region_from_dict, validate_region
from stages.postprocess import DETECTIONS_JSON, iter_detection_frames

from .broadcast import push_job

MAX_REGIONS = 32


class RegionError(ValueError):
    """A line or zone that cannot be stored: its geometry, its name, or too many of them."""


def region_specs(value) -> list[dict]:
    """Counting lines and zones as a client sends them (the API's ``regions`` field, the upload form): a list
    of {name, kind, points} objects; RegionError for any other shape. Each one is checked by :func:`checked`."""
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise RegionError('a list of {"name": ..., "kind": "line" or "zone", "points": [[x, y], ...]} is expected')
    return value


def checked(job_or_size, name, kind, points):
    """The region as stages.counting validates it against the video's size; RegionError where it is not."""
    width, height = job_or_size if isinstance(job_or_size, tuple) else (job_or_size.width, job_or_size.height)
    try:
        return validate_region(name, kind, points, width or None, height or None)
    except ValueError as exc:
        raise RegionError(f"{kind or 'region'} '{name}': {exc}") from None


def count_job_regions(job: Job, regions: list[Region] | None = None) -> dict[str, dict]:
    """Count the job's regions (all, or ``regions``) over its tracks and store the counts; {} where the job
    has no results yet (a finishing job counts them itself)."""
    regions = list(job.regions.all()) if regions is None else regions
    path = job.result_dir / DETECTIONS_JSON
    if not regions or not path.exists() or job.expired_at is not None:
        return {}
    counts = count_regions(iter_detection_frames(path),
                           [region_from_dict({"name": r.name, "kind": r.kind, "points": r.points}) for r in regions])
    now = timezone.now()
    for region in regions:
        region.counts, region.counted_at = counts[region.name], now
        Region.objects.filter(pk=region.pk).update(counts=region.counts, counted_at=now)
    return counts


def add_regions(job: Job, specs: list[dict], *, record: bool = True) -> list[Region]:
    """Store regions ({name, kind, points}) on a job (in one transaction) and count them where it has tracks."""
    regions = [checked(job, spec.get("name"), spec.get("kind"), spec.get("points")) for spec in specs]
    with transaction.atomic():
        if job.regions.count() + len(regions) > MAX_REGIONS:
            raise RegionError(f"a job has at most {MAX_REGIONS} lines and zones")
        try:
            with transaction.atomic():
                rows = [Region.objects.create(job=job, name=r.name, kind=r.kind, points=[list(p) for p in r.points])
                        for r in regions]
        except IntegrityError:
            raise RegionError("a line or zone of that name already exists on this job") from None
        counted = count_job_regions(job, rows)
        if record:
            _record(job, "added", rows, counted)
    return rows


def change_region(region: Region, *, name=None, kind=None, points=None) -> Region:
    """Change a region's name, kind or points and recount it."""
    updated = checked(region.job, region.name if name is None else name, region.kind if kind is None else kind,
                      region.points if points is None else points)
    with transaction.atomic():
        region.name, region.kind, region.points = updated.name, updated.kind, [list(p) for p in updated.points]
        region.counts, region.counted_at = {}, None
        try:
            with transaction.atomic():
                region.save()
        except IntegrityError:
            raise RegionError("a line or zone of that name already exists on this job") from None
        counted = count_job_regions(region.job, [region])
        _record(region.job, "changed", [region], counted)
    return region


def delete_region(region: Region) -> None:
    with transaction.atomic():
        region.delete()
        _record(region.job, "deleted", [region], {})


def _record(job: Job, what: str, regions: list[Region], counted: dict[str, dict]) -> None:
    parts = []
    for region in regions:
        text = f"{region.kind} '{region.name}' {what}"
        counts = counted.get(region.name)
        if counts and region.kind == "line":
            text += f": {counts['total']['forward']} forward, {counts['total']['backward']} backward"
        elif counts:
            text += f": {counts['entered_total']} entered, at most {counts['max_present']} at once"
        parts.append(text)
    job.refresh_from_db(fields=["status", "iteration"])
    JobEvent.objects.create(job=job, from_status=job.status, to_status=job.status, iteration=job.iteration,
                            message="; ".join(parts)[:2000])
    Job.objects.filter(pk=job.pk).update(version=F("version") + 1)  # pages and pollers see the new counts
    transaction.on_commit(lambda: push_job(Job.objects.get(pk=job.pk)))
