"""A real Daphne server (Twisted's asyncio reactor, real sockets) with the fast lane in front of a stub read
path, for tests/test_fast_lane.py. Run as ``python tests/fast_lane_server.py ENDPOINT DELAY_S [IDLE_S]``: the
stub answers ``GET /api/jobs/`` after DELAY_S seconds and passes every other path on to the ASGI application,
which answers ``from-daphne``; IDLE_S, the connections' idle timeout. Each access-log line is printed as
``LOG <path> <status> <client>``, and each request the stub is asked for as ``ASKED <path>``."""
import asyncio
import contextvars
import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# The lane needs only the read path's context variable: no Django here.
readpath = types.ModuleType("jobs.readpath")
readpath.PASSED_ON = contextvars.ContextVar("passed_on", default=None)
sys.modules.setdefault("jobs", types.ModuleType("jobs"))
sys.modules["jobs.readpath"] = readpath

from twisted.internet import asyncioreactor  # noqa: E402

asyncioreactor.install()

from daphne.server import Server  # noqa: E402

from gedge_site import daphne_reaping, fast_lane  # noqa: E402

DELAY_S = float(sys.argv[2])


class Reads:
    async def answer(self, scope):
        if scope["path"] != "/api/jobs/":
            return None
        print("ASKED", scope["path"], flush=True)
        await asyncio.sleep(DELAY_S)
        body = b'{"from":"lane","client":"%s"}' % str(scope["client"]).encode()
        return [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())], body


async def app(scope, receive, send):
    body = b"from-daphne"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def action_logger(protocol, action, details):
    if action == "complete":
        print("LOG", details["path"], details["status"], details["client"], flush=True)


if len(sys.argv) > 3:  # the connections' idle timeout, in seconds (Twisted's default: 60)
    from daphne.http_protocol import HTTPFactory

    factory_init = HTTPFactory.__init__

    def init_with_timeout(self, *args, **kwargs):
        factory_init(self, *args, **kwargs)
        self.timeOut = float(sys.argv[3])

    HTTPFactory.__init__ = init_with_timeout
daphne_reaping.install()
fast_lane.install(Reads())
Server(app, endpoints=[sys.argv[1]], signal_handlers=True, action_logger=action_logger).run()
