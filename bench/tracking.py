"""The tracker's cost (``python -m bench --only tracking``): ms per frame of stages.tracking over the shared
video's real detections, against the postprocessing stage's ms per frame on the same video, and what it
makes of the boxes (tracks per class against boxes per class)."""
from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from stages.detector import Detector, DetectorConfig
from stages.pipeline import process_video_file
from stages.postprocess import iter_detection_frames, read_detection_facts
from stages.tracking import TrackerSettings, track_segment

Out = Callable[[str], None]


def detection_rows(path: Path) -> tuple[np.ndarray, int]:
    """detections.json's boxes as the tracker's input rows (frame, x1, y1, x2, y2, score, class_id)."""
    rows = [[f["index"], *b["box"], b["score"], b["class_id"]] for f in iter_detection_frames(path) for b in f["boxes"]]
    frames = read_detection_facts(path)["summary"]["frames"]
    return np.array(rows, float).reshape(-1, 7), frames


def run_tracking(video: Path, model: str, *, quick: bool, out: Out) -> dict:
    out(f"== Tracking: ByteTrack (stages/tracking.py) over {video.name}'s detections")
    with tempfile.TemporaryDirectory(prefix="gedge-tracking-") as tmp:
        summary = process_video_file(video, Path(tmp), Detector(DetectorConfig(model_path=model)))
        rows, frames = detection_rows(Path(tmp) / "detections.json")
    rounds = 3 if quick else 20
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        track_segment(rows, frames, TrackerSettings(), 25.0)
        best = min(best, time.perf_counter() - started)
    tracker_ms = best * 1000 / frames
    post_ms = summary["ms_per_frame"]["postprocess"]
    result = {"frames": frames, "boxes_per_frame": round(len(rows) / frames, 1),
              "tracker_ms_per_frame": round(tracker_ms, 3), "postprocess_ms_per_frame": post_ms,
              "share_of_postprocess": round(tracker_ms / post_ms, 3), "per_class": summary["per_class"],
              "objects": summary["objects"]}
    out(f"   {frames} frames, {result['boxes_per_frame']} boxes a frame: tracker {tracker_ms:.3f} ms/frame "
        f"(best of {rounds}), postprocessing {post_ms:.2f} ms/frame (tracking included): "
        f"{100 * result['share_of_postprocess']:.1f}% of it")
    out(f"   boxes per class {summary['per_class']}")
    out(f"   objects (tracks) per class {summary['objects']}")
    return result
