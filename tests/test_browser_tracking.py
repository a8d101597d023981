"""Tracking in the browser, for real (headless Chromium against Daphne and worker processes, as
tests/test_browser.py): the objects headline on the console and the job page, the track list seeking the
player, and counting lines and zones, typed in at upload or drawn on the video, counted as stages.counting
counts them over the job's detections.json.

Screenshots land in screenshots/ (git-ignored): upload-regions.png, console-tracking.png, job-drawing.png,
job-tracking.png.
"""
from __future__ import annotations

import json
import re
import shutil
import uuid

import pytest

from jobs.models import PIPELINE, Job, JobEvent, Region, Status
from stages.counting import count_regions, validate_region
from stages.postprocess import DETECTIONS_JSON, iter_detection_frames

from .conftest import PASSWORD, STREET, wait_for_status
from .test_browser import SHOTS, TIMEOUT_MS, _live, log_in

PLURALS = {"person": "people", "mouse": "mice", "knife": "knives", "sheep": "sheep", "skis": "skis",
           "scissors": "scissors"}


@pytest.fixture
def live(media_root, processes, redis_clean, monkeypatch):
    yield from _live(media_root, processes, monkeypatch)


def headline(objects: dict[str, int]) -> str:
    """What the pages say a job found: "18 people, 1 cell phone, 2 buses"."""
    def name(cls: str, n: int) -> str:
        if n == 1:
            return cls
        return PLURALS.get(cls) or (cls + "es" if re.search(r"(s|x|z|ch|sh)$", cls) else cls + "s")
    return ", ".join(f"{n} {name(cls, n)}" for cls, n in sorted(objects.items(), key=lambda kv: (-kv[1], kv[0])))


def counted(job: Job, name: str, kind: str, points) -> dict:
    """The counts of one line or zone, computed here over the job's detections.json."""
    region = validate_region(name, kind, points, job.width, job.height)
    return count_regions(iter_detection_frames(job.result_dir / DETECTIONS_JSON), [region])[name]


def counts_text(counts: dict) -> str:
    if counts["kind"] == "line":
        return f"{counts['total']['forward']} forward · {counts['total']['backward']} backward"
    return f"{counts['entered_total']} entered · at most {counts['max_present']} at once"


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_headline_tracks_and_lines_and_zones_drawn_on_the_video(live, owner, tmp_path):
    from playwright.sync_api import expect

    page = log_in(live.browser, live.url, owner, viewport={"width": 1280, "height": 1000})
    street = tmp_path / "street.mp4"
    shutil.copy(STREET, street)

    # --- upload with counting lines typed in; JSON that does not parse stops the upload before it starts ---
    page.locator("#upload-regions-box summary").click()
    page.fill("#upload-regions", '[{"name": "gate", ')
    page.set_input_files("#upload-input", [str(street)])
    expect(page.locator("#upload-regions-error")).to_contain_text("Counting lines and zones: not valid JSON")
    expect(page.locator("#upload-list li")).to_have_count(0)
    page.locator("#upload").screenshot(path=str(SHOTS / "upload-regions.png"))
    gate_points = [[640, 0], [640, 720]]
    page.fill("#upload-regions", json.dumps([{"name": "gate", "kind": "line", "points": gate_points},
                                             {"name": "far", "kind": "line", "points": [[5000, 0], [5000, 720]]}]))
    page.set_input_files("#upload-input", [str(street)])
    expect(page.locator("#upload-regions-error")).to_be_hidden()
    item = page.locator("#upload-list li.upload")
    expect(item).to_have_attribute("data-state", "done", timeout=60_000)
    # The server checks each against the video: one fits, the other is refused with the API's reason.
    expect(item.locator(".regions-note")).to_contain_text("1 of 2 lines and zones added")
    expect(item.locator(".upload-error")).to_contain_text("line 'far': point 1 (5000, 0) is outside the 1280x720 video")
    job_id = int(re.fullmatch(r"job #(\d+)", item.get_by_role("link").inner_text()).group(1))
    job = wait_for_status(job_id, {Status.EXIT, Status.FAILED}, timeout=TIMEOUT_MS / 1000, logs=live.processes.logs)
    assert job.status == Status.EXIT, job.error
    gate = Region.objects.get(job=job)
    assert gate.name == "gate" and gate.counts == counted(job, "gate", "line", gate_points)

    # --- the console: what the job found, as objects; its boxes in the title ---
    objects = job.summary["objects"]
    assert objects and job.summary["tracks"] == sum(objects.values()) == job.tracks.count()
    expected = headline(objects)
    row = page.locator(f'#job-rows tr[data-job="{job_id}"]')
    expect(row.locator(".badge")).to_have_text("Exit", timeout=TIMEOUT_MS)
    expect(row.locator(".objects")).to_have_text(expected)
    row.screenshot(path=str(SHOTS / "console-tracking.png"))
    assert row.locator(".objects").get_attribute("title").startswith(f"{job.summary['detections']} boxes: person ")

    # --- the job page: the headline beside the box totals, the tracks, the counts typed in at upload ---
    page.goto(f"{live.url}/jobs/{job_id}/")
    expect(page.locator("#objects-text")).to_have_text(expected)
    expect(page.locator("#boxes-text")).to_have_text(f"{job.summary['detections']} boxes in {job.frame_count} frames")
    player = page.locator("#player")
    player.evaluate("v => new Promise(ok => v.readyState >= 1 ? ok() : v.addEventListener('loadedmetadata', ok))")
    tracks = list(job.tracks.order_by("track_id"))
    rows = page.locator("#tracks tbody tr[data-track]")
    expect(rows).to_have_count(min(50, len(tracks)))
    expect(page.locator("#tracks-more")).to_be_hidden()
    assert rows.evaluate_all("rows => rows.map(r => Number(r.dataset.track))") == [t.track_id for t in tracks][:50]
    # A click on a track plays the video from where it was first seen, and marks the row.
    target = max(tracks, key=lambda t: t.first_ms)
    assert target.first_ms > 0
    chosen = page.locator(f'#tracks tr[data-track="{target.track_id}"]')
    chosen.locator("td").nth(2).click()
    page.wait_for_function("(t) => Math.abs(document.getElementById('player').currentTime - t) < 0.05",
                           arg=target.first_ms / 1000)
    expect(chosen).to_have_class(re.compile(r"\bselected\b"))
    expect(chosen).to_have_attribute("aria-current", "true")
    expect(page.locator("#tracks tr.selected")).to_have_count(1)
    # By class: the API's filter.
    cls = min(objects, key=lambda c: (objects[c], c))
    page.select_option("#track-class", cls)
    expect(rows).to_have_count(sum(t.class_name == cls for t in tracks))
    assert set(rows.evaluate_all("rows => rows.map(r => r.cells[1].textContent)")) == {cls}
    page.select_option("#track-class", "")
    expect(rows).to_have_count(min(50, len(tracks)))
    gate_row = page.locator(f'#regions tr[data-region="{gate.pk}"]')
    expect(gate_row.locator(".counts")).to_have_text(counts_text(gate.counts))

    # The chart's "objects in view": distinct tracks per point.
    expect(page.locator("#chart .u-legend")).to_contain_text("objects in view")
    chart = page.request.get(f"{live.url}/jobs/{job_id}/chart.json").json()
    assert len(chart["objects"]) == len(chart["t"]) and 0 < max(chart["objects"]) <= len(tracks)

    # --- draw a line: two clicks across the middle of the picture, top to bottom ---
    page.get_by_role("button", name="Draw a line").click()
    overlay = page.locator("#overlay")
    expect(overlay).to_be_visible()
    expect(overlay).to_have_class(re.compile(r"\bdrawing\b"))
    assert player.evaluate("v => v.paused")
    # The overlay covers exactly the picture: the video's aspect, centred in the player's box.
    geometry = page.evaluate("""() => {
        const v = document.getElementById('player').getBoundingClientRect();
        const c = document.getElementById('overlay').getBoundingClientRect();
        return { v: [v.left, v.top, v.width, v.height], c: [c.left, c.top, c.width, c.height] }; }""")
    (vl, vt, vw, vh), (cl, ct, cw, ch) = geometry["v"], geometry["c"]
    assert cw / ch == pytest.approx(job.width / job.height, rel=0.01)
    assert (cw == pytest.approx(vw, abs=1) or ch == pytest.approx(vh, abs=1)) and cw <= vw + 1 and ch <= vh + 1
    assert cl - vl == pytest.approx(vl + vw - cl - cw, abs=1) and ct - vt == pytest.approx(vt + vh - ct - ch, abs=1)
    box = overlay.bounding_box()
    overlay.click(position={"x": box["width"] / 2, "y": box["height"] * 0.1})
    overlay.click(position={"x": box["width"] / 2, "y": box["height"] * 0.9})
    name = page.locator("#region-name")
    expect(name).to_have_value("line 1")
    expect(name).to_be_focused()
    # A name already taken: the API's message, and the drawing is kept to save under another.
    name.fill("gate")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#region-error")).to_have_text(
        "Could not save: a line or zone of that name already exists on this job")
    name.fill("middle")
    page.screenshot(path=str(SHOTS / "job-drawing.png"))
    page.get_by_role("button", name="Save").click()
    middle_row = page.locator("#regions tbody tr[data-kind=line]").filter(has_text="middle")
    expect(middle_row).to_have_count(1)
    expect(page.locator("#draw-panel")).to_be_hidden()
    expect(overlay).not_to_have_class(re.compile(r"\bdrawing\b"))
    saved = {r["name"]: r for r in page.request.get(f"{live.url}/api/jobs/{job_id}/regions/").json()}
    middle = saved["middle"]
    (ax, ay), (bx, by) = middle["points"]
    assert ax == pytest.approx(job.width / 2, abs=1.5) and bx == pytest.approx(job.width / 2, abs=1.5)
    assert ay == pytest.approx(job.height * 0.1, abs=1.5) and by == pytest.approx(job.height * 0.9, abs=1.5)
    assert middle["counts"] == counted(job, "middle", "line", middle["points"])
    expect(middle_row.locator(".counts")).to_have_text(counts_text(middle["counts"]))
    expect(page.locator("#regions-status")).to_have_text(f"line 'middle' saved: {counts_text(middle['counts'])}.")

    # --- draw a zone: four clicks and Finish; then a triangle closed with a double click, and deleted ---
    page.get_by_role("button", name="Draw a zone").click()
    finish = page.get_by_role("button", name="Finish")
    for fx, fy in ((0.25, 0.25), (0.75, 0.25), (0.75, 0.75)):
        overlay.click(position={"x": box["width"] * fx, "y": box["height"] * fy})
    expect(finish).to_be_enabled()
    overlay.click(position={"x": box["width"] * 0.25, "y": box["height"] * 0.75})
    finish.click()
    expect(name).to_have_value("zone 1")
    page.get_by_role("button", name="Save").click()
    zone_row = page.locator("#regions tbody tr[data-kind=zone]").filter(has_text="zone 1")
    expect(zone_row).to_have_count(1)
    zone = {r["name"]: r for r in page.request.get(f"{live.url}/api/jobs/{job_id}/regions/").json()}["zone 1"]
    assert len(zone["points"]) == 4
    assert zone["counts"] == counted(job, "zone 1", "zone", zone["points"])
    assert zone["counts"]["entered_total"] > 0
    expect(zone_row.locator(".counts")).to_have_text(counts_text(zone["counts"]))

    page.get_by_role("button", name="Draw a zone").click()
    overlay.click(position={"x": box["width"] * 0.1, "y": box["height"] * 0.1})
    overlay.click(position={"x": box["width"] * 0.3, "y": box["height"] * 0.1})
    overlay.dblclick(position={"x": box["width"] * 0.2, "y": box["height"] * 0.3})
    expect(name).to_have_value("zone 2")
    name.press("Enter")
    triangle = page.locator("#regions tbody tr[data-kind=zone]").filter(has_text="zone 2")
    expect(triangle).to_have_count(1)
    triangle_id = int(triangle.get_attribute("data-region"))
    assert len(Region.objects.get(pk=triangle_id).points) == 3
    # Esc leaves a drawing without saving anything.
    page.get_by_role("button", name="Draw a line").click()
    overlay.click(position={"x": box["width"] * 0.6, "y": box["height"] * 0.6})
    page.keyboard.press("Escape")
    expect(page.locator("#draw-panel")).to_be_hidden()
    page.get_by_role("button", name="Delete zone zone 2").click()
    expect(triangle).to_have_count(0)
    expect(page.locator("#regions-status")).to_have_text("zone 'zone 2' deleted.")
    assert not Region.objects.filter(pk=triangle_id).exists()
    assert set(Region.objects.filter(job=job).values_list("name", flat=True)) == {"gate", "middle", "zone 1"}

    # The history lists each change as a note; the stepper still shows the eight statuses, once each.
    notes = JobEvent.objects.filter(job=job, segment__isnull=True).count()
    assert notes == len(PIPELINE) + 5  # gate (at upload), middle, zone 1, zone 2 added and zone 2 deleted
    expect(page.locator("#events tbody tr")).to_have_count(notes)
    expect(page.locator("#job-timeline li")).to_have_count(len(PIPELINE))
    expect(page.locator("#job-timeline li.done")).to_have_count(len(PIPELINE))
    page.screenshot(path=str(SHOTS / "job-tracking.png"), full_page=True)


@pytest.fixture
def isolated_cache(settings):
    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": f"gedge-test-{uuid.uuid4().hex}"}}


@pytest.mark.django_db
def test_the_no_script_form_takes_counting_lines_and_zones(client, owner, isolated_cache):
    assert client.login(username=owner.username, password=PASSWORD)

    def post(regions: str):
        with open(STREET, "rb") as fh:
            return client.post("/upload/", {"video": fh, "regions": regions}, follow=True).content.decode()

    html = post(json.dumps([{"name": "door", "kind": "line", "points": [[640, 0], [640, 720]]},
                            {"name": "lot", "kind": "zone", "points": [[0, 400], [600, 400], [600, 720]]}]))
    job = Job.objects.get()
    assert f"job #{job.pk} queued" in html
    assert list(job.regions.values_list("name", "kind", "points")) == [
        ("door", "line", [[640.0, 0.0], [640.0, 720.0]]),
        ("lot", "zone", [[0.0, 400.0], [600.0, 400.0], [600.0, 720.0]])]
    assert "Counting lines and zones: not valid JSON" in post("[{")
    assert "Counting lines and zones: a list of" in post('{"name": "door"}')
    html = post(json.dumps([{"name": "far", "kind": "line", "points": [[5000, 0], [5000, 720]]}]))
    assert "street.mp4: not queued, line &#x27;far&#x27;: point 1 (5000, 0) is outside the 1280x720 video" in html
    assert Job.objects.count() == 1
