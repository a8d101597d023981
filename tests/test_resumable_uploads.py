"""Resumable uploads (the tus protocol, jobs/web/tus.py): a real tus client (tuspy) against a real Daphne sends
a video in small chunks, is cut off, resumes from the server's offset and gets exactly one job; and every way
to misuse the protocol gets a clear 4xx and leaves nothing behind."""
from __future__ import annotations

import base64
import uuid
from datetime import timedelta

import pytest
import requests
from django.utils import timezone
from rest_framework.test import APIClient
from tusclient import client as tus_client

from jobs.lifecycle.reaper import reap
from jobs.models import Job, Upload

from .conftest import STREET, free_port, service_env, token_for
from .helpers_media import good_video, text_file

TUS = {"HTTP_TUS_RESUMABLE": "1.0.0"}


def meta(**values: str) -> str:
    return ",".join(f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in values.items())


def create(api, length: int, **values: str):
    return api.post("/api/uploads/", HTTP_UPLOAD_LENGTH=str(length), HTTP_UPLOAD_METADATA=meta(**values), **TUS)


def patch(api, location: str, offset: int, data: bytes):
    return api.generic("PATCH", location, data, content_type="application/offset+octet-stream",
                       HTTP_UPLOAD_OFFSET=str(offset), **TUS)


@pytest.mark.django_db(transaction=True)
def test_a_tus_client_is_cut_off_resumes_and_gets_exactly_one_job(owner, processes, media_root, redis_clean):
    port = free_port()
    processes.web(service_env(media_root, GEDGE_MAX_CHUNK_BYTES=256 * 1024), port)
    endpoint = f"http://127.0.0.1:{port}/api/uploads/"
    headers = {"Authorization": f"Token {token_for(owner)}"}
    size = STREET.stat().st_size
    token = uuid.uuid4().hex
    metadata = {"filename": "street.mp4", "client_token": token}

    first = tus_client.TusClient(endpoint, headers=headers).uploader(str(STREET), chunk_size=200_000,
                                                                      metadata=metadata)
    first.upload(stop_at=600_000)  # the connection drops after three chunks
    assert 600_000 <= first.offset < size and not Job.objects.exists()
    upload = Upload.objects.get()
    assert upload.offset == first.offset and upload.path.stat().st_size == first.offset

    # A new client (a reloaded page) asks the server where to go on from, and finishes.
    resumed = tus_client.TusClient(endpoint, headers=headers).uploader(str(STREET), url=first.url,
                                                                        chunk_size=200_000, metadata=metadata)
    assert resumed.offset == first.offset
    resumed.upload()
    job = Job.objects.get()
    assert job.original_name == "street.mp4" and job.size_bytes == size and job.client_token == token
    assert job.source_path.read_bytes() == STREET.read_bytes()
    head = requests.head(first.url, headers={**headers, "Tus-Resumable": "1.0.0"}, timeout=10)
    assert head.headers["Upload-Offset"] == str(size) and head.headers["Gedge-Job-Id"] == str(job.pk)

    # The same file again with the same client_token: the same job, not a second one.
    again = tus_client.TusClient(endpoint, headers=headers).uploader(str(STREET), chunk_size=200_000,
                                                                      metadata=metadata)
    again.upload()
    assert Job.objects.count() == 1
    assert not list(job.source_path.parent.glob(".tus-*")), "no part file is left behind"


@pytest.mark.django_db
def test_the_protocol_s_answers(api, owner, other, settings, tmp_path, redis_clean):
    settings.GEDGE_MAX_CHUNK_BYTES = 1000
    options = api.options("/api/uploads/")
    assert options.status_code == 204 and options["Tus-Version"] == "1.0.0"
    assert options["Tus-Extension"] == "creation,termination"
    assert options["Tus-Max-Size"] == str(settings.GEDGE_MAX_UPLOAD_BYTES)
    assert api.post("/api/uploads/", HTTP_UPLOAD_LENGTH="10").status_code == 412  # no Tus-Resumable
    assert create(api, 0).status_code == 400
    too_big = create(api, settings.GEDGE_MAX_UPLOAD_BYTES + 1)
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "too_large"
    assert api.post("/api/uploads/", HTTP_UPLOAD_LENGTH="ten", **TUS).status_code == 400
    assert api.post("/api/uploads/", HTTP_UPLOAD_LENGTH="10", HTTP_UPLOAD_METADATA="filename %%%",
                    **TUS).status_code == 400

    video = good_video(tmp_path / "in.mp4").read_bytes()
    created = create(api, len(video), filename="in.mp4")
    assert created.status_code == 201 and created["Tus-Resumable"] == "1.0.0"
    location = created["Location"]
    assert patch(api, location, 5, video[:100]).status_code == 409  # not where the upload is
    assert patch(api, location, 0, video[:1001]).status_code == 413  # one chunk over GEDGE_MAX_CHUNK_BYTES
    wrong_type = api.generic("PATCH", location, video[:10], content_type="application/octet-stream",
                             HTTP_UPLOAD_OFFSET="0", **TUS)
    assert wrong_type.status_code == 415
    assert patch(api, location, 0, video[:1000]).status_code == 204
    head = api.head(location, **TUS)
    assert head.status_code == 200 and head["Upload-Offset"] == "1000" and head["Cache-Control"] == "no-store"

    # Another user's upload does not exist for them.
    stranger = APIClient()
    stranger.credentials(HTTP_AUTHORIZATION=f"Token {token_for(other)}")
    assert stranger.head(location, **TUS).status_code == 404
    assert patch(stranger, location, 1000, video[1000:2000]).status_code == 404

    offset = 1000
    while offset < len(video):
        answer = patch(api, location, offset, video[offset:offset + 1000])
        assert answer.status_code == 204, answer.content
        offset = int(answer["Upload-Offset"])
    job = Job.objects.get(pk=int(answer["Gedge-Job-Id"]))
    assert job.user == owner and job.size_bytes == len(video)
    assert api.delete(location, **TUS).status_code == 204 and not Upload.objects.exists()


@pytest.mark.django_db
def test_a_finished_upload_that_is_not_a_video_is_refused_and_removed(api, owner, tmp_path, redis_clean):
    data = text_file(tmp_path / "notes.mp4").read_bytes()
    location = create(api, len(data), filename="notes.mp4")["Location"]
    refused = patch(api, location, 0, data)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "not_a_video"
    assert not Upload.objects.exists() and not Job.objects.exists()
    assert not list((tmp_path / "media").rglob(".tus-*"))


@pytest.mark.django_db
def test_uploads_count_against_the_quota_and_stale_ones_are_dropped(api, owner, settings, redis_clean):
    settings.GEDGE_USER_QUOTA_BYTES = 5000
    assert create(api, 4000, filename="a.mp4").status_code == 201  # reserved at creation
    over = create(api, 2000, filename="b.mp4")
    assert over.status_code == 413 and over.json()["error"]["code"] == "quota_exceeded"
    upload = Upload.objects.get()
    Upload.objects.filter(pk=upload.pk).update(updated_at=timezone.now() - timedelta(days=2))
    assert reap()["stale_uploads"] == 1
    assert not Upload.objects.exists() and not upload.path.exists()
    assert create(api, 2000, filename="b.mp4").status_code == 201  # the space is free again


@pytest.mark.django_db
def test_anonymous_clients_cannot_upload(client, redis_clean):
    response = client.post("/api/uploads/", HTTP_UPLOAD_LENGTH="10", HTTP_TUS_RESUMABLE="1.0.0")
    assert response.status_code in (401, 403)
