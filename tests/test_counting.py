"""Line and zone counts (stages/counting.py) on hand-made paths and on a random scene checked by brute force."""
from __future__ import annotations

import dataclasses
import json
import random
import re
from fractions import Fraction

import pytest

from stages.counting import Region, anchor, count_regions, region_from_dict, region_to_dict, validate_region

UP = validate_region("up", "line", [(100, 200), (100, 0)])      # drawn upwards: left -> right is forward
DOWN = validate_region("down", "line", [(100, 0), (100, 200)])  # drawn downwards: left -> right is backward
SHORT = validate_region("short", "line", [(100, 200), (100, 100)])  # only y in [100, 200]


def box(tid, x, y, cls="person", w=20, h=40):
    """A box whose anchor (bottom centre) is (x, y)."""
    return {"class": cls, "class_id": 0, "score": 0.9, "box": [x - w / 2, y - h, x + w / 2, y], "track_id": tid}


def frames_of(*per_frame):
    return [{"index": i, "time_ms": i * 40.0, "boxes": list(boxes)} for i, boxes in enumerate(per_frame)]


def path(tid, points, cls="person"):
    """One track visiting ``points``, one per frame."""
    return frames_of(*[[box(tid, x, y, cls)] for x, y in points])


def line_counts(result, name):
    r = result[name]
    return r["total"]["forward"], r["total"]["backward"]


def test_anchor_is_bottom_centre():
    assert anchor([10, 20, 30, 60]) == (20.0, 60.0)


def test_left_to_right_is_forward_for_a_line_drawn_upwards_and_backward_drawn_downwards():
    frames = path(1, [(50, 150), (80, 150), (120, 150), (150, 150)])
    result = count_regions(frames, [UP, DOWN])
    assert result["up"] == {"kind": "line", "forward": {"person": 1}, "backward": {},
                            "total": {"forward": 1, "backward": 0}}
    assert line_counts(result, "down") == (0, 1)


def test_reverse_path_counts_backward():
    frames = path(1, [(150, 150), (120, 150), (80, 150), (50, 150)])
    result = count_regions(frames, [UP, DOWN])
    assert result["up"]["backward"] == {"person": 1} and result["up"]["forward"] == {}
    assert line_counts(result, "down") == (1, 0)


def test_direction_follows_the_cross_product_on_a_diagonal_line():
    line = validate_region("diag", "line", [(0, 0), (100, 100)])
    # (50, 10) is above the diagonal: cross = 100*10 - 100*50 < 0; (50, 90): cross > 0
    assert line_counts(count_regions(path(1, [(50, 10), (50, 90)]), [line]), "diag") == (1, 0)
    assert line_counts(count_regions(path(1, [(50, 90), (50, 10)]), [line]), "diag") == (0, 1)


@pytest.mark.parametrize("y", [50, 250, 1000])
def test_crossing_the_extension_of_the_line_outside_the_segment_is_not_counted(y):
    assert line_counts(count_regions(path(1, [(50, y), (150, y)]), [SHORT]), "short") == (0, 0)


def test_crossing_through_the_segment_counts_and_looping_back_around_its_end_does_not():
    # forward through the segment, back to the left across the extension (y=300), forward through it again
    points = [(90, 150), (110, 150), (110, 300), (90, 300), (90, 150), (110, 150)]
    result = count_regions(path(1, points), [SHORT])
    assert line_counts(result, "short") == (1, 0)


def test_jitter_across_the_line_counts_once_per_direction():
    points = [(90 + 20 * (i % 2), 150) for i in range(10)]  # 5 crossings forward, 4 back
    assert line_counts(count_regions(path(1, points), [UP]), "up") == (1, 1)


def test_jitter_touching_the_line_keeps_the_side_and_counts_one_way_only():
    points = [(90, 150), (100, 150), (90, 150), (100, 150), (100, 140), (110, 150), (100, 150), (110, 150),
              (100, 160), (120, 150)]
    assert line_counts(count_regions(path(1, points), [UP]), "up") == (1, 0)


def test_a_track_first_seen_on_the_line_takes_its_first_side_off_it():
    assert line_counts(count_regions(path(1, [(100, 150), (100, 140), (120, 150)]), [UP]), "up") == (0, 0)
    assert line_counts(count_regions(path(1, [(100, 150), (90, 150), (120, 150)]), [UP]), "up") == (1, 0)


def test_classes_are_counted_separately_and_sorted_by_count_then_name():
    frames = frames_of(
        [box(1, 50, 150), box(2, 60, 120, "car"), box(3, 70, 110), box(4, 80, 130, "bicycle"), box(5, 150, 180)],
        [box(1, 150, 150), box(2, 160, 120, "car"), box(3, 170, 110), box(4, 180, 130, "bicycle"),
         box(5, 50, 180, "truck")],
    )
    result = count_regions(frames, [UP])["up"]
    assert list(result["forward"].items()) == [("person", 2), ("bicycle", 1), ("car", 1)]
    assert result["backward"] == {"truck": 1}  # the class of the box at the crossing
    assert result["total"] == {"forward": 4, "backward": 1}


def test_a_track_that_crossed_during_a_gap_of_missing_frames_is_counted():
    frames = frames_of([box(1, 50, 150), box(2, 20, 20)], [], [box(2, 30, 20)], [], [box(1, 150, 150)])
    assert line_counts(count_regions(frames, [UP]), "up") == (1, 0)


def test_boxes_without_a_valid_track_id_are_ignored():
    def untracked(x, tid):
        b = box(tid, x, 150)
        if tid is None:
            del b["track_id"]
        return b

    frames = frames_of([untracked(50, -1), untracked(50, None)], [untracked(150, -1), untracked(150, None)])
    zone = validate_region("z", "zone", [(0, 0), (200, 0), (200, 200), (0, 200)])
    result = count_regions(frames, [UP, zone])
    assert line_counts(result, "up") == (0, 0)
    assert result["z"] == {"kind": "zone", "entered": {}, "entered_total": 0, "max_present": 0,
                           "max_present_ms": None}


def test_zone_counts_distinct_tracks_and_the_first_frame_with_the_most_inside():
    zone = validate_region("square", "zone", [[0, 0], [100, 0], [100, 100], [0, 100]])
    frames = frames_of(
        [box(1, 50, 50), box(2, 150, 50), box(4, 300, 300)],                                # 1 inside
        [box(1, 50, 60), box(2, 60, 50, "car")],                                            # 2: t2 enters as car
        [box(1, 50, 70), box(2, 150, 50, "car"), box(3, 20, 20, "bicycle")],                # 2: t3 first seen in
        [box(1, 50, 80), box(2, 70, 50), box(3, 30, 20, "bicycle"), box(4, 300, 300)],      # 3: t2 back in
        [box(1, 50, 90), box(2, 80, 50), box(3, 40, 20, "bicycle")],                        # 3 again, later
        [box(4, 300, 300)],                                                                 # the rest not seen
        [box(5, 50, 150, h=100)],  # its box overlaps the zone but its anchor (bottom centre) is below it
    )
    assert count_regions(frames, [zone])["square"] == {
        "kind": "zone", "entered": {"bicycle": 1, "car": 1, "person": 1}, "entered_total": 3,
        "max_present": 3, "max_present_ms": 120.0}


def test_zone_uses_the_even_odd_rule_on_a_concave_polygon():
    u_shape = validate_region("u", "zone", [(0, 0), (30, 0), (30, 70), (70, 70), (70, 0), (100, 0), (100, 100),
                                            (0, 100)])
    frames = frames_of([box(1, 50, 30), box(2, 50, 90), box(3, 15, 30), box(4, 85, 10)])
    result = count_regions(frames, [u_shape])["u"]
    assert result["entered_total"] == 3 and result["max_present"] == 3 and result["max_present_ms"] == 0.0


def test_validate_region_accepts_lists_and_returns_floats():
    region = validate_region("door", "zone", [[0, 0], [640, 0], (640, 360)], width=640, height=360)
    assert region == Region("door", "zone", ((0.0, 0.0), (640.0, 0.0), (640.0, 360.0)))
    assert all(type(v) is float for p in region.points for v in p)
    with pytest.raises(dataclasses.FrozenInstanceError):
        region.name = "x"


def test_regions_round_trip_through_json():
    for region in (UP, validate_region("z", "zone", [(1.5, 2), (10, 2), (10, 20)])):
        stored = json.loads(json.dumps(region_to_dict(region)))
        assert stored["points"][0] == list(region.points[0])
        assert region_from_dict(stored) == region


@pytest.mark.parametrize("name, kind, points, size, message", [
    ("", "line", [(0, 0), (1, 1)], None, "needs a name"),
    ("   ", "line", [(0, 0), (1, 1)], None, "needs a name"),
    ("x" * 101, "line", [(0, 0), (1, 1)], None, "at most 100"),
    ("a", "circle", [(0, 0), (1, 1)], None, "kind must be 'line' or 'zone'"),
    ("a", "line", [(0, 0)], None, "exactly 2 distinct points, got 1"),
    ("a", "line", [(0, 0), (1, 1), (2, 2)], None, "exactly 2 distinct points, got 3"),
    ("a", "line", [(5, 5), (5, 5)], None, "that are the same"),
    ("a", "zone", [(0, 0), (1, 1)], None, "3 to 64 points, got 2"),
    ("a", "zone", [(i, i * i % 7) for i in range(65)], None, "3 to 64 points, got 65"),
    ("a", "zone", [(0, 0), (10, 10), (20, 20)], None, "zero area"),
    ("a", "zone", [(0, 0), (100, 0), (100, 0.001)], None, "zero area"),
    ("a", "line", "0,0,1,1", None, "list of [x, y] pairs"),
    ("a", "line", [(0, 0), (1, 2, 3)], None, "point 2 must be a pair"),
    ("a", "line", [(0, 0), 7], None, "point 2 must be a pair"),
    ("a", "line", [("0", 0), (1, 1)], None, "point 1 must be two finite numbers"),
    ("a", "line", [(float("nan"), 0), (1, 1)], None, "finite numbers"),
    ("a", "line", [(0, float("inf")), (1, 1)], None, "finite numbers"),
    ("a", "line", [(True, 0), (1, 1)], None, "finite numbers"),
    ("a", "line", [(0, 0), (641, 10)], (640, 360), "point 2 (641, 10) is outside the 640x360 video"),
    ("a", "zone", [(0, 0), (10, -1), (10, 10)], (640, 360), "outside"),
])
def test_validate_region_rejects_with_a_message(name, kind, points, size, message):
    width, height = size or (None, None)
    with pytest.raises(ValueError, match=re.escape(message)):
        validate_region(name, kind, points, width=width, height=height)


def test_duplicate_region_names_are_refused():
    with pytest.raises(ValueError, match="unique"):
        count_regions([], [UP, dataclasses.replace(DOWN, name="up")])


# --- a random scene against a brute-force geometric check ------------------------------------------------------

W, H = 1280, 720


def _sign(a, b, p):
    """Exact sign of (b - a) x (p - a), in rationals."""
    a, b, p = ([Fraction(v) for v in q] for q in (a, b, p))
    v = (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])
    return (v > 0) - (v < 0)


def _anchor_of(b):
    x1, _, x2, y2 = b["box"]
    return (x1 + x2) / 2, y2


def test_random_straight_tracks_match_a_brute_force_count():
    rng = random.Random(7)
    lines = [validate_region("vertical", "line", [(640, 100), (640, 620)]),
             validate_region("horizontal", "line", [(1100, 360), (200, 360)]),
             validate_region("diagonal", "line", [(300, 650), (900, 150)])]
    rect = (400.0, 200.0, 900.0, 500.0)
    tri = ((100.0, 700.0), (700.0, 80.0), (1200.0, 700.0))
    zones = [validate_region("rect", "zone", [(rect[0], rect[1]), (rect[2], rect[1]), (rect[2], rect[3]),
                                              (rect[0], rect[3])]),
             validate_region("tri", "zone", list(tri))]
    n_frames = 150
    frames = [{"index": i, "time_ms": i * 33.3, "boxes": []} for i in range(n_frames)]
    tracks = {}  # tid -> (class, boxes in frame order)
    for tid in range(1, 21):
        cls = rng.choice(["person", "car", "bicycle"])
        start, end = (rng.uniform(20, W - 20), rng.uniform(60, H - 20)), (rng.uniform(20, W - 20),
                                                                          rng.uniform(60, H - 20))
        first = rng.randrange(0, 60)
        length = rng.randrange(10, n_frames - first)
        kept = [0, length - 1] + [t for t in range(1, length - 1) if rng.random() > 0.3]  # gaps
        mine = []
        for t in sorted(kept):
            f = t / (length - 1)
            b = box(tid, start[0] + (end[0] - start[0]) * f, start[1] + (end[1] - start[1]) * f, cls,
                    w=rng.uniform(10, 80), h=rng.uniform(20, 150))
            frames[first + t]["boxes"].append(b)
            mine.append((first + t, b))
        tracks[tid] = (cls, mine)
    for frame in frames:  # an untracked box jumping across everything, and box order not by track
        frame["boxes"].append(box(-1, rng.choice([50, 1200]), rng.choice([50, 700])))
        rng.shuffle(frame["boxes"])

    got = count_regions(frames, lines + zones)

    outside_segment = 0
    for line in lines:
        a, b = line.points
        forward, backward = {}, {}
        for cls, mine in tracks.values():
            s, e = _anchor_of(mine[0][1]), _anchor_of(mine[-1][1])
            side_s, side_e = _sign(a, b, s), _sign(a, b, e)
            if side_s * side_e >= 0:
                continue
            if _sign(s, e, a) * _sign(s, e, b) >= 0:
                outside_segment += 1
                continue
            into = forward if side_e > 0 else backward
            into[cls] = into.get(cls, 0) + 1
        assert got[line.name]["forward"] == dict(sorted(forward.items(), key=lambda kv: (-kv[1], kv[0])))
        assert got[line.name]["backward"] == dict(sorted(backward.items(), key=lambda kv: (-kv[1], kv[0])))
        assert got[line.name]["total"] == {"forward": sum(forward.values()), "backward": sum(backward.values())}

    def in_rect(p):
        return rect[0] < p[0] < rect[2] and rect[1] < p[1] < rect[3]

    def in_tri(p):
        signs = {_sign(tri[i], tri[(i + 1) % 3], p) for i in range(3)}
        return signs in ({1}, {-1})

    for name, inside in (("rect", in_rect), ("tri", in_tri)):
        entered = {}
        for cls, mine in tracks.values():
            if any(inside(_anchor_of(b)) for _, b in mine):
                entered[cls] = entered.get(cls, 0) + 1
        present = [sum(1 for b in frame["boxes"] if b["track_id"] >= 0 and inside(_anchor_of(b))) for frame in frames]
        best = max(present)
        assert got[name]["entered"] == dict(sorted(entered.items(), key=lambda kv: (-kv[1], kv[0])))
        assert got[name]["entered_total"] == sum(entered.values())
        assert got[name]["max_present"] == best
        assert got[name]["max_present_ms"] == frames[present.index(best)]["time_ms"]
        assert best >= 2  # the scene exercises the zone

    crossings = sum(got[line.name]["total"]["forward"] + got[line.name]["total"]["backward"] for line in lines)
    assert crossings >= 10 and outside_segment >= 1  # the scene exercises both directions and the segment's ends
    assert all(got[line.name]["total"]["forward"] and got[line.name]["total"]["backward"] for line in lines)
