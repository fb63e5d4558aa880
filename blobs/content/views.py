"""The Stepflow BlobService REST surface: `POST /api/v1/blobs`, `GET /api/v1/blobs/{blob_id}`.

Field names, content negotiation and status codes follow Stepflow's server so that its
clients work unchanged: answers are bare JSON objects (no envelope), and errors carry
Stepflow's `{code, message}` next to this project's `{status, error, message, details}`.
Binary uploads stream from the request body to disk; downloads stream from the store.
"""

import base64
import binascii
import json
from collections.abc import Iterator

from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpResponse, StreamingHttpResponse
from django.utils.http import content_disposition_header
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from blobhub.api.errors import ApplicationError, exception_handler
from blobhub.api.serializers import parse
from blobs.content import services
from blobs.content.caller import ORG_HEADER, caller_org
from blobs.content.serializers import GetBlobOut, StepflowErrorOut, StoreBlobIn, StoreBlobOut
from blobs.content.services import JSON_KINDS, Kind
from blobs.storage import CHUNK
from orgs.authentication import principal_of
from orgs.models import Role

OCTET_STREAM = "application/octet-stream"
ORG_PARAMETER = OpenApiParameter(
    "X-BlobHub-Org",
    str,
    location=OpenApiParameter.HEADER,
    description="The organization (id or alias) a user acts in; API keys use their own",
)
STEPFLOW_ERRORS = {code: OpenApiResponse(StepflowErrorOut) for code in (400, 401, 403, 404, 406, 413, 429, 500)}


def stepflow_exception_handler(exc: Exception, context: dict) -> Response:
    """The project's error envelope with Stepflow's `code` (the HTTP status) added."""
    response = exception_handler(exc, context)
    response.data = {"code": response.status_code, **response.data}
    return response


class JsonAnswers(BaseContentNegotiation):
    """JSON for every answer DRF renders: raw bytes are negotiated by the view itself,
    so `Accept: application/octet-stream` must not turn errors into a 406."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class StepflowApi(APIView):
    """Stepflow's error shape, and 404 when this server does not serve the blob routes."""

    content_negotiation_class = JsonAnswers

    def get_exception_handler(self):
        return stepflow_exception_handler

    def initial(self, request: Request, *args, **kwargs) -> None:
        if not settings.BLOB_API_ENABLED:
            raise ApplicationError("not_found", "There is no such route.", status=404)
        super().initial(request, *args, **kwargs)

    def org(self, request: Request, needed: Role):
        return caller_org(principal_of(request), request.META.get(ORG_HEADER), needed)


class BlobStoreApi(StepflowApi):
    # The body is read here, raw: JSON is parsed by hand and binary streamed to disk.
    parser_classes: list = []

    @extend_schema(
        operation_id="storeBlob",
        tags=["Blob"],
        parameters=[
            ORG_PARAMETER,
            OpenApiParameter("X-Blob-Filename", str, location=OpenApiParameter.HEADER, description="binary uploads"),
        ],
        request={"application/json": StoreBlobIn, OCTET_STREAM: OpenApiTypes.BINARY},
        responses={200: StoreBlobOut, **STEPFLOW_ERRORS},
    )
    def post(self, request: Request) -> Response:
        org = self.org(request, Role.WRITE)
        if _media_type(request.META.get("CONTENT_TYPE", "")) == OCTET_STREAM:
            filename = _header_text(request.META.get("HTTP_X_BLOB_FILENAME", ""))
            obj = services.content_put_stream(
                org=org, chunks=_body_chunks(request), filename=filename, max_size=settings.BLOB_MAX_BYTES
            )
        else:
            data = parse(StoreBlobIn, _json_body(request))
            filename = data.get("filename") or ""
            obj = _store_json(org, data, filename)
        return Response(_without_empty({"blobId": obj.sha256, "filename": filename}))


class BlobDetailApi(StepflowApi):
    @extend_schema(
        operation_id="getBlob",
        tags=["Blob"],
        parameters=[ORG_PARAMETER],
        responses={(200, "application/json"): GetBlobOut, (200, OCTET_STREAM): OpenApiTypes.BINARY, **STEPFLOW_ERRORS},
    )
    def get(self, request: Request, blob_id: str):
        canonical = services.parse_blob_id(blob_id)
        if canonical is None:
            raise ApplicationError(
                "invalid_blob_id", "A blob id is the SHA-256 of the content: 64 hexadecimal characters."
            )
        held = services.content_get(org=self.org(request, Role.READ), blob_id=canonical)
        if wants_octet_stream(request.META.get("HTTP_ACCEPT", "")):
            return _raw_response(request, held)
        return Response(_json_answer(held))


# --- Request side -------------------------------------------------------------------------


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _header_text(value: str) -> str:
    """A header value as text: servers decode headers as Latin-1, clients send UTF-8."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def _body_chunks(request: Request) -> Iterator[bytes]:
    # request.read, never request.body: the body may be gigabytes, spooled on disk.
    while chunk := request._request.read(CHUNK):
        yield chunk


def _json_body(request: Request):
    # request.body is bounded by DATA_UPLOAD_MAX_MEMORY_SIZE (413 past it).
    raw = request._request.body
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApplicationError("invalid_request_body", f"Invalid JSON request: {exc}.") from exc


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _store_json(org, data: dict, filename: str):
    blob_type, value = data["blobType"], data["data"]
    if blob_type == Kind.BINARY:
        return services.content_put_bytes(
            org=org, data=_decode_base64(value), filename=filename, content_type=data.get("contentType") or ""
        )
    if blob_type == Kind.FLOW and not isinstance(value, dict):
        raise ApplicationError("invalid_request_body", "A flow blob's data must be a JSON object (the flow).")
    return services.content_put_json(org=org, value=value, kind=blob_type, filename=filename)


def _decode_base64(value) -> bytes:
    if not isinstance(value, str):
        raise ApplicationError("invalid_request_body", "A binary blob's data must be a base64 string.")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApplicationError("invalid_request_body", "A binary blob's data is not valid base64.") from exc


def _without_empty(payload: dict) -> dict:
    """Stepflow leaves optional fields out rather than sending them empty."""
    return {key: value for key, value in payload.items() if value not in (None, "")}


# --- Answer side --------------------------------------------------------------------------


def wants_octet_stream(accept: str) -> bool:
    """Raw bytes when the client lists application/octet-stream at least as high as JSON.

    Stepflow answers raw whenever Accept mentions application/octet-stream; this also
    honours `q`, so `application/json, application/octet-stream;q=0.1` stays JSON.
    """
    weights: dict[str, float] = {}
    for item in accept.split(","):
        media, *params = [part.strip() for part in item.split(";")]
        weight = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        weights[media.lower()] = max(weight, weights.get(media.lower(), 0.0))
    octet = weights.get(OCTET_STREAM, 0.0)
    return octet > 0 and octet >= weights.get("application/json", 0.0)


def blob_type_of(kind: str) -> str:
    """Stepflow's blobType for how the object was put (JSON kinds are data, text is binary)."""
    if kind == Kind.FLOW:
        return Kind.FLOW.value
    return Kind.DATA.value if kind in JSON_KINDS else Kind.BINARY.value


def _json_answer(held: services.HeldObject) -> dict:
    blob_type = blob_type_of(held.kind)
    if held.size > settings.BLOB_JSON_READ_MAX_BYTES:
        raise ApplicationError(
            "not_acceptable",
            f"The blob is {held.size} bytes, more than the {settings.BLOB_JSON_READ_MAX_BYTES} a JSON answer "
            "carries: ask for it with Accept: application/octet-stream.",
            status=406,
        )
    raw = services.read_all(held)
    data = json.loads(raw) if blob_type != Kind.BINARY else base64.b64encode(raw).decode("ascii")
    answer = {"data": data, "blobType": blob_type, "blobId": held.blob_id}
    return answer | _without_empty({"filename": held.filename, "contentType": held.content_type})


def _raw_response(request: Request, held: services.HeldObject) -> HttpResponse:
    headers = {
        "Content-Length": str(held.size),
        "x-blob-type": blob_type_of(held.kind),
        # Content-addressed: the bytes under an id never change.
        "ETag": f'"{held.blob_id}"',
        "Cache-Control": "private, max-age=31536000, immutable",
    }
    if held.filename:
        headers["Content-Disposition"] = content_disposition_header(True, held.filename)
    if held.obj.inline is not None:
        # Small enough to verify before answering, so corruption is a clean 500.
        return HttpResponse(services.read_all(held), content_type=OCTET_STREAM, headers=headers)
    # A corrupted object fails the stream before its last chunk: with Content-Length
    # set, the client sees a short, broken answer, never a complete wrong one.
    content = services.stream_async(held) if isinstance(request._request, ASGIRequest) else services.stream(held)
    return StreamingHttpResponse(content, content_type=OCTET_STREAM, headers=headers)
