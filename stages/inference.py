"""Stage 2 (GPU, CPU provider where no GPU): run the detector over the frame store.

Writes ``detections.f32`` to the work folder: float32 rows (frame, x1, y1, x2, y2, score, class_id) in
original pixels, appended chunk by chunk, renamed into place when complete.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .detector import Detector
from .framestore import iter_chunks, read_meta

DETECTIONS_FILE = "detections.f32"
ROW = 7


@dataclass
class InferenceResult:
    frame_count: int
    detections: int
    seconds: float


def run_inference(
    work_dir: str | Path,
    detector: Detector,
    *,
    progress: Callable[[int, int], None] | None = None,
    out_dir: str | Path | None = None,
) -> InferenceResult:
    """Read the frame store in ``work_dir``; write DETECTIONS_FILE to ``out_dir`` (default: ``work_dir``).
    ``progress(done, total)`` is called after each detector batch."""
    started = time.perf_counter()
    work_dir = Path(work_dir)
    out_dir = Path(out_dir) if out_dir is not None else work_dir
    meta = read_meta(work_dir)
    total = meta["frame_count"]
    final = out_dir / DETECTIONS_FILE
    tmp = out_dir / f".{DETECTIONS_FILE}.{os.getpid()}.tmp"
    count = 0
    step = detector.batch_size
    with open(tmp, "wb") as out:
        for chunk_start, chunk in iter_chunks(work_dir, meta):
            # One detector batch at a time, a progress report after each (a chunk is several batches).
            for start in range(chunk_start, chunk_start + len(chunk), step):
                frames = chunk[start - chunk_start : start - chunk_start + step]
                for offset, boxes in enumerate(detector.detect(list(frames), meta["scale"])):
                    if len(boxes):
                        rows = np.empty((len(boxes), ROW), np.float32)
                        rows[:, 0] = start + offset
                        rows[:, 1:] = boxes
                        # Boxes may reach past the frame's edge; keep them in original pixels.
                        rows[:, [1, 3]] = np.clip(rows[:, [1, 3]], 0, meta["width"])
                        rows[:, [2, 4]] = np.clip(rows[:, [2, 4]], 0, meta["height"])
                        out.write(rows.tobytes())
                        count += len(boxes)
                if progress:
                    progress(start + len(frames), total)
    os.replace(tmp, final)
    return InferenceResult(frame_count=total, detections=count, seconds=time.perf_counter() - started)


def load_detections(work_dir: str | Path) -> np.ndarray:
    return np.fromfile(Path(work_dir) / DETECTIONS_FILE, dtype=np.float32).reshape(-1, ROW)
