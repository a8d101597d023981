"""The browser's resumable upload (tus-js-client against /api/uploads/): a large upload cut off by a page reload
goes on from where the server has it, once the same file is chosen again, and becomes one job that reaches Exit."""
from __future__ import annotations

import re
import shutil

import pytest

from jobs.models import Job, Status, Upload

from .conftest import STREET, wait_for_status
from .test_browser import _live, log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
CHUNK = 256 * 1024


@pytest.fixture
def live_chunked(media_root, processes, redis_clean, monkeypatch):
    yield from _live(media_root, processes, monkeypatch, GEDGE_MAX_CHUNK_BYTES=CHUNK)


def test_an_upload_interrupted_by_a_reload_resumes_and_becomes_one_job(live_chunked, owner, tmp_path):
    from playwright.sync_api import expect

    live = live_chunked
    page = log_in(live.browser, live.url, owner)
    patches: list[dict] = []
    page.on("request", lambda r: patches.append({"offset": int(r.headers.get("upload-offset", "-1")),
                                                 "url": r.url}) if r.method == "PATCH" else None)
    done: list[int] = []
    page.on("response", lambda r: done.append(r.status) if r.request.method == "PATCH" else None)
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 20, "downloadThroughput": -1,
                                                   "uploadThroughput": 300_000})
    street = tmp_path / "street.mp4"
    shutil.copy(STREET, street)
    size = street.stat().st_size
    page.set_input_files("#upload-input", [str(street)])
    # Cut off after two chunks arrived: the page reloads (a closed laptop lid, a crash of the tab...).
    for _ in range(600):
        if done.count(204) >= 2:
            break
        page.wait_for_timeout(50)
    received = Upload.objects.get().offset
    assert CHUNK * 2 <= received < size and not Job.objects.exists()
    page.reload()
    before = len(patches)

    # The same file chosen again: the upload goes on from the server's offset, not from byte 0.
    page.set_input_files("#upload-input", [str(street)])
    item = page.locator("#upload-list li.upload")
    expect(item).to_have_attribute("data-state", "done", timeout=60_000)
    resumed = patches[before:]
    assert resumed and resumed[0]["offset"] >= received, resumed
    assert all(p["url"] == patches[0]["url"] for p in patches), "one upload, resumed, not a second one"
    job_id = int(re.fullmatch(r"job #(\d+)", item.get_by_role("link").inner_text()).group(1))
    job = wait_for_status(job_id, {Status.EXIT, Status.FAILED}, timeout=180, logs=live.processes.logs)
    assert job.status == Status.EXIT, job.error
    assert Job.objects.count() == 1 and job.size_bytes == size
    assert job.source_path.read_bytes() == STREET.read_bytes()
    sent = sum(min(CHUNK, size - p["offset"]) for p in patches)
    assert sent < size + 2 * CHUNK, "resuming re-sent at most the chunk in flight"
