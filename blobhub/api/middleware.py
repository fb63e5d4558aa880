"""Plumbing that has to run before any view: request body limits."""

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from blobhub.api.errors import PayloadTooLarge, error_body


class BodySizeLimitMiddleware:
    """Refuse a declared body over the limit before anything reads it.

    Bodies without a Content-Length are still bounded: Django raises
    RequestDataTooBig when such a body is read, and the API renders that as 413 too.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.MAX_REQUEST_BODY_BYTES
        length = request.META.get("CONTENT_LENGTH") or "0"
        try:
            declared = int(length)
        except ValueError:
            return JsonResponse(
                error_body("invalid_request_body", "The Content-Length header is not a number."), status=400
            )
        if declared > limit:
            exc = PayloadTooLarge(limit)
            return JsonResponse(error_body(exc.code, exc.message), status=exc.status)
        return self.get_response(request)
