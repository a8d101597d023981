"""Stage 1 (CPU): decode, letterbox-resize to the model input, optional enhancement."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import UnprocessableInput
from .framestore import FrameWriter
from .segments import SegmentPlan, frames_of
from .video import VideoLimits, to_bgr, video_fps

Progress = Callable[[int, int], None]


@dataclass
class PreprocessResult:
    frame_count: int
    width: int
    height: int
    fps: float
    scale: float
    bytes_written: int
    seconds: float


def letterbox_geometry(width: int, height: int, input_h: int, input_w: int) -> tuple[float, int, int]:
    """Scale that fits the frame into the model input keeping its aspect, and the resized size.

    Never above 1: a frame smaller than the input is stored as it is and padded at inference, so the frames
    on shared storage are never larger than the source (a 16x16 video is not stored at 416x416).
    """
    scale = min(1.0, input_h / height, input_w / width)
    return scale, max(1, min(input_w, round(width * scale))), max(1, min(input_h, round(height * scale)))


def enhance_clahe(image: np.ndarray, clahe: cv2.CLAHE) -> np.ndarray:
    """Contrast-limited histogram equalisation on the lightness channel only (colours unchanged)."""
    lab = cv2.cvtColor(image, cv2.COLOR_BGR2LAB)
    lab[:, :, 0] = clahe.apply(lab[:, :, 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)


def preprocess_video(
    source: str | Path,
    work_dir: str | Path,
    input_size: tuple[int, int],
    *,
    enhance: bool = False,
    expected_frames: int = 0,
    max_frames: int = 0,
    limits: VideoLimits | None = None,
    progress: Progress | None = None,
    chunk_size: int = 32,
    segment: SegmentPlan | None = None,
) -> PreprocessResult:
    """Decode ``source`` (only ``segment``'s frames where one is given) and write its letterboxed frames to
    ``work_dir`` (see framestore); the store's frame 0 is the segment's first frame.

    ``limits`` (and ``max_frames``) are enforced on what is actually decoded, not on what the container
    declares: a stream without a declared length, or one that lies, stops at the first frame past a limit.
    ``progress(done, total)`` is called after each frame; the caller decides how often to act on it.
    """
    limits = limits or VideoLimits()
    max_frames = min(filter(None, (max_frames, limits.max_frames)), default=0)
    started = time.perf_counter()
    input_h, input_w = input_size
    writer = FrameWriter(Path(work_dir), chunk_size=chunk_size)
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)) if enhance else None
    geometry = None
    fps = video_fps(source)
    total = (segment.frame_count if segment is not None else 0) or expected_frames
    first_time = None
    for count, (index, frame) in enumerate(frames_of(source, segment), start=1):
        if max_frames and index >= max_frames:
            raise UnprocessableInput(f"the video has more than {max_frames} frames")
        if frame.time is not None:
            first_time = frame.time if first_time is None else first_time
            limits.check_duration(frame.time - first_time)
        if geometry is None:
            limits.check_size(frame.width, frame.height)
            geometry = (frame.width, frame.height, *letterbox_geometry(frame.width, frame.height, input_h, input_w))
        elif (frame.width, frame.height) != geometry[:2]:
            raise UnprocessableInput("the frame size changes within the video")
        _, _, scale, new_w, new_h = geometry
        image = to_bgr(frame, new_w, new_h)
        if clahe is not None:
            image = enhance_clahe(image, clahe)
        writer.add(image)
        if progress:
            progress(count, max(total, count))
    if geometry is None:
        raise UnprocessableInput("the video has no frames")
    width, height, scale, new_w, new_h = geometry
    writer.close(
        width=width,
        height=height,
        fps=fps,
        scale=scale,
        resized=[new_h, new_w],
        input_size=[input_h, input_w],
        enhance=enhance,
        first_frame=segment.first_frame if segment is not None else 0,
    )
    if progress:
        progress(writer.frame_count, writer.frame_count)
    return PreprocessResult(
        frame_count=writer.frame_count,
        width=width,
        height=height,
        fps=round(fps, 3),
        scale=scale,
        bytes_written=writer.bytes_written,
        seconds=time.perf_counter() - started,
    )
