"""Result downloads stream in bounded blocks: the web process's memory stays flat while 8 clients download
and seek a large result at once over a real Daphne (under ASGI a synchronous iterator is read whole into
memory first: one download of a 256 MB file grew the process by 256 MB)."""
from __future__ import annotations

import threading

import pytest
import requests

from jobs.models import Job, Status

from .conftest import free_port, service_env, token_for

pytestmark = pytest.mark.django_db(transaction=True)  # the server reads what the test wrote

SIZE = 256 * 1024 * 1024
MARK_AT = 200_000_000
MARK = b"G-EDGE-MARK"
CLIENTS = 8


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for {pid}")


def test_eight_downloads_and_seeks_keep_the_web_process_flat(owner, processes, media_root):
    job = Job.objects.create(user=owner, path="uploads/x.mp4", original_name="x.mp4", status=Status.EXIT)
    job.result_dir.mkdir(parents=True)
    video = job.result_dir / "annotated.mp4"
    with open(video, "wb") as fh:  # sparse: 256 MB without writing them, with a mark to find by Range
        fh.truncate(SIZE)
        fh.seek(MARK_AT)
        fh.write(MARK)
    port = free_port()
    web = processes.web(service_env(media_root), port)
    url = f"http://127.0.0.1:{port}/api/jobs/{job.pk}/video/"
    auth = {"Authorization": f"Token {token_for(owner)}"}
    assert requests.get(url, headers={**auth, "Range": "bytes=0-9"}, timeout=10).status_code == 206  # warm
    before = rss_mb(web.pid)

    received: list[int] = []
    errors: list[BaseException] = []

    def download(headers: dict) -> None:
        try:
            with requests.get(url, headers={**auth, **headers}, stream=True, timeout=120) as response:
                response.raise_for_status()
                received.append(sum(len(block) for block in response.iter_content(1 << 20)))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    for headers in ({}, {"Range": "bytes=100000000-"}):  # whole files, then players seeking into the middle
        threads = [threading.Thread(target=download, args=(headers,)) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors, errors
    assert received == [SIZE] * CLIENTS + [SIZE - 100_000_000] * CLIENTS

    head = requests.head(url, headers=auth, timeout=10)
    assert head.status_code == 200 and head.headers["Content-Length"] == str(SIZE) and head.content == b""
    part = requests.get(url, headers={**auth, "Range": f"bytes={MARK_AT}-{MARK_AT + len(MARK) - 1}"}, timeout=10)
    assert part.status_code == 206 and part.content == MARK
    assert part.headers["Content-Range"] == f"bytes {MARK_AT}-{MARK_AT + len(MARK) - 1}/{SIZE}"

    peak = rss_mb(web.pid, "VmHWM")
    # 16 downloads of 156-256 MB each went through; the process may hold a few blocks per download.
    assert peak - before < 64, f"web RSS {before:.0f} MB -> peak {peak:.0f} MB"
