"""What Django's request handling costs in process, with no server and no network: the same requests through
Django's ASGI handler (what Daphne runs) and its WSGI handler, same settings, same middleware, same view,
same database. The difference is the ASGI handler's switches between the event loop and the thread that runs
sync code (docs/upstream.md, "Django: a sync view under ASGI"). Nothing is asserted; figures are printed.
"""
from __future__ import annotations

import asyncio
import io
import time

from .stats import summary_ms


def _scope(path: str, token: str) -> dict:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": [(b"host", b"127.0.0.1"), (b"authorization", f"Token {token}".encode())],
            "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}


def _environ(path: str, token: str) -> dict:
    return {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "127.0.0.1",
            "HTTP_AUTHORIZATION": f"Token {token}", "REMOTE_ADDR": "127.0.0.1", "wsgi.input": io.BytesIO(b""),
            "wsgi.url_scheme": "http", "wsgi.errors": io.StringIO()}


async def _asgi_once(app, path: str, token: str) -> int:
    sent: list[dict] = []
    delivered = False

    async def receive() -> dict:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client stays connected
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(_scope(path, token), receive, send)
    return sent[0]["status"]


def _wsgi_once(app, path: str, token: str) -> int:
    status: list[str] = []
    body = app(_environ(path, token), lambda s, headers, exc_info=None: status.append(s))
    try:
        b"".join(body)
    finally:
        body.close()
    return int(status[0].split()[0])


def handler_cost(paths: dict[str, str], token: str, requests: int = 300, warmup: int = 30) -> dict:
    """{name: {"asgi": summary, "wsgi": summary}} for each of ``paths`` (name -> URL path), ``requests`` one
    after another through each handler (Django set up in this process: bench.service.setup_django)."""
    from django.core.asgi import get_asgi_application
    from django.core.wsgi import get_wsgi_application

    asgi, wsgi = get_asgi_application(), get_wsgi_application()
    figures: dict[str, dict] = {}
    for name, path in paths.items():
        async def through_asgi(path: str = path) -> list[float]:
            times = []
            for i in range(warmup + requests):
                started = time.perf_counter()
                status = await _asgi_once(asgi, path, token)
                if status != 200:
                    raise RuntimeError(f"GET {path} through the ASGI handler answered {status}")
                if i >= warmup:
                    times.append(time.perf_counter() - started)
            return times

        asgi_times = asyncio.run(through_asgi())
        wsgi_times = []
        for i in range(warmup + requests):
            started = time.perf_counter()
            status = _wsgi_once(wsgi, path, token)
            if status != 200:
                raise RuntimeError(f"GET {path} through the WSGI handler answered {status}")
            if i >= warmup:
                wsgi_times.append(time.perf_counter() - started)
        figures[name] = {"asgi": summary_ms(asgi_times), "wsgi": summary_ms(wsgi_times)}
    return figures
