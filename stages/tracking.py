"""Multi-object tracking: ByteTrack (Zhang et al., ECCV 2022), class-aware, with a state that is plain JSON.

A box gets the id of its track (an int from 1, per job), or -1 where it belongs to none (step 5). Per frame:

1. every track's Kalman filter (constant velocity over centre, aspect ratio, height, as ByteTrack's) predicts
   its box;
2. boxes scoring at least ``high_score`` are matched to confirmed and lost tracks of the same class by IoU
   weighted with the score (Hungarian assignment, ``1 - IoU * score <= match_cost``);
3. the lower-scoring boxes are matched to the confirmed tracks still unmatched (``IoU >= low_match_iou``):
   ByteTrack's second association, which keeps an object through a partly hidden, low-score frame (lost
   tracks take part too: ByteTrack leaves them out, but here a box it leaves out would start a new track);
4. tentative tracks (one box so far) take the boxes left at ``tentative_match_iou``; one that finds none is
   dropped, so a one-frame false positive does not linger;
5. a box still unmatched that scores at least ``new_track_score`` starts a (tentative) track; a lower box
   that continued no track has no id (``track_id`` -1): a faint detection that is not part of any object;
6. a confirmed track without a box becomes lost and is kept ``lost_s`` seconds for a late match.

Why not a library's: supervision's ``ByteTrack`` is deprecated and gone from supervision 0.31; its successor,
the ``trackers`` package, requires opencv-python, the GUI build, which cannot be installed beside the
opencv-python-headless the images use (both provide ``cv2``). And neither tracker's state can be carried from
one process to another through a public API, which segments need: segment k's postprocessing runs on any
worker, continuing from the state segment k-1 left (:meth:`Tracker.state`, stored in the database).
docs/tracking.md has the measured quality and cost.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

STATE_VERSION = 1


@dataclass(frozen=True)
class TrackerSettings:
    high_score: float = 0.5  # boxes at or above take part in the first association
    match_cost: float = 0.8  # first association: 1 - IoU * score at most this (ByteTrack's match_thresh)
    low_match_iou: float = 0.5  # second association (low boxes to unmatched confirmed tracks)
    tentative_match_iou: float = 0.3  # a one-box track's second box
    new_track_score: float = 0.6  # a box left unmatched starts a track at or above this (ByteTrack: high + 0.1)
    lost_s: float = 1.0  # a lost track waits this long for a late match (ByteTrack: 30 frames at 30 fps)
    trail: int = 24  # trail points kept per track for drawing

    @classmethod
    def from_dict(cls, values: dict | None) -> TrackerSettings:
        known = {name: values[name] for name in cls.__dataclass_fields__ if values and name in values}
        return cls(**known)

    def as_dict(self) -> dict:
        return asdict(self)


# --- Kalman filter over (cx, cy, aspect, height) and their velocities, as ByteTrack's (and DeepSORT's) ---

_STD_POS, _STD_VEL = 1.0 / 20, 1.0 / 160
_F = np.eye(8)
_F[:4, 4:] = np.eye(4)
_H = np.eye(4, 8)


def _xyah(boxes: np.ndarray) -> np.ndarray:
    w, h = boxes[:, 2] - boxes[:, 0], np.maximum(boxes[:, 3] - boxes[:, 1], 1e-3)
    return np.stack([boxes[:, 0] + w / 2, boxes[:, 1] + h / 2, w / h, h], axis=1)


def _boxes(means: np.ndarray) -> np.ndarray:
    cx, cy, a, h = means[:, 0], means[:, 1], means[:, 2], means[:, 3]
    w = a * h
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def _initiate(measurements: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = len(measurements)
    means = np.concatenate([measurements, np.zeros((n, 4))], axis=1)
    h = measurements[:, 3]
    std = np.stack([2 * _STD_POS * h, 2 * _STD_POS * h, np.full(n, 1e-2), 2 * _STD_POS * h,
                    10 * _STD_VEL * h, 10 * _STD_VEL * h, np.full(n, 1e-5), 10 * _STD_VEL * h], axis=1)
    covs = np.zeros((n, 8, 8))
    covs[:, range(8), range(8)] = std ** 2
    return means, covs


def _predict(means: np.ndarray, covs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h = means[:, 3]
    n = len(means)
    std = np.stack([_STD_POS * h, _STD_POS * h, np.full(n, 1e-2), _STD_POS * h,
                    _STD_VEL * h, _STD_VEL * h, np.full(n, 1e-5), _STD_VEL * h], axis=1)
    noise = np.zeros((n, 8, 8))
    noise[:, range(8), range(8)] = std ** 2
    return means @ _F.T, _F @ covs @ _F.T + noise


def _update(means: np.ndarray, covs: np.ndarray, measurements: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h = means[:, 3]
    n = len(means)
    std = np.stack([_STD_POS * h, _STD_POS * h, np.full(n, 1e-1), _STD_POS * h], axis=1)
    projected_cov = _H @ covs @ _H.T
    projected_cov[:, range(4), range(4)] += std ** 2
    gain = np.linalg.solve(projected_cov, (covs @ _H.T).transpose(0, 2, 1)).transpose(0, 2, 1)
    innovation = measurements - means[:, :4]
    new_means = means + np.einsum("nij,nj->ni", gain, innovation)
    new_covs = covs - gain @ projected_cov @ gain.transpose(0, 2, 1)
    return new_means, new_covs


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` [N, 4] with every box of ``b`` [M, 4] (x1, y1, x2, y2)."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def _assign(cost: np.ndarray, limit: float) -> list[tuple[int, int]]:
    """Hungarian assignment keeping the pairs whose cost is at most ``limit``."""
    if not cost.size:
        return []
    rows, cols = linear_sum_assignment(cost)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if cost[r, c] <= limit]


class Tracker:
    """ByteTrack over one video's frames, in order; :meth:`state` and ``Tracker(state=...)`` carry it from one
    segment (and process) to the next."""

    def __init__(self, settings: TrackerSettings, fps: float, state: dict | None = None) -> None:
        self.settings = settings
        self.lost_frames = max(1, round(settings.lost_s * (fps or 25)))
        state = state or {}
        if state and state.get("version") != STATE_VERSION:
            raise ValueError(f"tracker state version {state.get('version')} is not {STATE_VERSION}")
        tracks = state.get("tracks", [])
        self.next_id: int = state.get("next_id", 1)
        self.frames_seen: int = state.get("frames_seen", 0)
        self.ids = np.array([t["id"] for t in tracks], np.int64)
        self.classes = np.array([t["class_id"] for t in tracks], np.int64)
        self.hits = np.array([t["hits"] for t in tracks], np.int64)
        self.last_seen = np.array([t["last_seen"] for t in tracks], np.int64)  # frames_seen of its last box
        self.lost = np.array([t["lost"] for t in tracks], bool)
        self.means = np.array([t["mean"] for t in tracks], float).reshape(-1, 8)
        self.covs = np.array([t["cov"] for t in tracks], float).reshape(-1, 8, 8)

    def state(self) -> dict:
        """The whole tracker as JSON-serialisable data."""
        tracks = [{"id": int(i), "class_id": int(c), "hits": int(h), "last_seen": int(s), "lost": bool(lo),
                   "mean": [float(v) for v in m], "cov": [float(v) for v in cv.reshape(-1)]}
                  for i, c, h, s, lo, m, cv in zip(self.ids, self.classes, self.hits, self.last_seen, self.lost,
                                                   self.means, self.covs, strict=True)]
        return {"version": STATE_VERSION, "next_id": self.next_id, "frames_seen": self.frames_seen,
                "tracks": tracks}

    def update(self, boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
        """One frame's boxes [K, 4], scores [K], class ids [K] in; the track id of each box out [K]."""
        s = self.settings
        self.frames_seen += 1
        boxes = np.asarray(boxes, float).reshape(-1, 4)
        scores = np.asarray(scores, float).reshape(-1)
        class_ids = np.asarray(class_ids, np.int64).reshape(-1)
        out = np.full(len(boxes), -1, np.int64)
        if len(self.ids):
            self.means, self.covs = _predict(self.means, self.covs)
        predicted = _boxes(self.means) if len(self.ids) else np.zeros((0, 4))
        same_class = self.classes[:, None] == class_ids[None, :]
        iou = iou_matrix(predicted, boxes) * same_class
        matched_track = np.zeros(len(self.ids), bool)
        free_box = np.ones(len(boxes), bool)
        confirmed = self.hits >= 2

        def match(track_mask: np.ndarray, box_mask: np.ndarray, cost: np.ndarray, limit: float) -> None:
            t_idx, b_idx = np.flatnonzero(track_mask), np.flatnonzero(box_mask)
            for r, c in _assign(cost[np.ix_(t_idx, b_idx)], limit):
                t, b = t_idx[r], b_idx[c]
                matched_track[t], free_box[b] = True, False
                out[b] = self.ids[t]

        high = scores >= s.high_score
        match(confirmed, high, 1 - iou * scores[None, :], s.match_cost)  # 2. high boxes
        match(confirmed & ~matched_track, free_box & ~high, 1 - iou, 1 - s.low_match_iou)  # 3.
        match(~confirmed & ~matched_track, free_box, 1 - iou, 1 - s.tentative_match_iou)  # 4. tentative tracks

        matched = np.flatnonzero(matched_track)
        if len(matched):
            box_of = {int(out_id): b for b, out_id in enumerate(out) if out_id >= 0}
            rows = [box_of[int(self.ids[t])] for t in matched]
            self.means[matched], self.covs[matched] = _update(self.means[matched], self.covs[matched],
                                                              _xyah(boxes[rows]))
            self.hits[matched] += 1
            self.last_seen[matched] = self.frames_seen
            self.lost[matched] = False
        # unmatched: tentative tracks go, confirmed ones are lost until lost_frames have passed
        keep = matched_track | (confirmed & (self.frames_seen - self.last_seen <= self.lost_frames))
        self.lost |= ~matched_track
        new = np.flatnonzero(free_box & (scores >= s.new_track_score))  # 5. a confident box starts a track
        new_ids = np.arange(self.next_id, self.next_id + len(new), dtype=np.int64)
        self.next_id += len(new)
        out[new] = new_ids
        new_means, new_covs = _initiate(_xyah(boxes[new]))
        self.ids = np.concatenate([self.ids[keep], new_ids])
        self.classes = np.concatenate([self.classes[keep], class_ids[new]])
        self.hits = np.concatenate([self.hits[keep], np.ones(len(new), np.int64)])
        self.last_seen = np.concatenate([self.last_seen[keep], np.full(len(new), self.frames_seen, np.int64)])
        self.lost = np.concatenate([self.lost[keep], np.zeros(len(new), bool)])
        self.means = np.concatenate([self.means[keep], new_means])
        self.covs = np.concatenate([self.covs[keep], new_covs])
        return out


class Trails:
    """The last ``points`` bottom centres of each track, for drawing; a track unseen for ``points`` frames is
    forgotten. Carried across segments in the state beside the tracker's."""

    def __init__(self, points: int, state: dict | None = None) -> None:
        self.points = points
        self.frame = (state or {}).get("frame", 0)
        self.paths: dict[int, list] = {int(k): v for k, v in (state or {}).get("paths", {}).items()}

    def update(self, boxes: np.ndarray, ids: np.ndarray) -> None:
        self.frame += 1
        for box, track_id in zip(boxes, ids, strict=True):
            entry = self.paths.setdefault(int(track_id), [0, []])
            entry[0] = self.frame
            entry[1].append([round(float(box[0] + box[2]) / 2, 1), round(float(box[3]), 1)])
            del entry[1][: -self.points]
        self.paths = {k: v for k, v in self.paths.items() if self.frame - v[0] < self.points}

    def of(self, track_id: int) -> list:
        entry = self.paths.get(int(track_id))
        return entry[1] if entry else []

    def state(self) -> dict:
        return {"frame": self.frame, "paths": {str(k): v for k, v in self.paths.items()}}


def track_segment(rows: np.ndarray, frame_count: int, settings: TrackerSettings, fps: float,
                  state: dict | None = None) -> tuple[np.ndarray, dict]:
    """Track ids for detection rows [K, 7] (local frame, x1, y1, x2, y2, score, class_id), sorted by frame,
    over ``frame_count`` frames (a frame without boxes still ages the lost tracks), continuing from ``state``
    (None: the video's first segment). Returns the ids and the state the next segment continues from."""
    tracker = Tracker(settings, fps, (state or {}).get("tracker"))
    trails = Trails(settings.trail, (state or {}).get("trails"))
    ids = np.full(len(rows), -1, np.int64)
    frame_ids = rows[:, 0].astype(np.int64)
    bounds = np.searchsorted(frame_ids, np.arange(frame_count + 1))
    for local in range(frame_count):
        lo, hi = bounds[local], bounds[local + 1]
        ids[lo:hi] = tracker.update(rows[lo:hi, 1:5], rows[lo:hi, 5], rows[lo:hi, 6])
        trails.update(rows[lo:hi, 1:5], ids[lo:hi])
    return ids, {"tracker": tracker.state(), "trails": trails.state()}


def summarize_tracks(frames: Iterable[dict], path_points: int = 48) -> list[dict]:
    """The ``tracks`` list of detections.json from its frames (boxes carrying ``track_id``), one pass, memory
    per track: id, class (its boxes' most frequent), first and last frame and time, boxes seen, best score,
    and its path (bottom centres) sampled to at most ``path_points`` points."""
    tracks: dict[int, dict] = {}
    for frame in frames:
        for box in frame["boxes"]:
            track_id = box.get("track_id", -1)
            if track_id is None or track_id < 0:
                continue
            x1, _, x2, y2 = box["box"]
            point = [frame["index"], round((x1 + x2) / 2, 1), round(y2, 1)]
            entry = tracks.get(track_id)
            if entry is None:
                entry = tracks[track_id] = {"id": track_id, "classes": {}, "first_frame": frame["index"],
                                            "first_ms": frame["time_ms"], "frames": 0, "score": 0.0,
                                            "path": [], "step": 1}
            entry["classes"][box["class"]] = entry["classes"].get(box["class"], 0) + 1
            entry["last_frame"], entry["last_ms"] = frame["index"], frame["time_ms"]
            entry["frames"] += 1
            entry["score"] = max(entry["score"], box["score"])
            if (entry["frames"] - 1) % entry["step"] == 0:
                entry["path"].append(point)
                if len(entry["path"]) > path_points:  # keep every other point, sample half as often from now on
                    entry["path"] = entry["path"][::2]
                    entry["step"] *= 2
            entry["last_point"] = point
    result = []
    for entry in sorted(tracks.values(), key=lambda e: e["id"]):
        path = entry["path"]
        if path[-1] != entry["last_point"]:
            path = [*path[: path_points - 1], entry["last_point"]]
        result.append({"id": entry["id"], "class": max(entry["classes"].items(), key=lambda kv: (kv[1], kv[0]))[0],
                       "first_frame": entry["first_frame"], "last_frame": entry["last_frame"],
                       "first_ms": entry["first_ms"], "last_ms": entry["last_ms"], "frames": entry["frames"],
                       "score": round(entry["score"], 4), "path": path})
    return result


def objects_per_class(tracks: list[dict]) -> dict[str, int]:
    """Distinct tracks per class, most first."""
    counts: dict[str, int] = {}
    for track in tracks:
        counts[track["class"]] = counts.get(track["class"], 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
