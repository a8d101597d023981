"""The floor under the API's latency: Daphne answering a constant, as big as a job's JSON, with no Django.

    python -m daphne -p PORT bench.floor:app

Whatever this costs under a load, no view behind Daphne can answer faster under the same load. Daphne runs
as the web process runs it: finished requests forgotten at once (gedge_site/daphne_reaping.py; without it a
closed loop's p99 here was 49-56 ms, GC pauses over the finished requests Daphne still held), and without
the two costs that buy nothing (gedge_site/daphne_overhead.py).
"""
from __future__ import annotations

from gedge_site import daphne_overhead, daphne_reaping

daphne_reaping.install()
daphne_overhead.install()

BODY = b'{"id":1,"status":"Exit","padding":"' + b"x" * 900 + b'"}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
