from __future__ import annotations

from rest_framework import serializers

from .models import Job, JobEvent


class JobEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = JobEvent
        fields = ["id", "from_status", "to_status", "at", "iteration", "message"]


class JobSerializer(serializers.ModelSerializer):
    """The one job shape: GET /api/jobs/{id}/ and the WebSocket's job.update carry the same fields."""

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
            "model_name", "model_sha256", "params", "summary", "version", "created_at", "updated_at",
        ]
        read_only_fields = fields

    def get_stage_progress(self, job: Job) -> dict[str, int]:
        return {"preprocess": job.preprocess_done, "inference": job.inference_done,
                "postprocess": job.postprocess_done}


def job_payload(job: Job) -> dict:
    """JSON-ready dict of a job (used by the socket; the API renders the same serializer)."""
    import json

    from rest_framework.utils.encoders import JSONEncoder

    return json.loads(json.dumps(JobSerializer(job).data, cls=JSONEncoder))
