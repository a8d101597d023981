"""Small generated videos for tests, benchmarks and the fault test (no media files in git)."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def make_video(path: Path, *, width=320, height=240, frames=10, fps=25, codec="libx264", pix_fmt="yuv420p",
               fmt=None, options=None) -> Path:
    """A moving bright square on a horizontal gradient."""
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if options:
            stream.options = options
        for i in range(frames):
            image = np.zeros((height, width, 3), np.uint8)
            image[:, :, 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
            x = (i * 7) % max(1, width - 20)
            image[10:30, x : x + 20] = 255
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
