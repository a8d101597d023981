"""The browser, for real: headless Chromium against Daphne, with the pipeline in separate worker processes
(pushes travel worker -> Redis channel layer -> web -> socket, as in production).

Screenshots land in screenshots/ (git-ignored): upload.png, console-mid-job.png, console-reconnecting.png,
job.png, console-phone.png, job-segments.png.
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
from .helpers_media import street_with_keyframes

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
    yield from _live(media_root, processes, monkeypatch)


@pytest.fixture
def live_segmented(media_root, processes, redis_clean, monkeypatch):
    """The same stack with segments of half a second: a clip with a keyframe every 15 frames is cut in 6."""
    yield from _live(media_root, processes, monkeypatch, GEDGE_SEGMENT_S=0.5)


def _live(media_root, processes, monkeypatch, **env_extra):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install -y chromium` (make test installs it)")
    env = service_env(media_root, GEDGE_MAX_UPLOAD_BYTES=MAX_UPLOAD, GEDGE_PROGRESS_INTERVAL_S=0.25, **env_extra)
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
    # The upload is gone, so it fails again, in planning (the start of preprocessing: cutting the video into
    # segments) at the latest; the page shows each step as it happens.
    expect(owner_page.locator("#job-status")).to_have_text("Failed", timeout=60_000)
    owner_page.wait_for_function("""() => {
        const rows = [...document.querySelectorAll('#events tbody tr')].map(r => r.cells[2].textContent);
        return rows.length >= 3 && rows[1] === 'Enqueue' && rows.at(-1) === 'Failed'
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



# Runs in the job page before its scripts: records, per page load, each segment cell's phase as drawn and
# when /segments/ was read, in sessionStorage (it outlives the reload at Exit), so the test tells the live
# strips from the re-rendered ones.
SEGMENT_RECORDER = """
(() => {
  if (!location.pathname.startsWith("/jobs/")) return;
  const loads = JSON.parse(sessionStorage.getItem("gedgeSegLoads") || "[]");
  const mine = { phases: {}, reads: [] };
  loads.push(mine);
  const save = () => sessionStorage.setItem("gedgeSegLoads", JSON.stringify(loads));
  const fetch = window.fetch;
  window.fetch = function (url, ...rest) {
    if (String(url).endsWith("/segments/")) { mine.reads.push(performance.now()); save(); }
    return fetch.call(this, url, ...rest);
  };
  const record = () => {
    let changed = false;
    for (const li of document.querySelectorAll("#segments li.seg")) {
      const list = mine.phases[li.dataset.index] || (mine.phases[li.dataset.index] = []);
      const phase = li.dataset.phase;
      if (phase && list[list.length - 1] !== phase) { list.push(phase); changed = true; }
    }
    if (changed) save();
  };
  save();
  new MutationObserver(record).observe(document, { subtree: true, childList: true, attributes: true,
    attributeFilter: ["data-phase"] });
})();
"""


def test_segments_move_through_the_stages_live_on_the_job_page(live_segmented, owner, tmp_path):
    from playwright.sync_api import expect

    live = live_segmented
    video = street_with_keyframes(tmp_path / "keyframes.mp4", every=15)  # 84 frames: 5 x 15 + 9
    console = log_in(live.browser, live.url, owner, viewport={"width": 1280, "height": 900})
    console.context.add_init_script(SEGMENT_RECORDER)
    console.set_input_files("#upload-input", [str(video)])
    item = console.locator("#upload-list li.upload")
    expect(item).to_have_attribute("data-state", "done", timeout=60_000)
    job_id = int(re.fullmatch(r"job #(\d+)", item.get_by_role("link").inner_text()).group(1))

    # The job page, opened while the job runs; the console stays open beside it.
    page = console.context.new_page()
    page.goto(f"{live.url}/jobs/{job_id}/")
    cells = page.locator("#segments li.seg")
    expect(cells).to_have_count(6, timeout=TIMEOUT_MS)  # drawn live once the job is cut
    expect(page.locator("#segments-empty")).to_be_hidden()
    # Each cell says what it holds, for the pointer (title) and for a screen reader (its text).
    first = cells.first
    expect(first).to_have_attribute("title", re.compile(r"^Segment 0: frames 0–14 \(15\) from 0\.00 s · \w+"))
    expect(first.locator(".sr-only")).to_have_text(first.get_attribute("title"))
    expect(cells.nth(5)).to_have_attribute("title", re.compile(r"^Segment 5: frames 75–83 \(9\) from 2\.50 s"))
    page.screenshot(path=str(SHOTS / "job-segments-running.png"), full_page=True)
    expect(page.locator("#results")).to_be_visible(timeout=TIMEOUT_MS)  # Exit: the page reloaded with results
    expect(page.locator("#job-status")).to_have_text("Exit")

    loads = page.evaluate("JSON.parse(sessionStorage.getItem('gedgeSegLoads'))")
    assert len(loads) == 2, loads  # the page as opened, and once more at Exit for the results
    before = loads[0]["phases"]
    assert sorted(before, key=int) == [str(i) for i in range(6)], before
    assert all(phases[-1] == "done" for phases in before.values()), f"not all done live: {before}"
    assert any(phases[0] != "done" for phases in before.values()), f"nothing was seen moving: {before}"
    assert any("running" in phases for phases in before.values()), before
    after = loads[1]["phases"]
    assert len(after) == 6 and all(phases == ["done"] for phases in after.values()), after
    # /segments/ is read on pushes, at most once a second (the last read, at Exit, comes at once), and not
    # at all by the page rendered after the job ended.
    reads = loads[0]["reads"]
    assert len(reads) >= 2, loads[0]
    gaps = [b - a for a, b in zip(reads, reads[1:-1], strict=False)]
    assert all(gap >= 950 for gap in gaps), gaps
    assert loads[1]["reads"] == []
    expect(page.locator("#segments li.seg[data-phase=done]")).to_have_count(6)
    expect(page.locator('#segments .seg-bar[data-state="full"]')).to_have_count(18)
    expect(page.locator("#segments-summary")).to_have_text("6 in all · 6 done")
    expect(page.locator("#job-segments")).to_have_text("6/6 done")

    # History: the job's own eight statuses; the segments' events behind their toggle, collapsed.
    job = Job.objects.get(pk=job_id)
    assert job.segment_count == 6 and job.segments_done == 6 and job.status == Status.EXIT
    expect(page.locator("#events tbody tr")).to_have_count(len(PIPELINE))
    assert page.locator("#events tbody tr").evaluate_all(
        "rows => rows.map(r => r.cells[2].textContent)") == list(PIPELINE)
    expect(page.locator("#job-timeline li.done")).to_have_count(len(PIPELINE))
    segment_events = JobEvent.objects.filter(job=job, segment__isnull=False).count()
    assert segment_events >= 6 * 6
    toggle = page.locator("#segment-events-box")
    expect(toggle.locator("summary")).to_have_text(f"Segment events ({segment_events})")
    expect(page.locator("#segment-events")).to_be_hidden()
    toggle.locator("summary").click()
    expect(page.locator("#segment-events tbody tr")).to_have_count(segment_events)
    toggle.locator("summary").click()
    for stage in ("preprocess", "inference", "postprocess"):
        expect(page.locator(f'#job-stage-bars [data-stage="{stage}"] .n')).to_have_text("84 / 84 frames")
    page.screenshot(path=str(SHOTS / "job-segments.png"), full_page=True)
    page.screenshot(path="/tmp/job-segments.png", full_page=True)

    # The console followed the same job: its segments and each stage's frames over the whole video.
    row = console.locator(f'#job-rows tr[data-job="{job_id}"]')
    expect(row.locator(".badge")).to_have_text("Exit", timeout=TIMEOUT_MS)
    expect(row.locator(".seg-count")).to_have_text("6/6 segments")
    expect(row.locator(".stage")).to_have_text("done · 84 frames")
    assert row.locator(".stage-bars progress").evaluate_all("bars => bars.map(b => b.value)") == [1, 1, 1]
    assert seen_statuses(console, job_id) == list(PIPELINE)
    row.locator("details.timeline summary").click()
    expect(row.locator(".timeline-table tr")).to_have_count(len(PIPELINE))
    console.screenshot(path=str(SHOTS / "console-segments.png"))
