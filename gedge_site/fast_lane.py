"""The two polled reads answered where their bytes arrive: in Twisted's HTTP channel, before Daphne's request.

Under 32 polling clients in a closed loop the web process is at 100% of a core, and Daphne answering a
constant costs most of what a job read costs: Twisted's line-by-line HTTP parser, a ``Request`` with its
header objects, Daphne's header checks, scope, application task and queue, then the reply turned back
into Twisted calls (docs/performance.md, "API latency": 164-206 us of CPU per request for a constant, where
a bare asyncio protocol answering the same constant costs 15 us).

This lane sits in front of that for one shape of request only, and answers it with the same read path
(``jobs.readpath.FastJobReads.answer``) and the same bytes on the wire:

- the connection is between requests (nothing buffered, no request under way, persistent, no stray empty
  line eaten that only a request Twisted handles would reset);
- the data received is one whole request head and nothing more: ``GET /api/jobs/`` or ``GET /api/jobs/{id}/``
  (an optional query), ``HTTP/1.1``, header lines in plain form (RFC 9110 token names, visible ASCII values),
  at most ``MAX_HEAD`` bytes and Twisted's ``maxHeaders`` lines;
- none of the headers that change how a request is read or answered: no body (``Content-Length``,
  ``Transfer-Encoding``), no ``Expect``, ``Upgrade``, ``Connection`` other than keep-alive, no ``_`` in a
  name (Daphne drops those), no ``Daphne-Root-Path``;
- a plain TCP connection (TLS ones go to Twisted).

With ``--proxy-headers`` (as in k8s/), the client's address and the scheme come from the forwarded headers
through Daphne's own ``parse_x_forwarded_for``, as on Daphne's path: the list's links keep ``https``.

Anything else, and every request the read path does not answer (unknown token, another user's job, HTML
wanted, ...), goes to Twisted with the very bytes that arrived, as if the lane were not there; the read path
is then not asked again (``PASSED_ON``). While an answer is on its way, later data on the connection waits
and is handed on after it, so answers keep the order of requests; past Twisted's own 16 KiB the socket is not
read meanwhile, and the idle timeout is off, as Twisted does while it handles a request. A client gone
before its answer gets nothing, and no log line. Daphne's access log gets the same line as on its own path
(the client ``None`` on a UNIX socket); Twisted's combined log (Daphne at verbosity 2 and up) has none.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import re
import time

from daphne.utils import parse_x_forwarded_for
from twisted.internet.interfaces import ISSLTransport
from twisted.web.http import HTTPChannel
from twisted.web.http_headers import Headers

from jobs.readpath import PASSED_ON

logger = logging.getLogger(__name__)

MAX_HEAD = 8192
MAX_HEADERS = HTTPChannel.maxHeaders  # Twisted answers 400 past these
REQUEST_LINE = re.compile(rb"GET ((/api/jobs/(?:[1-9][0-9]{0,17}/)?)(?:\?([!-~]*))?) HTTP/1\.1")
HEADER_LINE = re.compile(rb"([!#$%&'*+.^`|~0-9A-Za-z-]+):[ \t]*([ -~]*?)[ \t]*")
REFUSED = frozenset({b"content-length", b"transfer-encoding", b"expect", b"upgrade", b"daphne-root-path",
                     b"http2-settings", b"te"})


def parse_head(data: bytes) -> tuple[bytes, bytes, bytes, list[tuple[bytes, bytes]]] | None:
    """(target, path, query, headers with lower-case names) of a request head the lane takes; None for any
    other."""
    if len(data) > MAX_HEAD or not data.endswith(b"\r\n\r\n"):
        return None
    lines = data[:-4].split(b"\r\n")
    line = REQUEST_LINE.fullmatch(lines[0])
    if line is None or len(lines) - 1 > MAX_HEADERS:
        return None
    headers = []
    for raw in lines[1:]:
        header = HEADER_LINE.fullmatch(raw)
        if header is None:  # an empty line (a second request), a folded or malformed line, other bytes
            return None
        name, value = header[1].lower(), header[2]
        if name in REFUSED or b"_" in name or (name == b"connection" and value.lower() != b"keep-alive"):
            return None
        headers.append((name, value))
    return line[1], line[2], line[3] or b"", headers


def _between_requests(channel) -> bool:
    """Whether Twisted's channel is waiting for the first line of a request, with nothing of one buffered
    (``__first_line`` is 2 after a stray empty line, which only a request Twisted handles resets)."""
    return (channel.persistent and not channel.requests and not channel._handlingRequest and channel.line_mode
            and not channel._buffer and not channel._dataBuffer and channel._HTTPChannel__first_line == 1
            and not channel._HTTPChannel__header and not channel.transport.disconnecting)


def _address(address) -> list | None:
    """[host, port] of a TCP address; None for another kind (a UNIX socket), as Daphne's request has it."""
    return [str(address.host), address.port] if hasattr(address, "host") and hasattr(address, "port") else None


class _Lane:
    """One connection's lane: takes the requests it can, hands the rest to the channel's own method."""

    def __init__(self, channel, server, reads, received) -> None:
        self.channel, self.server, self.reads, self.received = channel, server, reads, received
        self.answering = self.lost = self.paused = False
        self.held: list[bytes] = []
        self.held_bytes = 0
        self.plain: bool | None = None  # a plain TCP connection: known once it is made
        self.addresses: tuple | None = None  # (client, server) as Daphne's scope has them: fixed per connection

    def data_received(self, data: bytes) -> None:
        if self.lost:
            return
        if self.answering:
            # Held until the answer is out. Past what Twisted itself would buffer, stop reading the socket,
            # as Twisted does for data that comes while it handles a request.
            self.held.append(data)
            self.held_bytes += len(data)
            if self.held_bytes > self.channel._optimisticEagerReadSize and not self.paused:
                self.paused = True
                self.channel._networkProducer.pauseProducing()
            return
        if self.plain is None:
            self.plain = not ISSLTransport.providedBy(self.channel.transport)
        head = parse_head(data) if self.plain and _between_requests(self.channel) else None
        if head is None:
            self.received(data)
            return
        self.answering = True
        self.channel.resetTimeout()  # as Twisted's own dataReceived does
        task = asyncio.ensure_future(self.answer(data, *head))
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)

    def timeout_connection(self, timed_out) -> None:
        """The idle timeout does not close a connection whose answer is on its way, as Twisted's does not
        while it handles a request (it turns the timer off then; re-arming it here costs less per request)."""
        if self.answering and not self.lost:
            self.channel.setTimeout(self.channel.timeOut)  # the timer that fired is spent: a new one
        else:
            timed_out()

    def connection_lost(self, lost, reason) -> None:
        self.lost = True
        self.held, self.held_bytes = [], 0
        lost(reason)

    def _scope(self, path: bytes, query: bytes, headers: list) -> dict:
        """The scope Daphne's request would build (daphne.http_protocol.WebRequest.process)."""
        server = self.server
        if self.addresses is None:  # asked once: getHost() is a system call, and both build address objects
            transport = self.channel.transport
            self.addresses = (_address(transport.getPeer()), _address(transport.getHost()))
        client, host = self.addresses
        client, host, scheme = client and list(client), host and list(host), "http"  # each scope its own lists
        if server.proxy_forwarded_address_header:  # --proxy-headers: the client and scheme as Daphne reads them
            values: dict[bytes, list[bytes]] = {}
            for name, value in headers:
                values.setdefault(name, []).append(value)
            client, scheme = parse_x_forwarded_for(
                values, server.proxy_forwarded_address_header, server.proxy_forwarded_port_header,
                server.proxy_forwarded_proto_header, client, scheme)
        return {"type": "http", "http_version": "1.1", "method": "GET", "path": path.decode("ascii"),
                "raw_path": path, "root_path": server.root_path, "scheme": scheme, "query_string": query,
                "headers": headers, "client": client, "server": host}

    async def answer(self, data: bytes, target: bytes, path: bytes, query: bytes, headers: list) -> None:
        started = time.time()
        answer = scope = None
        try:
            scope = self._scope(path, query, headers)
            answer = await self.reads.answer(scope)
        except Exception:  # noqa: BLE001 - the read path catches its own; this is the lane's: Daphne answers
            logger.exception("fast lane: the request goes to Daphne")
        try:
            if self.lost:
                return  # the client went away meanwhile
            if answer is None:
                passed = PASSED_ON.set([True])  # one-shot: used up by the application task Daphne starts here
                try:
                    self.received(data)
                finally:
                    PASSED_ON.reset(passed)
            else:
                self._write(target, scope, *answer, started)
        except Exception:  # noqa: BLE001 - nothing sensible left to send on this connection
            logger.exception("fast lane: connection dropped")
            self.lost = True
            self.channel.transport.abortConnection()
        finally:
            self.answering = False
            held, self.held, self.held_bytes = b"".join(self.held), [], 0
            if self.paused:
                self.paused = False
                if not self.lost and not self.channel._waitingForTransport:
                    self.channel._networkProducer.resumeProducing()
            if held and not self.lost:
                self.data_received(held)

    def _write(self, target: bytes, scope, headers: list, body: bytes, started: float) -> None:
        if self.server.server_name:
            headers = [*headers, (b"server", self.server.server_name.encode())]
        _send(self.channel.transport, b"".join([b"HTTP/1.1 200 OK\r\n", *(
            b"%s: %s\r\n" % (_canonical(name), value) for name, value in headers), b"\r\n", body]))
        client = scope["client"]
        try:
            self.server.log_action("http", "complete", {
                "path": target.decode("ascii"), "status": 200, "method": "GET",
                "client": "{}:{}".format(*client) if client else None,
                "time_taken": time.time() - started, "size": len(body)})
        except Exception:  # noqa: BLE001 - as Daphne: a failing access log does not fail the answer
            logger.exception("access log")


def _send(transport, data: bytes) -> None:
    """``transport.write``, but sent at once where nothing is waiting to go out before it. Twisted's TCP
    transport only buffers a write and sends it when the loop next finds the socket writable: two more
    epoll changes and a turn of the loop per answer. What the socket does not take now goes the usual way."""
    if transport.dataBuffer or transport._tempDataBuffer or transport.disconnecting or not transport.connected:
        transport.write(data)
        return
    try:
        sent = transport.socket.send(data)
    except OSError:  # it would block, or the connection failed: Twisted's own write path sends or reports it
        sent = 0
    if sent < len(data):
        transport.write(data[sent:])


_TASKS: set[asyncio.Task] = set()  # answers under way (the loop keeps only weak references to tasks)
_CANONICAL: dict[bytes, bytes] = {}


def _canonical(name: bytes) -> bytes:
    """The header name as Twisted writes it (``content-type`` -> ``Content-Type``)."""
    canonical = _CANONICAL.get(name)
    if canonical is None:
        canonical = _CANONICAL[name] = next(iter(Headers({name: [b""]}).getAllRawHeaders()))[0]
    return canonical


def install(reads) -> None:
    """Give every HTTP/1.1 connection Daphne accepts from now on a lane to ``reads`` (a FastJobReads)."""
    from daphne.http_protocol import HTTPFactory

    installed = getattr(HTTPFactory, "_gedge_fast_lane", None) is not None
    HTTPFactory._gedge_fast_lane = reads  # a second install only points the lanes at other reads (tests)
    if installed:
        return
    build = HTTPFactory.buildProtocol

    def build_with_lane(self, addr):
        protocol = build(self, addr)
        channel = getattr(protocol, "_channel", protocol)  # Twisted's wrapper that picks HTTP/1.1 or HTTP/2
        if isinstance(channel, HTTPChannel):
            lane = _Lane(channel, self.server, HTTPFactory._gedge_fast_lane, channel.dataReceived)
            channel.dataReceived = lane.data_received
            channel.connectionLost = functools.partial(lane.connection_lost, channel.connectionLost)
            channel.timeoutConnection = functools.partial(lane.timeout_connection, channel.timeoutConnection)
        return protocol

    HTTPFactory.buildProtocol = build_with_lane
