from __future__ import annotations

import functools
import json
import operator

from rest_framework import serializers
from rest_framework.utils.encoders import JSONEncoder

from .models import Job, JobEvent, Region, Segment, Track


class JobEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = JobEvent
        fields = ["id", "segment", "from_status", "to_status", "at", "iteration", "message"]


class SegmentSerializer(serializers.ModelSerializer):
    """One segment of a job: which frames, where it is, its frames done per stage and its stage times."""

    class Meta:
        model = Segment
        fields = ["index", "first_frame", "frame_count", "start_s", "status", "iteration", "preprocess_done",
                  "inference_done", "postprocess_done", "stage_ms", "updated_at"]
        read_only_fields = fields


class TrackSerializer(serializers.ModelSerializer):
    """One tracked object: its class, when it was in view, how many boxes it had, its path (sampled)."""

    id = serializers.IntegerField(source="track_id", read_only=True)
    # "class" is a Python keyword: the field is declared under another name and renamed in the output
    class_name = serializers.CharField(read_only=True)
    duration_ms = serializers.SerializerMethodField()

    class Meta:
        model = Track
        fields = ["id", "class_name", "first_frame", "last_frame", "first_ms", "last_ms", "duration_ms", "frames",
                  "score", "path"]
        read_only_fields = fields

    def get_duration_ms(self, track: Track) -> float:
        return round(track.last_ms - track.first_ms, 1)

    def to_representation(self, instance: Track) -> dict:
        data = super().to_representation(instance)
        return {"id": data.pop("id"), "class": data.pop("class_name"), **data}


class RegionSerializer(serializers.ModelSerializer):
    """A counting line (two points) or zone (3-64 points), pixels of the original video, and its counts."""

    points = serializers.ListField(child=serializers.ListField(child=serializers.FloatField(), min_length=2,
                                                               max_length=2), min_length=2, max_length=64)

    class Meta:
        model = Region
        fields = ["id", "name", "kind", "points", "counts", "counted_at", "created_at", "updated_at"]
        read_only_fields = ["id", "counts", "counted_at", "created_at", "updated_at"]


class JobSerializer(serializers.ModelSerializer):
    """The one job shape: GET /api/jobs/{id}/, the list, the WebSocket's job.update and the pages' initial
    data all carry these fields, rendered by :func:`job_representation`."""

    user = serializers.CharField(source="user.username", read_only=True)
    progress = serializers.FloatField(read_only=True)
    duration_ms = serializers.IntegerField(read_only=True, allow_null=True)
    stage_progress = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = [
            "id", "user", "path", "type", "status", "started_at", "ended_at", "iteration",
            "original_name", "size_bytes", "client_token", "width", "height", "fps", "frame_count",
            "duration_s", "progress", "stage_progress", "stage_ms", "duration_ms", "error", "failed_stage",
            "model_name", "model_sha256", "params", "summary", "segment_count", "segments_done", "window",
            "work_bytes_peak", "result_bytes", "expired_at", "version", "created_at", "updated_at",
        ]
        read_only_fields = fields

    def get_stage_progress(self, job: Job) -> dict[str, int]:
        return {"preprocess": job.preprocess_done, "inference": job.inference_done,
                "postprocess": job.postprocess_done}

    def to_representation(self, instance: Job) -> dict:
        return job_representation(instance)


# The columns the shape reads: its model fields, the counters behind progress and stage_progress, and the
# owner's name. The polled reads load only these (one query, no lease or artifact columns).
SHAPE_COLUMNS = (
    "id", "user__username", "path", "type", "status", "started_at", "ended_at", "iteration", "original_name",
    "size_bytes", "client_token", "width", "height", "fps", "frame_count", "duration_s", "preprocess_done",
    "inference_done", "postprocess_done", "stage_ms", "error", "failed_stage", "model_name", "model_sha256",
    "params", "summary", "segment_count", "segments_done", "window", "work_bytes_peak", "result_bytes", "expired_at",
    "version", "created_at", "updated_at",
)


@functools.cache
def _job_fields() -> tuple:
    # A ModelSerializer builds its fields anew for every instance (model introspection, deep copies): about
    # as much CPU as the rest of a GET. The fields are stateless once bound, so they are built once here, each
    # with a plain getter for its source (DRF's Field.get_attribute walks the source with the error handling
    # of optional and writable fields, which a read-only shape of non-null sources never needs: 53 -> 20 us a
    # job).
    return tuple((name, (lambda job: job) if field.source == "*" else operator.attrgetter(field.source),
                  field.to_representation) for name, field in JobSerializer().fields.items())


def job_representation(job: Job) -> dict:
    """``JobSerializer(job).data``, field for field (what DRF's Serializer.to_representation does), at a
    fraction of the cost (the fields are built once per process). The REST API, the socket and the pages use it."""
    data = {}
    for name, read, represent in _job_fields():
        value = read(job)
        data[name] = None if value is None else represent(value)
    return data


def job_payload(job: Job) -> dict:
    """JSON-ready dict of a job (used by the socket; the API renders the same representation)."""
    return json.loads(json.dumps(job_representation(job), cls=JSONEncoder))
