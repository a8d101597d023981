"""MOT and COCO exports (stages/exports.py), read back with motmetrics and pycocotools. No database."""
from __future__ import annotations

import json

import motmetrics as mm
import numpy as np
import pytest
from pycocotools.coco import COCO

from stages.detector import COCO_CLASSES
from stages.exports import coco_chunks, mot_lines
from stages.tracking import iou_matrix

N_FRAMES = 30
EMPTY = 10          # this frame has no boxes at all
UNTRACKED = 5       # this frame also has a box without a track (track_id -1)
VIDEO = {"name": "street.mp4", "width": 640, "height": 360, "fps": 25.0, "frame_count": N_FRAMES}
NAMES = list(COCO_CLASSES)
# track id -> (class_id, x1 at frame 0, y1, width, height); far apart, so no two boxes overlap
TRACKS = {1: (0, 10.0, 20.5, 40.25, 80.0), 2: (2, 300.0, 50.0, 60.0, 30.0), 3: (0, 500.0, 200.0, 30.5, 70.0)}


def scene() -> list[dict]:
    frames = []
    for index in range(N_FRAMES):
        boxes = []
        if index != EMPTY:
            for track_id, (class_id, x, y, w, h) in TRACKS.items():
                x1 = x + 2 * index
                boxes.append({"class": NAMES[class_id], "class_id": class_id, "score": 0.9 - 0.01 * track_id,
                              "box": [x1, y, x1 + w, y + h], "track_id": track_id})
        if index == UNTRACKED:
            boxes.append({"class": "dog", "class_id": 16, "score": 0.4, "box": [100.0, 300.0, 120.0, 330.0],
                          "track_id": -1})
        frames.append({"index": index, "time_ms": index * 40.0, "boxes": boxes})
    return frames


def n_boxes(frames) -> int:
    return sum(len(f["boxes"]) for f in frames)


def write_mot(path, lines) -> str:
    path.write_text("".join(lines))
    return str(path)


def mot_summary(gt, dt):
    """motmetrics' CLEAR metrics of ``dt`` against ``gt`` (both as mm.io.loadtxt read them), matched at IoU 0.5.
    The distances are computed here (stages.tracking.iou_matrix): motmetrics 1.4's own iou_matrix calls
    np.asfarray, which NumPy 2 removed."""
    acc = mm.MOTAccumulator(auto_id=True)
    for frame in sorted(set(gt.index.get_level_values("FrameId")) | set(dt.index.get_level_values("FrameId"))):
        g = gt.xs(frame, level="FrameId") if frame in gt.index.get_level_values("FrameId") else gt.iloc[:0]
        d = dt.xs(frame, level="FrameId") if frame in dt.index.get_level_values("FrameId") else dt.iloc[:0]

        def corners(df):
            xywh = df[["X", "Y", "Width", "Height"]].to_numpy(float)
            return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)

        iou = iou_matrix(corners(g), corners(d))
        acc.update(list(g.index), list(d.index), np.where(iou >= 0.5, 1 - iou, np.nan))
    return mm.metrics.create().compute(acc, metrics=["mota", "num_switches", "num_matches"], name="x")


# --- MOT --------------------------------------------------------------------------------------------------------

def test_mot_lines_format_and_rounding():
    frames = [{"index": 0, "time_ms": 0.0, "boxes": [
        {"class": "person", "class_id": 0, "score": 0.91, "box": [10.0, 20.5, 50.25, 80.123], "track_id": 7},
        {"class": "person", "class_id": 0, "score": 0.5, "box": [1, 2, 3, 4], "track_id": -1},
    ]}, {"index": 1, "time_ms": 40.0, "boxes": []}]
    assert list(mot_lines(frames)) == ["1,7,11,21.5,40.25,59.62,0.91,-1,-1,-1\n"]  # MOT pixels are 1-based
    assert list(mot_lines([])) == []


def test_mot_export_is_read_by_motmetrics(tmp_path):
    frames = scene()
    path = write_mot(tmp_path / "mot.txt", mot_lines(frames))
    df = mm.io.loadtxt(path, fmt="mot15-2D")
    tracked = n_boxes(frames) - 1                              # the untracked box is left out
    assert len(df) == tracked == 3 * (N_FRAMES - 1)
    assert sorted(df.index.get_level_values("Id").unique()) == [1, 2, 3]
    frame_ids = set(df.index.get_level_values("FrameId"))
    assert min(frame_ids) == 1 and max(frame_ids) == N_FRAMES  # 1-based: index 0 -> frame 1
    assert EMPTY + 1 not in frame_ids and len(frame_ids) == N_FRAMES - 1
    row = df.loc[(UNTRACKED + 1, 1)]                           # track 1 at index 5
    _, x, y, w, h = TRACKS[1]
    # the export writes MOT's 1-based pixels and motmetrics' reader takes the 1 off again
    assert (row["X"], row["Y"], row["Width"], row["Height"]) == pytest.approx((x + 10, y, w, h))
    assert row["Confidence"] == pytest.approx(0.89)


def test_mot_export_against_itself_and_a_swapped_copy(tmp_path):
    lines = list(mot_lines(scene()))
    gt = mm.io.loadtxt(write_mot(tmp_path / "gt.txt", lines), fmt="mot15-2D")

    same = mot_summary(gt, mm.io.loadtxt(write_mot(tmp_path / "dt.txt", lines), fmt="mot15-2D"))
    assert same["mota"]["x"] == pytest.approx(1.0)
    assert same["num_switches"]["x"] == 0
    assert same["num_matches"]["x"] == len(lines)

    swapped = []
    for line in lines:                                         # ids 1 and 2 swap from the middle on
        frame, track_id, rest = line.split(",", 2)
        if int(frame) > N_FRAMES // 2 and track_id in ("1", "2"):
            track_id = "2" if track_id == "1" else "1"
        swapped.append(f"{frame},{track_id},{rest}")
    assert swapped != lines
    bad = mot_summary(gt, mm.io.loadtxt(write_mot(tmp_path / "swapped.txt", swapped), fmt="mot15-2D"))
    assert bad["num_switches"]["x"] > 0
    assert bad["mota"]["x"] < 1.0


# --- COCO -------------------------------------------------------------------------------------------------------

def load_coco(tmp_path, frames, video=VIDEO, names=NAMES):
    text = "".join(coco_chunks(lambda: iter(frames), video, names))
    doc = json.loads(text)
    path = tmp_path / "coco.json"
    path.write_text(text)
    return doc, COCO(str(path))


def test_coco_export_is_read_by_pycocotools(tmp_path):
    frames = scene()
    doc, coco = load_coco(tmp_path, frames)
    assert doc["info"]["video"] == "street.mp4" and doc["info"]["fps"] == 25
    assert doc["videos"] == [{"id": 1, "name": "street.mp4", "fps": 25, "width": 640, "height": 360}]

    assert sorted(coco.getImgIds()) == list(range(1, N_FRAMES + 1))       # the empty frame included
    image = coco.loadImgs([EMPTY + 1])[0]
    assert image["file_name"] == f"frame_{EMPTY:06d}.jpg" and image["frame_index"] == EMPTY
    assert (image["width"], image["height"], image["time_ms"]) == (640, 360, EMPTY * 40)
    assert coco.getAnnIds(imgIds=[EMPTY + 1]) == []

    assert len(coco.getAnnIds()) == n_boxes(frames) == 3 * (N_FRAMES - 1) + 1
    assert [a["id"] for a in doc["annotations"]] == list(range(1, n_boxes(frames) + 1))
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[UNTRACKED + 1]))
    assert len(anns) == 4
    by_track = {a["track_id"]: a for a in anns}
    _, x, y, w, h = TRACKS[1]
    one = by_track[1]
    assert one["bbox"] == pytest.approx([x + 2 * UNTRACKED, y, w, h])
    assert one["area"] == pytest.approx(w * h)
    assert (one["image_id"], one["category_id"], one["instance_id"], one["iscrowd"]) == (UNTRACKED + 1, 1, 1, 0)
    assert one["score"] == pytest.approx(0.89)
    assert by_track[2]["category_id"] == 3                                 # class_id 2 (car) + 1
    assert (by_track[-1]["category_id"], by_track[-1]["instance_id"]) == (17, -1)
    assert by_track[-1]["bbox"] == [100, 300, 20, 30]

    cats = coco.loadCats(coco.getCatIds())
    assert len(cats) == 80 and {c["id"] for c in cats} == set(range(1, 81))
    assert coco.loadCats([1])[0]["name"] == "person" and coco.loadCats([80])[0]["name"] == "toothbrush"
    assert coco.getCatIds(catNms=["car"]) == [3]
    assert sorted(coco.getImgIds(catIds=[17])) == [UNTRACKED + 1]


@pytest.mark.parametrize("frames", [[], [{"index": 0, "time_ms": 0.0, "boxes": []}]], ids=["no-frames", "no-boxes"])
def test_coco_export_with_empty_lists_is_valid(tmp_path, frames):
    doc, coco = load_coco(tmp_path, frames, {"width": 2, "height": 2, "fps": 30, "frame_count": len(frames)})
    assert len(doc["images"]) == len(frames) and doc["annotations"] == []
    assert coco.getAnnIds() == [] and len(coco.getImgIds()) == len(frames)
    assert len(doc["categories"]) == 80


def test_coco_export_streams_frames_lazily():
    frames = scene()
    passes = []                                      # frames handed out so far, one counter per frames() call

    def source():
        passes.append(0)
        for frame in frames:
            passes[-1] += 1
            yield frame

    chunks = coco_chunks(source, VIDEO, NAMES)
    seen = []
    for chunk in chunks:
        seen.append((chunk, list(passes)))
        if len(passes) == 1 and 0 < passes[0] < N_FRAMES:
            break
    else:
        pytest.fail("no chunk was yielded while the images pass was part way through")
    assert passes == [1]                             # only the first frame was read for the first image chunk
    assert json.loads(seen[-1][0])["id"] == 1

    rest = []
    for chunk in chunks:
        rest.append((chunk, list(passes)))
    assert len(passes) == 2 and passes == [N_FRAMES, N_FRAMES]
    # the annotations pass also yields as it goes: a chunk came while the second pass was part way through
    assert any(len(p) == 2 and 0 < p[1] < N_FRAMES for _, p in rest)
    assert max(len(c) for c, _ in seen[1:] + rest[:-1]) < 2000                  # small chunks, about one a frame
    doc = json.loads("".join(c for c, _ in seen + rest))
    assert len(doc["images"]) == N_FRAMES and len(doc["annotations"]) == n_boxes(frames)
