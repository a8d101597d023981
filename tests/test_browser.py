"""The browser, for real: headless Chromium against Daphne, with the pipeline in separate worker processes
(pushes travel worker -> Redis channel layer -> web -> socket, as in production).

Screenshots land in screenshots/ (git-ignored): upload.png, console-mid-job.png, console-reconnecting.png,
job.png, console-phone.png.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.db import connections

from jobs.models import PIPELINE, Job, JobEvent, Status

from .conftest import PASSWORD, ROOT, STREET, free_port, service_env

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = ROOT / "screenshots"
MAX_UPLOAD = 2_000_000  # above street.mp4 (1.2 MB), below the "too large" file made here
TIMEOUT_MS = 180_000

# Runs in every page before its own scripts: records each job row's badge text as the user would see it
# change (one entry per change), so the test asserts what the page showed, not what the server sent.
RECORDER = """
(() => {
  const seen = window.gedgeSeen = {};
  const uploadTexts = window.gedgeUploadTexts = [];
  const record = () => {
    for (const tr of document.querySelectorAll("#job-rows tr[data-job]")) {
      const badge = tr.querySelector(".badge");
      if (!badge) continue;
      const list = seen[tr.dataset.job] || (seen[tr.dataset.job] = []);
      if (list[list.length - 1] !== badge.textContent) list.push(badge.textContent);
    }
    for (const status of document.querySelectorAll("#upload-list .upload-status")) {
      const text = status.textContent;
      if (text && uploadTexts[uploadTexts.length - 1] !== text) uploadTexts.push(text);
    }
  };
  new MutationObserver(record).observe(document, { subtree: true, childList: true, characterData: true });
})();
"""


@pytest.fixture
def live(media_root, processes, redis_clean, monkeypatch):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install -y chromium` (make test installs it)")
    env = service_env(media_root, GEDGE_MAX_UPLOAD_BYTES=MAX_UPLOAD, GEDGE_PROGRESS_INTERVAL_S=0.25)
    processes.worker(["preprocess", "postprocess"], env, name="worker-cpu")
    processes.worker(["inference"], env, name="worker-gpu")
    port = free_port()
    processes.web(env, port)
    # Playwright's sync API keeps an event loop in this thread; the test's own ORM calls are plain sync code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield SimpleNamespace(url=f"http://127.0.0.1:{port}", port=port, env=env, browser=browser,
                                  processes=processes)
        finally:
            browser.close()
            # ORM calls made while Playwright's loop runs get their own connection (Django keys connections
            # by async context); close it here, in that context, or the test database cannot be dropped.
            connections.close_all()


def log_in(browser, base: str, user, **context_options):
    from playwright.sync_api import expect

    context = browser.new_context(**context_options)
    context.add_init_script(RECORDER)
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.goto(base + "/")
    assert "/login/" in page.url, "the console must ask for a login"
    page.fill("input[name=username]", user.username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")
    expect(page.locator("#socket-state")).to_have_attribute("data-state", "live")
    return page


def seen_statuses(page, job_id: int) -> list[str]:
    return page.evaluate("(id) => window.gedgeSeen[id] || []", str(job_id))


def test_upload_watch_live_and_open_the_result(live, owner, other, tmp_path):
    from playwright.sync_api import expect

    owner_page = log_in(live.browser, live.url, owner)
    other_page = log_in(live.browser, live.url, other)
    owner_page.evaluate("window.gedgeNoReload = true")  # gone if the page ever reloads
    requests: list[str] = []
    owner_page.on("request", lambda r: requests.append(f"{r.method} {r.url.removeprefix(live.url)}"))

    # --- upload: one real video and three files that must be refused, each with its reason next to it ---
    notes = tmp_path / "notes.txt"
    notes.write_text("meeting notes, not a video\n")
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(os.urandom(40_000))
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0" * (MAX_UPLOAD + 500_000))
    street = tmp_path / "street.mp4"
    shutil.copy(STREET, street)
    # A slow uplink, so the per-file progress bar is seen moving (bytes sent) as it would on a real network.
    cdp = owner_page.context.new_cdp_session(owner_page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 20, "downloadThroughput": -1,
                                                   "uploadThroughput": 400_000})
    owner_page.set_input_files("#upload-input", [str(street), str(notes), str(fake), str(big)])

    def upload_item(name: str):
        return owner_page.locator("#upload-list li.upload").filter(has=owner_page.get_by_text(name, exact=True))

    expect(upload_item("notes.txt").locator(".upload-error")).to_contain_text("Unsupported type: text/plain")
    expect(upload_item("big.mp4").locator(".upload-error")).to_contain_text("Too large")
    expect(upload_item("fake.mp4").locator(".upload-error")).to_contain_text("Not a video")
    expect(upload_item("fake.mp4").locator(".upload-error")).not_to_contain_text("not a usable video")
    expect(upload_item("street.mp4")).to_have_attribute("data-state", "uploading")
    owner_page.wait_for_function(
        "() => { const p = [...document.querySelectorAll('#upload-list progress')].find(b => !b.hidden"
        " && b.value > 0 && b.value < b.max); return Boolean(p); }")
    owner_page.screenshot(path=str(SHOTS / "upload.png"), full_page=True)
    expect(upload_item("street.mp4")).to_have_attribute("data-state", "done", timeout=60_000)
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1,
                                                   "uploadThroughput": -1})
    sent = [t for t in owner_page.evaluate("window.gedgeUploadTexts") if t.endswith(" sent")]
    assert len(sent) >= 2, f"the progress should move during the upload, saw {sent}"
    link = upload_item("street.mp4").get_by_role("link")
    job_id = int(re.fullmatch(r"job #(\d+)", link.inner_text()).group(1))
    assert Job.objects.filter(user=owner).count() == 1, "refused files must not create jobs"

    # --- the console follows the job through every status without a reload ---
    row = owner_page.locator(f'#job-rows tr[data-job="{job_id}"]')
    expect(row).to_have_count(1)
    owner_page.wait_for_function(
        """(id) => { const tr = document.querySelector(`#job-rows tr[data-job="${id}"]`);
          return tr && tr.dataset.status === "Inferencing" && tr.querySelector("progress").value > 0.34; }""",
        arg=job_id, timeout=TIMEOUT_MS, polling=50)
    expect(row.locator(".stage")).to_contain_text(re.compile(r"inference · \d+ / 84 frames"))
    owner_page.screenshot(path=str(SHOTS / "console-mid-job.png"), full_page=True)
    expect(row.locator(".badge")).to_have_text("Exit", timeout=TIMEOUT_MS)
    assert seen_statuses(owner_page, job_id) == list(PIPELINE), live.processes.logs()
    assert owner_page.evaluate("window.gedgeNoReload") is True
    expect(row.locator(".stage")).to_have_text("done · 84 frames")
    expect(row.locator(".c-duration")).to_have_text(re.compile(r"\d"))
    expect(row.locator(".c-ended")).not_to_be_empty()

    # The database is read on status changes only (the timeline's events), never polled.
    event_reads = [r for r in requests if r == f"GET /api/jobs/{job_id}/events/"]
    assert 1 <= len(event_reads) <= len(PIPELINE), requests
    assert not [r for r in requests if r.startswith("GET /api/jobs/") and not r.endswith("/events/")], requests
    count = len(requests)
    owner_page.wait_for_timeout(2500)
    assert len(requests) == count, f"requests while nothing changed: {requests[count:]}"

    # The stage timeline: when each of the eight statuses was reached.
    row.locator("details.timeline summary").click()
    timeline = row.locator(".timeline-table tr")
    expect(timeline).to_have_count(len(PIPELINE))
    assert [s for s in timeline.evaluate_all("rows => rows.map(r => r.dataset.status)")] == list(PIPELINE)
    expect(row.locator(".stepper li.done")).to_have_count(len(PIPELINE))

    owner_page.get_by_role("button", name="Clear finished uploads").click()
    expect(owner_page.locator("#upload-list li")).to_have_count(0)

    # The version rule: an older or repeated message never moves the row back.
    job_json = owner_page.evaluate("(id) => fetch(`/api/jobs/${id}/`).then(r => r.json())", job_id)
    for version in (job_json["version"] - 1, job_json["version"], 1):
        stale = {**job_json, "version": version, "status": "Preprocessing"}
        assert owner_page.evaluate("(job) => window.gedgeApply(job)", stale) is False
    expect(row.locator(".badge")).to_have_text("Exit")

    # --- the socket drops: a visible "reconnecting", then the page re-reads the truth ---
    web = next(p for name, p in live.processes.procs if name == "web")
    os.killpg(web.pid, signal.SIGTERM)
    web.wait(timeout=20)
    expect(owner_page.locator("#reconnect-banner")).to_be_visible()
    expect(owner_page.locator("#socket-state")).to_have_attribute("data-state", "reconnecting")
    owner_page.screenshot(path=str(SHOTS / "console-reconnecting.png"))
    missed = Job.objects.create(user=owner, path="uploads/gone.mp4", type="mp4/mp4", original_name="missed.mp4",
                                status=Status.FAILED, error="changed while the page was disconnected")
    JobEvent.objects.create(job=missed, from_status="", to_status=Status.FAILED, message="test")
    live.processes.web(live.env, live.port)
    expect(owner_page.locator("#socket-state")).to_have_attribute("data-state", "live", timeout=60_000)
    expect(owner_page.locator("#reconnect-banner")).to_be_hidden()
    expect(owner_page.locator(f'#job-rows tr[data-job="{missed.pk}"] .badge')).to_have_text("Failed")
    assert owner_page.evaluate("window.gedgeNoReload") is True

    # --- the second user never saw any of it ---
    expect(other_page.locator("#socket-state")).to_have_attribute("data-state", "live", timeout=60_000)
    assert other_page.evaluate("Object.keys(window.gedgeSeen)") == []
    expect(other_page.locator("#job-rows tr[data-job]")).to_have_count(0)
    assert other_page.goto(f"{live.url}/jobs/{job_id}/").status == 404

    # --- the job page: video that plays and seeks, chart, totals, downloads, history ---
    media_responses: list[int] = []
    owner_page.on("response", lambda r: media_responses.append(r.status) if "/video/" in r.url else None)
    row.locator("a.file-name").click()
    owner_page.wait_for_url(f"{live.url}/jobs/{job_id}/")
    expect(owner_page.locator("#job-status")).to_have_text("Exit")
    job = Job.objects.get(pk=job_id)
    player = owner_page.locator("#player")
    codec = owner_page.evaluate("document.createElement('video').canPlayType('video/mp4; codecs=\"avc1.640028\"')")
    assert codec == "probably", f"this Chromium cannot play H.264 ({codec})"
    player.evaluate("v => new Promise(ok => v.readyState >= 1 ? ok() : v.addEventListener('loadedmetadata', ok))")
    duration = player.evaluate("v => v.duration")
    assert duration == pytest.approx(job.frame_count / job.fps, abs=0.1)
    assert player.evaluate("v => [v.videoWidth, v.videoHeight]") == [1280, 720]
    player.evaluate("v => { v.muted = true; return v.play(); }")
    owner_page.wait_for_function("() => document.getElementById('player').currentTime > 0.3")
    first = player.evaluate("v => v.currentTime")
    owner_page.wait_for_timeout(400)
    later = player.evaluate("v => v.currentTime")
    assert later > first or player.evaluate("v => v.ended"), (first, later)
    player.evaluate("v => { v.pause(); v.currentTime = 1.0;"
                    " return new Promise(ok => v.addEventListener('seeked', ok, {once: true})); }")
    assert player.evaluate("v => v.currentTime") == pytest.approx(1.0, abs=0.05)
    assert 206 in media_responses, f"the player should fetch byte ranges, got {media_responses}"

    chart = owner_page.locator("#chart")
    expect(chart.locator("canvas")).to_have_count(1)
    classes = chart.get_attribute("data-series").split(",")
    assert classes[0] == "person" and set(classes) - {"other"} <= set(job.summary["per_class"])
    expect(chart.locator(".u-legend")).to_contain_text(f"person ({job.summary['per_class']['person']})")
    box = chart.locator(".u-over").bounding_box()
    chart.locator(".u-over").click(position={"x": box["width"] * 0.25, "y": box["height"] / 2})
    assert player.evaluate("v => v.currentTime") == pytest.approx(duration * 0.25, abs=0.3)  # click -> seek

    totals = dict(owner_page.locator("#class-totals tbody tr").evaluate_all(
        "rows => rows.map(r => [r.cells[0].textContent, Number(r.cells[1].textContent)])"))
    assert totals == job.summary["per_class"]
    expect(owner_page.locator("#events tbody tr")).to_have_count(len(PIPELINE))
    expect(owner_page.locator("#job-timeline li.done")).to_have_count(len(PIPELINE))
    csv_href = owner_page.locator("a", has_text="Detections (CSV)").get_attribute("href")
    csv_text = owner_page.request.get(live.url + csv_href).text()
    assert len(csv_text.strip().splitlines()) - 1 == job.summary["detections"]
    for label in ("Annotated video (MP4)", "detections.json"):
        href = owner_page.locator("a", has_text=label).get_attribute("href")
        assert owner_page.request.get(live.url + href).status == 200
    expect(owner_page.locator("#cancel-btn")).to_be_hidden()
    expect(owner_page.locator("#retry-btn")).to_be_hidden()
    owner_page.screenshot(path=str(SHOTS / "job.png"), full_page=True)

    # --- a failed job's page: the error, and Retry sends it back through the workers ---
    owner_page.goto(f"{live.url}/jobs/{missed.pk}/")
    expect(owner_page.locator("#job-error")).to_contain_text("changed while the page was disconnected")
    expect(owner_page.locator("#cancel-btn")).to_be_hidden()
    owner_page.locator("#retry-btn").click()
    # The upload is gone, so preprocessing fails again; the page shows each step as it happens.
    expect(owner_page.locator("#job-status")).to_have_text("Failed", timeout=60_000)
    owner_page.wait_for_function("""() => {
        const rows = [...document.querySelectorAll('#events tbody tr')].map(r => r.cells[2].textContent);
        return rows.length >= 4 && rows[1] === 'Enqueue' && rows[2] === 'Preprocessing' && rows.at(-1) === 'Failed'
          && document.getElementById('job-status').textContent === 'Failed'; }""", timeout=60_000)
    expect(owner_page.locator("#job-error")).to_be_visible()
    expect(owner_page.locator("#retry-btn")).to_be_visible()
    missed.refresh_from_db()
    assert missed.failed_stage == "preprocess" and missed.status == Status.FAILED

    # --- Cancel: a job still waiting for its first stage (its message never sent, as if the queue were
    # backed up) is cancelled from its page, and the page follows the change without a reload ---
    waiting = Job.objects.create(user=owner, path="uploads/waiting.mp4", type="mp4/mp4",
                                 original_name="waiting.mp4", frame_count=84, width=1280, height=720, fps=30)
    JobEvent.objects.create(job=waiting, from_status="", to_status=Status.ENQUEUE, message="uploaded")
    owner_page.goto(f"{live.url}/jobs/{waiting.pk}/")
    expect(owner_page.locator("#retry-btn")).to_be_hidden()
    owner_page.once("dialog", lambda dialog: dialog.accept())  # "Cancel this job?"
    owner_page.locator("#cancel-btn").click()
    expect(owner_page.locator("#job-status")).to_have_text("Cancelled")
    expect(owner_page.locator("#cancel-btn")).to_be_hidden()
    expect(owner_page.locator("#retry-btn")).to_be_visible()
    waiting.refresh_from_db()
    assert waiting.status == Status.CANCELLED and waiting.ended_at is not None

    # --- the same console on a phone: one card per job, no sideways scrolling ---
    phone = log_in(live.browser, live.url, owner, viewport={"width": 390, "height": 844}, is_mobile=True,
                   has_touch=True, device_scale_factor=2)
    expect(phone.locator("#job-rows tr[data-job]")).to_have_count(3)
    expect(phone.locator("#jobs-table thead")).to_be_hidden()
    assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "sideways scrolling"
    phone.screenshot(path=str(SHOTS / "console-phone.png"), full_page=True)

