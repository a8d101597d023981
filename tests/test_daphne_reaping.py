"""Daphne forgets a finished request at once (gedge_site/daphne_reaping.py), not at its next once-a-second check.

Daphne's own server class, driven as its HTTP protocol drives it: connected, application created, the
application's task ends, the request finishes (in either order). The web process runs the patched class (the
end-to-end and read-path tests serve every request through it).
"""
from __future__ import annotations

import asyncio

from daphne.server import Server

from gedge_site.daphne_reaping import install


def _server(application) -> Server:
    server = Server(application=application, endpoints=["tcp:port=0"])  # never started: no reactor here
    server.connections = {}  # what Server.run() starts with
    return server


async def _served(application, disconnect_first: bool) -> bool:
    """Whether Daphne still holds the request's record once both the request and its task have ended."""
    server = _server(application)
    protocol = object()  # Daphne only uses the protocol as a key here
    server.protocol_connected(protocol)
    server.create_application(protocol, {"type": "http"})
    if disconnect_first:
        server.protocol_disconnected(protocol)
    task = server.connections[protocol]["application_instance"]
    await asyncio.wait([task])
    await asyncio.sleep(0)  # the task's done-callbacks
    if not disconnect_first:
        server.protocol_disconnected(protocol)
    return protocol in server.connections


async def _answers(scope, receive, send):
    await asyncio.sleep(0.01)


async def _fails(scope, receive, send):
    raise RuntimeError("boom")


def test_a_finished_request_is_forgotten_at_once_and_a_failed_one_is_left_to_daphne():
    install()
    install()  # once is enough; a second call changes nothing

    async def main() -> dict:
        held = {}
        for name, application in (("answers", _answers), ("fails", _fails)):
            for first in (True, False):
                held[name, "disconnected first" if first else "task ended first"] = await _served(application, first)
        server = _server(_answers)
        upgraded = object()  # a request upgraded to a WebSocket: disconnected with no task of its own
        server.protocol_connected(upgraded)
        server.protocol_disconnected(upgraded)
        held["upgraded", ""] = upgraded in server.connections
        return held

    assert asyncio.run(main()) == {
        ("answers", "disconnected first"): False, ("answers", "task ended first"): False,
        # Daphne's checker logs the exception (and answers 500 if the client is still there): it is kept for it
        ("fails", "disconnected first"): True, ("fails", "task ended first"): True,
        ("upgraded", ""): False,
    }
