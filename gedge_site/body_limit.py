"""Refuse request bodies over the upload limit while they stream into Daphne.

Daphne (Twisted) receives a whole request body, spooling it to a temporary file, before the application sees
the first byte, so Django's upload handler (jobs/uploads.py) can stop parsing but not the transfer: a huge
upload would fill the disk first. This hooks Twisted's per-request body callbacks in Daphne's request class:
a declared Content-Length over the limit, or a body that grows past it, gets 413 at once and the connection
closes. In Kubernetes the ingress enforces the same limit in front (proxy-body-size).
"""
from __future__ import annotations

import json

# Multipart framing and the other form fields around the file.
FORM_OVERHEAD_BYTES = 1 << 20


def _refuse(request, limit: int) -> None:
    request._gedge_refused = True
    body = json.dumps({"error": {"code": "too_large", "message": f"the file is larger than {limit} bytes"}})
    head = ("HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\nConnection: close\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    transport = request.channel.transport
    transport.write(head.encode() + body.encode())
    transport.loseConnection()


def install(limit: int) -> None:
    """Patch Daphne's request class once; requests under the limit behave exactly as before."""
    from daphne.http_protocol import WebRequest

    if getattr(WebRequest, "_gedge_body_limit", None) is not None:
        WebRequest._gedge_body_limit = limit + FORM_OVERHEAD_BYTES
        return
    WebRequest._gedge_body_limit = limit + FORM_OVERHEAD_BYTES
    got_length, content_chunk = WebRequest.gotLength, WebRequest.handleContentChunk

    def gotLength(self, length):  # noqa: N802 - Twisted's name
        self._gedge_received = 0
        self._gedge_refused = False
        if length is not None and length > WebRequest._gedge_body_limit:
            _refuse(self, WebRequest._gedge_body_limit - FORM_OVERHEAD_BYTES)
            length = 0  # nothing will be kept: no temporary file for the announced size
        got_length(self, length)

    def handleContentChunk(self, data):  # noqa: N802
        if self._gedge_refused:
            return
        self._gedge_received += len(data)
        if self._gedge_received > WebRequest._gedge_body_limit:  # chunked, or a lying Content-Length
            _refuse(self, WebRequest._gedge_body_limit - FORM_OVERHEAD_BYTES)
            return
        content_chunk(self, data)

    WebRequest.gotLength = gotLength
    WebRequest.handleContentChunk = handleContentChunk
