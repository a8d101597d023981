"""Nobody reaches another user's job: API, pages, WebSocket and media files (staff see everything).

A job of someone else answers exactly like a job that does not exist (404), so ids cannot be probed.
"""
from __future__ import annotations

import uuid

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.urls import URLPattern, get_resolver, reverse
from rest_framework.test import APIClient

from jobs.lifecycle.broadcast import push_job
from jobs.models import Job, Status

from .conftest import PASSWORD, token_for
from .helpers_media import finished_job, make_job

pytestmark = pytest.mark.django_db

# (method, endpoint under /api/jobs/{id}/) -> what the owner gets on a finished job
API_ENDPOINTS = [
    ("get", "", 200),
    ("get", "events/", 200),
    ("get", "detections/", 200),
    ("get", "video/", 200),
    ("post", "retry/", 409),  # Exit cannot be retried: but the owner is told so, not "not found"
    ("post", "cancel/", 409),
]


@pytest.fixture(autouse=True)
def isolated_cache(settings):
    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": f"gedge-test-{uuid.uuid4().hex}"}}


def api_as(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
    return client


def page_as(user) -> Client:
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    return client


def job_page_urls(pk: int) -> list[str]:
    """Every page URL of one job (/jobs/<id>/ and whatever is added under it: chart, CSV, ...)."""
    urls = []
    for pattern in get_resolver().url_patterns:
        if isinstance(pattern, URLPattern) and str(pattern.pattern).startswith("jobs/<int:pk>/"):
            urls.append(reverse(pattern.name, kwargs={"pk": pk}))
    return urls


def test_api_matrix(owner, other, staff):
    job = finished_job(owner)
    for method, endpoint, owner_status in API_ENDPOINTS:
        url = f"/api/jobs/{job.pk}/{endpoint}"
        response = getattr(api_as(other), method)(url)
        assert response.status_code == 404, (url, response.status_code)
        assert response.json() == {"error": {"code": "not_found", "message": "not found"}}
        # ... exactly what an id that does not exist answers
        missing = getattr(api_as(other), method)(f"/api/jobs/{job.pk + 1000}/{endpoint}")
        assert missing.json() == response.json()
        assert getattr(api_as(owner), method)(url).status_code == owner_status, url
        assert getattr(api_as(staff), method)(url).status_code == owner_status, url
    assert Job.objects.get(pk=job.pk).status == Status.EXIT


def test_other_user_cannot_cancel_or_retry(owner, other, staff):
    running, failed = make_job(owner, Status.INFERENCING), make_job(owner, Status.FAILED)
    assert api_as(other).post(f"/api/jobs/{running.pk}/cancel/").status_code == 404
    assert api_as(other).post(f"/api/jobs/{failed.pk}/retry/").status_code == 404
    assert Job.objects.get(pk=running.pk).status == Status.INFERENCING
    assert Job.objects.get(pk=failed.pk).status == Status.FAILED
    assert api_as(staff).post(f"/api/jobs/{running.pk}/cancel/").json()["status"] == "Cancelled"


def test_lists_show_own_jobs_only_and_staff_everything(owner, other, staff):
    mine, theirs = make_job(owner), make_job(other)
    assert [j["id"] for j in api_as(owner).get("/api/jobs/").json()["results"]] == [mine.pk]
    assert [j["id"] for j in api_as(other).get("/api/jobs/").json()["results"]] == [theirs.pk]
    assert {j["id"] for j in api_as(staff).get("/api/jobs/").json()["results"]} == {mine.pk, theirs.pk}
    console = page_as(other).get("/")
    assert console.status_code == 200 and f"/jobs/{mine.pk}/".encode() not in console.content


def test_job_pages_matrix(owner, other, staff):
    job = finished_job(owner)
    urls = job_page_urls(job.pk)
    assert f"/jobs/{job.pk}/" in urls and len(urls) >= 2, urls
    as_other, as_owner, as_staff = page_as(other), page_as(owner), page_as(staff)
    for url in urls:
        assert as_other.get(url).status_code == 404, url
        assert as_owner.get(url).status_code == 200, url
        assert as_staff.get(url).status_code == 200, url
        anonymous = Client().get(url)
        assert anonymous.status_code in (302, 401, 403, 404) and b"person" not in anonymous.content, url


def test_result_files_are_not_served_from_any_public_path(owner, settings):
    job = finished_job(owner)
    relative = job.result_dir.relative_to(settings.MEDIA_ROOT)
    for prefix in ("/media/", "/static/", "/", "/var/media/"):
        for name in ("annotated.mp4", "detections.json"):
            response = Client().get(f"{prefix}{relative}/{name}")
            assert response.status_code == 404, (prefix, name)
    upload = Client().get(f"/media/{job.path}")
    assert upload.status_code == 404
    assert settings.MEDIA_ROOT not in [*settings.STATICFILES_DIRS, settings.STATIC_ROOT]


@pytest.mark.django_db(transaction=True)
def test_websocket_shows_and_pushes_only_own_jobs(owner, other, staff):
    from gedge_site.asgi import application

    mine, theirs = make_job(owner), make_job(other)
    cookies = {user.pk: page_as(user).cookies["sessionid"].value for user in (owner, other, staff)}

    async def connect(user):
        cookie = cookies[user.pk]
        comm = WebsocketCommunicator(application, "/ws/jobs/", headers=[
            (b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1"), (b"cookie", f"sessionid={cookie}".encode()),
        ])
        connected, _ = await comm.connect(timeout=10)
        assert connected
        snapshot = await comm.receive_json_from(timeout=10)
        assert snapshot["type"] == "snapshot"
        return comm, {j["id"] for j in snapshot["jobs"]}

    async def scenario():
        anonymous = WebsocketCommunicator(application, "/ws/jobs/", headers=[(b"origin", b"http://127.0.0.1")])
        accepted, _ = await anonymous.connect(timeout=10)
        assert not accepted
        (owner_ws, owner_ids), (other_ws, other_ids), (staff_ws, staff_ids) = [
            await connect(u) for u in (owner, other, staff)]
        assert (owner_ids, other_ids) == ({mine.pk}, {theirs.pk}) and staff_ids >= {mine.pk, theirs.pk}
        # Asking again for a snapshot changes nothing.
        await other_ws.send_json_to({"type": "snapshot"})
        assert {j["id"] for j in (await other_ws.receive_json_from(timeout=10))["jobs"]} == {theirs.pk}
        await database_sync_to_async(lambda: push_job(Job.objects.get(pk=mine.pk)))()
        assert (await owner_ws.receive_json_from(timeout=10))["job"]["id"] == mine.pk
        assert (await staff_ws.receive_json_from(timeout=10))["job"]["id"] == mine.pk
        assert await other_ws.receive_nothing(timeout=1)
        for comm in (owner_ws, other_ws, staff_ws):
            await comm.disconnect()

    async_to_sync(scenario)()


def test_rights_come_from_permissions_not_is_staff(owner, other, django_user_model):
    """is_staff alone shows nothing of others; jobs.view_job shows every job but changes none of them;
    jobs.change_job cancels and retries them."""
    from django.contrib.auth.models import Permission

    theirs = Job.objects.create(user=other, path="uploads/a.mp4", type="mp4/mp4", original_name="a.mp4",
                                status=Status.INFERENCING)
    plain_staff = django_user_model.objects.create_user("plainstaff", password="x", is_staff=True)
    assert api_as(plain_staff).get(f"/api/jobs/{theirs.pk}/").status_code == 404
    viewer = django_user_model.objects.create_user("viewer", password="x")
    viewer.user_permissions.add(Permission.objects.get(codename="view_job"))
    assert api_as(viewer).get(f"/api/jobs/{theirs.pk}/").status_code == 200
    refused = api_as(viewer).post(f"/api/jobs/{theirs.pk}/cancel/")
    assert refused.status_code == 403 and "jobs.change_job" in refused.json()["error"]["message"]
    viewer.user_permissions.add(Permission.objects.get(codename="change_job"))
    viewer = django_user_model.objects.get(pk=viewer.pk)  # permissions are cached per user object
    assert api_as(viewer).post(f"/api/jobs/{theirs.pk}/cancel/").json()["status"] == "Cancelled"


def test_seeing_every_job_follows_each_change_of_rights(owner, other, django_user_model):
    """The answer to "does this user see every job" is cached (jobs.access), yet each change of a user's
    permissions or groups, of a group's permissions, or a group's deletion counts at the very next read."""
    from django.contrib.auth.models import Group, Permission

    theirs = Job.objects.create(user=other, path="uploads/a.mp4", type="mp4/mp4", original_name="a.mp4")
    view_job = Permission.objects.get(codename="view_job")
    viewer = django_user_model.objects.create_user("viewer2", password="x")
    client = api_as(viewer)

    def sees() -> bool:
        found = client.get(f"/api/jobs/{theirs.pk}/").status_code
        listed = theirs.pk in [j["id"] for j in client.get("/api/jobs/").json()["results"]]
        assert (found == 200) == listed
        return listed

    assert not sees() and not sees()  # the second read comes from the cache
    viewer.user_permissions.add(view_job)
    assert sees()
    viewer.user_permissions.remove(view_job)
    assert not sees()
    operators = Group.objects.create(name="operators")
    viewer.groups.add(operators)
    assert not sees()
    operators.permissions.add(view_job)
    assert sees()
    operators.permissions.remove(view_job)
    assert not sees()
    operators.permissions.add(view_job)
    assert sees()
    operators.delete()
    assert not sees()
    viewer.is_superuser = True
    viewer.save()
    assert sees()
