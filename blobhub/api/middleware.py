"""Plumbing that has to run before any view: request body limits."""

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from blobhub.api.errors import PayloadTooLarge, error_body


class BodySizeLimitMiddleware:
    """Refuse a declared body over the limit before anything reads it.

    Bodies without a Content-Length are still bounded: Django raises
    RequestDataTooBig when such a body is read, and the API renders that as 413 too.
    Routes that stream their bodies to disk (binary blob uploads) get a larger limit
    from REQUEST_BODY_LIMITS_BY_PREFIX; they bound undeclared bodies themselves.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = body_limit(request.path)
        length = request.META.get("CONTENT_LENGTH") or "0"
        try:
            declared = int(length)
        except ValueError:
            return _refusal(request, error_body("invalid_request_body", "The Content-Length header is not a number."), 400)
        if declared > limit:
            return JsonResponse(too_large_body(request.path), status=413)
        return self.get_response(request)


# Stepflow's BlobService answers errors as `{code: <HTTP status>, message}`; its routes get
# that field beside the envelope here too, as from their views.
STEPFLOW_PREFIX = "/api/v1/blobs"


def too_large_body(path: str) -> dict:
    """The 413's body for a body over the path's limit (daphne's early refusal sends it too)."""
    exc = PayloadTooLarge(body_limit(path))
    return _for_route(path, error_body(exc.code, exc.message), exc.status)


def _refusal(request: HttpRequest, body: dict, status: int) -> JsonResponse:
    return JsonResponse(_for_route(request.path, body, status), status=status)


def _for_route(path: str, body: dict, status: int) -> dict:
    return {"code": status, **body} if path.startswith(STEPFLOW_PREFIX) else body


def body_limit(path: str) -> int:
    """The body limit of a path: the longest matching prefix's, else the general one."""
    matches = [prefix for prefix in settings.REQUEST_BODY_LIMITS_BY_PREFIX if path.startswith(prefix)]
    if not matches:
        return settings.MAX_REQUEST_BODY_BYTES
    return settings.REQUEST_BODY_LIMITS_BY_PREFIX[max(matches, key=len)]
