"""Opening input videos safely and reading their facts.

Only local files are opened, and only through demuxers that cannot be made to open other files or the
network (no HLS/DASH playlists, no concat lists, no image sequences).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction

import av
import numpy as np

from .errors import UnprocessableInput

# Container formats PyAV may open. Names are FFmpeg demuxer names (av.open(...).format.name).
ALLOWED_FORMATS = frozenset(
    {
        "mov,mp4,m4a,3gp,3g2,mj2",
        "matroska,webm",
        "avi",
        "mpegts",
        "flv",
        "mpeg",
        "asf",
        "ogg",
        "h264",
        "hevc",
        "m4v",
    }
)
# Demuxer options that keep a file from reaching anything but itself.
_SAFE_OPTIONS = {"protocol_whitelist": "file", "safe": "1"}


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    frame_count: int  # as declared by the container; 0 when unknown
    duration_s: float
    codec: str
    pix_fmt: str
    format_name: str

    def as_dict(self) -> dict:
        return asdict(self)


def open_video(path: str | os.PathLike) -> av.container.InputContainer:
    """Open a local video file with the format allow-list applied."""
    path = os.fspath(path)
    if "://" in path or not os.path.isfile(path):
        raise UnprocessableInput(f"not a local file: {os.path.basename(path)}")
    try:
        container = av.open(path, mode="r", options=_SAFE_OPTIONS)
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise UnprocessableInput(f"not a readable video file ({exc.__class__.__name__})") from exc
    if container.format.name not in ALLOWED_FORMATS:
        name = container.format.name
        container.close()
        raise UnprocessableInput(f"container format '{name}' is not accepted")
    if not container.streams.video:
        container.close()
        raise UnprocessableInput("the file has no video stream")
    return container


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Read the container's facts and decode the first frame to prove the stream decodes."""
    with open_video(path) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
        duration = 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        first = None
        try:
            for frame in container.decode(stream):
                first = frame
                break
        except av.error.FFmpegError as exc:
            raise UnprocessableInput(f"the video stream does not decode ({exc.__class__.__name__})") from exc
        if first is None:
            raise UnprocessableInput("the video has no frames")
        return VideoInfo(
            width=first.width,
            height=first.height,
            fps=round(fps, 3),
            frame_count=int(stream.frames or 0),
            duration_s=round(duration, 3),
            codec=ctx.name or "",
            pix_fmt=ctx.pix_fmt or "",
            format_name=container.format.name,
        )


def iter_frames(container: av.container.InputContainer) -> Iterator[av.VideoFrame]:
    """Decode the first video stream with FFmpeg's frame/slice threads."""
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    yield from container.decode(stream)


def frame_time_ms(frame: av.VideoFrame, index: int, fps: float) -> float:
    if frame.pts is not None and frame.time_base is not None:
        return round(float(frame.pts * frame.time_base) * 1000, 3)
    return round(index * 1000 / fps, 3)


def to_bgr(frame: av.VideoFrame, width: int | None = None, height: int | None = None) -> np.ndarray:
    """Convert (and optionally scale, in the same swscale pass) a decoded frame to BGR uint8."""
    if width is None:
        return frame.to_ndarray(format="bgr24")
    return frame.reformat(width=width, height=height, format="bgr24", interpolation="BILINEAR").to_ndarray()


def as_fraction(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)
