"""Every API error in one shape: {"error": {"code": "...", "message": "...", "detail": ...}}.

DRF views go through ``exception_handler``; what Django answers itself under /api/ (an unknown URL, a crash,
an oversized form) is rewritten into the same shape by ``ApiErrorMiddleware``.
"""
from __future__ import annotations

import math
from http import HTTPStatus

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import (
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.db import DatabaseError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from redis.exceptions import RedisError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

API_PREFIX = "/api/"


class ApiError(exceptions.APIException):
    def __init__(self, code: str, message: str, http_status: int = status.HTTP_400_BAD_REQUEST):
        super().__init__(detail=message, code=code)
        self.status_code = http_status
        self.error_code = code


_CODES = {
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.Throttled: "throttled",
    exceptions.ValidationError: "invalid",
    exceptions.ParseError: "parse_error",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
}

# Status -> code for responses Django produced without DRF (no exception object to look at).
_CODES_BY_STATUS = {
    400: "bad_request",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    416: "range_not_satisfiable",
    429: "throttled",
    500: "server_error",
}
# Headers a client needs to act on the error; everything else of the original response is dropped.
_KEPT_HEADERS = ("Retry-After", "WWW-Authenticate", "Allow", "Content-Range")


def _from_django(exc: Exception) -> ApiError | None:
    """Django's request-parsing refusals, raised while DRF reads request.data."""
    if isinstance(exc, RequestDataTooBig):
        return ApiError("too_large", "the request's form fields are too large",
                        status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, TooManyFieldsSent | TooManyFilesSent):
        return ApiError("too_many_fields", "the request has too many fields or files")
    if isinstance(exc, SuspiciousOperation):
        return ApiError("bad_request", "the request is malformed")
    if isinstance(exc, DatabaseError):  # PostgreSQL restarting or unreachable: nothing was created
        return ApiError("unavailable", "the database is unavailable; try again in a moment",
                        status.HTTP_503_SERVICE_UNAVAILABLE)
    if isinstance(exc, RedisError):
        return ApiError("unavailable", "the job queue is unavailable; try again in a moment",
                        status.HTTP_503_SERVICE_UNAVAILABLE)
    return None


def exception_handler(exc, context):
    exc = _from_django(exc) or exc
    if isinstance(exc, Http404):
        # One answer for "no such job" and "someone else's job", so ids cannot be probed.
        exc = exceptions.NotFound("not found")
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # a crash: Django answers 500, which ApiErrorMiddleware shapes (and Django logs)
    code = getattr(exc, "error_code", None) or next(
        (name for cls, name in _CODES.items() if isinstance(exc, cls)), "error"
    )
    detail = response.data
    if isinstance(exc, exceptions.Throttled):
        wait = math.ceil(exc.wait) if exc.wait is not None else None
        payload = {"code": code, "message": "too many submissions; try again"
                   + (f" in {wait} s" if wait is not None else " later")}
        if wait is not None:
            payload["retry_after_s"] = wait
    elif isinstance(exc, ApiError) or (isinstance(detail, dict) and set(detail) == {"detail"}):
        message = str(exc.detail if isinstance(exc, ApiError) else detail["detail"])
        payload = {"code": code, "message": message}
    else:
        payload = {"code": code, "message": "the request is not valid", "detail": detail}
    return Response({"error": payload}, status=response.status_code, headers=_headers(response))


def _headers(response: HttpResponse) -> dict:
    return {k: v for k, v in response.items() if k in _KEPT_HEADERS}


def error_response(code: str, message: str, http_status: int, headers: dict | None = None) -> JsonResponse:
    response = JsonResponse({"error": {"code": code, "message": message}}, status=http_status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


class ApiErrorMiddleware:
    """Under /api/, turn Django's HTML error pages (unknown URL, 500, ...) into the API's error shape."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            not request.path.startswith(API_PREFIX)
            or response.status_code < 400
            or isinstance(response, Response)  # DRF already answered in the shape (any renderer)
            or response.get("Content-Type", "").startswith("application/json")
        ):
            return response
        code = _CODES_BY_STATUS.get(response.status_code, "error")
        try:
            message = HTTPStatus(response.status_code).phrase.lower()
        except ValueError:
            message = "error"
        return error_response(code, message, response.status_code, _headers(response))
