"""Storing an uploaded video: under a generated name, its type decided by probing the content."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile

from stages.errors import UnprocessableInput
from stages.probe import probe_isolated
from stages.video import VideoInfo, VideoLimits

# Probed container -> the extension we store it under (the client's name is only data).
EXTENSIONS = {
    "mov,mp4,m4a,3gp,3g2,mj2": "mp4",
    "matroska,webm": "mkv",
    "avi": "avi",
    "mpegts": "ts",
    "flv": "flv",
    "mpeg": "mpg",
    "asf": "wmv",
    "ogg": "ogv",
    "h264": "h264",
    "hevc": "hevc",
    "m4v": "m4v",
}


class UploadTooLarge(Exception):
    pass


def video_limits() -> VideoLimits:
    """The decoding limits from settings: checked on the probe at upload and again while decoding."""
    return VideoLimits(max_width=settings.GEDGE_MAX_WIDTH, max_height=settings.GEDGE_MAX_HEIGHT,
                       max_frames=settings.GEDGE_MAX_FRAMES, max_duration_s=settings.GEDGE_MAX_DURATION_S)


def clean_original_name(name: str) -> str:
    """The client's file name, kept as data only: no path parts, no control characters, bounded."""
    name = name.replace("\x00", "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable())
    return name[:200] or "upload"


def store_upload(user_id: int, uploaded: UploadedFile) -> tuple[str, VideoInfo, int]:
    """Save under a generated name in the user's folder and probe it.

    Returns (path relative to MEDIA_ROOT, video facts, size). Raises UnprocessableInput (file removed).
    """
    if uploaded.size == 0:
        raise UnprocessableInput("the file is empty")
    if uploaded.size > settings.GEDGE_MAX_UPLOAD_BYTES:
        raise UploadTooLarge()
    folder = Path(settings.MEDIA_ROOT) / "uploads" / str(user_id)
    folder.mkdir(parents=True, exist_ok=True)
    stem = uuid.uuid4().hex
    tmp = folder / f".{stem}.part"
    with open(tmp, "wb") as fh:
        for chunk in uploaded.chunks():
            fh.write(chunk)
    try:
        info = probe_isolated(tmp, video_limits())  # FFmpeg on a stranger's bytes: not in this process
    except BaseException:  # refused or interrupted: leave nothing behind
        tmp.unlink(missing_ok=True)
        raise
    final = folder / f"{stem}.{EXTENSIONS.get(info.format_name, 'bin')}"
    os.replace(tmp, final)
    return str(final.relative_to(settings.MEDIA_ROOT)), info, uploaded.size


def adopt_upload(user_id: int, part: Path) -> tuple[str, VideoInfo]:
    """A completely received resumable upload: probe it and move it under its final name (removed if refused).

    Returns (path relative to MEDIA_ROOT, video facts)."""
    try:
        info = probe_isolated(part, video_limits())
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    extension = EXTENSIONS.get(info.format_name, "bin")
    final = Path(settings.MEDIA_ROOT) / "uploads" / str(user_id) / f"{uuid.uuid4().hex}.{extension}"
    os.replace(part, final)
    return str(final.relative_to(settings.MEDIA_ROOT)), info


def discard_upload(path: str) -> None:
    """Remove a stored upload (path relative to MEDIA_ROOT) whose job was not created."""
    (Path(settings.MEDIA_ROOT) / path).unlink(missing_ok=True)


def job_type(original_name: str, info: VideoInfo) -> str:
    ext = Path(original_name).suffix.lower().lstrip(".")[:10] or "-"
    return f"{ext}/{EXTENSIONS.get(info.format_name, info.format_name)}"
