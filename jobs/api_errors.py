"""Every API error in one shape: {"error": {"code": "...", "message": "...", "detail": ...}}."""
from __future__ import annotations

from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


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
    exceptions.Throttled: "throttled",
    exceptions.ValidationError: "invalid",
    exceptions.ParseError: "parse_error",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
}


def exception_handler(exc, context):
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    code = getattr(exc, "error_code", None) or next(
        (name for cls, name in _CODES.items() if isinstance(exc, cls)), "error"
    )
    detail = response.data
    if isinstance(exc, ApiError) or (isinstance(detail, dict) and set(detail) == {"detail"}):
        message = str(exc.detail if isinstance(exc, ApiError) else detail["detail"])
        payload = {"code": code, "message": message}
    else:
        payload = {"code": code, "message": "the request is not valid", "detail": detail}
    return Response({"error": payload}, status=response.status_code, headers=_headers(response))


def _headers(response: Response) -> dict:
    return {k: v for k, v in response.items() if k in ("Retry-After", "WWW-Authenticate", "Allow")}
