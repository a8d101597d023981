"""The REST API under /api/: every endpoint, every error code, in the one error shape."""
from __future__ import annotations

import io
import json
import re
import uuid

import pytest
from django.core.management import call_command
from django.http.multipartparser import MultiPartParser
from django.test import RequestFactory
from rest_framework.test import APIClient
from rest_framework.throttling import ScopedRateThrottle

from jobs.lifecycle.services import tracker_settings
from jobs.models import Job, Status
from jobs.web.upload_limit import SizeLimitUploadHandler

from .conftest import PASSWORD, content_of, token_for
from .helpers_media import finished_job, good_video, make_job, text_file

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def isolated_cache(settings):
    """Throttle counters live in the (Redis) cache: a prefix per test keeps runs from counting each other."""
    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": f"gedge-test-{uuid.uuid4().hex}"}}


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code and error["message"], error
    return error


def submit(client, path, name=None, **fields):
    with open(path, "rb") as fh:
        upload = io.BytesIO(fh.read())
    upload.name = name or path.name
    return client.post("/api/jobs/", {"video": upload, **fields}, format="multipart")


# --- submit ---


def test_submit_stores_under_generated_name_in_user_folder(api, owner, media_root, tmp_path):
    response = submit(api, good_video(tmp_path / "in.mp4"), name="my holiday.MP4", enhance="true")
    assert response.status_code == 201, response.content
    body = response.json()
    job = Job.objects.get(pk=body["id"])
    assert body["status"] == "Enqueue" and body["user"] == "owner"
    assert body["original_name"] == "my holiday.MP4"
    assert body["type"] == "mp4/mp4"  # the client's extension / the probed container
    assert (body["width"], body["height"], body["frame_count"]) == (64, 48, 4)
    assert body["params"] == {"enhance": True, "tracker": tracker_settings().as_dict()}  # recorded at submit
    assert re.fullmatch(rf"uploads/{owner.pk}/[0-9a-f]{{32}}\.mp4", job.path)
    assert (media_root / job.path).stat().st_size == body["size_bytes"] > 0
    assert list((media_root / "uploads" / str(owner.pk)).iterdir()) == [media_root / job.path]


def test_type_is_probed_not_taken_from_the_name(api, tmp_path):
    response = submit(api, good_video(tmp_path / "in.mkv", fmt="matroska"), name="clip.mp4")
    assert response.status_code == 201
    assert response.json()["type"] == "mp4/mkv"
    assert Job.objects.get().path.endswith(".mkv")


def test_client_token_makes_submit_idempotent(api, owner, other, tmp_path):
    video = good_video(tmp_path / "in.mp4")
    first = submit(api, video, client_token="abc-1")
    again = submit(api, video, client_token="abc-1")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert Job.objects.filter(user=owner).count() == 1
    assert len(list((tmp_path / "media" / "uploads" / str(owner.pk)).iterdir())) == 1, "a duplicate was stored"
    # The token belongs to the user: the same token from someone else is a new job.
    other_client = APIClient()
    other_client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(other)}")
    theirs = submit(other_client, video, client_token="abc-1")
    assert theirs.status_code == 201 and theirs.json()["id"] != first.json()["id"]
    # Without a token every submit is a new job.
    assert submit(api, video).status_code == 201 and submit(api, video).status_code == 201
    assert Job.objects.filter(user=owner).count() == 3


def test_submit_errors(api, tmp_path):
    assert_error(api.post("/api/jobs/", {}, format="multipart"), 400, "video_required")
    assert_error(api.post("/api/jobs/", {"video": "just text"}, format="multipart"), 400, "video_required")
    not_video = assert_error(submit(api, text_file(tmp_path / "a.mp4")), 400, "not_a_video")
    assert "not a usable video" in not_video["message"]
    error = assert_error(submit(api, good_video(tmp_path / "in.mp4"), client_token="x" * 101), 400, "invalid")
    assert "client_token" in error["detail"]
    assert_error(api.post("/api/jobs/", b"raw", content_type="text/plain"), 415, "unsupported_media_type")
    assert not Job.objects.exists()
    assert not list((tmp_path / "media").rglob("*.*")), "refused uploads must leave no file behind"


def test_upload_over_the_limit_is_refused_with_413(api, settings, tmp_path):
    settings.GEDGE_MAX_UPLOAD_BYTES = 100_000
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0" * 300_000)
    error = assert_error(submit(api, big), 413, "too_large")
    assert "100000 bytes" in error["message"]
    assert not Job.objects.exists() and not list((tmp_path / "media").rglob("*.*"))


def test_size_limit_stops_reading_the_body_at_the_limit(settings):
    """The handler refuses the chunk that crosses the limit, and nothing after it is read from the socket."""
    settings.GEDGE_MAX_UPLOAD_BYTES = 200_000
    boundary = "XyZ"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"video\"; filename=\"a.mp4\"\r\n"
            "Content-Type: video/mp4\r\n\r\n").encode() + b"\1" * 5_000_000 + f"\r\n--{boundary}--\r\n".encode()

    class CountingStream(io.BytesIO):
        consumed = 0

        def read(self, size=-1):
            data = super().read(size)
            CountingStream.consumed += len(data)
            return data

    stream = CountingStream(body)
    request = RequestFactory().post("/api/jobs/")
    handlers = [SizeLimitUploadHandler(request), *request.upload_handlers]
    meta = {**request.META, "CONTENT_TYPE": f"multipart/form-data; boundary={boundary}",
            "CONTENT_LENGTH": str(len(body))}
    _, files = MultiPartParser(meta, stream, handlers).parse()
    assert "video" not in files
    assert request.gedge_upload_too_large
    # Django reads in 64 KiB chunks: at most a couple of chunks past the limit, not the 5 MB body.
    assert CountingStream.consumed < 200_000 + 4 * 65536, CountingStream.consumed


def test_active_jobs_cap_answers_429(api, owner, settings, tmp_path):
    settings.GEDGE_MAX_ACTIVE_JOBS_PER_USER = 2
    video = good_video(tmp_path / "in.mp4")
    make_job(owner, Status.INFERENCING)
    make_job(owner, Status.EXIT)  # ended jobs do not count
    assert submit(api, video, client_token="t1").status_code == 201
    error = assert_error(submit(api, video), 429, "too_many_active_jobs")
    assert "2 jobs that have not ended" in error["message"]
    # A resubmission of a job that exists is still answered with it, cap or not.
    assert submit(api, video, client_token="t1").status_code == 200
    Job.objects.filter(status=Status.INFERENCING).update(status=Status.CANCELLED)
    assert submit(api, video).status_code == 201
    assert len(list((tmp_path / "media" / "uploads").rglob("*.mp4"))) == 2, "a refused upload was kept"


def test_submissions_are_throttled_per_user(api, owner, other, monkeypatch, tmp_path):
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"submit": "2/min"})
    video = good_video(tmp_path / "in.mp4")
    assert [submit(api, video).status_code for _ in range(2)] == [201, 201]
    response = submit(api, video)
    error = assert_error(response, 429, "throttled")
    assert int(response["Retry-After"]) > 0 and error["retry_after_s"] > 0
    assert "too many submissions" in error["message"]
    # Reading is not throttled, and the limit is per user.
    assert api.get("/api/jobs/").status_code == 200
    other_client = APIClient()
    other_client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(other)}")
    assert submit(other_client, video).status_code == 201


# --- list, detail, events ---


def test_list_is_paginated_newest_first_and_filters_by_status(api, owner, other):
    jobs = [make_job(owner, Status.EXIT if i % 3 == 0 else Status.ENQUEUE) for i in range(55)]
    make_job(other, Status.EXIT)
    page = api.get("/api/jobs/").json()
    assert page["count"] == 55 and len(page["results"]) == 50 and page["next"]
    assert [j["id"] for j in page["results"]] == [j.pk for j in reversed(jobs)][:50]
    second = api.get(page["next"]).json()
    assert [j["id"] for j in second["results"]] == [j.pk for j in reversed(jobs)][50:]
    done = api.get("/api/jobs/", {"status": "Exit"}).json()
    assert done["count"] == 19 and {j["status"] for j in done["results"]} == {"Exit"}
    error = assert_error(api.get("/api/jobs/", {"status": "Done"}), 400, "invalid_status")
    assert "Postprocessing_complete" in error["message"]
    assert_error(api.get("/api/jobs/", {"page": 9}), 404, "not_found")


def test_detail_and_events(api, owner):
    job = make_job(owner)
    job.events.create(from_status="", to_status=Status.ENQUEUE, message="uploaded")
    job.events.create(from_status=Status.ENQUEUE, to_status=Status.PREPROCESSING, message="preprocess started")
    detail = api.get(f"/api/jobs/{job.pk}/").json()
    assert detail["id"] == job.pk and detail["status"] == "Enqueue" and detail["version"] == 1
    events = api.get(f"/api/jobs/{job.pk}/events/").json()
    assert [(e["from_status"], e["to_status"]) for e in events] == [("", "Enqueue"), ("Enqueue", "Preprocessing")]
    assert_error(api.get("/api/jobs/999999/"), 404, "not_found")
    assert_error(api.get("/api/jobs/abc/"), 404, "not_found")


# --- results ---


def test_detections_whole_and_by_frame_range(api, owner):
    job = finished_job(owner, frames=10)
    whole = api.get(f"/api/jobs/{job.pk}/detections/")
    assert whole.status_code == 200 and whole["Content-Type"] == "application/json"
    assert len(json.loads(content_of(whole))["frames"]) == 10
    part = api.get(f"/api/jobs/{job.pk}/detections/", {"start": 3, "end": 5}).json()
    assert [f["index"] for f in part["frames"]] == [3, 4, 5] and part["video"] == {"frame_count": 10}
    assert [f["index"] for f in api.get(f"/api/jobs/{job.pk}/detections/", {"start": 8}).json()["frames"]] == [8, 9]
    for bad in ({"start": "x"}, {"start": -1}, {"start": 5, "end": 2}):
        assert_error(api.get(f"/api/jobs/{job.pk}/detections/", bad), 400, "invalid_range")


def test_annotated_video_supports_range_requests(api, owner):
    job = finished_job(owner)
    url = f"/api/jobs/{job.pk}/video/"
    whole = api.get(url)
    assert whole.status_code == 200 and whole["Accept-Ranges"] == "bytes" and whole["Content-Type"] == "video/mp4"
    assert content_of(whole) == bytes(range(256)) * 4
    part = api.get(url, HTTP_RANGE="bytes=10-19")
    assert part.status_code == 206 and part["Content-Range"] == "bytes 10-19/1024"
    assert content_of(part) == bytes(range(10, 20))
    tail = api.get(url, HTTP_RANGE="bytes=-4")
    assert tail["Content-Range"] == "bytes 1020-1023/1024" and content_of(tail) == bytes([252, 253,
                                                                                                           254, 255])
    open_end = api.get(url, HTTP_RANGE="bytes=1000-")
    assert open_end["Content-Range"] == "bytes 1000-1023/1024" and open_end["Content-Length"] == "24"
    unsatisfiable = api.get(url, HTTP_RANGE="bytes=5000-")
    assert_error(unsatisfiable, 416, "range_not_satisfiable")
    assert unsatisfiable["Content-Range"] == "bytes */1024"
    huge = "9" * 5000  # more digits than Python parses as an int: was a 500
    assert_error(api.get(url, HTTP_RANGE=f"bytes={huge}-"), 416, "range_not_satisfiable")
    assert api.get(url, HTTP_RANGE=f"bytes=10-{huge}")["Content-Range"] == "bytes 10-1023/1024"
    assert api.get(url, HTTP_RANGE=f"bytes=-{huge}")["Content-Range"] == "bytes 0-1023/1024"
    download = api.get(url, {"download": 1})
    assert download["Content-Disposition"] == f'attachment; filename="job-{job.pk}-annotated.mp4"'


def test_results_before_exit_answer_409(api, owner):
    job = make_job(owner, Status.INFERENCING)
    for what in ("detections", "video"):
        error = assert_error(api.get(f"/api/jobs/{job.pk}/{what}/"), 409, "not_ready")
        assert "Inferencing" in error["message"]


# --- cancel, retry ---


def test_cancel_and_retry(api, owner):
    job = make_job(owner)
    cancelled = api.post(f"/api/jobs/{job.pk}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "Cancelled"
    assert_error(api.post(f"/api/jobs/{job.pk}/cancel/"), 409, "not_allowed")
    retried = api.post(f"/api/jobs/{job.pk}/retry/")
    assert retried.status_code == 200 and retried.json()["status"] == "Enqueue"
    assert_error(api.post(f"/api/jobs/{job.pk}/retry/"), 409, "not_allowed")
    done = make_job(owner, Status.EXIT)
    assert_error(api.post(f"/api/jobs/{done.pk}/cancel/"), 409, "not_allowed")
    assert_error(api.post(f"/api/jobs/{done.pk}/retry/"), 409, "not_allowed")
    assert Job.objects.get(pk=done.pk).status == Status.EXIT


# --- authentication ---


def test_anonymous_and_bad_token_answer_401(owner):
    job = make_job(owner)
    client = APIClient()
    for url in ("/api/jobs/", f"/api/jobs/{job.pk}/", f"/api/jobs/{job.pk}/video/"):
        response = client.get(url)
        assert_error(response, 401, "not_authenticated")
        assert response["WWW-Authenticate"] == "Token"
    assert_error(client.post(f"/api/jobs/{job.pk}/cancel/"), 401, "not_authenticated")
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert_error(client.get("/api/jobs/"), 401, "authentication_failed")
    assert Job.objects.get(pk=job.pk).status == Status.ENQUEUE


def test_session_login_and_drf_create_token(owner, capsys):
    session = APIClient()
    assert session.login(username="owner", password=PASSWORD)
    assert session.get("/api/jobs/").status_code == 200
    call_command("drf_create_token", "owner")
    key = capsys.readouterr().out.split()[2]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/jobs/").json()["count"] == 0


def test_session_posts_need_csrf(owner):
    job = make_job(owner)
    session = APIClient(enforce_csrf_checks=True)
    session.login(username="owner", password=PASSWORD)
    error = assert_error(session.post(f"/api/jobs/{job.pk}/cancel/"), 403, "permission_denied")
    assert "CSRF" in error["message"]
    assert Job.objects.get(pk=job.pk).status == Status.ENQUEUE


# --- Django-level errors under /api/ use the same shape ---


def test_unknown_url_and_method_answer_in_the_error_shape(api, owner):
    job = make_job(owner)
    assert_error(api.get("/api/nothing-here/"), 404, "not_found")
    assert_error(api.get(f"/api/jobs/{job.pk}/nothing/"), 404, "not_found")
    response = api.delete(f"/api/jobs/{job.pk}/")
    assert_error(response, 405, "method_not_allowed")
    assert "GET" in response["Allow"]
    assert_error(api.get(f"/api/jobs/{job.pk}/cancel/"), 405, "method_not_allowed")
    assert_error(api.put("/api/jobs/", {}), 405, "method_not_allowed")


def test_oversized_form_fields_answer_413(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    error = assert_error(api.post("/api/jobs/", {"client_token": "x" * 5000}, format="multipart"), 413,
                         "too_large")
    assert "form fields" in error["message"]


def test_a_crash_under_api_answers_500_in_the_error_shape(api, owner, monkeypatch):
    from jobs.web.api import JobViewSet

    def crash(self, request, *args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(JobViewSet, "retrieve", crash)
    api.raise_request_exception = False
    job = make_job(owner)
    error = assert_error(api.get(f"/api/jobs/{job.pk}/"), 500, "server_error")
    assert "boom" not in error["message"]  # no internals leak to the client


# --- schema and docs ---


def test_openapi_schema_and_docs_page(api):
    schema = api.get("/api/schema/", {"format": "json"})
    assert schema.status_code == 200
    doc = schema.json()
    paths = doc["paths"]
    for path in ("/api/jobs/", "/api/jobs/{id}/", "/api/jobs/{id}/events/", "/api/jobs/{id}/detections/",
                 "/api/jobs/{id}/video/", "/api/jobs/{id}/cancel/", "/api/jobs/{id}/retry/"):
        assert path in paths, path
    assert "multipart/form-data" in paths["/api/jobs/"]["post"]["requestBody"]["content"]
    assert {p["name"] for p in paths["/api/jobs/"]["get"]["parameters"]} >= {"status", "page"}
    assert {"tokenAuth", "cookieAuth"} <= set(doc["components"]["securitySchemes"])
    docs = api.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()
