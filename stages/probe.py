"""Probing an untrusted upload in a child process with limits, so that FFmpeg's demuxers and decoders never run
on a stranger's bytes inside the web process.

The web process is the one that faces the internet and holds the session-signing key and the database
connection. The child gets none of that: an environment with nothing but PATH and the locale, no Django, a
cap on its address space, CPU time and open files, and a wall-clock timeout; it reads one file and prints one
JSON line (the video's facts, or the reason it is refused). A crash, a hang or a memory blow-up in FFmpeg then
costs one child process and answers 400, and cannot read or corrupt the web's memory.

What the child cannot be kept from (without a second container or a seccomp profile of its own): reading
files the web's user may read. The Kubernetes web Pod therefore mounts no worker-only secrets, and the
probe's limits keep a hostile file from taking the Pod's memory or CPU.

    python -m stages.probe PATH LIMITS_JSON      (what :func:`probe_isolated` runs)
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from .errors import UnprocessableInput
from .video import VideoInfo, VideoLimits, probe_video

MEMORY_BYTES = 1536 * 1024 * 1024  # address space: PyAV + FFmpeg's libraries map ~400 MB before any frame
CPU_SECONDS = 20
WALL_SECONDS = 30
ROOT = Path(__file__).resolve().parent.parent


def _limit_self() -> None:
    """The child limits itself first thing (not a preexec_fn: the web process has threads)."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def probe_isolated(path: str | os.PathLike, limits: VideoLimits) -> VideoInfo:
    """:func:`stages.video.probe_video` in a limited child process; raises UnprocessableInput as it does, and
    where the child dies, runs out of time or memory."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    try:
        done = subprocess.run(  # noqa: S603 - our own interpreter and module, the path as one argument
            [sys.executable, "-E", "-s", "-m", "stages.probe", os.fspath(path), json.dumps(asdict(limits))],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=WALL_SECONDS,
        )
    except subprocess.TimeoutExpired as exc:
        raise UnprocessableInput(f"the video could not be read within {WALL_SECONDS} s") from exc
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise UnprocessableInput("the video could not be read (the reader stopped: "
                                 f"{_how(done.returncode)})")
    answer = json.loads(lines[-1])
    if "error" in answer:
        raise UnprocessableInput(answer["error"])
    return VideoInfo(**answer["info"])


def _how(returncode: int) -> str:
    if returncode < 0:
        return {9: "out of CPU time or killed", 11: "crashed", 6: "aborted"}.get(-returncode, f"signal {-returncode}")
    return "out of memory" if returncode == 3 else f"exit status {returncode}"


def main(argv: list[str]) -> int:
    _limit_self()
    path, limits = argv[0], VideoLimits(**json.loads(argv[1]))
    try:
        info = probe_video(path, limits)
    except UnprocessableInput as exc:
        print(json.dumps({"error": str(exc)}))
        return 0
    except MemoryError:
        return 3
    print(json.dumps({"info": asdict(info)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
