"""Resumable uploads with the tus protocol (https://tus.io/protocols/resumable-upload, v1.0.0, the core
protocol with the creation and termination extensions), which the browser's uploader speaks through
tus-js-client and any tus client (tuspy, tusd's tools, Uppy) can use:

    POST   /api/uploads/          Upload-Length, Upload-Metadata (filename, client_token, enhance) -> 201 Location
    HEAD   /api/uploads/{id}/     -> Upload-Offset, Upload-Length (resume from there)
    PATCH  /api/uploads/{id}/     Upload-Offset, Content-Type: application/offset+octet-stream, one chunk
                                  (at most GEDGE_MAX_CHUNK_BYTES) -> 204 Upload-Offset
    DELETE /api/uploads/{id}/     -> 204 (the upload is dropped)
    OPTIONS /api/uploads/         -> Tus-Version, Tus-Extension, Tus-Max-Size

The chunk that completes an upload turns it into a job (probed like any upload; the job's id comes back in
the ``Gedge-Job-Id`` header of that PATCH and of every later HEAD). Every request body is small, so the web
process never holds more than one chunk of a large video; `client_token` in the metadata makes the job
exactly-once across page reloads. The protocol's framing lives here; what an upload is and may do, in
jobs/lifecycle/services.py.
"""
from __future__ import annotations

import base64
import binascii

from django.conf import settings
from django.http import HttpResponse
from django.urls import reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import parsers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.views import APIView

from jobs.lifecycle.services import (
    UploadConflict,
    append_upload,
    delete_upload,
    finish_if_complete,
    start_upload,
)
from jobs.models import Upload

from .api import REFUSED, SubmitThrottle, refused_submission
from .api_errors import ApiError

TUS_VERSION = "1.0.0"
CHUNK_TYPE = "application/offset+octet-stream"


class ChunkParser(parsers.BaseParser):
    media_type = CHUNK_TYPE

    def parse(self, stream, media_type=None, parser_context=None) -> bytes:
        return stream.read() if stream is not None else b""


def _tus(response: HttpResponse, **headers: str) -> HttpResponse:
    response["Tus-Resumable"] = TUS_VERSION
    response["Cache-Control"] = "no-store"
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def _header_int(request, name: str) -> int:
    raw = request.headers.get(name, "")
    if not raw.isdigit() or len(raw) > 19:
        raise ApiError("invalid_header", f"{name} must be a non-negative integer")
    return int(raw)


def parse_metadata(raw: str) -> dict[str, str]:
    """Upload-Metadata: comma-separated ``key base64value`` pairs (a key alone means an empty value)."""
    values: dict[str, str] = {}
    for pair in filter(None, (part.strip() for part in raw.split(","))):
        key, _, encoded = pair.partition(" ")
        try:
            values[key] = base64.b64decode(encoded, validate=True).decode("utf-8") if encoded else ""
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise ApiError("invalid_header", f"Upload-Metadata: the value of '{key}' is not base64 UTF-8") from exc
    return values


class AuthCheckView(APIView):
    """204 for a signed-in user (session or token), 401 otherwise: what the ingress asks before it lets a large
    classic upload body through (its auth-url / forwardAuth; jobs/web/body_limit.py applies the same rule)."""

    permission_classes = [IsAuthenticated]

    @extend_schema(responses={204: OpenApiResponse(description="signed in"), 401: None})
    def get(self, request):
        return HttpResponse(status=204)


class TusView(APIView):
    permission_classes = [IsAuthenticated]
    parser_classes = [ChunkParser]

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if request.method != "OPTIONS" and request.headers.get("Tus-Resumable") != TUS_VERSION:
            raise ApiError("tus_version", f"this server speaks tus {TUS_VERSION} (Tus-Resumable header)",
                           status.HTTP_412_PRECONDITION_FAILED)

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        return _tus(response)

    def _upload(self, pk) -> Upload:
        upload = Upload.objects.filter(pk=pk, user=self.request.user).first()  # another user's: 404 as well
        if upload is None:
            raise ApiError("not_found", "no such upload (finished uploads are kept until their job is made; "
                           "unfinished ones for GEDGE_UPLOAD_EXPIRY_S)", status.HTTP_404_NOT_FOUND)
        return upload


class UploadsView(TusView):
    def get_throttles(self):
        return [SubmitThrottle()] if self.request.method == "POST" else []

    @extend_schema(responses={204: OpenApiResponse(description="Tus-Version, Tus-Extension, Tus-Max-Size")})
    def options(self, request, *args, **kwargs):
        return _tus(HttpResponse(status=204), Tus_Version=TUS_VERSION, Tus_Extension="creation,termination",
                    Tus_Max_Size=str(settings.GEDGE_MAX_UPLOAD_BYTES))

    @extend_schema(request=None, responses={201: OpenApiResponse(description="Location: the upload's URL")})
    def post(self, request):
        length = _header_int(request, "Upload-Length")
        meta = parse_metadata(request.headers.get("Upload-Metadata", ""))
        try:
            upload = start_upload(request.user, length, meta.get("filename", ""),
                                  client_token=meta.get("client_token", "")[:100],
                                  enhance=meta.get("enhance", "").lower() in ("1", "true", "yes"))
        except REFUSED as exc:
            raise refused_submission(exc) from None
        location = request.build_absolute_uri(reverse("upload-detail", args=[upload.pk]))
        return _tus(HttpResponse(status=201), Location=location, Upload_Offset="0")


class UploadDetailView(TusView):
    @extend_schema(responses={200: OpenApiResponse(description="Upload-Offset, Upload-Length, Gedge-Job-Id")})
    def head(self, request, pk):
        upload = finish_if_complete(self._upload(pk))
        headers = {"Upload_Offset": str(upload.offset), "Upload_Length": str(upload.length)}
        if upload.job_id:
            headers["Gedge_Job_Id"] = str(upload.job_id)
        return _tus(HttpResponse(status=200), **headers)

    @extend_schema(request={CHUNK_TYPE: bytes},
                   responses={204: OpenApiResponse(description="Upload-Offset; Gedge-Job-Id once complete")})
    def patch(self, request, pk):
        if request.content_type.split(";")[0].strip() != CHUNK_TYPE:
            raise ApiError("unsupported_media_type", f"a chunk is sent as {CHUNK_TYPE}",
                           status.HTTP_415_UNSUPPORTED_MEDIA_TYPE)
        declared = request.META.get("CONTENT_LENGTH") or "0"
        if not declared.isdigit() or int(declared) > settings.GEDGE_MAX_CHUNK_BYTES:
            raise ApiError("too_large", f"a chunk may carry at most {settings.GEDGE_MAX_CHUNK_BYTES} bytes",
                           status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
        offset = _header_int(request, "Upload-Offset")
        upload = self._upload(pk)
        try:
            upload = append_upload(upload.pk, request.user, offset, request.data)
        except UploadConflict as exc:
            raise ApiError("offset_mismatch", str(exc), status.HTTP_409_CONFLICT) from None
        except REFUSED as exc:
            raise refused_submission(exc) from None
        headers = {"Upload_Offset": str(upload.offset)}
        if upload.job_id:
            headers["Gedge_Job_Id"] = str(upload.job_id)
        return _tus(HttpResponse(status=204), **headers)

    @extend_schema(responses={204: None})
    def delete(self, request, pk):
        delete_upload(self._upload(pk))
        return _tus(HttpResponse(status=204))
