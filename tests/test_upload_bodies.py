"""Request bodies in Daphne (gedge_site/upload_bodies.py): uploads over the limit are refused while they stream
in, not after Daphne has spooled them; and form bodies are parsed once, by Django, not first by Twisted."""
from __future__ import annotations

import json
import socket

import pytest
import requests

from .conftest import free_port, make_video, service_env, token_for

pytestmark = pytest.mark.django_db(transaction=True)
LIMIT = 200_000


def read_response(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


@pytest.fixture
def web(processes, media_root, owner):
    port = free_port()
    processes.web(service_env(media_root, GEDGE_MAX_UPLOAD_BYTES=LIMIT), port)
    return port, token_for(owner)


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(web):
    port, token = web
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            b"POST /api/jobs/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"Authorization: Token {token}\r\n".encode()
            + b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 50000000000\r\n\r\n"
            + b"--x\r\n"
        )
        response = read_response(sock)  # answered and closed with 50 GB still unsent
    assert response.startswith(b"HTTP/1.1 413")
    assert b'"code": "too_large"' in response


def test_a_chunked_body_growing_past_the_limit_is_cut_off(web):
    port, token = web
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /api/jobs/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     + f"Authorization: Token {token}\r\n".encode()
                     + b"Content-Type: multipart/form-data; boundary=x\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"a" * 65536
        try:
            for _ in range(200):  # up to 13 MB, far past limit + form overhead
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed the connection on us: what we want
        response = read_response(sock)
    assert response.startswith(b"HTTP/1.1 413")


def test_uploads_under_the_limit_are_untouched(web, tmp_path):
    port, token = web
    video = make_video(tmp_path / "small.mp4", frames=3)
    assert video.stat().st_size < LIMIT
    with open(video, "rb") as fh:
        response = requests.post(f"http://127.0.0.1:{port}/api/jobs/", files={"video": fh},
                                 headers={"Authorization": f"Token {token}"}, timeout=30)
    assert response.status_code == 201, response.text


def test_a_form_body_is_parsed_by_django_alone(web):
    """Twisted would parse a multipart body on the event loop before Daphne hands it over, and answer a bare
    400 for one it cannot read. With that parse off the API answers, with its own error."""
    port, token = web
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /api/jobs/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                     + f"Authorization: Token {token}\r\n".encode()
                     + b"Content-Type: multipart/form-data\r\nContent-Length: 5\r\n\r\nhello")
        response = read_response(sock)
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert b"application/json" in head
    assert json.loads(body)["error"]["code"] == "parse_error"
