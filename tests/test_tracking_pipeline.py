"""Tracks, counting lines and zones, and exports through the real pipeline (the shared model, Dramatiq workers
on Redis, PostgreSQL) on a generated video of two real people walking across the frame in opposite
directions, whose identities and paths are known."""
from __future__ import annotations

import json

import motmetrics as mm
import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from pycocotools.coco import COCO

from jobs.lifecycle.services import submit_job
from jobs.models import PIPELINE, JobEvent, Segment, Status
from stages.counting import count_regions, validate_region
from stages.postprocess import iter_detection_frames
from stages.tracking import iou_matrix

from .conftest import STREET, content_of, token_for, wait_for_status, worker_in_process
from .helpers_media import walking_people

pytestmark = pytest.mark.django_db(transaction=True)

WIDTH, HEIGHT = 640, 360
# Drawn from the bottom to the top of the frame: someone walking up it has their right hand to the right, so
# "forward" is left to right.
MIDDLE = {"name": "middle", "kind": "line", "points": [[WIDTH / 2, HEIGHT], [WIDTH / 2, 0]]}
LEFT_HALF = {"name": "left half", "kind": "zone", "points": [[0, 0], [WIDTH / 2, 0], [WIDTH / 2, HEIGHT], [0, HEIGHT]]}


@pytest.fixture
def walked(owner, tmp_path, redis_clean, settings):
    """A finished five-segment job of the walking video, with the line and the zone given at submit."""
    settings.GEDGE_SEGMENT_S = 1.0  # a keyframe every 10 frames at 10 fps: five segments of 10 frames
    settings.GEDGE_SEGMENTS_IN_FLIGHT = 3
    video, truth = walking_people(tmp_path / "walk.mp4", STREET)
    with worker_in_process(threads=3):
        job, _ = submit_job(owner, SimpleUploadedFile("walk.mp4", video.read_bytes(), "video/mp4"),
                            regions=[MIDDLE, LEFT_HALF])
        job = wait_for_status(job.pk, {Status.EXIT, Status.FAILED}, timeout=180)
    assert job.status == Status.EXIT, job.error
    return job, truth


def identity_summary(truth, frames):
    """motmetrics over the person boxes: ground truth against the job's tracks, matched at IoU 0.5."""
    acc = mm.MOTAccumulator(auto_id=True)
    for frame in frames:
        gt = [(person, box) for index, person, box in truth if index == frame["index"]]
        hyp = [(b["track_id"], b["box"]) for b in frame["boxes"] if b["class"] == "person" and b["track_id"] >= 0]
        iou = iou_matrix(np.array([b for _, b in gt], float).reshape(-1, 4), np.array([b for _, b in hyp], float)
                         .reshape(-1, 4))
        acc.update([p for p, _ in gt], [t for t, _ in hyp], np.where(iou >= 0.5, 1 - iou, np.nan))
    metrics = mm.metrics.create()
    return metrics.compute(acc, metrics=["num_switches", "num_fragmentations", "mota", "idf1",
                                         "num_unique_objects"], name="walk").iloc[0]


def test_two_people_keep_one_id_each_across_segments_and_are_counted_once_each_way(walked, api):
    job, truth = walked
    assert list(job.events.filter(segment__isnull=True).values_list("to_status", flat=True)) == list(PIPELINE)
    assert job.segments.count() == 5
    frames = list(iter_detection_frames(job.result_dir / "detections.json"))
    assert len(frames) == 50
    scores = identity_summary(truth, frames)
    print(f"\nwalking people: {dict(scores)}")
    assert scores["num_switches"] == 0 and scores["idf1"] > 0.95 and scores["mota"] > 0.9
    # One track per person, continuing across all four segment boundaries (frames 10, 20, 30, 40).
    people = list(job.tracks.filter(class_name="person").order_by("track_id"))
    assert len(people) == 2, [(t.track_id, t.first_frame, t.last_frame) for t in people]
    for track in people:
        assert track.first_frame == 0 and track.last_frame == 49 and track.frames >= 45
        states = Segment.objects.filter(job=job).exclude(tracker_state=None).count()
        assert states == 5  # every segment left the state the next one continued from
    assert job.summary["objects"]["person"] == 2 and job.summary["per_class"]["person"] >= 90
    # The line and the zone given at submit were counted when the job finished.
    middle, left = job.regions.order_by("id")
    assert middle.counts["forward"] == {"person": 1} and middle.counts["backward"] == {"person": 1}
    # They are in the left half one after the other (they pass each other at the middle): never both at once.
    assert left.counts["entered"] == {"person": 2} and left.counts["max_present"] == 1
    # The tracks API, filtered by class and time.
    body = api.get(f"/api/jobs/{job.pk}/tracks/").json()
    assert body["count"] == job.tracks.count() and body["results"][0]["id"] == people[0].track_id
    listed = api.get(f"/api/jobs/{job.pk}/tracks/", {"class": "person"}).json()["results"]
    assert [t["id"] for t in listed] == [t.track_id for t in people]
    assert listed[0]["class"] == "person" and listed[0]["duration_ms"] == 4900.0 and listed[0]["path"]
    assert api.get(f"/api/jobs/{job.pk}/tracks/", {"class": "person", "from_ms": 6000}).json()["count"] == 0
    assert api.get(f"/api/jobs/{job.pk}/tracks/", {"to_ms": "soon"}).json()["error"]["code"] == "invalid_range"


def test_changing_a_line_recounts_from_the_stored_tracks_without_any_message(walked, api, monkeypatch):
    job, _ = walked
    import dramatiq

    sent = []
    broker = dramatiq.get_broker()
    original = broker.enqueue
    monkeypatch.setattr(broker, "enqueue", lambda message, **kw: sent.append(message) or original(message, **kw))
    region = job.regions.get(name="middle")
    segments_before = list(Segment.objects.filter(job=job).values_list("attempt", "status"))
    # Moved to the right edge, beyond where either person walks: nobody crosses it.
    response = api.patch(f"/api/jobs/{job.pk}/regions/{region.pk}/", {"points": [[630, 360], [630, 0]]},
                         format="json")
    assert response.status_code == 200, response.content
    assert response.json()["counts"]["total"] == {"forward": 0, "backward": 0}
    # A new line across the upper person's path only (y 40-163), drawn top to bottom: left to right is
    # "backward" for it.
    response = api.post(f"/api/jobs/{job.pk}/regions/", {"name": "upper", "kind": "line",
                                                          "points": [[200, 0], [200, 180]]}, format="json")
    assert response.status_code == 201, response.content
    upper = response.json()
    assert upper["counts"]["backward"] == {"person": 1} and upper["counts"]["forward"] == {}
    # What the API counted is what stages.counting counts over the job's detections.json.
    expected = count_regions(iter_detection_frames(job.result_dir / "detections.json"),
                             [validate_region("upper", "line", [[200, 0], [200, 180]])])
    assert upper["counts"] == expected["upper"]
    assert sent == [], [m.queue_name for m in sent]  # no inference, no stage message of any kind
    assert list(Segment.objects.filter(job=job).values_list("attempt", "status")) == segments_before
    events = list(JobEvent.objects.filter(job=job, segment__isnull=True, from_status=Status.EXIT)
                  .values_list("to_status", "message"))
    assert events == [(Status.EXIT, "line 'middle' changed: 0 forward, 0 backward"),
                      (Status.EXIT, "line 'upper' added: 0 forward, 1 backward")]
    assert api.delete(f"/api/jobs/{job.pk}/regions/{upper['id']}/").status_code == 204
    assert [r["name"] for r in api.get(f"/api/jobs/{job.pk}/regions/").json()] == ["middle", "left half"]
    # The status timeline is untouched: the eight statuses, then count events that are not status changes.
    statuses = [e["to_status"] for e in api.get(f"/api/jobs/{job.pk}/events/").json() if
                e["from_status"] != e["to_status"]]
    assert statuses == list(PIPELINE)


def test_exports_parse_with_their_own_formats_readers(walked, api, tmp_path):
    job, truth = walked
    mot = api.get(f"/api/jobs/{job.pk}/export/", {"format": "mot"})
    assert mot.status_code == 200 and mot["Content-Type"].startswith("text/plain")
    assert 'filename="job-' in mot["Content-Disposition"]
    (tmp_path / "mot.txt").write_bytes(content_of(mot))
    df = mm.io.loadtxt(str(tmp_path / "mot.txt"), fmt="mot15-2D")
    tracked = sum(1 for f in iter_detection_frames(job.result_dir / "detections.json") for b in f["boxes"]
                  if b["track_id"] >= 0)
    assert len(df) == tracked and set(df.index.get_level_values("FrameId")) <= set(range(1, 51))
    assert set(df.index.get_level_values("Id")) == set(job.tracks.values_list("track_id", flat=True))
    coco = api.get(f"/api/jobs/{job.pk}/export/", {"format": "coco"})
    assert coco.status_code == 200 and coco["Content-Type"] == "application/json"
    (tmp_path / "coco.json").write_bytes(content_of(coco))
    loaded = COCO(str(tmp_path / "coco.json"))
    assert len(loaded.getImgIds()) == 50
    people = loaded.getAnnIds(catIds=[1])
    instances = {a["instance_id"] for a in loaded.loadAnns(people) if a["instance_id"] >= 0}
    assert instances == set(job.tracks.filter(class_name="person").values_list("track_id", flat=True))
    assert api.get(f"/api/jobs/{job.pk}/export/").json()["error"]["code"] == "invalid_format"


def test_regions_and_tracks_follow_the_ownership_rules(walked, other, client):
    job, _ = walked
    from rest_framework.test import APIClient

    stranger = APIClient()
    stranger.credentials(HTTP_AUTHORIZATION=f"Token {token_for(other)}")
    for url in (f"/api/jobs/{job.pk}/tracks/", f"/api/jobs/{job.pk}/regions/",
                f"/api/jobs/{job.pk}/export/?format=mot"):
        assert stranger.get(url).status_code == 404, url
    assert stranger.post(f"/api/jobs/{job.pk}/regions/", MIDDLE, format="json").status_code == 404
    # Seeing every job (jobs.view_job) is not enough to change its lines.
    from django.contrib.auth.models import Permission

    other.user_permissions.add(Permission.objects.get(codename="view_job"))
    assert stranger.get(f"/api/jobs/{job.pk}/regions/").status_code == 200
    refused = stranger.post(f"/api/jobs/{job.pk}/regions/", {**MIDDLE, "name": "mine"}, format="json")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"


def test_bad_lines_and_zones_are_refused_with_the_reason(walked, api, owner, tmp_path):
    job, _ = walked
    cases = [
        ({"name": "x", "kind": "line", "points": [[0, 0], [0, 0]]}, "distinct"),
        ({"name": "x", "kind": "zone", "points": [[0, 0], [10, 10]]}, "zone"),
        ({"name": "x", "kind": "line", "points": [[0, 0], [9000, 0]]}, "outside"),
        ({"name": "middle", "kind": "line", "points": [[1, 1], [5, 5]]}, "already exists"),
    ]
    for spec, words in cases:
        response = api.post(f"/api/jobs/{job.pk}/regions/", spec, format="json")
        assert response.status_code == 400, (spec, response.content)
        body = response.json()["error"]
        assert words in json.dumps(body).lower(), (spec, body)
    # At submit: the job is not created and the upload is not kept.
    video = (tmp_path / "walk.mp4").read_bytes()
    before = owner.jobs.count()
    response = api.post("/api/jobs/", {"video": SimpleUploadedFile("w.mp4", video, "video/mp4"),
                                       "regions": json.dumps([{"name": "a", "kind": "line",
                                                               "points": [[0, 0], [0, 9999]]}])},
                        format="multipart")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_region", response.content
    assert "outside" in response.json()["error"]["message"] and owner.jobs.count() == before
    response = api.post("/api/jobs/", {"video": SimpleUploadedFile("w.mp4", video, "video/mp4"),
                                       "regions": "not json"}, format="multipart")
    assert response.status_code == 400 and owner.jobs.count() == before


def test_the_new_endpoints_are_in_the_openapi_schema(api):
    paths = api.get("/api/schema/", {"format": "json"}).json()["paths"]
    for path in ("/api/jobs/{id}/tracks/", "/api/jobs/{id}/regions/", "/api/jobs/{id}/regions/{region_id}/",
                 "/api/jobs/{id}/export/"):
        assert path in paths, sorted(paths)
    assert set(paths["/api/jobs/{id}/regions/{region_id}/"]) >= {"get", "patch", "delete"}
    assert "post" in paths["/api/jobs/{id}/regions/"]
