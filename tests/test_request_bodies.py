"""Request bodies over a real Daphne (jobs/web/body_limit.py): every body is small (a resumable upload's chunk
and its framing) except a signed-in user's classic upload; anything else large is refused before any view
parses it, with the API's error shape, and the ingress is asked to do the same at the edge (/api/auth/check/)."""
from __future__ import annotations

import pytest
import requests

from .conftest import free_port, make_video, service_env, token_for

pytestmark = pytest.mark.django_db(transaction=True)
BODY_LIMIT = 300_000


@pytest.fixture
def web(processes, media_root, owner):
    port = free_port()
    processes.web(service_env(media_root, GEDGE_MAX_BODY_BYTES=BODY_LIMIT, GEDGE_MAX_UPLOAD_BYTES=5_000_000), port)
    return f"http://127.0.0.1:{port}", {"Authorization": f"Token {token_for(owner)}"}


def test_large_bodies_are_refused_except_a_signed_in_classic_upload(web, tmp_path):
    base, auth = web
    large = b"x" * (BODY_LIMIT + 1)
    for url, headers in ((f"{base}/healthz", {}), (f"{base}/api/jobs/", {}), (f"{base}/login/", {}),
                         (f"{base}/api/jobs/", {"Authorization": "Token not-a-token"}),
                         (f"{base}/api/uploads/", auth)):
        response = requests.post(url, data=large, headers=headers, timeout=30)
        assert response.status_code == 413, (url, response.status_code, response.text[:200])
        assert response.json()["error"]["code"] == "too_large"
        assert "resumable upload" in response.json()["error"]["message"]
    # The classic upload, signed in: a large body reaches the view, which judges the file itself.
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\1" * (BODY_LIMIT * 2))
    with open(junk, "rb") as fh:
        refused = requests.post(f"{base}/api/jobs/", files={"video": fh}, headers=auth, timeout=30)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "not_a_video"
    video = make_video(tmp_path / "small.mp4", frames=3)
    with open(video, "rb") as fh:
        assert requests.post(f"{base}/api/jobs/", files={"video": fh}, headers=auth, timeout=30).status_code == 201
    # Small bodies anywhere are untouched.
    assert requests.post(f"{base}/api/jobs/", data=b"x" * 100, timeout=30).status_code in (401, 403)


def test_the_ingress_auth_check(web):
    base, auth = web
    assert requests.get(f"{base}/api/auth/check/", headers=auth, timeout=10).status_code == 204
    assert requests.get(f"{base}/api/auth/check/", timeout=10).status_code in (401, 403)
    assert requests.get(f"{base}/api/auth/check/", headers={"Authorization": "Token nope"},
                        timeout=10).status_code == 401
