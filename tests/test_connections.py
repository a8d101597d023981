"""A web process's connections to Redis stay a fixed few, however many requests it serves."""
from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

import pytest
import requests

from .conftest import free_port, make_video, service_env, token_for

pytestmark = pytest.mark.django_db(transaction=True)


def tcp_connections(pid: int, remote_port: int) -> int:
    """The process's TCP connections to ``remote_port`` (from /proc: its sockets' inodes, matched in the
    kernel's table)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            match = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:  # closed meanwhile
            continue
        if match:
            inodes.add(match[1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).read().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes and int(fields[2].rsplit(":", 1)[1], 16) == remote_port:
                count += 1
    return count


def test_uploads_do_not_open_a_redis_connection_each(processes, media_root, owner, tmp_path, redis_clean):
    """Each upload passes the submit throttle, which reads and writes Django's cache (Redis). Django's own
    RedisCache opened a connection pool per request under ASGI and never closed it: 58 connections after 80
    uploads. With the shared client (gedge_site/cache.py) the count stays where the first uploads left it."""
    port = free_port()
    web = processes.web(service_env(media_root), port)
    redis_port = urlsplit(os.environ["REDIS_URL"]).port or 6379
    headers = {"Authorization": f"Token {token_for(owner)}"}
    video = make_video(tmp_path / "clip.mp4", frames=3)

    def upload(n: int) -> None:
        for _ in range(n):
            with open(video, "rb") as fh:
                response = requests.post(f"http://127.0.0.1:{port}/api/jobs/", files={"video": fh},
                                         headers=headers, timeout=30)
            assert response.status_code == 201, response.text

    upload(3)
    after_first = tcp_connections(web.pid, redis_port)
    upload(12)
    after_more = tcp_connections(web.pid, redis_port)
    assert after_first <= 6 and after_more <= after_first, (after_first, after_more)
