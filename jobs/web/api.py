"""REST API under /api/ (the interface is fixed in shared/DESIGN.md)."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from itertools import takewhile

from django.conf import settings
from django.http import HttpResponse, HttpResponseNotModified, StreamingHttpResponse
from django.utils.http import parse_etags
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, parsers, renderers, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle, SimpleRateThrottle

from jobs.lifecycle.regions import RegionError, add_regions, change_region, delete_region, region_specs
from jobs.lifecycle.services import (
    ActionNotAllowed,
    QuotaExceeded,
    TooManyActiveJobs,
    cancel_job,
    retry_job,
    submit_job,
)
from jobs.lifecycle.uploads import UploadTooLarge
from jobs.models import Job, Region, Status
from jobs.serializers import (
    SHAPE_COLUMNS,
    JobEventSerializer,
    JobSerializer,
    RegionSerializer,
    SegmentSerializer,
    TrackSerializer,
)
from stages.errors import UnprocessableInput
from stages.exports import coco_chunks, mot_lines
from stages.postprocess import ANNOTATED, DETECTIONS_JSON, iter_detection_frames, read_detection_facts

from .api_errors import ApiError
from .files import in_blocks, ranged_file_response
from .upload_limit import SizeLimitUploadHandler

# Polling clients revalidate instead of downloading the same job again: every read of a job or a page carries
# an ETag, and a request whose If-None-Match holds it answers 304 with no body.
CACHE_CONTROL = "private, no-cache"


def etag_for(jobs: Iterable[Job], *context) -> str:
    """A strong validator from what the shape depends on: each job's version (it grows with every change to
    the row that the shape shows), its owner's name (not in the row), and for a page, the page's own facts."""
    digest = hashlib.blake2b(digest_size=12)
    for item in context:
        digest.update(f"{item}\x1f".encode())
    for job in jobs:
        digest.update(f"{job.pk}:{job.version}:{job.user.username}\x1e".encode())
    return f'"{digest.hexdigest()}"'


def not_modified(request, etag: str) -> HttpResponseNotModified | None:
    """304 where the request's If-None-Match names ``etag`` (weak comparison, as RFC 9110 says for GET)."""
    header = request.headers.get("If-None-Match")
    if not header:
        return None
    tags = {tag.removeprefix("W/") for tag in parse_etags(header)}
    if "*" not in tags and etag not in tags:
        return None
    response = HttpResponseNotModified()
    response["ETag"], response["Cache-Control"] = etag, CACHE_CONTROL
    return response


def with_etag(response: Response, etag: str) -> Response:
    response["ETag"], response["Cache-Control"] = etag, CACHE_CONTROL
    return response


class SubmitThrottle(ScopedRateThrottle):
    """Submissions per user (GEDGE_SUBMIT_RATE), one budget for every path that creates work: the API's
    create and retry and the HTML upload form (each file counts)."""

    scope = "submit"

    def allow_request(self, request, view) -> bool:
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return SimpleRateThrottle.allow_request(self, request, view)

    def get_cache_key(self, request, view) -> str:
        ident = request.user.pk if request.user.is_authenticated else self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}


def refused_submission(exc: Exception) -> ApiError:
    """The API's answer to a submission the services refused (classic upload, resumable upload, retry)."""
    if isinstance(exc, UploadTooLarge):
        return ApiError("too_large", f"the file is larger than {settings.GEDGE_MAX_UPLOAD_BYTES} bytes",
                        status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, UnprocessableInput):
        return ApiError("not_a_video", f"not a usable video: {exc}")
    if isinstance(exc, TooManyActiveJobs):
        return ApiError("too_many_active_jobs", str(exc), status.HTTP_429_TOO_MANY_REQUESTS)
    if isinstance(exc, QuotaExceeded):
        return ApiError("quota_exceeded", str(exc), status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, RegionError):
        return ApiError("invalid_region", str(exc))
    raise TypeError(f"not a refused submission: {exc!r}")


REFUSED = (UploadTooLarge, UnprocessableInput, TooManyActiveJobs, QuotaExceeded, RegionError)


class SubmitSerializer(serializers.Serializer):
    video = serializers.FileField()
    client_token = serializers.CharField(required=False, allow_blank=True, max_length=100, default="")
    enhance = serializers.BooleanField(required=False, default=False)
    regions = serializers.JSONField(required=False, binary=True, default=list, help_text=(
        'Counting lines and zones, as JSON: [{"name": "door", "kind": "line", "points": [[x, y], [x, y]]}, '
        '{"name": "lot", "kind": "zone", "points": [[x, y], ...]}], pixels of the original video'))

    def validate_regions(self, value):
        try:
            return region_specs(value)
        except RegionError as exc:
            raise serializers.ValidationError(str(exc)) from None


class _ExportRenderer(renderers.BaseRenderer):
    """Selects an export by ``?format=`` (DRF's format override); the export itself is streamed by the view,
    so what this renders is only an error's JSON body."""

    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return json.dumps(data).encode()


class MotRenderer(_ExportRenderer):
    media_type, format = "text/plain", "mot"


class CocoRenderer(_ExportRenderer):
    media_type, format = "application/json", "coco"


def _tracks_filtered(request, tracks):
    """?class=person&from_ms=1000&to_ms=5000: tracks of that class in view at some time in that window."""
    wanted = request.query_params.get("class")
    if wanted:
        tracks = tracks.filter(class_name=wanted)
    for name, lookup in (("from_ms", "last_ms__gte"), ("to_ms", "first_ms__lte")):
        value = request.query_params.get(name)
        if value is not None:
            try:
                tracks = tracks.filter(**{lookup: float(value)})
            except ValueError:
                raise ApiError("invalid_range", f"{name} must be a number of milliseconds") from None
    return tracks


@extend_schema_view(list=extend_schema(parameters=[
    OpenApiParameter("status", str, enum=Status.values, description="only jobs in this status"),
]))
class JobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Jobs of the signed-in user (with jobs.view_job: everyone's), newest first. Another user's job answers 404."""

    serializer_class = JobSerializer
    queryset = Job.objects.none()  # the model, for the schema; get_queryset gives the user's jobs
    parser_classes = [parsers.MultiPartParser, parsers.FormParser, parsers.JSONParser]
    throttle_scope = "submit"

    def get_throttles(self):
        # Only submitting costs storage and compute; reading and following jobs stays unthrottled.
        return [SubmitThrottle()] if self.action in ("create", "retry") else []

    def get_queryset(self):
        jobs = Job.objects.visible_to(self.request.user).order_by("-id")
        if self.action in ("list", "retrieve"):  # the polled reads: one query, only what the shape shows
            jobs = jobs.only(*SHAPE_COLUMNS)
        wanted = self.request.query_params.get("status")
        if wanted and self.action == "list":
            if wanted not in Status.values:
                raise ApiError("invalid_status", f"unknown status '{wanted}'; one of {', '.join(Status.values)}")
            jobs = jobs.filter(status=wanted)
        return jobs

    def list(self, request, *args, **kwargs):
        jobs = list(self.paginate_queryset(self.filter_queryset(self.get_queryset())))
        etag = etag_for(jobs, request.build_absolute_uri(), self.paginator.page.paginator.count)
        if (unchanged := not_modified(request, etag)) is not None:
            return unchanged
        return with_etag(self.get_paginated_response(self.get_serializer(jobs, many=True).data), etag)

    def retrieve(self, request, *args, **kwargs):
        job = self.get_object()
        etag = etag_for([job])
        if (unchanged := not_modified(request, etag)) is not None:
            return unchanged
        return with_etag(Response(self.get_serializer(job).data), etag)

    def initialize_request(self, request, *args, **kwargs):
        # Enforce the size limit while the body streams in, before anything is written to disk.
        request.upload_handlers.insert(0, SizeLimitUploadHandler(request))
        return super().initialize_request(request, *args, **kwargs)

    @extend_schema(request={"multipart/form-data": SubmitSerializer}, responses={201: JobSerializer,
                                                                                  200: JobSerializer})
    def create(self, request):
        form = SubmitSerializer(data=request.data)
        if getattr(request, "gedge_upload_too_large", False):
            raise refused_submission(UploadTooLarge())
        if not form.is_valid():
            sent = request.FILES.get("video")
            if sent is not None and sent.size == 0:
                raise ApiError("not_a_video", "not a usable video: the file is empty")
            if "video" in form.errors:
                raise ApiError("video_required", "send the video as the multipart field 'video'")
            raise serializers.ValidationError(form.errors)  # shaped as "invalid" with the field errors
        try:
            job, created = submit_job(request.user, form.validated_data["video"],
                                      client_token=form.validated_data["client_token"],
                                      enhance=form.validated_data["enhance"], regions=form.validated_data["regions"])
        except REFUSED as exc:
            raise refused_submission(exc) from None
        return Response(JobSerializer(job).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(parameters=[OpenApiParameter("segments", bool, description="also the segments' own events")],
                   responses=JobEventSerializer(many=True))
    @action(detail=True, methods=["get"])
    def events(self, request, pk=None):
        """The job's status changes in order (``segment`` null); with ``?segments=1`` its segments' too."""
        events = self.get_object().events.all()
        if request.query_params.get("segments", "").lower() not in ("1", "true", "yes"):
            events = events.filter(segment__isnull=True)
        return Response(JobEventSerializer(events, many=True).data)

    @extend_schema(responses=SegmentSerializer(many=True))
    @action(detail=True, methods=["get"])
    def segments(self, request, pk=None):
        """The job's segments in order: their frames, status and frames done per stage."""
        return Response(SegmentSerializer(self.get_object().segments.all(), many=True).data)

    @extend_schema(parameters=[OpenApiParameter("start", int), OpenApiParameter("end", int)],
                   responses={200: dict})
    @action(detail=True, methods=["get"])
    def detections(self, request, pk=None):
        path = self._result(DETECTIONS_JSON)
        start, end = request.query_params.get("start"), request.query_params.get("end")
        if start is None and end is None:  # the whole document, streamed as it is on disk
            return ranged_file_response(request, path, "application/json")
        try:
            first, last = int(start or 0), int(end) if end is not None else None
        except ValueError:
            raise ApiError("invalid_range", "start and end must be frame numbers") from None
        if first < 0 or (last is not None and last < first):
            raise ApiError("invalid_range", "start must be >= 0 and end >= start (both inclusive frame numbers)")
        # One frame at a time from disk: what is held is the frames asked for, not the whole document.
        facts = read_detection_facts(path)
        doc = {key: value for key, value in facts.items() if key != "summary"}
        doc["frames"] = list(takewhile(lambda f: last is None or f["index"] <= last,
                                       (f for f in iter_detection_frames(path) if f["index"] >= first)))
        if "summary" in facts:
            doc["summary"] = facts["summary"]
        return Response(doc)

    @extend_schema(parameters=[OpenApiParameter("class", str, description="only tracks of this class"),
                               OpenApiParameter("from_ms", float, description="in view at or after this time"),
                               OpenApiParameter("to_ms", float, description="in view at or before this time")],
                   responses=TrackSerializer(many=True))
    @action(detail=True, methods=["get"])
    def tracks(self, request, pk=None):
        """The job's tracked objects (one per identity), by id, paginated; empty until the job reaches Exit."""
        tracks = _tracks_filtered(request, self.get_object().tracks.order_by("track_id"))
        page = self.paginate_queryset(tracks)
        return self.get_paginated_response(TrackSerializer(page, many=True).data)

    @extend_schema(methods=["GET"], responses=RegionSerializer(many=True))
    @extend_schema(methods=["POST"], request=RegionSerializer, responses={201: RegionSerializer})
    @action(detail=True, methods=["get", "post"])
    def regions(self, request, pk=None):
        """The job's counting lines and zones; POST adds one and counts it over the stored tracks at once."""
        if request.method == "GET":
            return Response(RegionSerializer(self.get_object().regions.all(), many=True).data)
        form = RegionSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        try:
            region, = add_regions(self._changeable(), [form.validated_data])
        except RegionError as exc:
            raise ApiError("invalid_region", str(exc)) from None
        return Response(RegionSerializer(region).data, status=status.HTTP_201_CREATED)

    @extend_schema(methods=["GET"], responses=RegionSerializer)
    @extend_schema(methods=["PATCH"], request=RegionSerializer, responses=RegionSerializer)
    @extend_schema(methods=["DELETE"], responses={204: None})
    @action(detail=True, methods=["get", "patch", "delete"], url_path=r"regions/(?P<region_id>[0-9]+)")
    def region(self, request, pk=None, region_id=None):
        """One line or zone: PATCH changes its name, kind or points and recounts it; DELETE removes it."""
        job = self.get_object() if request.method == "GET" else self._changeable()
        region = Region.objects.filter(job=job, pk=region_id).select_related("job").first()
        if region is None:
            raise ApiError("not_found", "no such line or zone on this job", status.HTTP_404_NOT_FOUND)
        if request.method == "GET":
            return Response(RegionSerializer(region).data)
        if request.method == "DELETE":
            delete_region(region)
            return Response(status=status.HTTP_204_NO_CONTENT)
        form = RegionSerializer(region, data=request.data, partial=True)
        form.is_valid(raise_exception=True)
        try:
            region = change_region(region, **{k: form.validated_data.get(k) for k in ("name", "kind", "points")})
        except RegionError as exc:
            raise ApiError("invalid_region", str(exc)) from None
        return Response(RegionSerializer(region).data)

    @extend_schema(parameters=[OpenApiParameter("format", str, enum=["mot", "coco"], required=True,
                                                description="mot: MOT Challenge text; coco: COCO JSON")],
                   responses={(200, "text/plain"): bytes, (200, "application/json"): bytes})
    @action(detail=True, methods=["get"], renderer_classes=[renderers.JSONRenderer, MotRenderer, CocoRenderer])
    def export(self, request, pk=None, format=None):
        """The tracks as MOT Challenge text (``?format=mot``) or a COCO JSON document (``?format=coco``: the
        frames as images, tracks as instance ids), streamed."""
        chosen = request.accepted_renderer.format
        if chosen not in ("mot", "coco"):
            raise ApiError("invalid_format", "ask for ?format=mot or ?format=coco")
        job = self.get_object()
        path = self._result(DETECTIONS_JSON, job)
        if chosen == "mot":
            body, kind, name = mot_lines(iter_detection_frames(path)), "text/plain; charset=utf-8", "mot.txt"
        else:
            facts = read_detection_facts(path)
            video = {**facts["video"], "name": job.original_name}
            body = coco_chunks(lambda: iter_detection_frames(path), video, facts["model"]["class_names"])
            kind, name = "application/json", "coco.json"
        response = StreamingHttpResponse(in_blocks(body), content_type=kind)
        response["Content-Disposition"] = f'attachment; filename="job-{pk}-{name}"'
        return response

    @extend_schema(responses={(200, "video/mp4"): bytes, (206, "video/mp4"): bytes})
    @action(detail=True, methods=["get"])
    def video(self, request, pk=None) -> HttpResponse:
        path = self._result(ANNOTATED)
        download = f"job-{pk}-annotated.mp4" if request.query_params.get("download") else None
        return ranged_file_response(request, path, "video/mp4", download)

    def _changeable(self) -> Job:
        """The job, where this user may change it: their own, or anyone's with the permission jobs.change_job
        (seeing a job, jobs.view_job, is not enough to cancel or retry it)."""
        job = self.get_object()
        if job.user_id != self.request.user.pk and not self.request.user.has_perm("jobs.change_job"):
            raise ApiError("forbidden", "cancelling or retrying another user's job needs the permission "
                           "jobs.change_job", status.HTTP_403_FORBIDDEN)
        return job

    @extend_schema(request=None, responses=JobSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        try:
            job = cancel_job(self._changeable())
        except ActionNotAllowed as exc:
            raise ApiError("not_allowed", str(exc), status.HTTP_409_CONFLICT) from None
        return Response(JobSerializer(job).data)

    @extend_schema(request=None, responses=JobSerializer)
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        try:
            job = retry_job(self._changeable(), by=request.user.username)
        except ActionNotAllowed as exc:
            raise ApiError("not_allowed", str(exc), status.HTTP_409_CONFLICT) from None
        except TooManyActiveJobs as exc:
            raise refused_submission(exc) from None
        return Response(JobSerializer(job).data)

    def _result(self, name: str, job: Job | None = None):
        job = job or self.get_object()
        path = job.result_dir / name
        if job.expired_at is not None:
            raise ApiError("expired", f"the results were deleted on {job.expired_at:%Y-%m-%d}, "
                           f"{settings.GEDGE_RETENTION_DAYS:g} days after the job ended", status.HTTP_410_GONE)
        if job.status != Status.EXIT or not path.exists():
            raise ApiError("not_ready", f"results are ready when the job reaches Exit (it is {job.status})",
                           status.HTTP_409_CONFLICT)
        return path
