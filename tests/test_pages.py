"""The pages and their downloads, through Django's test client: who sees what, and what the files hold."""
from __future__ import annotations

import csv
import io
import json
import re

import pytest
from django.utils import timezone

from jobs.models import PIPELINE, Job, JobEvent, Segment, Status

from .conftest import PASSWORD, content_of

pytestmark = pytest.mark.django_db

CLASS_IDS = {"person": 0, "bicycle": 1, "car": 2, "motorcycle": 3, "bus": 5, "truck": 7, "boat": 8,
             "bench": 13, "dog": 16, "cat": 15}


def finished_job(user, frames: list[list[str]], fps: float = 10.0, **fields) -> Job:
    """A job at Exit whose detections.json holds the given class names per frame."""
    per_class: dict[str, int] = {}
    for names in frames:
        for name in names:
            per_class[name] = per_class.get(name, 0) + 1
    now = timezone.now()
    job = Job.objects.create(
        user=user, path="uploads/x.mp4", type="mp4/mp4", status=Status.EXIT, original_name="clip.mp4",
        frame_count=len(frames), fps=fps, width=64, height=48, started_at=now, ended_at=now, version=9,
        summary={"detections": sum(per_class.values()), "per_class": per_class}, **fields,
    )
    previous = ""
    for status in PIPELINE:
        JobEvent.objects.create(job=job, from_status=previous, to_status=status)
        previous = status
    job.result_dir.mkdir(parents=True)
    doc = {
        "video": {"fps": fps, "frame_count": len(frames), "width": 64, "height": 48},
        "frames": [
            {"index": i, "time_ms": round(i * 1000 / fps, 3),
             "boxes": [{"class": n, "class_id": CLASS_IDS[n], "score": 0.5 + k / 100, "box": [k, 2.5, k + 10, 20],
                        "track_id": k + 1 if n != "dog" else -1}  # dogs are faint boxes of no track
                       for k, n in enumerate(names)]}
            for i, names in enumerate(frames)
        ],
        "summary": {"frames": len(frames), "detections": sum(per_class.values()), "per_class": per_class},
    }
    (job.result_dir / "detections.json").write_text(json.dumps(doc))
    (job.result_dir / "annotated.mp4").write_bytes(b"\0" * 64)
    return job


def login(client, user):
    assert client.login(username=user.username, password=PASSWORD)
    return client


def embedded(response, element_id: str):
    match = re.search(rf'<script id="{element_id}" type="application/json">(.*?)</script>', response.content.decode(),
                      re.S)
    assert match, f"no {element_id} in the page"
    return json.loads(match.group(1))


@pytest.mark.parametrize("url", ["/", "/jobs/1/", "/jobs/1/detections.csv", "/jobs/1/chart.json"])
def test_pages_need_login(client, url):
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_login_page_logs_in_and_shows_errors(client, owner):
    bad = client.post("/login/", {"username": "owner", "password": "wrong"})
    assert bad.status_code == 200 and b"didn't match" in bad.content
    good = client.post("/login/", {"username": "owner", "password": PASSWORD})
    assert good.status_code == 302 and good["Location"] == "/"


def test_console_embeds_only_the_users_jobs_with_their_timelines(client, owner, other):
    mine = finished_job(owner, [["person"]])
    finished_job(other, [["car"]])
    page = login(client, owner).get("/")
    assert page.status_code == 200
    initial = embedded(page, "gedge-initial")
    assert [job["id"] for job in initial["jobs"]] == [mine.pk]
    assert initial["jobs"][0]["version"] == 9 and initial["jobs"][0]["status"] == "Exit"
    assert [e["to_status"] for e in initial["timelines"][str(mine.pk)]] == list(PIPELINE)
    config = embedded(page, "gedge-config")
    assert config["pipeline"] == list(PIPELINE) and config["staff"] is False
    assert b'id="upload-input"' in page.content and b"multiple" in page.content


def test_staff_console_shows_every_job_and_the_user_column(client, owner, other, staff):
    jobs = {finished_job(owner, [["person"]]).pk, finished_job(other, [["car"]]).pk}
    page = login(client, staff).get("/")
    assert {job["id"] for job in embedded(page, "gedge-initial")["jobs"]} == jobs
    assert embedded(page, "gedge-config")["staff"] is True and b"<th>User</th>" in page.content


def test_pages_load_nothing_from_other_hosts(client, owner):
    job = finished_job(owner, [["person"]])
    for url in ("/", f"/jobs/{job.pk}/", "/login/"):
        html = login(client, owner).get(url).content.decode()
        assets = re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', html)
        assert assets and all(a.startswith("/static/") for a in assets), assets
        for asset in assets:
            served = client.get(asset)
            assert served.status_code == 200, asset
            content_of(served) if served.streaming else served.content  # noqa: B018 - read it


def test_job_page_of_another_user_is_not_found(client, owner, other, staff):
    job = finished_job(owner, [["person"]])
    assert login(client, other).get(f"/jobs/{job.pk}/").status_code == 404
    assert login(client, staff).get(f"/jobs/{job.pk}/").status_code == 200


def test_job_page_shows_results_totals_and_downloads(client, owner):
    job = finished_job(owner, [["person", "car"], ["person"], ["person", "dog"]])
    html = login(client, owner).get(f"/jobs/{job.pk}/").content.decode()
    assert f'src="/api/jobs/{job.pk}/video/"' in html
    for link in (f"/api/jobs/{job.pk}/video/?download=1", f"/api/jobs/{job.pk}/detections/",
                 f"/jobs/{job.pk}/detections.csv", f"/jobs/{job.pk}/chart.json"):
        assert link in html
    totals = re.findall(r"<tr><td>(\w+)</td><td class=\"num\">(\d+)</td></tr>", html)
    assert totals == [("person", "3"), ("car", "1"), ("dog", "1")]  # most first
    assert re.search(r'id="cancel-btn"[^>]*hidden', html) and re.search(r'id="retry-btn"[^>]*hidden', html)
    assert len(re.findall(r"<td>(Enqueue|Exit)</td>", html)) >= 2  # the event history
    assert re.search(r'<p id="segments-empty" class="muted">This job has no segments.</p>', html)


def test_failed_job_page_shows_the_error_and_offers_retry(client, owner):
    job = Job.objects.create(user=owner, path="uploads/y.mp4", type="mp4/mp4", status=Status.FAILED,
                             original_name="broken.mp4", error="inference failed 4 times; last error: boom",
                             failed_stage="inference")
    html = login(client, owner).get(f"/jobs/{job.pk}/").content.decode()
    assert "Error in inference:" in html and "last error: boom" in html
    assert not re.search(r'id="job-error"[^>]*hidden', html)
    assert not re.search(r'id="retry-btn"[^>]*hidden', html) and re.search(r'id="cancel-btn"[^>]*hidden', html)
    assert 'id="player"' not in html
    assert client.get(f"/jobs/{job.pk}/detections.csv").status_code == 409


def test_running_job_page_offers_cancel(client, owner):
    job = Job.objects.create(user=owner, path="uploads/z.mp4", type="mp4/mp4", status=Status.INFERENCING)
    html = login(client, owner).get(f"/jobs/{job.pk}/").content.decode()
    assert not re.search(r'id="cancel-btn"[^>]*hidden', html) and re.search(r'id="retry-btn"[^>]*hidden', html)
    chart = client.get(f"/jobs/{job.pk}/chart.json")
    assert chart.status_code == 409 and chart.json()["error"]["code"] == "not_ready"


def segmented_job(user) -> Job:
    """A job in Inferencing cut into 3 segments of 10 frames: the first through all stages, the second being
    inferred, the third preprocessed; each segment's moves are events with ``segment`` set."""
    job = Job.objects.create(user=user, path="uploads/s.mp4", type="mp4/mp4", status=Status.INFERENCING,
                             original_name="long.mp4", frame_count=30, fps=10, width=64, height=48,
                             preprocess_done=30, inference_done=15, postprocess_done=10, segment_count=3,
                             segments_done=1, window=2, started_at=timezone.now())
    previous = ""
    for status in PIPELINE[:4]:
        JobEvent.objects.create(job=job, from_status=previous, to_status=status, message=f"job {status}")
        previous = status
    for index, (status, done) in enumerate([(Status.POSTPROCESSING_COMPLETE, (10, 10, 10)),
                                            (Status.INFERENCING, (10, 5, 0)),
                                            (Status.PREPROCESSING_COMPLETE, (10, 0, 0))]):
        Segment.objects.create(job=job, index=index, first_frame=10 * index, frame_count=10, start_pts=index,
                               start_s=index, time_base="1/10", status=status, preprocess_done=done[0],
                               inference_done=done[1], postprocess_done=done[2])
        previous = ""
        for reached in PIPELINE[:PIPELINE.index(status) + 1]:
            JobEvent.objects.create(job=job, segment=index, from_status=previous, to_status=reached,
                                    message=f"segment {index} {reached}")
            previous = reached
    return job


def test_job_page_lists_segments_and_keeps_their_events_apart(client, owner):
    job = segmented_job(owner)
    page = login(client, owner).get(f"/jobs/{job.pk}/")
    html = page.content.decode()
    initial = embedded(page, "gedge-initial")
    # The segments, in order, for the strip the script draws (no request needed on load).
    assert [(s["index"], s["first_frame"], s["frame_count"], s["status"]) for s in initial["segments"]] == [
        (0, 0, 10, "Postprocessing_complete"), (1, 10, 10, "Inferencing"), (2, 20, 10, "Preprocessing_complete")]
    assert initial["segments"][1]["inference_done"] == 5 and "start_s" in initial["segments"][0]
    assert initial["job"]["segment_count"] == 3 and initial["job"]["segments_done"] == 1
    assert 'id="segments"' in html and re.search(r'id="segments-empty"[^>]*hidden', html)
    assert re.search(r'<div id="job-segments">1/3 done</div>', html)
    # The history table holds the job's own four changes; the segments' 6 + 4 + 3 sit in a collapsed list.
    history = re.search(r'<table id="events".*?</table>', html, re.S).group(0)
    assert re.findall(r"<td>job (\w+)</td>", history) == list(PIPELINE[:4])
    assert "segment 0" not in history
    box = re.search(r'<details id="segment-events-box"[^>]*>(.*?)</details>', html, re.S)
    assert box and " open" not in box.group(0).split(">")[0]  # collapsed
    assert len(re.findall(r"<td>segment \d \w+</td>", box.group(1))) == 7 + 4 + 3
    assert 'Segment events<span id="segment-event-count"> (14)</span>' in box.group(1)
    # The script gets both, apart: the stepper reads the job's own (segment null).
    assert [e["segment"] for e in initial["timelines"][str(job.pk)]] == [None] * 4
    assert [e["segment"] for e in initial["segmentEvents"]] == [0] * 7 + [1] * 4 + [2] * 3


def test_job_page_before_planning_says_segments_come_later(client, owner):
    job = Job.objects.create(user=owner, path="uploads/q.mp4", type="mp4/mp4", status=Status.ENQUEUE)
    JobEvent.objects.create(job=job, from_status="", to_status=Status.ENQUEUE)
    page = login(client, owner).get(f"/jobs/{job.pk}/")
    html = page.content.decode()
    assert embedded(page, "gedge-initial")["segments"] == []
    assert re.search(r'<p id="segments-empty" class="muted">The video is cut into segments when', html)
    assert re.search(r'id="segment-events-box"[^>]*hidden', html)
    assert embedded(page, "gedge-initial")["segmentEvents"] == []


def test_console_timelines_hold_only_the_jobs_own_events(client, owner):
    job = segmented_job(owner)
    initial = embedded(login(client, owner).get("/"), "gedge-initial")
    timeline = initial["timelines"][str(job.pk)]
    assert [e["to_status"] for e in timeline] == list(PIPELINE[:4]) and all(e["segment"] is None for e in timeline)
    shown = initial["jobs"][0]
    assert (shown["segment_count"], shown["segments_done"]) == (3, 1)
    assert shown["stage_progress"] == {"preprocess": 30, "inference": 15, "postprocess": 10}


def test_detections_csv_has_one_row_per_box(client, owner, other):
    job = finished_job(owner, [["person", "car"], [], ["dog"]], fps=4)
    response = login(client, owner).get(f"/jobs/{job.pk}/detections.csv")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert f'filename="job-{job.pk}-detections.csv"' in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(content_of(response).decode())))
    assert rows[0] == ["frame", "time_ms", "class", "class_id", "score", "x1", "y1", "x2", "y2", "track_id"]
    assert rows[1:] == [["0", "0.0", "person", "0", "0.5", "0", "2.5", "10", "20", "1"],
                        ["0", "0.0", "car", "2", "0.51", "1", "2.5", "11", "20", "2"],
                        ["2", "500.0", "dog", "16", "0.5", "0", "2.5", "10", "20", "-1"]]
    assert login(client, other).get(f"/jobs/{job.pk}/detections.csv").status_code == 404


def test_chart_is_objects_per_frame_per_class_over_time(client, owner):
    # 4 frames: person in all, car in the first two only.
    job = finished_job(owner, [["person", "car"], ["person", "car"], ["person"], ["person", "person"]], fps=2)
    data = login(client, owner).get(f"/jobs/{job.pk}/chart.json").json()
    assert data["bucket_frames"] == 1 and data["t"] == [0, 0.5, 1, 1.5]
    assert data["series"] == [
        {"class": "person", "class_id": 0, "total": 5, "values": [1, 1, 1, 2]},
        {"class": "car", "class_id": 2, "total": 2, "values": [1, 1, 0, 0]},
    ]


def test_chart_of_a_long_video_is_bucketed_and_folds_rare_classes(client, owner):
    names = list(CLASS_IDS)  # ten classes: the two rarest become "other"
    frames = [[names[i % 10]] * (1 + (i % 10 < 8)) for i in range(1000)]
    job = finished_job(owner, frames, fps=25)
    data = login(client, owner).get(f"/jobs/{job.pk}/chart.json").json()
    assert data["bucket_frames"] == 3 and len(data["t"]) == 334 and data["t"][1] == 0.12
    assert [s["class"] for s in data["series"]][-1] == "other" and len(data["series"]) == 9
    other = data["series"][-1]
    assert other["class_id"] is None and other["total"] == 200  # dog and cat, 100 frames each
    assert sum(s["total"] for s in data["series"]) == sum(len(f) for f in frames)
    person = data["series"][[s["class"] for s in data["series"]].index("person")]
    assert person["values"][0] == pytest.approx(2 / 3, abs=0.001)  # frames 0-2: person twice in frame 0


def test_upload_page_is_the_console_and_the_form_works_without_scripts(client, owner, make_text_file):
    login(client, owner)
    assert client.get("/upload/")["Location"] == "/"
    with open(make_text_file, "rb") as fh:
        response = client.post("/upload/", {"video": fh}, follow=True)
    assert b"notes.txt: not a usable video" in response.content
    assert not Job.objects.exists()


@pytest.fixture
def make_text_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("this is not a video\n" * 50)
    return path
