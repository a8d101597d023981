"""Generators of good and bad media files for the upload and pipeline tests (all small, made on the fly)."""
from __future__ import annotations

import json
import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from jobs.models import Job, Status

from .conftest import make_video


def _image(width: int, height: int, i: int) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    image[:, :, 1] = np.linspace(0, 255, height, dtype=np.uint8)[:, None]
    x = (i * 5) % max(1, width - 8)
    image[4:12, x : x + 8] = 255
    return image


def good_video(path: Path, frames: int = 4, width: int = 64, height: int = 48, **kwargs) -> Path:
    return make_video(path, width=width, height=height, frames=frames, **kwargs)


def text_file(path: Path) -> Path:
    path.write_text("this is not a video, only text that pretends to be one\n" * 20)
    return path


def truncated(source: Path, path: Path, keep: float = 0.5) -> Path:
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def faststart_truncated(path: Path, frames: int = 30, keep: float = 0.9) -> Path:
    """An MP4 with its index first (as streamed files are) whose media data is cut short."""
    full = _faststart(path.with_suffix(".full.mp4"), frames)
    data = full.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    full.unlink()
    return path


def _faststart(path: Path, frames: int) -> Path:
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(_image(64, 48, i), format="rgb24")))
        container.mux(stream.encode())
    return path


def audio_only(path: Path) -> Path:
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=8000)
        stream.layout = "mono"
        samples = (np.sin(np.arange(8000) / 8) * 3000).astype(np.float32)
        for start in range(0, 8000, 1024):
            chunk = samples[start : start + 1024]
            if len(chunk) < 1024:
                break
            frame = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
            frame.sample_rate = 8000
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def still_image(path: Path, codec: str, pix_fmt: str) -> Path:
    """A single-image file (png, mjpeg -> JPEG, gif) written by FFmpeg's image muxers."""
    fmt = {"png": "image2", "mjpeg": "image2", "gif": "gif"}[codec]
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=1)
        stream.width, stream.height, stream.pix_fmt = 64, 48, pix_fmt
        frames = 3 if codec == "gif" else 1  # a GIF animation is the video-like case
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(_image(64, 48, i), format="rgb24").reformat(format=pix_fmt)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def hls_playlist(path: Path, segment: str) -> Path:
    path.write_text(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n"
        f"#EXTINF:1.0,\n{segment}\n#EXT-X-ENDLIST\n"
    )
    return path


def concat_list(path: Path, target: Path) -> Path:
    path.write_text(f"ffconcat version 1.0\nfile '{target}'\n")
    return path


def zero_frames(path: Path) -> Path:
    """A container with a declared H.264 video track and no frames in it."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()  # header and an empty track, no packets
    return path


def variable_frame_rate(path: Path, frames: int = 6) -> Path:
    """Frames at irregular times (pts gaps of 1, 3, 1, 7, ... ticks of 1/100 s)."""
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.time_base = Fraction(1, 100)
        pts = 0
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(_image(64, 48, i), format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 100)
            pts += (1, 3, 1, 7)[i % 4] * 4
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def rotated(path: Path, degrees: int = 90, frames: int = 4) -> Path:
    """A phone-style video: stored landscape with a display matrix that says "turn it 90 degrees"."""
    good_video(path, frames=frames)
    data = bytearray(path.read_bytes())
    # tkhd's 3x3 matrix (16.16 fixed point a, b, u, c, d, v, x, y, w) for a 90 degree turn: a=0 b=1 c=-1 d=0.
    at = data.find(b"tkhd")
    version = data[at + 4]
    matrix_at = at + 4 + 4 + (32 if version == 1 else 20) + 16
    identity = struct.pack(">9i", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    assert data[matrix_at : matrix_at + 36] == identity, "tkhd layout not as expected"
    turn = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
    data[matrix_at : matrix_at + 36] = turn
    path.write_bytes(bytes(data))
    return path


def raw_h264(path: Path, frames: int, width: int = 64, height: int = 48) -> Path:
    """An Annex B elementary stream: no container, so no declared frame count or duration."""
    return make_video(path, width=width, height=height, frames=frames, fmt="h264")


def size_changes(path: Path) -> Path:
    """Two raw H.264 streams of different sizes back to back: the picture size changes mid-stream."""
    first = raw_h264(path.with_suffix(".a.h264"), 3, 64, 48)
    second = raw_h264(path.with_suffix(".b.h264"), 3, 96, 64)
    path.write_bytes(first.read_bytes() + second.read_bytes())
    first.unlink()
    second.unlink()
    return path


def huge_declared_size(path: Path, width: int = 16000, height: int = 16000) -> Path:
    """A MOV of uncompressed video whose sample description claims a huge picture (the data is tiny)."""
    with av.open(str(path), "w", format="mov") as container:
        stream = container.add_stream("rawvideo", rate=25)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "rgb24"
        for i in range(2):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(_image(16, 16, i), format="rgb24")))
        container.mux(stream.encode())
    data = bytearray(path.read_bytes())
    entry = data.find(b"raw ")
    assert entry > 0, "no raw sample entry"
    # Visual sample entry: fourcc, 6 reserved, data ref index (2), version, revision, vendor, temporal and
    # spatial quality (16), then width and height (16 bits each).
    size_at = entry + 4 + 6 + 2 + 16
    assert struct.unpack(">HH", data[size_at : size_at + 4]) == (16, 16), "sample entry layout not as expected"
    data[size_at : size_at + 4] = struct.pack(">HH", width, height)
    tkhd = data.find(b"tkhd")
    version = data[tkhd + 4]
    dims_at = tkhd + 4 + 4 + (32 if version == 1 else 20) + 16 + 36
    data[dims_at : dims_at + 8] = struct.pack(">II", width << 16, height << 16)
    path.write_bytes(bytes(data))
    return path


def corrupt_middle(source: Path, path: Path) -> Path:
    """A good MP4 with garbage written over the middle of its media data."""
    data = bytearray(source.read_bytes())
    start = data.find(b"mdat") + 200
    rng = np.random.default_rng(7)
    data[start : start + 400] = rng.integers(0, 256, 400, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def random_bytes(path: Path, size: int) -> Path:
    path.write_bytes(np.random.default_rng(1).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


# --- job rows and result files, for API and ownership tests that need no pipeline run ---

PERSON = {"class": "person", "class_id": 0, "score": 0.9, "box": [1.0, 2.0, 30.0, 40.0]}


def make_job(user, status=Status.ENQUEUE, **fields) -> Job:
    return Job.objects.create(user=user, path=f"uploads/{user.pk}/x.mp4", type="mp4/mp4", status=status, **fields)


def finished_job(user, frames: int = 5) -> Job:
    """A job at Exit with result files as postprocess writes them."""
    job = make_job(user, Status.EXIT, frame_count=frames)
    job.result_dir.mkdir(parents=True)
    doc = {"video": {"frame_count": frames}, "model": {"name": "m"}, "parameters": {},
           "frames": [{"index": i, "time_ms": i * 40.0, "boxes": [PERSON]} for i in range(frames)]}
    (job.result_dir / "detections.json").write_text(json.dumps(doc))
    (job.result_dir / "annotated.mp4").write_bytes(bytes(range(256)) * 4)  # 1024 known bytes
    return job


def street_with_keyframes(path: Path, every: int = 15, width: int = 640, height: int = 360, loops: int = 1) -> Path:
    """The shared street video (real people, real motion) re-encoded with a keyframe every ``every`` frames
    and 3 B-frames, ``loops`` times over: a video that segments (the original has one keyframe)."""
    from stages.video import iter_frames, open_video

    from .conftest import STREET

    with av.open(str(path), "w") as dst:
        stream = dst.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "superfast", "bf": "3", "g": str(every), "x264-params": "scenecut=0"}
        pts = 0
        for _ in range(loops):
            with open_video(STREET) as src:
                for frame in iter_frames(src):
                    out = frame.reformat(width=width, height=height, format="yuv420p")
                    out.pts, out.time_base, pts = pts, Fraction(1, 30), pts + 1
                    dst.mux(stream.encode(out))
        dst.mux(stream.encode())
    return path


PERSON_BOX = (91, 265, 170, 511)  # a person in street.mp4's first frame (x1, y1, x2, y2), found by the shared model


def walking_people(path: Path, street: Path, frames: int = 50, fps: int = 10, size=(640, 360),
                   keyframe_every: int = 10) -> tuple[Path, list]:
    """Two real people (the same crop of street.mp4, the second mirrored) pasted on a plain background, walking
    across the frame in opposite directions on straight paths at different heights. Returns the video and the
    ground truth: [(frame, person 1 or 2, (x1, y1, x2, y2))]. A keyframe every ``keyframe_every`` frames, so
    segments can be cut there."""
    with av.open(str(street)) as container:
        first = next(container.decode(video=0)).to_ndarray(format="rgb24")
    x1, y1, x2, y2 = PERSON_BOX
    crop = first[y1:y2, x1:x2]
    crop = crop[::2, ::2]  # half size: 40 x 123
    h, w = crop.shape[:2]
    width, height = size
    truth = []
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"g": str(keyframe_every), "keyint_min": str(keyframe_every), "sc_threshold": "0"}
        for i in range(frames):
            image = np.full((height, width, 3), 128, np.uint8)
            image[:, :, 2] = np.linspace(90, 170, width, dtype=np.uint8)[None, :]
            t = i / (frames - 1)
            for person, (x, y, picture) in enumerate(
                    ((int(20 + t * (width - w - 40)), 40, crop),
                     (int(width - w - 20 - t * (width - w - 40)), 200, crop[:, ::-1])), start=1):
                image[y : y + h, x : x + w] = picture
                truth.append((i, person, (x, y, x + w, y + h)))
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path, truth
