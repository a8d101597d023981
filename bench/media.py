"""Benchmark inputs: the shared street clip, and long clips made from it."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.frame import PictureType

from stages.preprocess import letterbox_geometry
from stages.video import to_bgr

from .service import ROOT, SHARED

STREET = SHARED / "media" / "street.mp4"
CACHE = ROOT / "var" / "bench-media"  # var/ is git-ignored


def frame_count(path: Path) -> int:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.frames or sum(1 for _ in container.decode(stream))


def model_inputs(video: Path, count: int, input_size: tuple[int, int] = (416, 416)) -> tuple[list[np.ndarray], float]:
    """The first ``count`` frames of ``video`` as the preprocessing stage hands them to the detector (the
    letterbox content, scaled and converted in one swscale pass), and their scale."""
    images, scale = [], 1.0
    with av.open(str(video)) as container:
        for frame in container.decode(video=0):
            if len(images) == count:
                break
            scale, width, height = letterbox_geometry(frame.width, frame.height, *input_size)
            images.append(to_bgr(frame, width, height))
    return images, scale


def looped_clip(frames: int, width: int = 640, height: int = 360, source: Path = STREET) -> Path:
    """``source`` scaled to width x height and played forwards and backwards until it has ``frames`` frames.

    Real street content keeps the detection load realistic (a synthetic pattern would find no objects);
    ping-pong looping avoids a jump at each seam. Cached: made once per (frames, size).
    """
    path = CACHE / f"street_{width}x{height}_{frames}.mp4"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    with av.open(str(source)) as src:
        stream = src.streams.video[0]
        rate = stream.average_rate or Fraction(25)
        base = [f.reformat(width=width, height=height, format="yuv420p") for f in src.decode(stream)]
    cycle = base + base[-2:0:-1]
    tmp = path.with_suffix(".tmp.mp4")
    with av.open(str(tmp), "w") as dst:
        out = dst.add_stream("libx264", rate=rate)
        out.width, out.height, out.pix_fmt = width, height, "yuv420p"
        out.options = {"preset": "veryfast", "crf": "23"}
        for index in range(frames):
            frame = cycle[index % len(cycle)]
            frame.pts = None
            for packet in out.encode(frame):
                dst.mux(packet)
        for packet in out.encode():
            dst.mux(packet)
    tmp.rename(path)
    return path


def street_long(minutes: float, keyframe_s: float = 1.5, source: Path = STREET, cache: Path = CACHE) -> Path:
    """``source`` at its own size and rate, ping-pong looped for ``minutes`` of video and re-encoded with a
    keyframe every ``keyframe_s`` seconds (3 B-frames, no scene-cut keyframes), as a camera records: a video
    that segments (street.mp4 itself has one keyframe, so it is one segment whatever its length). Cached
    under var/bench-media/, made once per (length, keyframe interval): a 20-minute 720p video takes a few
    minutes to encode on 2 cores."""
    with av.open(str(source)) as src:
        stream = src.streams.video[0]
        rate = Fraction(stream.average_rate or 30)
        width, height = stream.codec_context.width, stream.codec_context.height
        frames = max(1, round(minutes * 60 * rate))
        gop = max(1, round(keyframe_s * rate))
        path = cache / f"street_{width}x{height}_{frames}_g{gop}.mp4"
        if path.exists():
            return path
        base = [f.reformat(format="yuv420p") for f in src.decode(stream)]
    for frame in base:  # the source's one keyframe would otherwise be an extra keyframe each loop
        frame.pict_type = PictureType.NONE
    cache.mkdir(parents=True, exist_ok=True)
    cycle = base + base[-2:0:-1]
    tmp = path.with_suffix(".tmp.mp4")
    with av.open(str(tmp), "w") as dst:
        out = dst.add_stream("libx264", rate=rate)
        out.width, out.height, out.pix_fmt = width, height, "yuv420p"
        out.options = {"preset": "superfast", "crf": "23", "bf": "3", "g": str(gop), "keyint_min": str(gop),
                       "x264-params": "scenecut=0"}
        for index in range(frames):
            frame = cycle[index % len(cycle)]
            frame.pts, frame.time_base = index, Fraction(1) / rate
            dst.mux(out.encode(frame))
        dst.mux(out.encode())
    tmp.rename(path)
    return path
