"""The polled reads answered in Twisted's HTTP channel (gedge_site/fast_lane.py): the same bytes on the wire as
Daphne's own path, only for the requests it is for, answers in the order of the requests, the access log kept.

Two real Daphne processes on the test database, both with the read path: one as deployed (the lane on), one
with GEDGE_FAST_LANE=false. Raw sockets, so that every byte of the answer is compared and requests can be
cut and sent back to back as a client may.
"""
from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from gedge_site.fast_lane import MAX_HEAD, parse_head
from jobs.models import Job, Status

from .conftest import fast_read_counts, free_port, service_env, token_for, wait_for_port

HEAD = b"GET /api/jobs/7/ HTTP/1.1\r\nHost: localhost\r\nAuthorization: Token abc\r\nAccept: */*\r\n\r\n"


@pytest.mark.parametrize("head", [
    HEAD,
    b"GET /api/jobs/ HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /api/jobs/?page=2&status=Exit HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
    b"GET /api/jobs/12/ HTTP/1.1\r\nHost:localhost  \r\nUser-Agent: curl/8.0 (x; y)\r\n\r\n",
])
def test_the_lane_takes_plain_polled_gets(head):
    assert parse_head(head) is not None


@pytest.mark.parametrize("head", [
    b"POST /api/jobs/ HTTP/1.1\r\nHost: a\r\n\r\n",
    b"HEAD /api/jobs/ HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /api/jobs/ HTTP/1.0\r\nHost: a\r\n\r\n",
    b"GET /api/jobs/7/events/ HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /api/jobs/%37/ HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /api/jobs/0/ HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /api/jobs/7 HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /api/jobs/7/ HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
    b"GET /api/jobs/7/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET /api/jobs/7/ HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
    b"GET /api/jobs/7/ HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"GET /api/jobs/7/ HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    b"GET /api/jobs/7/ HTTP/1.1\r\nHost: a\r\nAuthorization_Token: x\r\n\r\n",  # Daphne drops such names
    b"GET /api/jobs/7/ HTTP/1.1\r\nHost: a\r\nDaphne-Root-Path: /x\r\n\r\n",
    b"GET /api/jobs/7/ HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",  # a folded line
    b"GET /api/jobs/7/ HTTP/1.1\r\nHost : a\r\n\r\n",
    b"GET /api/jobs/7/ HTTP/1.1\r\nHost: \xc3\xa9\r\n\r\n",
    b"GET /api/jobs/7/ HTTP/1.1\r\nHost: a\r\n",  # not whole yet
    HEAD + HEAD,  # two requests in one read
    HEAD[:-2] + b"X-Pad: " + b"p" * MAX_HEAD + b"\r\n\r\n",
    b"GET /api/jobs/ HTTP/1.1\r\n" + b"a: b\r\n" * 501 + b"\r\n",  # past Twisted's maxHeaders
])
def test_anything_else_goes_to_twisted(head):
    assert parse_head(head) is None


def read_answers(sock: socket.socket, count: int) -> list[bytes]:
    """``count`` whole HTTP answers (head and Content-Length bytes of body) from ``sock``."""
    data, answers = b"", []
    while len(answers) < count:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, "connection closed"
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?im)^content-length: *(\d+)", head)[1])
        while len(rest) < length:
            chunk = sock.recv(65536)
            assert chunk, "connection closed"
            rest += chunk
        answers.append(head + b"\r\n\r\n" + rest[:length])
        data = rest[length:]
    return answers


@pytest.mark.django_db(transaction=True)  # the servers read what the test wrote
@pytest.mark.parametrize("proxy", [False, True], ids=["direct", "proxy-headers"])  # k8s/ runs --proxy-headers
def test_the_lane_answers_as_daphne_does_in_order(owner, other, processes, media_root, proxy):
    mine = Job.objects.create(user=owner, path="uploads/a.mp4", original_name="a \u00e9t\u00e9.mp4",
                              status=Status.EXIT, frame_count=84, summary={"per_class": {"person": 3}})
    Job.objects.bulk_create([Job(user=owner, path=f"uploads/{i}.mp4", original_name=f"{i}.mp4")
                             for i in range(55)])  # more than a page: the list has links
    theirs = Job.objects.create(user=other, path="uploads/c.mp4", original_name="c.mp4")
    lane, plain = free_port(), free_port()
    for name, port, switch in (("web-lane", lane, "true"), ("web-plain", plain, "false")):
        processes.start(name, [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                               *(["--proxy-headers"] if proxy else []), "gedge_site.asgi:application"],
                        service_env(media_root, GEDGE_FAST_LANE=switch))
    for port in (lane, plain):
        wait_for_port(port)

    def head(path: str, extra: str = "") -> bytes:
        return (f"GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Token {token_for(owner)}\r\n"
                f"Accept: */*\r\n{extra}\r\n").encode()

    own, not_own = head(f"/api/jobs/{mine.pk}/"), head(f"/api/jobs/{theirs.pk}/")
    page, html = head("/api/jobs/?status=Exit"), head(f"/api/jobs/{mine.pk}/", "Accept: text/html\r\n")
    forwarded = head("/api/jobs/", "X-Forwarded-Proto: https\r\nX-Forwarded-For: 10.1.2.3\r\n")
    http = requests.Session()
    with socket.create_connection(("127.0.0.1", lane)) as a, socket.create_connection(("127.0.0.1", plain)) as b:
        client = "{}:{}".format(*a.getsockname())
        # The same bytes, head and body, from both; another user's job and HTML left to Django, which the
        # read path is asked about once (the lane asked; Daphne's own path does not ask again).
        for request, result in ((own, "answered"), (page, "answered"), (not_own, "passed"), (html, "passed"),
                                (own, "answered"), (forwarded, "answered")):
            before = fast_read_counts(http, lane)
            a.sendall(request)
            b.sendall(request)
            answer, expected = read_answers(a, 1)[0], read_answers(b, 1)[0]
            after = fast_read_counts(http, lane)
            assert after[result] == before[result] + 1 and sum(after.values()) == sum(before.values()) + 1, result
            if result == "answered":
                assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
            if b"text/html" not in answer:  # the browsable API: a new CSRF token each time
                assert answer == expected, result
        # Behind a proxy (--proxy-headers) the scheme is the client's, as Daphne reads it: https links.
        assert (b'"next":"https://localhost/api/jobs/?page=2"' in answer) == proxy, answer[-300:]
        # Requests sent back to back on one connection, each in its own write while the one before may still
        # be on its way, whichever path takes them: the answers come in the order of the requests.
        # The whole list has jobs not rendered yet (a second statement), the job after it does not: answered
        # at once, it would overtake the list.
        order = [head("/api/jobs/"), own, not_own, page, own, not_own, own]
        a.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for request in order:
            a.sendall(request)
            time.sleep(0.0005)  # each read on its own, while the one before is on its way
        answers = read_answers(a, len(order))
        kinds = [b"list" if x.partition(b"\r\n\r\n")[2].startswith(b'{"count":') else x.split(b"\r\n", 1)[0]
                 for x in answers]
        assert kinds == [b"list", b"HTTP/1.1 200 OK", b"HTTP/1.1 404 Not Found", b"list", b"HTTP/1.1 200 OK",
                         b"HTTP/1.1 404 Not Found", b"HTTP/1.1 200 OK"]
        assert answers[1] == answers[4] == answers[6]
        answers = answers[1:]
        # Two requests in one write, and a head that arrives in two pieces: Twisted's, answered the same.
        a.sendall(own + page)
        assert read_answers(a, 2) == [answers[0], answers[2]]
        a.sendall(own[:20])
        time.sleep(0.2)
        a.sendall(own[20:])
        assert read_answers(a, 1) == [answers[0]]
    # Daphne's access log has the lane's answers as it has its own.
    log = (processes.log_dir / "web-lane.log").read_text()
    assert len(re.findall(rf'"GET /api/jobs/{mine.pk}/" 200 \d+', log)) >= 6, log[-2000:]
    # Every answer on the connection has its client (the lane reads the connection's addresses once).
    assert len(re.findall(rf'^{re.escape(client)} .*"GET /api/jobs/{mine.pk}/" 200 \d+', log, re.M)) >= 6, log[-2000:]
    assert re.search(r'"GET /api/jobs/\?status=Exit" 200 \d+', log), log[-2000:]
    assert bool(re.search(r'^10\.1\.2\.3:0 .*"GET /api/jobs/" 200 \d+', log, re.M)) == proxy, log[-2000:]


class LaneServer:
    """tests/fast_lane_server.py: a real Daphne server with the lane, over a stub read path that answers
    ``GET /api/jobs/`` after ``delay`` seconds (other paths: Daphne's application, ``from-daphne``)."""

    def __init__(self, tmp_path, delay: float, unix: bool = False, idle_timeout: float | None = None) -> None:
        self.address = str(tmp_path / "lane.sock") if unix else ("127.0.0.1", free_port())
        endpoint = f"unix:{self.address}" if unix else f"tcp:port={self.address[1]}:interface=127.0.0.1"
        self.log = tmp_path / "lane-server.log"
        script = Path(__file__).with_name("fast_lane_server.py")
        with open(self.log, "wb") as out:
            timeout = [] if idle_timeout is None else [str(idle_timeout)]
            self.proc = subprocess.Popen([sys.executable, str(script), endpoint, str(delay), *timeout], stdout=out,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.connect().close()
                break
            except OSError:
                assert time.monotonic() < deadline and self.proc.poll() is None, self.log.read_text()
                time.sleep(0.1)

    def connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX if isinstance(self.address, str) else socket.AF_INET)
        sock.settimeout(5)
        sock.connect(self.address)
        return sock

    def wait_for(self, text: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log.read_text():
            assert time.monotonic() < deadline and self.proc.poll() is None, self.log.read_text()
            time.sleep(0.01)

    def stop(self) -> str:
        """Stop the server; what it printed."""
        self.proc.terminate()
        self.proc.wait(10)
        return self.log.read_text()


@pytest.fixture
def lane_server(tmp_path):
    servers = []

    def start(delay: float = 0.0, unix: bool = False, idle_timeout: float | None = None) -> LaneServer:
        servers.append(LaneServer(tmp_path, delay, unix, idle_timeout))
        return servers[-1]

    yield start
    for server in servers:
        if server.proc.poll() is None:
            server.stop()


LANE_GET = b"GET /api/jobs/ HTTP/1.1\r\nHost: a\r\n\r\n"


def test_data_held_behind_an_answer_is_bounded(lane_server):
    """A client that keeps sending while its answer is on its way: past what Twisted would buffer, the lane
    stops reading the socket, as Twisted does (without that, this client pushed 700 MB in a second)."""
    server = lane_server(delay=1.5)
    with server.connect() as sock:
        sock.sendall(LANE_GET)
        server.wait_for("ASKED /api/jobs/")
        sock.setblocking(False)
        sent, junk, started = 0, b"x" * 65536, time.monotonic()
        while time.monotonic() - started < 1.0:
            try:
                sent += sock.send(junk)
            except BlockingIOError:
                time.sleep(0.01)
    # What the kernel may buffer on both sides (the largest TCP send and receive buffers) and Twisted's 16 KiB;
    # without the bound the client pushed 700 MB.
    kernel = sum(int(Path(f"/proc/sys/net/ipv4/tcp_{side}").read_text().split()[2]) for side in ("wmem", "rmem"))
    assert sent < 2 * kernel + 2**20, (sent, kernel)
    assert "Traceback" not in server.stop()


def test_a_client_gone_before_its_answer_gets_no_log_line_and_no_error(lane_server):
    server = lane_server(delay=0.3)
    with server.connect() as sock:
        sock.sendall(LANE_GET)
        server.wait_for("ASKED /api/jobs/")  # the lane took it: the next request is held behind it
        sock.sendall(b"GET /other/ HTTP/1.1\r\nHost: a\r\n\r\n")
        time.sleep(0.05)
    time.sleep(0.8)
    printed = server.stop()
    assert "LOG" not in printed and "Traceback" not in printed and "exception" not in printed, printed


def test_a_stray_empty_line_and_too_many_headers_stay_twisteds(lane_server):
    server = lane_server()
    with server.connect() as sock:
        # Twisted eats one empty line before a request line, and only a request it handles resets that: the
        # request after such a line is Twisted's too (a lane answer there left the next empty line a 400).
        sock.sendall(b"\r\n")
        time.sleep(0.1)
        sock.sendall(LANE_GET)
        assert read_answers(sock, 1)[0].endswith(b"\r\n\r\nfrom-daphne")
        sock.sendall(LANE_GET)
        assert b'{"from":"lane"' in read_answers(sock, 1)[0]
        sock.sendall(b"\r\n")
        time.sleep(0.1)
        sock.sendall(b"GET /other/ HTTP/1.1\r\nHost: a\r\n\r\n")
        assert read_answers(sock, 1)[0].endswith(b"\r\n\r\nfrom-daphne")
    with server.connect() as sock:
        sock.sendall(b"GET /api/jobs/ HTTP/1.1\r\nHost: a\r\n" + b"a: b\r\n" * 501 + b"\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 400 ")  # Twisted's limit, not the lane's answer
    assert "Traceback" not in server.stop()


def test_a_unix_socket_connection_is_answered(lane_server):
    """Daphne on a UNIX socket (``-u``): no client address, as on Daphne's own path."""
    server = lane_server(unix=True)
    with server.connect() as sock:
        sock.sendall(LANE_GET)
        assert read_answers(sock, 1)[0].endswith(b'{"from":"lane","client":"None"}')
        sock.sendall(b"GET /other/ HTTP/1.1\r\nHost: a\r\n\r\n")
        assert read_answers(sock, 1)[0].endswith(b"from-daphne")
    printed = server.stop()
    assert "LOG /api/jobs/ 200 None" in printed and "Traceback" not in printed, printed


def test_the_idle_timeout_waits_for_an_answer_on_its_way_and_then_applies(lane_server):
    """As on Twisted's own path: no idle timeout while a request is being answered, the timeout after it."""
    server = lane_server(delay=1.2, idle_timeout=0.4)
    with server.connect() as sock:
        sock.sendall(LANE_GET)
        assert b'{"from":"lane"' in read_answers(sock, 1)[0]  # after 1.2 s, three idle timeouts' worth
        started = time.monotonic()
        assert sock.recv(65536) == b""  # then, idle, the server closes the connection
        assert time.monotonic() - started < 3
    assert "Traceback" not in server.stop()
