"""Request bodies in Daphne: refuse those over the upload limit while they stream in, and parse them once.

Daphne (Twisted) receives a whole request body, spooling it to a temporary file, before the application sees
the first byte, so Django's upload handler (jobs/lifecycle/uploads.py) can stop parsing but not the transfer: a huge
upload would fill the disk first. This hooks Twisted's per-request body callbacks in Daphne's request class:
a declared Content-Length over the limit, or a body that grows past it, gets 413 at once and the connection
closes. In Kubernetes the ingress enforces the same limit in front (proxy-body-size).

Twisted also parses every multipart or form-encoded POST body into ``request.args`` with the ``email``
package, on the event loop, before handing the request over. Daphne never reads ``request.args``; Django
parses the body again in its own thread. For one 1.2 MB video that parse held the loop for 30-100 ms, and
every API request arriving meanwhile waited (docs/performance.md, "API latency while jobs are processing").
Daphne's requests are therefore built with Twisted's ``parsePOSTFormSubmission=False``.
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
    """Patch Daphne's request class once; a later call only changes the limit."""
    from daphne.http_protocol import WebRequest

    installed = getattr(WebRequest, "_gedge_body_limit", None) is not None
    WebRequest._gedge_body_limit = limit + FORM_OVERHEAD_BYTES
    if installed:
        return
    init, got_length, content_chunk = WebRequest.__init__, WebRequest.gotLength, WebRequest.handleContentChunk

    def __init__(self, *args, **kwargs):  # noqa: N807 - wraps Daphne's
        kwargs.setdefault("parsePOSTFormSubmission", False)  # Twisted >= 25.5
        init(self, *args, **kwargs)

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

    WebRequest.__init__ = __init__
    WebRequest.gotLength = gotLength
    WebRequest.handleContentChunk = handleContentChunk
