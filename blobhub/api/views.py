"""The base of every /v1/ view, and the routes that belong to no app."""

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from blobhub.api import idempotency
from blobhub.api.errors import InvalidRequest, error_body
from blobhub.api.pagination import paginate
from blobhub.api.serializers import PageQuerySerializer, parse


def success(status: int = 200, headers: dict | None = None, **payload) -> Response:
    """The success envelope: `{"status": "success", <name>: <resource>}`."""
    return Response({"status": "success", **payload}, status=status, headers=headers)


def paginated(request: Request, queryset, key: str, out, *, newest_first: bool = False, query=None) -> Response:
    """One page of `queryset` rendered with the serializer `out`, as `{key: [...], cursor?}`.
    `query` is the parameters when the view parsed them itself (with a QuerySerializer)."""
    params = query if query is not None else parse(PageQuerySerializer, request.query_params)
    request.query_parsed = True  # see ApiView.finalize_response
    page = paginate(queryset, limit=params.get("limit"), cursor=params.get("cursor"), newest_first=newest_first)
    return success(**page.payload(key, lambda item: out(item).data))


STALE = "stale"  # what an If-Match that names no etag becomes: it matches no row (a 412)


def if_match(request: Request) -> str | None:
    """The etag a write is based on, from `If-Match` (quotes and W/ are accepted)."""
    value = request.META.get("HTTP_IF_MATCH")
    if value is None:
        return None
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"')
    # Etags are hex; anything else (a NUL, which PostgreSQL text cannot hold) matches no row.
    return value if value == "*" or value.isalnum() and value.isascii() else STALE


def etag_header(etag: str) -> dict:
    return {"ETag": f'"{etag}"'}


def _no_query_parameters(request: Request) -> InvalidRequest:
    return InvalidRequest(
        "This route takes no query parameters.",
        [{"path": name, "message": "Unknown parameter."} for name in sorted(request.query_params)],
    )


class ApiView(APIView):
    """Adds `Idempotency-Key` handling to DRF's APIView, and refuses query parameters where
    the view reads none (lists read theirs through `paginated`, which refuses unknown ones)."""

    honours_idempotency_key = True
    _idempotency_record = None

    def initial(self, request: Request, *args, **kwargs) -> None:
        key = idempotency.requested_key(request) if self.honours_idempotency_key else None
        # Hash the raw body before anything parses it (parsing consumes the stream).
        request_fingerprint = idempotency.fingerprint(request._request) if key is not None else None
        super().initial(request, *args, **kwargs)
        if request.query_params and request.method not in ("GET", "HEAD"):
            raise _no_query_parameters(request)  # only lists take parameters
        if key is not None:
            # Only now, so that a caller without valid credentials hears its 401 first.
            caller = getattr(request.auth, "caller_id", None) or f"ip:{request.META.get('REMOTE_ADDR')}"
            self._idempotency_record = idempotency.begin(caller, key, request_fingerprint)

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, idempotency.Replay):
            return Response(exc.body, status=exc.status, headers={"Idempotent-Replayed": "true"})
        return super().handle_exception(exc)

    def finalize_response(self, request: Request, response, *args, **kwargs):
        # Which reads take parameters shows only once they ran: a read changes nothing, so
        # refusing the answer afterwards is as good as refusing the request.
        if request.query_params and response.status_code < 300 and not getattr(request, "query_parsed", False):
            response = self.handle_exception(_no_query_parameters(request))
        record, self._idempotency_record = self._idempotency_record, None
        if record is not None:
            idempotency.finish(record, response.status_code, self.replayable(getattr(response, "data", None)))
        return super().finalize_response(request, response, *args, **kwargs)

    def replayable(self, body):
        """The answer as stored for Idempotency-Key replays. A view whose answer carries a
        secret leaves it out; returning None stores nothing and releases the key."""
        return body

    def options(self, request: Request, *args, **kwargs) -> Response:
        # DRF's default answers a metadata document outside the envelope.
        return success(headers={"Allow": ", ".join(self.allowed_methods)})


class ApiKeyCreatingApi(ApiView):
    """A view that creates API keys (for an org or for one blob): the answer shows the
    secret, once; it is never stored, so an Idempotency-Key replay names the key without it."""

    def created(self, api_key, secret: str, serializer) -> Response:
        api_key.key = secret
        return success(201, api_key=serializer(api_key).data)

    def replayable(self, body):
        if isinstance(body, dict) and isinstance(body.get("api_key"), dict):
            return {**body, "api_key": {k: v for k, v in body["api_key"].items() if k != "key"}}
        return body


@csrf_exempt  # otherwise a POST without a CSRF token gets Django's HTML 403 instead of this 404
def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse(error_body("not_found", "There is no such route."), status=404)


def server_error(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        error_body("internal_error", "The server failed to handle the request; it has been logged."), status=500
    )


def bad_request(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse(error_body("invalid_request_body", "The request is malformed."), status=400)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse(error_body("access_denied", "You may not access this resource."), status=403)
