"""The two reads clients poll, GET /api/jobs/{id}/ and GET /api/jobs/, over a real Daphne: one implementation
(Django and DRF) of authentication, visibility and the job's shape, and conditional GET.

The Daphne process reads the test database; its answers are compared byte for byte with those of DRF called
in this process, so the served shape is DRF's own.
"""
from __future__ import annotations

import sys
from datetime import timedelta

import pytest
import requests
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from jobs.lifecycle.transitions import transition
from jobs.models import Job, Status

from .conftest import free_port, service_env, token_for

HOST = "localhost"  # the same absolute URLs (pagination links) from both servers


def seed(owner, other) -> dict[str, int]:
    now = timezone.now()
    rich = Job.objects.create(
        user=owner, path="uploads/a.mp4", type="mp4/mov", original_name="rue\u2028de la paix \u00e9t\u00e9.mp4",
        status=Status.EXIT, started_at=now - timedelta(seconds=3), ended_at=now, iteration=1, width=1280,
        height=720, fps=29.97, frame_count=84, duration_s=2.8, preprocess_done=84, inference_done=84,
        postprocess_done=84, stage_ms={"preprocess": 410.5, "inference": 1200}, params={"score": 0.3},
        summary={"detections": 1205, "per_class": {"person": 1148, "car": 9}}, model_name="yolox_nano.onnx",
        version=17)
    running = Job.objects.create(user=owner, path="uploads/b.mp4", original_name="b.mp4",
                                 status=Status.PREPROCESSING_COMPLETE, frame_count=84, preprocess_done=84,
                                 started_at=now)
    Job.objects.bulk_create([Job(user=owner, path=f"uploads/{i}.mp4", original_name=f"{i}.mp4")
                             for i in range(55)])  # more than one page of 50
    theirs = Job.objects.create(user=other, path="uploads/c.mp4", original_name="c.mp4", status=Status.FAILED,
                                error="inference failed: boom")
    return {"rich": rich.pk, "running": running.pk, "theirs": theirs.pk}


@pytest.fixture
def daphne(processes, media_root):
    port = free_port()
    processes.web(service_env(media_root), port)
    session = requests.Session()

    def get(path: str, headers: dict | None = None) -> requests.Response:
        return session.get(f"http://127.0.0.1:{port}{path}", headers={"Host": HOST, **(headers or {})},
                           timeout=10, allow_redirects=False)

    return get


def in_process(path: str, headers: dict) -> bytes:
    """DRF's own answer, from this process."""
    meta = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()}
    return APIClient().get(path, HTTP_HOST=HOST, **meta).content


@pytest.mark.django_db(transaction=True)  # the server reads what the test wrote
def test_who_sees_what_and_the_shapes_are_drfs(daphne, owner, other, staff, django_user_model):
    ids = seed(owner, other)
    inactive = django_user_model.objects.create_user(username="gone", is_active=False)
    mine, theirs, missing = f"/api/jobs/{ids['rich']}/", f"/api/jobs/{ids['theirs']}/", "/api/jobs/999999/"
    as_owner = {"Authorization": f"Token {token_for(owner)}"}
    as_other = {"Authorization": f"token {token_for(other)}"}  # the keyword in any case, as DRF takes it
    as_staff = {"Authorization": f"Token {token_for(staff)}"}
    client = Client()
    client.force_login(owner)
    by_cookie = {"Cookie": f"sessionid={client.cookies['sessionid'].value}"}
    cases = [
        # (path, headers, status)
        (mine, as_owner, 200), (mine, as_staff, 200), (theirs, as_staff, 200), (theirs, as_other, 200),
        (mine, by_cookie, 200), (f"{mine}?format=json", as_owner, 200),
        (theirs, as_owner, 404), (mine, as_other, 404), (missing, as_owner, 404),  # another's job = none
        (mine, {}, 401), (mine, {"Authorization": "Token nope"}, 401),
        (mine, {"Authorization": f"Token {token_for(inactive)}"}, 401),
        (mine, {"Authorization": f"Bearer {token_for(owner)}"}, 401),
        ("/api/jobs/", as_owner, 200), ("/api/jobs/?page=2", as_owner, 200), ("/api/jobs/?status=Exit", as_owner, 200),
        ("/api/jobs/", as_staff, 200), ("/api/jobs/", as_other, 200), ("/api/jobs/", by_cookie, 200),
        ("/api/jobs/?page=3", as_owner, 404), ("/api/jobs/?status=Bogus", as_owner, 400), ("/api/jobs/", {}, 401),
    ]
    for path, headers, expected in cases:
        case = (path, sorted(headers))  # header names only: no secrets in the report
        served = daphne(path, headers)
        assert served.status_code == expected, case
        assert served.headers["Content-Type"] == "application/json", case
        if expected == 200:
            assert served.headers["ETag"] and served.headers["Cache-Control"] == "private, no-cache", case
        if "Cookie" not in headers:  # a session's answer is the same, but the client's cookie jar is not
            assert served.content == in_process(path, headers), case
    assert daphne(mine, as_other).json() == daphne(missing, as_other).json() == {
        "error": {"code": "not_found", "message": "not found"}}

    rich = daphne(mine, as_owner)
    assert rich.json()["original_name"] == "rue\u2028de la paix \u00e9t\u00e9.mp4" and rich.json()["version"] == 17
    assert b"\\u2028" in rich.content  # escaped, as DRF's renderer does
    assert rich.json()["stage_progress"] == {"preprocess": 84, "inference": 84, "postprocess": 84}
    assert rich.json()["progress"] == 1.0 and rich.json()["duration_ms"] == 3000
    page1, page2 = daphne("/api/jobs/", as_owner).json(), daphne("/api/jobs/?page=2", as_owner).json()
    assert page1["count"] == page2["count"] == 57
    assert len(page1["results"]) == 50 and len(page2["results"]) == 7
    assert page1["next"] == f"http://{HOST}/api/jobs/?page=2" and page2["previous"] == f"http://{HOST}/api/jobs/"
    assert {job["user"] for job in daphne("/api/jobs/", as_other).json()["results"]} == {"other"}
    assert daphne("/api/jobs/", as_staff).json()["count"] == 58


@pytest.mark.django_db(transaction=True)
def test_conditional_get_answers_304_until_the_job_changes(daphne, owner, other):
    ids = seed(owner, other)
    as_owner = {"Authorization": f"Token {token_for(owner)}"}
    job, page = f"/api/jobs/{ids['running']}/", "/api/jobs/?page=2"  # page 2 holds the running job
    for path in (job, page):
        first = daphne(path, as_owner)
        etag = first.headers["ETag"]
        assert first.status_code == 200 and etag.startswith('"') and etag.endswith('"')
        again = daphne(path, {**as_owner, "If-None-Match": etag})
        assert again.status_code == 304 and again.content == b"" and again.headers["ETag"] == etag, path
        assert daphne(path, {**as_owner, "If-None-Match": f'W/{etag}, "other"'}).status_code == 304, path
        assert daphne(path, {**as_owner, "If-None-Match": '"something-else"'}).status_code == 200, path
    etags = {path: daphne(path, as_owner).headers["ETag"] for path in (job, page, "/api/jobs/")}
    assert len(set(etags.values())) == 3  # a job, its page, another page

    transition(ids["running"], Status.PREPROCESSING_COMPLETE, Status.CANCELLED, message="test")
    for path in (job, page):
        changed = daphne(path, {**as_owner, "If-None-Match": etags[path]})
        assert changed.status_code == 200 and changed.headers["ETag"] != etags[path], path
        assert b'"status":"Cancelled"' in changed.content, path
        assert daphne(path, {**as_owner, "If-None-Match": changed.headers["ETag"]}).status_code == 304, path
    # The first page did not change: its validator still holds.
    assert daphne("/api/jobs/", {**as_owner, "If-None-Match": etags["/api/jobs/"]}).status_code == 304
    # Someone else's job is 404 whatever validator is sent: a 304 would tell that it exists.
    as_other = {"Authorization": f"Token {token_for(other)}"}
    assert daphne(job, {**as_other, "If-None-Match": etags[job]}).status_code == 404
    assert daphne(job, {**as_other, "If-None-Match": "*"}).status_code == 404


@pytest.mark.django_db
def test_each_polled_read_is_one_query_after_authentication(owner, other, django_assert_num_queries):
    ids = seed(owner, other)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token_for(owner)}")
    # The user's first read also asks whether they see every job (has_perm: two queries); the answer is then
    # kept in the cache (jobs.access) until their rights change.
    with django_assert_num_queries(4):
        assert api.get(f"/api/jobs/{ids['rich']}/").status_code == 200
    with django_assert_num_queries(2):  # the token with its user, the job with its owner's name
        assert api.get(f"/api/jobs/{ids['rich']}/").status_code == 200
    with django_assert_num_queries(3):  # the token, the page's count, the page with its owners' names
        assert len(api.get("/api/jobs/").json()["results"]) == 50
    etag = api.get(f"/api/jobs/{ids['rich']}/").headers["ETag"]
    with django_assert_num_queries(2):
        assert api.get(f"/api/jobs/{ids['rich']}/", HTTP_IF_NONE_MATCH=etag).status_code == 304


def test_the_web_process_serves_through_django_alone():
    """The ASGI application's HTTP side is Django's own handler: nothing in front of it answers requests."""
    from django.core.handlers.asgi import ASGIHandler

    from gedge_site.asgi import application

    assert isinstance(application.application_mapping["http"], ASGIHandler)
    assert sys.modules.get("jobs.readpath") is None and sys.modules.get("gedge_site.fast_lane") is None


@pytest.mark.django_db
def test_the_shape_is_drfs_own_rendering_of_the_serializer(owner, other):
    """job_representation (fields built once, plain getters) renders exactly what DRF's own
    Serializer.to_representation makes of JobSerializer, for a job with every kind of value and one mostly empty."""
    from rest_framework import serializers

    from jobs.serializers import SHAPE_COLUMNS, JobSerializer, job_representation

    ids = seed(owner, other)
    for job in Job.objects.select_related("user").only(*SHAPE_COLUMNS).filter(pk__in=ids.values()):
        stock = serializers.ModelSerializer.to_representation(JobSerializer(), job)
        assert job_representation(job) == dict(stock)
        assert stock["user"] == job.user.username and isinstance(stock["created_at"], str)
