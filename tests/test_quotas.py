"""No one user can fill the storage or the queues: per-user storage quota and active-job cap on every path
(API, HTML form, retry, admin), one submission budget for all of them, files per form post, and retention."""
from __future__ import annotations

import io
import uuid
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework.throttling import ScopedRateThrottle

from jobs.lifecycle.reaper import reap
from jobs.lifecycle.services import expire_jobs, stored_bytes
from jobs.models import Job, Status

from .conftest import token_for
from .helpers_media import finished_job, good_video, make_job

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def isolated_cache(settings):
    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": f"gedge-test-{uuid.uuid4().hex}"}}


def post_form(client, path, copies: int) -> str:
    """The no-script upload form, ``copies`` times the same file in one post; the page it leads to."""
    files = [open(path, "rb") for _ in range(copies)]
    try:
        return client.post("/upload/", {"video": files}, follow=True).content.decode()
    finally:
        for fh in files:
            fh.close()


def submit(client, path):
    upload = io.BytesIO(path.read_bytes())
    upload.name = path.name
    return client.post("/api/jobs/", {"video": upload}, format="multipart")


def test_the_storage_quota_holds_on_the_api_and_the_form(api, client, owner, settings, tmp_path, redis_clean):
    video = good_video(tmp_path / "in.mp4")
    size = video.stat().st_size
    settings.GEDGE_USER_QUOTA_BYTES = size * 2 + 10
    kept = finished_job(owner)
    Job.objects.filter(pk=kept.pk).update(size_bytes=size, result_bytes=0)
    assert submit(api, video).status_code == 201
    assert stored_bytes(owner) == 2 * size
    response = submit(api, video)
    assert response.status_code == 413 and response.json()["error"]["code"] == "quota_exceeded"
    assert "quota" in response.json()["error"]["message"]
    assert Job.objects.filter(user=owner).count() == 2
    uploads = list((settings.MEDIA_ROOT / "uploads" / str(owner.pk)).iterdir())
    assert len(uploads) == 1, "nothing of the refused upload is left on disk"
    client.force_login(owner)
    with open(video, "rb") as fh:
        page = client.post("/upload/", {"video": fh}, follow=True)
    assert "quota" in page.content.decode() and Job.objects.filter(user=owner).count() == 2
    # An expired job no longer counts.
    Job.objects.filter(pk=kept.pk).update(expired_at=timezone.now())
    assert submit(api, video).status_code == 201


def test_retry_respects_the_active_job_cap(api, owner, settings, redis_clean):
    settings.GEDGE_MAX_ACTIVE_JOBS_PER_USER = 1
    failed = make_job(owner, Status.FAILED, error="boom")
    make_job(owner, Status.INFERENCING)
    response = api.post(f"/api/jobs/{failed.pk}/retry/")
    assert response.status_code == 429 and response.json()["error"]["code"] == "too_many_active_jobs"
    failed.refresh_from_db()
    assert failed.status == Status.FAILED


def test_one_submission_budget_for_the_api_retry_and_the_form(api, client, owner, monkeypatch, tmp_path,
                                                              redis_clean):
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"submit": "3/min"})
    video = good_video(tmp_path / "in.mp4")
    assert submit(api, video).status_code == 201
    failed = make_job(owner, Status.FAILED)
    assert api.post(f"/api/jobs/{failed.pk}/retry/").status_code == 200
    client.force_login(owner)
    page = post_form(client, video, 3)
    assert "too many uploads" in page
    assert Job.objects.filter(user=owner).count() == 3, "one of the form's three files fit in the budget"
    assert api.post(f"/api/jobs/{failed.pk}/retry/").status_code == 429


def test_the_form_takes_a_bounded_number_of_files(client, owner, settings, monkeypatch, tmp_path, redis_clean):
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"submit": "1000/min"})
    settings.GEDGE_MAX_FILES_PER_UPLOAD = 2
    video = good_video(tmp_path / "in.mp4")
    client.force_login(owner)
    page = post_form(client, video, 4)
    assert "At most 2 files" in page and Job.objects.filter(user=owner).count() == 2


def test_retention_deletes_uploads_and_results_and_keeps_the_row(api, owner, settings, tmp_path, redis_clean):
    settings.GEDGE_RETENTION_DAYS = 30
    old, recent = finished_job(owner), finished_job(owner)
    for job in (old, recent):
        Job.objects.filter(pk=job.pk).update(path=f"uploads/{owner.pk}/{job.pk}.mp4")
        job.refresh_from_db()
        job.source_path.parent.mkdir(parents=True, exist_ok=True)
        job.source_path.write_bytes(b"upload")
    Job.objects.filter(pk=old.pk).update(ended_at=timezone.now() - timedelta(days=31))
    Job.objects.filter(pk=recent.pk).update(ended_at=timezone.now() - timedelta(days=29))
    assert reap()["retention"] == 1  # the reaper runs it every pass
    old.refresh_from_db()
    assert old.expired_at is not None and old.status == Status.EXIT
    assert not old.job_dir.exists() and not old.source_path.exists()
    assert (recent.result_dir / "annotated.mp4").exists() and recent.source_path.exists()
    assert "expired" in old.events.last().message
    response = api.get(f"/api/jobs/{old.pk}/video/")
    assert response.status_code == 410 and response.json()["error"]["code"] == "expired"
    assert api.get(f"/api/jobs/{old.pk}/").json()["expired_at"]
    assert expire_jobs() == 0  # once
    out = io.StringIO()
    Job.objects.filter(pk=recent.pk).update(ended_at=timezone.now() - timedelta(days=40))
    call_command("expire_jobs", stdout=out)
    assert "1 jobs expired" in out.getvalue()
    settings.GEDGE_RETENTION_DAYS = 0
    assert expire_jobs() == 0


def test_an_expired_job_cannot_be_retried(api, owner, redis_clean):
    job = make_job(owner, Status.FAILED, expired_at=timezone.now())
    response = api.post(f"/api/jobs/{job.pk}/retry/")
    assert response.status_code == 409 and "upload the video again" in response.json()["error"]["message"]


def test_token_clients_share_the_budget(owner, monkeypatch, tmp_path, redis_clean):
    from rest_framework.test import APIClient

    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"submit": "1/min"})
    first, second = APIClient(), APIClient()
    for client in (first, second):
        client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(owner)}")
    video = good_video(tmp_path / "in.mp4")
    assert submit(first, video).status_code == 201
    assert submit(second, video).status_code == 429  # per user, not per connection


def test_admin_retries_share_the_submission_budget(client, django_user_model, monkeypatch, redis_clean):
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"submit": "2/min"})
    admin = django_user_model.objects.create_superuser("root", password="x")
    jobs = [make_job(admin, Status.FAILED) for _ in range(3)]
    client.force_login(admin)
    page = client.post("/admin/jobs/job/", {"action": "retry_selected", "_selected_action": [j.pk for j in jobs]},
                       follow=True).content.decode()
    assert "Retried 2 job" in page and "too many submissions" in page
    assert Job.objects.filter(status=Status.ENQUEUE).count() == 2
