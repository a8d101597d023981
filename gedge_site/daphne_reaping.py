"""Daphne forgets a finished request at once, instead of up to a second later.

Daphne keeps a record per request (and per WebSocket): the Twisted request, its ASGI application task, the
task's queue, context and coroutine, the client's address and headers. When both the request and its task
have ended, the record is dropped by ``Server.application_checker``, which runs once a second. At ~3,000
requests a second that is ~3,000 finished requests held alive at any time, ~60,000 objects that the garbage
collector walks in every middle-generation collection: pauses of 15-45 ms about twice a second in a closed
loop of polling clients, which every request in flight waits behind, and a checker pass over all of them
(docs/performance.md, "API latency").

This drops the record the moment both have ended: from a done-callback on the task and from
``protocol_disconnected``. A task that failed or was cancelled is left to the checker, which logs the
exception (and answers 500 where the client is still there) as it always has; the checker still runs and
still kills tasks that outlive their client.
"""
from __future__ import annotations


def install() -> None:
    """Patch Daphne's server class once (the ``daphne`` command builds it after importing the application)."""
    from daphne.server import Server

    if getattr(Server, "_gedge_reaps_at_once", False):
        return
    Server._gedge_reaps_at_once = True
    create_application, protocol_disconnected = Server.create_application, Server.protocol_disconnected

    def create_application_and_watch(self, protocol, scope):
        queue = create_application(self, protocol, scope)
        task = self.connections.get(protocol, {}).get("application_instance")
        if task is not None:
            task.add_done_callback(lambda _task: reap(self, protocol))
        return queue

    def protocol_disconnected_and_reap(self, protocol):
        protocol_disconnected(self, protocol)
        reap(self, protocol)

    Server.create_application = create_application_and_watch
    Server.protocol_disconnected = protocol_disconnected_and_reap


def reap(server, protocol) -> None:
    """Forget ``protocol`` if it has disconnected and its application task ended cleanly (or never began)."""
    details = server.connections.get(protocol)
    if details is None or "disconnected" not in details:
        return
    task = details.get("application_instance")
    if task is not None and (not task.done() or task.cancelled() or task.exception() is not None):
        return  # running, or for the checker to report
    del server.connections[protocol]
