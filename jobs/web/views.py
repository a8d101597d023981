"""Pages: the console (upload + live job list), the job page and its result downloads. Views call services."""
from __future__ import annotations

import csv
import json
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from jobs.access import sees_every_job
from jobs.lifecycle.regions import RegionError, region_specs
from jobs.lifecycle.services import QuotaExceeded, TooManyActiveJobs, submit_job
from jobs.lifecycle.uploads import UploadTooLarge
from jobs.models import ACTIVE, PIPELINE, TERMINAL, Job, JobEvent, Status
from jobs.serializers import JobEventSerializer, RegionSerializer, SegmentSerializer, job_payload
from stages.errors import UnprocessableInput
from stages.postprocess import DETECTIONS_JSON, iter_detection_frames

from .api import SubmitThrottle  # the API's submission budget, shared by the form
from .consumers import SNAPSHOT_LIMIT
from .files import in_blocks

CONSOLE_LIMIT = SNAPSHOT_LIMIT  # the page shows what the socket's snapshot would, so a reconnect changes nothing
CHART_MAX_POINTS = 400  # enough for a smooth line, small enough to draw instantly on a phone
CHART_MAX_CLASSES = 8  # the rest are summed into "other" so the legend stays readable
CSV_COLUMNS = ["frame", "time_ms", "class", "class_id", "score", "x1", "y1", "x2", "y2", "track_id"]


def _visible_job(request: HttpRequest, pk: int) -> Job:
    """The job if this user may see it; another user's job is indistinguishable from a missing one."""
    job = Job.objects.visible_to(request.user).filter(pk=pk).first()
    if job is None:
        raise Http404("no such job")
    return job


def _timelines(job_ids: list[int]) -> dict[int, list[dict]]:
    """The jobs' own status changes (the console's stepper and timeline), without their segments' events."""
    timelines: dict[int, list[dict]] = {job_id: [] for job_id in job_ids}
    for event in JobEvent.objects.filter(job_id__in=job_ids, segment__isnull=True).order_by("id"):
        timelines[event.job_id].append(JobEventSerializer(event).data)
    return timelines


def _page_config(request: HttpRequest) -> dict:
    """What the page scripts need to know that is not in a job: statuses, limits, who is looking."""
    return {
        "pipeline": [str(s) for s in PIPELINE],
        "terminal": sorted(str(s) for s in TERMINAL),
        "active": sorted(str(s) for s in ACTIVE),
        "maxUploadBytes": settings.GEDGE_MAX_UPLOAD_BYTES,
        "chunkBytes": min(settings.GEDGE_MAX_CHUNK_BYTES, 4 * 1024 * 1024),  # resumable uploads' chunk size
        "staff": sees_every_job(request.user),  # sees every job (the page shows owners)
        "socketPath": "/ws/jobs/",
    }


@login_required
def console(request: HttpRequest) -> HttpResponse:
    jobs = list(Job.objects.visible_to(request.user).order_by("-id")[:CONSOLE_LIMIT])
    # Rendered into the page so it is complete before the socket connects; the socket's snapshot then
    # replaces it with whatever is newer.
    initial = {"jobs": [job_payload(job) for job in jobs], "timelines": _timelines([job.pk for job in jobs])}
    return render(request, "jobs/console.html", {"initial": initial, "config": _page_config(request)})


@login_required
@require_http_methods(["GET", "POST"])
def upload(request: HttpRequest) -> HttpResponse:
    """GET: the uploader lives on the console. POST: the form's fallback for browsers without scripts."""
    if request.method == "GET":
        return redirect("console")
    files = request.FILES.getlist("video")
    if not files:
        messages.error(request, "Choose a video file first.")
    try:
        regions = _form_regions(request.POST.get("regions", ""))
    except ValueError as exc:
        messages.error(request, f"Counting lines and zones: {exc}; nothing was uploaded.")
        return redirect("console")
    limit = settings.GEDGE_MAX_FILES_PER_UPLOAD
    if len(files) > limit:
        messages.error(request, f"At most {limit} files at a time; the first {limit} were taken.")
        files = files[:limit]
    throttle = SubmitThrottle()
    for uploaded in files:
        if not throttle.allow_request(request, None):
            messages.error(request, f"{uploaded.name} and the rest: too many uploads; try again in "
                           f"{math.ceil(throttle.wait() or 1)} s.")
            break
        try:
            job, _ = submit_job(request.user, uploaded, enhance=bool(request.POST.get("enhance")), regions=regions)
            messages.success(request, f"{job.original_name}: job #{job.pk} queued.")
        except RegionError as exc:
            messages.error(request, f"{uploaded.name}: not queued, {exc}.")
        except UnprocessableInput as exc:
            messages.error(request, f"{uploaded.name}: not a usable video ({exc}).")
        except UploadTooLarge:
            messages.error(request, f"{uploaded.name}: the file is too large.")
        except (TooManyActiveJobs, QuotaExceeded) as exc:
            messages.error(request, f"{uploaded.name}: {exc}")
    return redirect("console")


def _form_regions(text: str) -> list[dict]:
    """The form's counting lines and zones: a JSON list of {name, kind, points} (checked further by submit_job)."""
    if not text.strip():
        return []
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    return region_specs(value)  # a RegionError (a ValueError) for any other shape


@login_required
def job_page(request: HttpRequest, pk: int) -> HttpResponse:
    job = _visible_job(request, pk)
    # The job's own status changes are the history; its segments' (many for a long video) are listed apart.
    job_events, segment_events = [], []
    for event in job.events.all():
        (job_events if event.segment is None else segment_events).append(event)
    segments = SegmentSerializer(job.segments.all(), many=True).data
    per_class = sorted((job.summary or {}).get("per_class", {}).items(), key=lambda item: (-item[1], item[0]))
    objects = sorted((job.summary or {}).get("objects", {}).items(), key=lambda item: (-item[1], item[0]))
    # Drawing lines and zones changes the job: its owner, or whoever may change anyone's (as for cancel/retry).
    can_edit = job.user_id == request.user.pk or request.user.has_perm("jobs.change_job")
    context = {
        "job": job,
        "job_events": job_events,
        "segment_events": segment_events,
        "per_class": per_class,
        "objects": objects,
        "can_edit_regions": can_edit,
        "results_ready": job.status == Status.EXIT and (job.result_dir / DETECTIONS_JSON).exists(),
        "can_cancel": job.status not in TERMINAL,
        "can_retry": job.status in (Status.FAILED, Status.CANCELLED),
        "initial": {"job": job_payload(job), "segments": segments,
                    "timelines": {job.pk: JobEventSerializer(job_events, many=True).data},
                    "segmentEvents": JobEventSerializer(segment_events, many=True).data,
                    "regions": RegionSerializer(job.regions.all(), many=True).data, "canEditRegions": can_edit},
        "config": _page_config(request),
    }
    return render(request, "jobs/job.html", context)


def _detections_path(job: Job) -> Path:
    path = job.result_dir / DETECTIONS_JSON
    if job.expired_at is not None:
        raise _NotReady(job.status, expired=True)
    if job.status != Status.EXIT or not path.exists():
        raise _NotReady(job.status)
    return path


class _NotReady(Exception):
    def __init__(self, job_status: str, expired: bool = False) -> None:
        self.expired = expired
        super().__init__(f"the results were deleted after {settings.GEDGE_RETENTION_DAYS:g} days (retention)"
                         if expired else f"results are ready when the job reaches Exit (it is {job_status})")


def _not_ready(exc: _NotReady) -> JsonResponse:
    code, status = ("expired", 410) if exc.expired else ("not_ready", 409)
    return JsonResponse({"error": {"code": code, "message": str(exc)}}, status=status)


def _track_of(box: dict) -> int | None:
    track = box.get("track_id")
    return track if isinstance(track, int) and track >= 0 else None


@login_required
@require_GET
def job_chart(request: HttpRequest, pk: int) -> JsonResponse:
    """Detections per class over time, averaged over buckets of frames so long videos stay light to draw.

    {"bucket_frames": n, "t": [seconds],
     "series": [{"class": name, "class_id": id, "total": boxes, "values": [objects per frame]}],
     "objects": [distinct tracks seen in the bucket]}  ("objects" only where the boxes carry track ids)
    """
    job = _visible_job(request, pk)
    try:
        path = _detections_path(job)
    except _NotReady as exc:
        return _not_ready(exc)
    # Two passes over the frames, one at a time from disk: the classes first, then the buckets.
    frames, totals, class_ids, tracked = 0, Counter(), {}, False
    for frame in iter_detection_frames(path):
        frames += 1
        for box in frame["boxes"]:
            totals[box["class"]] += 1
            class_ids.setdefault(box["class"], box["class_id"])
            tracked = tracked or _track_of(box) is not None
    bucket = max(1, math.ceil(frames / CHART_MAX_POINTS))
    shown = [name for name, _ in totals.most_common(CHART_MAX_CLASSES)]
    other = len(totals) > len(shown)
    names = shown + (["other"] if other else [])
    times: list[float] = []
    values: dict[str, list[float]] = {name: [] for name in names}
    counts: Counter[str] = Counter()
    objects: list[int] = []
    in_view: set[int] = set()  # the tracks seen in the bucket being filled: the only memory kept per bucket

    def close_bucket(size: int) -> None:
        for name in names:
            values[name].append(round(counts[name] / size, 3))
        counts.clear()
        objects.append(len(in_view))
        in_view.clear()

    for position, frame in enumerate(iter_detection_frames(path)):
        if position % bucket == 0:
            if position:
                close_bucket(bucket)
            times.append(round(frame["time_ms"] / 1000, 3))
        for box in frame["boxes"]:
            counts[box["class"] if box["class"] in values else "other"] += 1
            if (track := _track_of(box)) is not None:
                in_view.add(track)
    if frames:
        close_bucket(frames - (len(times) - 1) * bucket)
    series = [{"class": name, "class_id": class_ids.get(name) if name in shown else None,
               "total": totals[name] if name in shown else sum(n for c, n in totals.items() if c not in shown),
               "values": values[name]} for name in names]
    body = {"bucket_frames": bucket, "t": times, "series": series}
    if tracked:
        body["objects"] = objects
    return JsonResponse(body)


class _Echo:
    """A file-like object whose write returns the line, so csv.writer can feed a streaming response."""

    def write(self, value: str) -> str:
        return value


def _csv_rows(path: Path) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_COLUMNS)
    for frame in iter_detection_frames(path):
        for box in frame["boxes"]:
            yield writer.writerow([frame["index"], frame["time_ms"], box["class"], box["class_id"], box["score"],
                                   *box["box"], box.get("track_id", -1)])


@login_required
@require_GET
def job_detections_csv(request: HttpRequest, pk: int) -> HttpResponse:
    """One row per box: frame, time, class, score, the box in original pixels and its track (spreadsheet-friendly)."""
    job = _visible_job(request, pk)
    try:
        path = _detections_path(job)
    except _NotReady as exc:
        return _not_ready(exc)
    response = StreamingHttpResponse(in_blocks(_csv_rows(path)), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="job-{job.pk}-detections.csv"'
    return response


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    """The web's readiness: database and Redis. Worker Pods use `manage.py worker_ready` (model loaded too)."""
    from jobs.ops.health import dependency_checks

    checks = dependency_checks()
    ok = all(v == "ok" for v in checks.values())
    return JsonResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503)


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text: this process's metrics plus jobs by status and queue depths (see jobs/ops/metrics.py)."""
    from prometheus_client import CONTENT_TYPE_LATEST

    from jobs.ops.metrics import exposition

    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)
