"""A corpus of bad and odd inputs, made by the tests: each is refused at upload with a clear 4xx, or its job
ends (Exit, or Failed with a readable reason) in a real Dramatiq worker, while a good job keeps flowing.

Run with -s to see the table of kinds and outcomes.
"""
from __future__ import annotations

import io
import re
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import pytest
from rest_framework.throttling import ScopedRateThrottle

from jobs.models import TERMINAL, Job, Status

from . import helpers_media as media
from .conftest import wait_for_status, worker_in_process

pytestmark = pytest.mark.django_db(transaction=True)

LIMITS = {"GEDGE_MAX_WIDTH": 640, "GEDGE_MAX_HEIGHT": 480, "GEDGE_MAX_FRAMES": 40, "GEDGE_MAX_DURATION_S": 30,
          "GEDGE_MAX_UPLOAD_BYTES": 3 * 1024 * 1024}


@dataclass
class Kind:
    name: str
    make: Callable[[Path], Path]
    expect: str  # "400"/"413": refused at upload with that status; "Exit" or "Failed": the job's end
    reason: str = ""  # a word the error message (or the job's error) must contain
    upload_name: str | None = None


def corpus(http_port: int) -> list[Kind]:
    good = media.good_video
    return [
        Kind("good video (alongside)", lambda d: good(d / "good.mp4"), "Exit"),
        Kind("empty file", lambda d: _write(d / "empty.mp4", b""), "400", "empty"),
        Kind("text named .mp4", lambda d: media.text_file(d / "notes.mp4"), "400", "not a readable video"),
        Kind("random bytes", lambda d: media.random_bytes(d / "noise.mp4", 50_000), "400", "not a readable video"),
        Kind("truncated MP4 (index at end)", lambda d: media.truncated(good(d / "t.mp4", frames=12), d / "tr.mp4"),
             "400", "not a readable video"),
        Kind("truncated MP4 (index first, data cut)", lambda d: media.faststart_truncated(d / "ft.mp4"), "Exit",
             "frames"),
        Kind("MP4 with only audio", lambda d: media.audio_only(d / "audio.mp4"), "400", "no video stream"),
        Kind("animated GIF", lambda d: media.still_image(d / "a.gif", "gif", "rgb8"), "400", "container"),
        Kind("still image PNG", lambda d: media.still_image(d / "a.png", "png", "rgb24"), "400", "container"),
        Kind("still image JPEG", lambda d: media.still_image(d / "a.jpg", "mjpeg", "yuvj420p"), "400",
             "container"),
        Kind("HLS playlist -> local file", lambda d: media.hls_playlist(d / "p.m3u8", str(good(d / "seg.mp4"))),
             "400", "not a"),
        Kind("HLS playlist -> http URL", lambda d: media.hls_playlist(
            d / "u.m3u8", f"http://127.0.0.1:{http_port}/seg.ts"), "400", "not a", "video.mp4"),
        Kind("ffconcat list -> local file", lambda d: media.concat_list(d / "c.txt", good(d / "c.mp4")), "400",
             "container", "list.mp4"),
        Kind("huge declared size 16000x16000", lambda d: media.huge_declared_size(d / "huge.mov"), "400",
             "16000x16000"),
        Kind("wider than GEDGE_MAX_WIDTH", lambda d: good(d / "wide.mp4", width=672, height=32, frames=2), "400",
             "672x32"),
        Kind("more frames than GEDGE_MAX_FRAMES", lambda d: good(d / "long.mp4", width=32, height=32, frames=45),
             "400", "more than 40 frames"),
        Kind("longer than GEDGE_MAX_DURATION_S", lambda d: good(d / "slow.mp4", frames=3, fps=Fraction(1, 20)),
             "400", "longer than 30 s"),
        Kind("raw H.264, frame count unknown until decoded", lambda d: media.raw_h264(d / "r.h264", 45, 32, 32),
             "Failed", "more than 40 frames"),
        Kind("zero-frame video", lambda d: media.zero_frames(d / "zero.mp4"), "400", "no video stream"),
        Kind("picture size changes mid-stream", lambda d: media.size_changes(d / "sc.h264"), "Failed",
             "frame size changes"),
        Kind("file over GEDGE_MAX_UPLOAD_BYTES", lambda d: media.random_bytes(d / "big.mp4", 4 * 1024 * 1024),
             "413", "larger than"),
        Kind("variable frame rate", lambda d: media.variable_frame_rate(d / "vfr.mp4"), "Exit"),
        Kind("10-bit yuv420p10le", lambda d: good(d / "b10.mp4", pix_fmt="yuv420p10le"), "Exit"),
        Kind("4:2:2 yuv422p", lambda d: good(d / "b422.mp4", pix_fmt="yuv422p"), "Exit"),
        Kind("rotated 90 (display matrix)", lambda d: media.rotated(d / "rot.mp4"), "Exit"),
        Kind("garbage inside the media data", lambda d: media.corrupt_middle(good(d / "g.mp4", frames=12),
                                                                             d / "cm.mp4"), "Exit"),
        Kind("MPEG-4 Part 2 in AVI", lambda d: good(d / "m4.avi", codec="mpeg4"), "Exit"),
        # Decoders off the allow-list (stages/video.py ALLOWED_CODECS) are refused before a frame is decoded.
        Kind("TIFF frames in MOV", lambda d: good(d / "tiff.mov", codec="tiff", pix_fmt="rgb24"), "400",
             "codec 'tiff' is not accepted"),
        Kind("OpenEXR frames in MOV", lambda d: good(d / "exr.mov", codec="exr", pix_fmt="gbrpf32le"), "400",
             "codec 'exr' is not accepted"),
        Kind("cinepak in AVI", lambda d: good(d / "cvid.avi", codec="cinepak", pix_fmt="rgb24"), "400",
             "codec 'cinepak' is not accepted"),
        Kind("name with ../ traversal", lambda d: good(d / "n1.mp4"), "Exit", "", "../../../etc/passwd.mp4"),
        Kind("name with NUL byte", lambda d: good(d / "n2.mp4"), "Exit", "", "evil\x00.sh.mp4"),
        Kind("very long name (1000 chars)", lambda d: good(d / "n3.mp4"), "400", "header size", "v" * 996 + ".mp4"),
        Kind("long name (240 chars)", lambda d: good(d / "n5.mp4"), "Exit", "", "w" * 236 + ".mp4"),
        Kind("non-ASCII name", lambda d: good(d / "n4.mp4"), "Exit", "", "거리 영상 🎥 çà.mp4"),
    ]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.fixture
def listener():
    """A local HTTP port that records whether anything connected to it."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        yield server


def test_bad_input_corpus(api, owner, settings, monkeypatch, tmp_path, listener, redis_clean):
    for name, value in LIMITS.items():
        setattr(settings, name, value)
    settings.GEDGE_RETRY_BACKOFF_MS = 100
    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": f"gedge-test-{uuid.uuid4().hex}"}}
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"submit": "1000/min"})
    kinds = corpus(listener.getsockname()[1])
    assert len(kinds) >= 25
    outcomes: dict[str, str] = {}
    accepted: dict[str, int] = {}
    for kind in kinds:
        path = kind.make(tmp_path)
        upload = io.BytesIO(path.read_bytes())
        upload.name = kind.upload_name or path.name
        response = api.post("/api/jobs/", {"video": upload}, format="multipart")
        if response.status_code in (200, 201):
            accepted[kind.name] = response.json()["id"]
            continue
        assert response.status_code < 500, (kind.name, response.content)
        error = response.json()["error"]
        outcomes[kind.name] = f"{response.status_code} {error['code']}: {error['message']}"

    with pytest.raises(BlockingIOError):
        listener.accept()  # no demuxer reached out to the network

    with worker_in_process(threads=1):
        for kind_name, job_id in accepted.items():
            job = _wait_terminal(job_id)
            outcomes[kind_name] = f"{job.status} ({job.frame_count} frames)" + (f": {job.error}" if job.error else "")

    print("\n\n| kind | expected | outcome |\n|---|---|---|")
    for kind in kinds:
        print(f"| {kind.name} | {kind.expect} | {outcomes[kind.name][:150]} |")

    for kind in kinds:
        outcome = outcomes[kind.name]
        assert outcome.startswith(kind.expect), (kind.name, outcome)
        assert kind.reason in outcome, (kind.name, outcome)
        if kind.expect == "Failed":
            job = Job.objects.get(pk=accepted[kind.name])
            assert job.failed_stage == "preprocess" and job.iteration == 0, "an input error must not be retried"
    assert all(job.status in TERMINAL for job in Job.objects.all()), "a job was left hanging"

    # Refused uploads leave nothing; accepted ones are stored under generated names, the client's name as data.
    stored = sorted(p.name for p in (tmp_path / "media" / "uploads" / str(owner.pk)).iterdir())
    assert len(stored) == len(accepted) and all(re.fullmatch(r"[0-9a-f]{32}\.\w+", n) for n in stored), stored
    names = {kind.name: Job.objects.get(pk=accepted[kind.name]).original_name for kind in kinds
             if kind.upload_name and kind.name in accepted}
    assert names["name with ../ traversal"] == "passwd.mp4"
    assert "\x00" not in names["name with NUL byte"] and names["name with NUL byte"].endswith(".mp4")
    assert names["long name (240 chars)"] == "w" * 200
    assert names["non-ASCII name"] == "거리 영상 🎥 çà.mp4"
    rotated = Job.objects.get(pk=accepted["rotated 90 (display matrix)"])
    assert (rotated.result_dir / "annotated.mp4").exists() and rotated.status == Status.EXIT


def _wait_terminal(job_id: int, timeout: float = 90) -> Job:
    return wait_for_status(job_id, TERMINAL, timeout)


def test_playlists_are_refused_before_they_open_anything(tmp_path, listener):
    """open_video's demuxer whitelist: a playlist under its own name is refused before any segment is opened."""
    from stages.errors import UnprocessableInput
    from stages.video import open_video

    port = listener.getsockname()[1]
    for playlist in (media.hls_playlist(tmp_path / "remote.m3u8", f"http://127.0.0.1:{port}/a.ts"),
                     media.hls_playlist(tmp_path / "local.m3u8", str(media.good_video(tmp_path / "seg.mp4"))),
                     media.concat_list(tmp_path / "list.ffconcat", tmp_path / "seg.mp4")):
        with pytest.raises(UnprocessableInput, match="not a video container that is accepted"):
            open_video(playlist)
    with pytest.raises(BlockingIOError):
        listener.accept()
    with pytest.raises(UnprocessableInput, match="not a local file"):
        open_video(f"http://127.0.0.1:{port}/a.mp4")


def test_uploads_are_probed_in_a_limited_child_without_the_web_s_secrets(api, monkeypatch, tmp_path, redis_clean):
    import subprocess

    from stages import probe

    seen = []
    real_run = subprocess.run

    def spy(args, **kwargs):
        seen.append((args, kwargs))
        return real_run(args, **kwargs)

    monkeypatch.setattr(probe.subprocess, "run", spy)
    response = api.post("/api/jobs/", {"video": io.BytesIO(media.good_video(tmp_path / "ok.mp4").read_bytes())},
                        format="multipart")
    assert response.status_code == 201, response.content
    (args, kwargs), = seen
    assert args[:5] == [probe.sys.executable, "-E", "-s", "-m", "stages.probe"]
    assert set(kwargs["env"]) == {"PATH", "LANG"}, "no secret, no database URL in the child"
    assert "DJANGO_SECRET_KEY" not in str(kwargs["env"]) and kwargs["timeout"] == probe.WALL_SECONDS

    # A child that does not answer in time (a decoder caught in a loop) is a 400, not a hung request.
    monkeypatch.setattr(probe, "WALL_SECONDS", 0.01)
    upload = io.BytesIO(media.good_video(tmp_path / "slow.mp4").read_bytes())
    response = api.post("/api/jobs/", {"video": upload}, format="multipart")
    assert response.status_code == 400 and "could not be read within" in response.json()["error"]["message"]


def test_the_probe_child_limits_itself():
    import resource

    from stages import probe

    script = ("import resource, stages.probe as p; p._limit_self(); "
              "print(resource.getrlimit(resource.RLIMIT_AS)[0], resource.getrlimit(resource.RLIMIT_CPU)[0])")
    import subprocess

    out = subprocess.run([probe.sys.executable, "-c", script], cwd=probe.ROOT, capture_output=True, text=True,
                         check=True).stdout.split()
    assert [int(v) for v in out] == [probe.MEMORY_BYTES, probe.CPU_SECONDS]
    assert resource.getrlimit(resource.RLIMIT_AS)[0] != probe.MEMORY_BYTES  # the web process is not limited


def test_a_job_id_beyond_bigint_answers_404_on_every_url(api, client, owner):
    huge = "9" * 40  # far past PostgreSQL's bigint
    for url in ("", "events/", "segments/", "detections/", "video/"):
        response = api.get(f"/api/jobs/{huge}/{url}")
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found", url
    for action in ("cancel", "retry"):
        assert api.post(f"/api/jobs/{huge}/{action}/").status_code == 404
    client.force_login(owner)
    for url in ("", "chart.json", "detections.csv"):
        assert client.get(f"/jobs/{huge}/{url}").status_code == 404, url
