"""The tracker (stages/tracking.py) on scenes whose identities are known, scored with motmetrics."""
from __future__ import annotations

import json

import motmetrics as mm
import numpy as np
import pytest

from stages.tracking import Tracker, TrackerSettings, objects_per_class, summarize_tracks, track_segment


def scene(seed: int = 0, frames: int = 150, objects: int = 8, miss: float = 0.08, jitter: float = 2.0):
    """Objects of two classes moving on straight paths across a 1280x720 frame, two of them crossing each
    other; the 'detector' misses a box now and then, jitters the rest and scores some low. Returns
    [(frame, gt_id, box, score, class_id)]."""
    rng = np.random.default_rng(seed)
    rows = []
    paths = []
    for k in range(objects):
        start = rng.uniform([50, 50], [1100, 600])
        velocity = rng.uniform([-6, -3], [6, 3])
        size = rng.uniform([30, 60], [60, 140])
        paths.append((start, velocity, size, k % 2, int(rng.integers(0, 40)), int(rng.integers(90, frames))))
    # two people walking through each other from opposite sides
    paths.append((np.array([100.0, 300.0]), np.array([8.0, 0.0]), np.array([40.0, 100.0]), 0, 0, frames))
    paths.append((np.array([1100.0, 310.0]), np.array([-8.0, 0.0]), np.array([40.0, 100.0]), 0, 0, frames))
    for f in range(frames):
        for gt_id, (start, velocity, size, cls, first, last) in enumerate(paths, start=1):
            if not first <= f < last or rng.random() < miss:
                continue
            x, y = start + velocity * f + rng.normal(0, jitter, 2)
            w, h = size + rng.normal(0, jitter, 2)
            score = float(rng.uniform(0.3, 0.5) if rng.random() < 0.15 else rng.uniform(0.6, 0.95))
            rows.append((f, gt_id, [x, y, x + w, y + h], score, cls))
    return rows


def run(rows, frames: int, segments: list[int] | None = None, settings: TrackerSettings | None = None):
    """Track the scene's boxes, cut into segments at the given frames; the state passes through JSON."""
    settings = settings or TrackerSettings()
    cuts = [0, *(segments or []), frames]
    ids: dict[tuple[int, int], int] = {}
    state = None
    for lo, hi in zip(cuts, cuts[1:], strict=False):
        part = [r for r in rows if lo <= r[0] < hi]
        array = np.array([[f - lo, *box, score, cls] for f, _, box, score, cls in part], float).reshape(-1, 7)
        got, state = track_segment(array, hi - lo, settings, 25.0, state)
        state = json.loads(json.dumps(state))  # what the database stores
        for (f, gt_id, *_), track_id in zip(part, got, strict=True):
            ids[(f, gt_id)] = int(track_id)
    return ids


def mot_summary(rows, ids):
    acc = mm.MOTAccumulator(auto_id=True)
    for f in sorted({r[0] for r in rows}):
        here = [r for r in rows if r[0] == f]
        gt = [r[1] for r in here]
        hyp = [ids[(f, r[1])] for r in here if ids[(f, r[1])] >= 0]
        gt_kept = [r[1] for r in here if ids[(f, r[1])] >= 0]
        # the hypothesis boxes are the detections themselves: distance 0 to their own object
        dist = np.where(np.array(gt)[:, None] == np.array(gt_kept)[None, :], 0.0, np.nan).reshape(len(gt), -1)
        acc.update(gt, hyp, dist)
    metrics = mm.metrics.create()
    return metrics.compute(acc, metrics=["num_switches", "mota", "idf1", "num_unique_objects"], name="s")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_identities_hold_through_misses_noise_and_a_crossing(seed):
    rows = scene(seed)
    ids = run(rows, 150)
    result = mot_summary(rows, ids)
    assert int(result["num_switches"].iloc[0]) <= 2
    assert float(result["idf1"].iloc[0]) > 0.97
    confident = [(r[0], r[1]) for r in rows if r[3] >= TrackerSettings().new_track_score]
    assert all(ids[key] >= 1 for key in confident)  # every confident box is in a track
    assert sum(track_id >= 1 for track_id in ids.values()) / len(ids) > 0.97  # and nearly all the faint ones
    assert len(set(ids.values())) <= int(result["num_unique_objects"].iloc[0]) + 2


def test_ids_continue_across_segment_boundaries_exactly():
    rows = scene(3)
    whole = run(rows, 150)
    cut = run(rows, 150, segments=[37, 75, 112])
    assert cut == whole


def test_a_tracker_that_forgets_between_segments_would_be_caught():
    """The check above can fail: restarting the tracker at each cut renumbers objects."""
    rows = scene(3)
    cuts = [0, 75, 150]
    restarted = {}
    for lo, hi in zip(cuts, cuts[1:], strict=False):
        part = [r for r in rows if lo <= r[0] < hi]
        array = np.array([[f - lo, *box, score, cls] for f, _, box, score, cls in part], float).reshape(-1, 7)
        got, _ = track_segment(array, hi - lo, TrackerSettings(), 25.0, None)
        restarted.update({(f, g): int(t) for (f, g, *_), t in zip(part, got, strict=True)})
    assert restarted != run(rows, 150)


def test_classes_never_share_a_track():
    tracker = Tracker(TrackerSettings(), 25.0)
    box = np.array([[100, 100, 150, 200]], float)
    first = tracker.update(box, [0.9], [0])
    second = tracker.update(box, [0.9], [2])
    assert first[0] != second[0]


def test_a_one_frame_false_positive_does_not_linger():
    tracker = Tracker(TrackerSettings(), 25.0)
    tracker.update(np.array([[10, 10, 40, 60]], float), [0.9], [0])
    tracker.update(np.zeros((0, 4)), [], [])
    assert len(tracker.state()["tracks"]) == 0


def test_a_lost_track_is_found_again_within_lost_s_and_not_after():
    settings = TrackerSettings(lost_s=0.4)  # 10 frames at 25 fps
    tracker = Tracker(settings, 25.0)

    def box(f):
        return np.array([[100 + 3 * f, 100, 150 + 3 * f, 200]], float)

    for f in range(10):
        first = tracker.update(box(f), [0.9], [0])[0]
    for _ in range(6):
        tracker.update(np.zeros((0, 4)), [], [])
    assert tracker.update(box(16), [0.9], [0])[0] == first
    for _ in range(12):
        tracker.update(np.zeros((0, 4)), [], [])
    assert tracker.update(box(29), [0.9], [0])[0] != first


def test_tracks_summary():
    frames = [{"index": i, "time_ms": i * 40.0, "boxes": [
        {"class": "person", "class_id": 0, "score": 0.5 + i / 100, "box": [i, 0, i + 10, 20], "track_id": 1},
        *([{"class": "car", "class_id": 2, "score": 0.8, "box": [50, 50, 90, 80], "track_id": 2}] if i < 3 else []),
        {"class": "person", "class_id": 0, "score": 0.4, "box": [0, 0, 1, 1], "track_id": -1},
    ]} for i in range(200)]
    tracks = summarize_tracks(frames, path_points=16)
    assert [t["id"] for t in tracks] == [1, 2]
    person, car = tracks
    assert (person["class"], person["first_frame"], person["last_frame"], person["frames"]) == ("person", 0, 199, 200)
    assert (person["first_ms"], person["last_ms"], person["score"]) == (0.0, 7960.0, 2.49)
    assert len(person["path"]) <= 16 and person["path"][0] == [0, 5.0, 20] and person["path"][-1] == [199, 204.0, 20]
    assert (car["frames"], car["last_frame"]) == (3, 2)
    assert objects_per_class(tracks) == {"car": 1, "person": 1}
