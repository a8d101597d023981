"""Every request body is small, except a signed-in user's classic upload.

Resumable uploads (jobs/web/tus.py) send videos in chunks of at most GEDGE_MAX_CHUNK_BYTES, so no request needs
a large body but the classic one-request upload (`POST /api/jobs/`, and the no-script form's `POST /upload/`),
kept for small files and curl. A body declared larger than GEDGE_MAX_BODY_BYTES anywhere else, or on those two
URLs without a signed-in user (session or API token), is answered 413 before any view parses it.

Daphne receives a whole request body before the application sees the request, so this cannot stop the bytes
from arriving; what stops them in production is the ingress in front, which applies the same rule at the edge
(k8s/base/ingress.yaml; docs/deploy.md, "Request bodies"), with the same endpoint deciding "signed in"
(`GET /api/auth/check/`). On one machine (`make run`) the web process is the edge: a large body to any URL is
held by Daphne until it is refused here (docs/upstream.md, "Daphne: request bodies").
"""
from __future__ import annotations

from django.conf import settings
from django.http import JsonResponse
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

CLASSIC_UPLOADS = frozenset({"/api/jobs/", "/upload/"})


def signed_in(request) -> bool:
    """A session user, or a valid `Authorization: Token ...` (DRF's own check)."""
    if getattr(request, "user", None) is not None and request.user.is_authenticated:
        return True
    try:
        return TokenAuthentication().authenticate(request) is not None
    except AuthenticationFailed:
        return False


class BodyLimitMiddleware:
    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        declared = request.META.get("CONTENT_LENGTH") or "0"
        size = int(declared) if declared.isdigit() else 0
        if size > settings.GEDGE_MAX_BODY_BYTES and not self._may_be_large(request):
            return JsonResponse({"error": {"code": "too_large", "message": (
                f"request bodies are limited to {settings.GEDGE_MAX_BODY_BYTES} bytes; send videos with a "
                f"resumable upload (/api/uploads/, tus) or, signed in, to POST /api/jobs/")}}, status=413)
        return self.get_response(request)

    @staticmethod
    def _may_be_large(request) -> bool:
        return request.method == "POST" and request.path in CLASSIC_UPLOADS and signed_in(request)
