"""One error type for the services, one handler that renders every error in the envelope."""

import logging
from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.http import Http404
from rest_framework import exceptions as drf
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger("blobhub.api")


class ApplicationError(Exception):
    """A refusal with a stable `code`, rendered as the failure envelope of API.md §1."""

    status = 400

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        details: list[dict] | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.code = code
        self.message = message
        if status is not None:
            self.status = status
        self.details = details or []
        self.extra = extra or {}
        self.headers = headers or {}


class AccessDenied(ApplicationError):
    """Absent and forbidden look the same, so nothing leaks (API.md §1)."""

    def __init__(self, message: str = "The resource does not exist or you may not access it."):
        super().__init__("access_denied", message, status=403)


class InvalidRequest(ApplicationError):
    def __init__(self, message: str, details: list[dict] | None = None):
        super().__init__("invalid_request_body", message, status=400, details=details)


class Conflict(ApplicationError):
    def __init__(self, code: str, message: str):
        super().__init__(code, message, status=409)


class PreconditionFailed(ApplicationError):
    def __init__(self) -> None:
        super().__init__(
            "precondition_failed",
            "The record changed since you read it: fetch it again and retry.",
            status=412,
        )


class PayloadTooLarge(ApplicationError):
    def __init__(self, limit: int):
        super().__init__(
            "payload_too_large",
            f"The request body is larger than the limit of {limit} bytes.",
            status=413,
        )


def error_body(code: str, message: str, details: list | None = None, **extra: Any) -> dict:
    return {"status": "error", "error": code, "message": message, "details": details or [], **extra}


def validation_details(detail: Any, path: str = "") -> list[dict]:
    """Flatten DRF's nested error structure into `{path, message}` items."""
    if isinstance(detail, dict):
        items = []
        for key, value in detail.items():
            if key in ("non_field_errors", "__all__"):
                child = path
            elif isinstance(key, int):
                child = f"{path}[{key}]"
            else:
                child = f"{path}.{key}" if path else str(key)
            items.extend(validation_details(value, child))
        return items
    if isinstance(detail, list):
        if all(not isinstance(item, (dict, list)) for item in detail):
            return [{"path": path, "message": str(item)} for item in detail]
        items = []
        for index, value in enumerate(detail):
            if value:
                items.extend(validation_details(value, f"{path}[{index}]"))
        return items
    return [{"path": path, "message": str(detail)}]


_DRF_CODES: list[tuple[type[Exception], int, str]] = [
    (drf.ParseError, 400, "invalid_request_body"),
    (drf.NotAuthenticated, 401, "unauthenticated"),
    (drf.AuthenticationFailed, 401, "unauthenticated"),
    (drf.PermissionDenied, 403, "access_denied"),
    (drf.NotFound, 404, "not_found"),
    (drf.MethodNotAllowed, 405, "method_not_allowed"),
    (drf.NotAcceptable, 406, "not_acceptable"),
    (drf.UnsupportedMediaType, 415, "unsupported_media_type"),
    (drf.Throttled, 429, "rate_limited"),
]


def exception_handler(exc: Exception, context: dict) -> Response:
    """DRF's EXCEPTION_HANDLER: every error, expected or not, in the envelope."""
    if isinstance(exc, ApplicationError):
        body = error_body(exc.code, exc.message, exc.details, **exc.extra)
        return Response(body, status=exc.status, headers=exc.headers)
    if isinstance(exc, RecursionError):
        # The JSON parser gives up on absurdly deep nesting; that is the client's body, not a fault.
        return Response(error_body("invalid_request_body", "The JSON body is nested too deeply."), status=400)
    if isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge(_body_limit())
        return Response(error_body(exc.code, exc.message), status=exc.status)
    if isinstance(exc, drf.ValidationError):
        details = validation_details(exc.detail)
        message = "The request is not valid: " + "; ".join(
            f"{item['path'] or 'body'}: {item['message']}" for item in details[:3]
        )
        return Response(error_body("invalid_request_body", message, details), status=400)
    if isinstance(exc, Http404):
        exc = drf.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = drf.PermissionDenied()
    elif isinstance(exc, SuspiciousOperation):
        exc = drf.ParseError("The request is malformed.")
    if isinstance(exc, drf.APIException):
        # DRF's own handler sets Retry-After and WWW-Authenticate; keep its headers.
        base = drf_exception_handler(exc, context)
        headers = dict(base.headers.items()) if base is not None else {}
        headers.pop("Content-Type", None)
        for kind, status, code in _DRF_CODES:
            if isinstance(exc, kind):
                message = _message(exc, code)
                # A body that does not parse is still a 400 that says where: the body itself.
                details = [{"path": "", "message": message}] if kind is drf.ParseError else None
                return Response(error_body(code, message, details), status=status, headers=headers)
        return Response(error_body("error", _message(exc, "error")), status=exc.status_code, headers=headers)
    logger.error("Unhandled exception in %s", _view_name(context), exc_info=exc)
    return Response(
        error_body("internal_error", "The server failed to handle the request; it has been logged."),
        status=500,
    )


def _message(exc: drf.APIException, code: str) -> str:
    if code == "unauthenticated":
        return "Authentication is required: send a valid X-API-Key or Authorization header."
    if code == "access_denied":
        return "The resource does not exist or you may not access it."
    if code == "rate_limited":
        return "Too many requests: retry after the number of seconds in Retry-After."
    text = str(exc.detail) if isinstance(exc.detail, str) else str(exc)
    return text if text.endswith(".") else text + "."


def _view_name(context: dict) -> str:
    view = context.get("view")
    return type(view).__name__ if view is not None else "unknown view"


def _body_limit() -> int:
    from django.conf import settings

    return settings.MAX_REQUEST_BODY_BYTES
