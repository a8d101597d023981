"""Tracking and detection exports of a detections.json, streamed frame by frame.

MOT Challenge (``mot_lines``): plain text, one line per tracked box (``track_id >= 0``)::

    frame,id,bb_left,bb_top,bb_width,bb_height,conf,-1,-1,-1

with ``frame`` 1-based (index + 1), the box in original-video pixels in MOT's 1-based convention (the
top-left pixel is (1, 1), so ``bb_left`` = x1 + 1; motmetrics' reader subtracts it again) and ``conf`` the
detection score.

COCO (``coco_chunks``): one JSON document with ``info``, ``videos``, ``images`` (one per frame: id = index + 1,
``frame_{index:06d}.jpg``, ``frame_index``, ``time_ms``), ``annotations`` (bbox ``[x, y, w, h]``, area,
category_id = class_id + 1, score, ``track_id`` and ``instance_id`` = the track id, -1 for untracked boxes) and
``categories`` (id = class_id + 1). It is yielded in small chunks (about one per frame) and reads ``frames()``
twice, once for images and once for annotations, so neither the frames nor the document is held in memory.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator

Frame = dict
FramesSource = Callable[[], Iterable[Frame]]


def _num(value: float) -> str:
    """At most 2 decimals, no trailing zeros: 12.0 -> "12", 3.456 -> "3.46", -0.001 -> "0"."""
    text = f"{float(value):.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _round(value: float, digits: int = 2) -> float | int:
    """A JSON-safe number: rounded, whole numbers as int, NaN/inf as 0 (JSON has neither)."""
    value = float(value)
    if not math.isfinite(value):
        return 0
    value = round(value, digits)
    return int(value) if value.is_integer() else value


def _xywh(box: list[float]) -> list[float | int]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [_round(x1), _round(y1), _round(x2 - x1), _round(y2 - y1)]


def mot_lines(frames: Iterable[Frame]) -> Iterator[str]:
    """MOT Challenge lines (each ending in a newline) for the tracked boxes of ``frames``, in order."""
    for frame in frames:
        number = int(frame["index"]) + 1
        for det in frame.get("boxes") or ():
            track_id = int(det.get("track_id", -1))
            if track_id < 0:
                continue
            x1, y1, x2, y2 = (float(v) for v in det["box"])
            fields = [_num(x1 + 1), _num(y1 + 1), _num(x2 - x1), _num(y2 - y1), _num(det.get("score", 1.0))]
            yield f"{number},{track_id},{','.join(fields)},-1,-1,-1\n"


def _image(frame: Frame, width: int, height: int) -> dict:
    index = int(frame["index"])
    return {"id": index + 1, "file_name": f"frame_{index:06d}.jpg", "width": width, "height": height,
            "frame_index": index, "time_ms": _round(frame.get("time_ms", 0.0), 3), "video_id": 1}


def _annotation(ann_id: int, image_id: int, det: dict) -> dict:
    bbox = _xywh(det["box"])
    track_id = max(int(det.get("track_id", -1)), -1)
    return {"id": ann_id, "image_id": image_id, "category_id": int(det["class_id"]) + 1, "bbox": bbox,
            "area": _round(max(bbox[2], 0) * max(bbox[3], 0)), "iscrowd": 0,
            "score": _round(det.get("score", 1.0), 4), "track_id": track_id, "instance_id": track_id}


def coco_chunks(frames: FramesSource, video: dict, class_names: list[str]) -> Iterator[str]:
    """The text of one COCO JSON document, in chunks; ``frames()`` must return a fresh iterator each call."""
    name = str(video.get("name") or "video")
    fps = _round(video.get("fps") or 0.0, 3)
    width, height = int(video["width"]), int(video["height"])
    info = {"description": f"G-Edge detections of {name}", "video": name, "fps": fps,
            "width": width, "height": height, "frame_count": int(video.get("frame_count") or 0)}
    videos = [{"id": 1, "name": name, "fps": fps, "width": width, "height": height}]
    yield f'{{"info": {json.dumps(info)}, "videos": {json.dumps(videos)}, "images": ['

    sep = ""
    for frame in frames():
        yield sep + json.dumps(_image(frame, width, height))
        sep = ", "
    yield '], "annotations": ['

    sep, ann_id = "", 0
    for frame in frames():
        image_id = int(frame["index"]) + 1
        parts = []
        for det in frame.get("boxes") or ():
            ann_id += 1
            parts.append(json.dumps(_annotation(ann_id, image_id, det)))
        if parts:
            yield sep + ", ".join(parts)
            sep = ", "

    categories = [{"id": i + 1, "name": str(n), "supercategory": "object"} for i, n in enumerate(class_names)]
    yield f'], "categories": {json.dumps(categories)}}}\n'
