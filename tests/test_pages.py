"""The pages and their downloads, through Django's test client: who sees what, and what the files hold."""
from __future__ import annotations

import csv
import io
import json
import re

import pytest
from django.utils import timezone

from jobs.models import PIPELINE, Job, JobEvent, Status

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
             "boxes": [{"class": n, "class_id": CLASS_IDS[n], "score": 0.5 + k / 100, "box": [k, 2.5, k + 10, 20]}
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


def test_detections_csv_has_one_row_per_box(client, owner, other):
    job = finished_job(owner, [["person", "car"], [], ["dog"]], fps=4)
    response = login(client, owner).get(f"/jobs/{job.pk}/detections.csv")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert f'filename="job-{job.pk}-detections.csv"' in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(content_of(response).decode())))
    assert rows[0] == ["frame", "time_ms", "class", "class_id", "score", "x1", "y1", "x2", "y2"]
    assert rows[1:] == [["0", "0.0", "person", "0", "0.5", "0", "2.5", "10", "20"],
                        ["0", "0.0", "car", "2", "0.51", "1", "2.5", "11", "20"],
                        ["2", "500.0", "dog", "16", "0.5", "0", "2.5", "10", "20"]]
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
