"""Serving result files to their owner, with HTTP Range support so video players can seek."""
from __future__ import annotations

import os
import re
from pathlib import Path

from django.http import FileResponse, HttpRequest, HttpResponse, StreamingHttpResponse

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
# Larger than any file: a position of more digits is read as this, not parsed (Python refuses to parse
# integers of over 4,300 digits, which answered 500 where the client deserves 416 or the whole tail).
_BEYOND_ANY_FILE = 10**18


def _position(digits: str) -> int:
    return int(digits) if len(digits) <= 18 else _BEYOND_ANY_FILE


def _read_range(path: Path, start: int, length: int, block: int = 1 << 16):
    with open(path, "rb") as fh:
        fh.seek(start)
        remaining = length
        while remaining > 0:
            data = fh.read(min(block, remaining))
            if not data:
                break
            remaining -= len(data)
            yield data


def ranged_file_response(request: HttpRequest, path: Path, content_type: str,
                         download_name: str | None = None) -> HttpResponse:
    size = os.path.getsize(path)
    header = request.headers.get("Range", "").strip()
    match = _RANGE.match(header) if header else None
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
        response = StreamingHttpResponse(_read_range(path, start, end - start + 1), status=206,
                                         content_type=content_type)
        response["Content-Length"] = str(end - start + 1)
        response["Content-Range"] = f"bytes {start}-{end}/{size}"
    else:
        response = FileResponse(open(path, "rb"), content_type=content_type)
        response["Content-Length"] = str(size)
    response["Accept-Ranges"] = "bytes"
    if download_name:
        response["Content-Disposition"] = f'attachment; filename="{download_name}"'
    return response
