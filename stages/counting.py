"""Line crossings and zone occupancy from tracked detections (the frames of a ``detections.json``).

- The anchor of a box is its bottom centre ``((x1 + x2) / 2, y2)``: where the object touches the ground.
- Line A-B: a track crosses when the step from its previous anchor to its current one properly intersects the
  *segment* A-B (not the infinite line). "forward" is from the left of an observer walking from A to B to their
  right: in image coordinates (y down) ``cross = (Bx-Ax)*(Py-Ay) - (By-Ay)*(Px-Ax)`` goes from negative to
  positive. An anchor exactly on the line (cross == 0) keeps the side it had. A track missing for some frames
  steps from its last known anchor. Each track counts at most once per direction per line, under the class of
  its box at the crossing.
- Zone (polygon, even-odd rule): ``entered`` counts distinct tracks whose anchor was inside in at least one frame,
  under the class of their box at the first such frame; ``max_present`` is the most tracks inside in one frame
  (only tracks with a box in it), ``max_present_ms`` the time of the first frame with that many.
- Boxes whose ``track_id`` is missing or negative are ignored. Memory is per track, never per frame.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from numbers import Real

import numpy as np

KINDS = ("line", "zone")
MAX_NAME = 100
MAX_ZONE_POINTS = 64
MIN_ZONE_AREA = 1.0  # square pixels


@dataclass(frozen=True)
class Region:
    name: str
    kind: str  # "line" or "zone"
    points: tuple[tuple[float, float], ...]


def _point(raw, i: int) -> tuple[float, float]:
    if not isinstance(raw, list | tuple) or len(raw) != 2:
        raise ValueError(f"point {i + 1} must be a pair of numbers [x, y], got {raw!r}")
    if not all(isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v) for v in raw):
        raise ValueError(f"point {i + 1} must be two finite numbers, got {raw!r}")
    return float(raw[0]), float(raw[1])


def _area(points: Sequence[tuple[float, float]]) -> float:
    xs, ys = np.array(points, dtype=float).T
    return 0.5 * abs(float(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))))


def validate_region(name, kind, points, width=None, height=None) -> Region:
    """A checked :class:`Region`, or ValueError with a message for the person who drew it."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError("a region needs a name")
    if len(name) > MAX_NAME:
        raise ValueError(f"region name is {len(name)} characters long; at most {MAX_NAME} are allowed")
    if kind not in KINDS:
        raise ValueError(f"region kind must be 'line' or 'zone', got {kind!r}")
    if not isinstance(points, list | tuple):
        raise ValueError("region points must be a list of [x, y] pairs")
    pts = tuple(_point(p, i) for i, p in enumerate(points))
    if kind == "line" and (len(pts) != 2 or pts[0] == pts[1]):
        raise ValueError(f"a line needs exactly 2 distinct points, got {len(pts)} point(s)"
                         + (" that are the same" if len(pts) == 2 else ""))
    if kind == "zone":
        if not 3 <= len(pts) <= MAX_ZONE_POINTS:
            raise ValueError(f"a zone needs 3 to {MAX_ZONE_POINTS} points, got {len(pts)}")
        if _area(pts) < MIN_ZONE_AREA:
            raise ValueError("the zone has (nearly) zero area: its points must not all lie on one line")
    if width is not None and height is not None:
        for i, (x, y) in enumerate(pts):
            if not (0 <= x <= width and 0 <= y <= height):
                raise ValueError(f"point {i + 1} ({x:g}, {y:g}) is outside the {width:g}x{height:g} video")
    return Region(name, kind, pts)


def region_to_dict(region: Region) -> dict:
    return {"name": region.name, "kind": region.kind, "points": [list(p) for p in region.points]}


def region_from_dict(d: dict) -> Region:
    return validate_region(d.get("name"), d.get("kind"), d.get("points"))


def anchor(box: Sequence[float]) -> tuple[float, float]:
    """Bottom centre of ``[x1, y1, x2, y2]``: where the object touches the ground."""
    x1, _y1, x2, y2 = box
    return (x1 + x2) / 2.0, float(y2)


def _cross(a, b, p) -> float:
    return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])


def _sign(v: float) -> int:
    return (v > 0) - (v < 0)


def inside_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd rule for (N, 2) points against an (M, 2) polygon: a bool array of N."""
    px, py = points[:, 0:1], points[:, 1:2]
    xi, yi = polygon[:, 0], polygon[:, 1]
    xj, yj = np.roll(xi, -1), np.roll(yi, -1)
    straddles = (yi > py) != (yj > py)
    dy = np.where(yj == yi, 1.0, yj - yi)
    x_at = xi + (py - yi) * (xj - xi) / dy
    return np.count_nonzero(straddles & (px < x_at), axis=1) % 2 == 1


def _sorted(counter: Counter) -> dict[str, int]:
    return dict(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))


def _track_boxes(frame: dict):
    for box in frame.get("boxes") or ():
        tid = box.get("track_id")
        if isinstance(tid, int) and not isinstance(tid, bool) and tid >= 0:
            yield tid, str(box.get("class", box.get("class_id"))), anchor(box["box"])


def count_regions(frames: Iterable[dict], regions: Iterable[Region]) -> dict[str, dict]:
    """Counts for every region in one pass over ``frames``; see the module docstring for the rules."""
    regions = list(regions)
    if len({r.name for r in regions}) != len(regions):
        raise ValueError("region names must be unique")
    lines = [r for r in regions if r.kind == "line"]
    zones = [(r, np.array(r.points, dtype=float)) for r in regions if r.kind == "zone"]
    # per line, per track: [last anchor strictly off the line, its side, counted forward, counted backward]
    line_state: dict[str, dict[int, list]] = {r.name: {} for r in lines}
    line_counts = {r.name: (Counter(), Counter()) for r in lines}
    zone_seen: dict[str, set[int]] = {r.name: set() for r, _ in zones}
    zone_result = {r.name: {"entered": Counter(), "max_present": 0, "max_present_ms": None}
                   for r, _ in zones}
    for frame in frames:
        boxes = list(_track_boxes(frame))
        for line in lines:
            a, b = line.points
            states, (forward, backward) = line_state[line.name], line_counts[line.name]
            for tid, cls, p in boxes:
                side = _sign(_cross(a, b, p))
                if side == 0:
                    continue  # on the line: keeps its previous side and position
                state = states.get(tid)
                if state is None:
                    states[tid] = [p, side, False, False]
                    continue
                last, last_side = state[0], state[1]
                state[0], state[1] = p, side
                if side == last_side or _sign(_cross(last, p, a)) * _sign(_cross(last, p, b)) >= 0:
                    continue  # same side, or crossed the line's extension outside A-B
                slot, counter = (2, forward) if side > 0 else (3, backward)
                if not state[slot]:
                    state[slot] = True
                    counter[cls] += 1
        if not boxes:
            continue
        anchors = np.array([p for _, _, p in boxes], dtype=float)
        for zone, polygon in zones:
            inside = inside_polygon(anchors, polygon)
            seen, result = zone_seen[zone.name], zone_result[zone.name]
            for (tid, cls, _), is_in in zip(boxes, inside, strict=True):
                if is_in and tid not in seen:
                    seen.add(tid)
                    result["entered"][cls] += 1
            present = len({tid for (tid, _, _), is_in in zip(boxes, inside, strict=True) if is_in})
            if present > result["max_present"]:
                result["max_present"], result["max_present_ms"] = present, frame.get("time_ms")
    out: dict[str, dict] = {}
    for line in lines:
        forward, backward = line_counts[line.name]
        out[line.name] = {"kind": "line", "forward": _sorted(forward), "backward": _sorted(backward),
                          "total": {"forward": sum(forward.values()), "backward": sum(backward.values())}}
    for zone, _ in zones:
        result = zone_result[zone.name]
        out[zone.name] = {"kind": "zone", "entered": _sorted(result["entered"]),
                          "entered_total": sum(result["entered"].values()), "max_present": result["max_present"],
                          "max_present_ms": result["max_present_ms"]}
    return {r.name: out[r.name] for r in regions}
