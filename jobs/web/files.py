"""Serving result files to their owner: streamed in bounded chunks, with HTTP Range so players can seek.

Under ASGI Django reads a response's *synchronous* iterator whole into memory before sending it (a
FileResponse too): one download of a 400 MB result held 400 MB of the web process, and four at once, or the
seeks of a few players, more than its Pod has. Every file here is therefore sent from an asynchronous
iterator that reads one block at a time in a thread, so a download holds one block however large the file.
"""
from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

BLOCK = 1 << 18  # 256 KiB a read: few thread hops per megabyte, little held per download
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
# Larger than any file: a position of more digits is read as this, not parsed (Python refuses to parse
# integers of over 4,300 digits, which answered 500 where the client deserves 416 or the whole tail).
_BEYOND_ANY_FILE = 10**18


def _position(digits: str) -> int:
    return int(digits) if len(digits) <= 18 else _BEYOND_ANY_FILE


async def file_blocks(path: Path, start: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
    """``length`` bytes of ``path`` from ``start`` (to the end where None), one block at a time."""
    fh = await sync_to_async(open, thread_sensitive=False)(path, "rb")
    try:
        await sync_to_async(fh.seek, thread_sensitive=False)(start)
        remaining = length
        while remaining is None or remaining > 0:
            size = BLOCK if remaining is None else min(BLOCK, remaining)
            data = await sync_to_async(fh.read, thread_sensitive=False)(size)
            if not data:
                break
            if remaining is not None:
                remaining -= len(data)
            yield data
    finally:
        await sync_to_async(fh.close, thread_sensitive=False)()


async def in_blocks(parts: Iterable[str], block: int = BLOCK) -> AsyncIterator[bytes]:
    """Text from a synchronous generator (a CSV, a JSON document) gathered into blocks, each produced in a
    thread: the generator may read files, and the event loop must not wait on them."""
    iterator: Iterator[str] = iter(parts)

    def next_block() -> bytes:
        pieces, size = [], 0
        for piece in iterator:
            pieces.append(piece)
            size += len(piece)
            if size >= block:
                break
        return "".join(pieces).encode()

    while data := await sync_to_async(next_block, thread_sensitive=False)():
        yield data


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # noqa: B901 - makes this an (empty) async generator


def ranged_file_response(request: HttpRequest, path: Path, content_type: str,
                         download_name: str | None = None) -> HttpResponse:
    size = os.path.getsize(path)
    header = request.headers.get("Range", "").strip()
    match = _RANGE.match(header) if header else None
    start, end, status = 0, size - 1, 200
    if match and (match.group(1) or match.group(2)):
        first, last = match.groups()
        if first:
            start, end = _position(first), min(_position(last) if last else size - 1, size - 1)
        else:  # suffix range: the last N bytes
            start, end = max(0, size - _position(last)), size - 1
        if start >= size or start > end:
            response = HttpResponse(status=416)
            response["Content-Range"] = f"bytes */{size}"
            return response
        status = 206
    length = end - start + 1
    # HEAD: the same headers and no body (the server would send none, but the file would still be read).
    body = _nothing() if request.method == "HEAD" else file_blocks(path, start, length)
    response = StreamingHttpResponse(body, status=status, content_type=content_type)
    response["Content-Length"] = str(length)
    if status == 206:
        response["Content-Range"] = f"bytes {start}-{end}/{size}"
    response["Accept-Ranges"] = "bytes"
    if download_name:
        response["Content-Disposition"] = f'attachment; filename="{download_name}"'
    return response
