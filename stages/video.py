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
# Video decoders that may run on uploads (FFmpeg decoder names): the codecs cameras, phones and encoders
# produce. Everything else FFmpeg can decode (TIFF, EXR, cinepak, dozens of old game and screen codecs: the
# rarely used decoders are where its memory-safety bugs are found) is refused before any frame is decoded.
ALLOWED_CODECS = frozenset(
    {
        "h264", "hevc", "av1", "libdav1d", "vp8", "vp9", "mpeg4", "mpeg2video", "mpeg1video", "mjpeg", "h263",
        "theora", "flv", "wmv1", "wmv2", "wmv3", "vc1", "msmpeg4", "msmpeg4v2", "prores", "dnxhd", "rawvideo",
    }
)
ACCEPTED_CODECS = ("H.264, HEVC, AV1, VP8/VP9, MPEG-1/2/4, Motion JPEG, H.263, Theora, FLV, WMV/VC-1, ProRes, DNxHD, "
                   "uncompressed")
# Demuxer options that keep a file from reaching anything but itself. format_whitelist makes FFmpeg refuse
# any other demuxer right after probing, before its read_header runs: an HLS/DASH playlist, a concat list or
# an image sequence is refused before it can open a single segment, file or URL. protocol_whitelist limits
# every open (nested ones inherit it) to local files. codec_whitelist keeps the decoders FFmpeg opens while
# probing the streams to the allow-list too (open_video then refuses the stream by its codec).
_SAFE_OPTIONS = {
    "protocol_whitelist": "file",
    "format_whitelist": ",".join(sorted(ALLOWED_FORMATS)),
    "codec_whitelist": ",".join(sorted(ALLOWED_CODECS)),
    "safe": "1",
}
ACCEPTED_DESCRIPTION = "MP4/MOV, Matroska/WebM, AVI, MPEG-TS, MPEG-PS, FLV, ASF/WMV, Ogg, raw H.264/HEVC/MPEG-4"


@dataclass(frozen=True)
class VideoLimits:
    """Bounds on what a video may ask of the decoder; 0 means no bound."""

    max_width: int = 0
    max_height: int = 0
    max_frames: int = 0
    max_duration_s: float = 0

    def check_size(self, width: int, height: int) -> None:
        if (self.max_width and width > self.max_width) or (self.max_height and height > self.max_height):
            raise UnprocessableInput(
                f"the video is {width}x{height}; the largest accepted is {self.max_width or 'any'}x"
                f"{self.max_height or 'any'}"
            )

    def check_frames(self, frames: int) -> None:
        if self.max_frames and frames > self.max_frames:
            raise UnprocessableInput(f"the video has more than {self.max_frames} frames")

    def check_duration(self, seconds: float) -> None:
        if self.max_duration_s and seconds > self.max_duration_s:
            raise UnprocessableInput(f"the video is longer than {self.max_duration_s:g} s")


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
    if "://" in path or "\x00" in path or not os.path.isfile(path):
        raise UnprocessableInput(f"not a local file: {os.path.basename(path)}")
    # An absolute path starts with "/", so FFmpeg can never read a "proto:" prefix into it.
    path = os.path.abspath(path)
    try:
        container = av.open(path, mode="r", options=dict(_SAFE_OPTIONS))
    except av.error.ArgumentError as exc:  # EINVAL: what FFmpeg answers for a demuxer not on the whitelist
        raise UnprocessableInput(f"not a video container that is accepted ({ACCEPTED_DESCRIPTION})") from exc
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise UnprocessableInput(f"not a readable video file ({exc.__class__.__name__})") from exc
    if container.format.name not in ALLOWED_FORMATS:
        name = container.format.name
        container.close()
        raise UnprocessableInput(f"container format '{name}' is not accepted")
    if not container.streams.video:
        container.close()
        raise UnprocessableInput("the file has no video stream")
    codec = container.streams.video[0].codec_context.name
    if codec not in ALLOWED_CODECS:
        container.close()
        raise UnprocessableInput(f"video codec '{codec}' is not accepted ({ACCEPTED_CODECS})")
    return container


def probe_video(path: str | os.PathLike, limits: VideoLimits | None = None) -> VideoInfo:
    """Read the container's facts and decode the first frame to prove the stream decodes.

    ``limits`` are checked against the declared size, frame count and duration before anything is decoded,
    so a file that declares a huge picture never gets a frame buffer allocated for it.
    """
    limits = limits or VideoLimits()
    with open_video(path) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
        duration = 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        limits.check_size(ctx.width, ctx.height)
        limits.check_frames(int(stream.frames or 0))
        limits.check_duration(duration)
        first = None
        try:
            for frame in container.decode(stream):
                first = frame
                break
        except av.error.FFmpegError as exc:
            raise UnprocessableInput(f"the video stream does not decode ({exc.__class__.__name__})") from exc
        if first is None:
            raise UnprocessableInput("the video has no frames")
        limits.check_size(first.width, first.height)
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


def stream_fps(stream: av.video.stream.VideoStream) -> float:
    return float(stream.average_rate or stream.guessed_rate or 25)


def video_fps(path: str | os.PathLike) -> float:
    """The frame rate the stages encode and time frames with (the container's average rate)."""
    with open_video(path) as container:
        return stream_fps(container.streams.video[0])


def iter_frames(container: av.container.InputContainer) -> Iterator[av.VideoFrame]:
    """Decode the first video stream with FFmpeg's frame/slice threads."""
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    index = 0
    try:
        for frame in container.decode(stream):
            yield frame
            index += 1
    except av.error.FFmpegError as exc:
        # Corrupt data decodes the same way on every attempt: an input error, not a crash worth retrying.
        raise UnprocessableInput(f"the video stream is corrupt after frame {index} ({exc})") from exc


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
