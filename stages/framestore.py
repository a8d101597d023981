"""The inter-stage format: letterboxed frames passed from preprocessing to inference.

A work folder holds:

- ``frames/meta.json``: ``{"version": 1, "frame_count", "width", "height", "scale", "resized": [h, w],
  "input_size": [h, w], "chunks": [{"file", "start", "count"}]}``.
- ``frames/chunk_NNNNNN.npy``: a NumPy array ``uint8 [count, h, w, 3]`` (BGR) of the *resized* frames only.
  The letterbox padding (value 114) is not stored: it is rebuilt when the batch is assembled, so a 1280x720
  frame for a 416x416 model costs 416*234*3 = 292 KB instead of 519 KB, with no compression cost.

Chunks are written to a temporary name and renamed into place, and meta.json is written last, so a reader
never sees a half-written chunk and a folder without meta.json is incomplete.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
FRAMES_DIR = "frames"
META = "meta.json"


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


class FrameWriter:
    def __init__(self, work_dir: Path, chunk_size: int = 32) -> None:
        self.dir = Path(work_dir) / FRAMES_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.chunk_size = chunk_size
        self._pending: list[np.ndarray] = []
        self._chunks: list[dict] = []
        self.frame_count = 0
        self.bytes_written = 0

    def add(self, image: np.ndarray) -> None:
        self._pending.append(image)
        if len(self._pending) >= self.chunk_size:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        name = f"chunk_{len(self._chunks):06d}.npy"
        tmp = self.dir / f".{name}.{os.getpid()}.tmp"
        with open(tmp, "wb") as fh:
            np.save(fh, np.stack(self._pending))
        self.bytes_written += tmp.stat().st_size
        os.replace(tmp, self.dir / name)
        self._chunks.append({"file": name, "start": self.frame_count, "count": len(self._pending)})
        self.frame_count += len(self._pending)
        self._pending = []

    def close(self, **meta) -> dict:
        self._flush()
        doc = {"version": FORMAT_VERSION, "frame_count": self.frame_count, "chunks": self._chunks, **meta}
        write_atomic(self.dir / META, json.dumps(doc).encode())
        return doc


def read_meta(work_dir: Path) -> dict:
    path = Path(work_dir) / FRAMES_DIR / META
    with open(path, "rb") as fh:
        meta = json.load(fh)
    if meta.get("version") != FORMAT_VERSION:
        raise ValueError(f"unsupported frame store version {meta.get('version')}")
    return meta


def iter_chunks(work_dir: Path, meta: dict) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (first frame index, uint8 [n, h, w, 3]) for each chunk, in order."""
    base = Path(work_dir) / FRAMES_DIR
    for chunk in meta["chunks"]:
        yield chunk["start"], np.load(base / chunk["file"])
