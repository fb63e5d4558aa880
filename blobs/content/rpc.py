"""The Skills Protocol blob methods over JSON-RPC 2.0: `POST /v1/rpc`.

`create_blob {content, kind}` stores text, JSON (canonical, so it shares ids with the
Stepflow surface) or base64 binary; `read_blob {blob_id, mode, max_bytes}` answers a
head or tail sample, or the whole blob up to SKILLS_READ_FULL_MAX_BYTES.

Every outcome that is a JSON-RPC response travels with HTTP 200 (204 when only
notifications were sent). Failures before a request can be read (credentials, rate
limits, an oversized body) keep their HTTP status and carry a JSON-RPC error with id null.
Application errors use codes -32000 - (HTTP status % 100): -32003 access denied,
-32004 not found, -32013 too large; `data.error` holds this project's error code.
"""

import base64
import binascii
import json
import logging
import math
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from blobhub.api.errors import ApplicationError, exception_handler, validation_details
from blobhub.api.parsers import is_text, strings
from blobhub.api.serializers import parse
from blobs import store
from blobs.content import services
from blobs.content.caller import ORG_HEADER, caller_org
from blobs.content.serializers import CreateBlobParams, ReadBlobParams
from blobs.content.services import JSON_KINDS, Kind
from orgs.authentication import principal_of
from orgs.models import Organization, Role
from orgs.principal import Principal

logger = logging.getLogger("blobhub.rpc")

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
MAX_BATCH = 50
SKILLS_ID_PREFIX = "blob:"
REQUEST_MEMBERS = {"jsonrpc", "method", "params", "id"}


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: dict | None = None):
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


def error_response(request_id: Any, error: RpcError) -> dict:
    body = {"code": error.code, "message": error.message}
    if error.data:
        body["data"] = error.data
    return {"jsonrpc": "2.0", "error": body, "id": request_id}


def code_for_status(status: int) -> int:
    """The JSON-RPC code of an application error: -32000 - (HTTP status % 100), or internal."""
    return INTERNAL_ERROR if status >= 500 else -32000 - (status % 100)


def from_application_error(exc: ApplicationError) -> RpcError:
    data = {"error": exc.code, "status": exc.status, **exc.extra}
    if exc.details:
        data["details"] = exc.details
    return RpcError(code_for_status(exc.status), exc.message, data)


class CallContext:
    """What every call of one HTTP request shares: who calls, and their org per role."""

    def __init__(self, principal: Principal, org_header: str | None):
        self.principal = principal
        self.org_header = org_header

    def org(self, needed: Role) -> Organization:
        return caller_org(self.principal, self.org_header, needed)


# --- Methods ------------------------------------------------------------------------------


def create_blob(params: dict, context: CallContext) -> dict:
    data = parse(CreateBlobParams, params)
    kind, content = data["kind"], data["content"]
    if kind == Kind.TEXT:
        obj = services.content_put_text(org=context.org(Role.WRITE), text=_text(content))
    elif kind == Kind.JSON:
        obj = _put_json(content, context)
    else:
        obj = services.content_put_bytes(org=context.org(Role.WRITE), data=_base64_bytes(content))
    return {"blob_id": SKILLS_ID_PREFIX + obj.sha256, "size_bytes": obj.size}


def read_blob(params: dict, context: CallContext) -> dict:
    data = parse(ReadBlobParams, params)
    blob_id = parse_skills_id(data["blob_id"])
    if blob_id is None:
        raise RpcError(
            INVALID_PARAMS,
            "Invalid params: blob_id must be 'blob:' followed by the 64 hexadecimal characters of a SHA-256.",
            {"details": [{"path": "blob_id", "message": "Not a blob id."}]},
        )
    held = services.content_get(org=context.org(Role.READ), blob_id=blob_id)
    kind = skills_kind(held.kind)
    mode, max_bytes = data["mode"], data["max_bytes"]
    if mode == "full":
        raw, truncated = _read_full(held), False
    elif mode == "sample_head":
        raw, truncated = services.sample_head(held, max_bytes), held.size > max_bytes
    else:
        raw, truncated = services.sample_tail(held, max_bytes), held.size > max_bytes
    return {"content": _content(raw, kind, mode), "truncated": truncated, "kind": kind, "size_bytes": held.size}


METHODS: dict[str, Callable[[dict, CallContext], dict]] = {"create_blob": create_blob, "read_blob": read_blob}


def parse_skills_id(value: str) -> str | None:
    """`blob:<sha256>`; a bare SHA-256 (a Stepflow blobId) is accepted too."""
    if value.startswith(SKILLS_ID_PREFIX):
        value = value[len(SKILLS_ID_PREFIX):]
    return services.parse_blob_id(value)


def skills_kind(kind: str) -> str:
    if kind in JSON_KINDS:
        return Kind.JSON.value
    return Kind.TEXT.value if kind == Kind.TEXT else Kind.BINARY.value


def _text(content: Any) -> str:
    if not isinstance(content, str):
        raise _invalid_content("For kind text, content must be a string.")
    return content


def _put_json(content: Any, context: CallContext):
    try:
        return services.content_put_json(org=context.org(Role.WRITE), value=content, kind=Kind.JSON)
    except store.NotJson as exc:
        raise _invalid_content(exc.message) from exc


def _base64_bytes(content: Any) -> bytes:
    if not isinstance(content, str):
        raise _invalid_content("For kind binary, content must be a base64 string.")
    try:
        return base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _invalid_content("For kind binary, content must be valid standard base64.") from exc


def _invalid_content(message: str) -> RpcError:
    return RpcError(INVALID_PARAMS, f"Invalid params: {message}", {"details": [{"path": "content", "message": message}]})


def _read_full(held: services.HeldObject) -> bytes:
    limit = settings.SKILLS_READ_FULL_MAX_BYTES
    if held.size > limit:
        raise ApplicationError(
            "blob_too_large",
            f"The blob is {held.size} bytes and full reads stop at {limit}: read a sample_head or sample_tail.",
            status=413,
            extra={"limit": limit, "size_bytes": held.size},
        )
    return services.read_all(held)


def _content(raw: bytes, kind: str, mode: str) -> str:
    """Text and JSON as text, cut on a character boundary; binary as standard base64."""
    if kind == Kind.BINARY:
        return base64.b64encode(raw).decode("ascii")
    if mode == "sample_head":
        return services.decode_head(raw)
    if mode == "sample_tail":
        return services.decode_tail(raw)
    return raw.decode("utf-8", errors="replace")


# --- Dispatch -----------------------------------------------------------------------------


def handle_payload(payload: Any, context: CallContext) -> dict | list | None:
    """The response to a parsed body: one object, a list for a batch, None for notifications."""
    if not isinstance(payload, list):
        return handle_request(payload, context)
    if not payload:
        return error_response(None, RpcError(INVALID_REQUEST, "Invalid Request: the batch is empty."))
    if len(payload) > MAX_BATCH:
        return error_response(
            None, RpcError(INVALID_REQUEST, f"Invalid Request: a batch holds at most {MAX_BATCH} requests.")
        )
    responses = [response for item in payload if (response := handle_request(item, context)) is not None]
    return responses or None


def handle_request(request: Any, context: CallContext) -> dict | None:
    try:
        request_id = _check_request(request)
    except RpcError as error:
        # An invalid request is answered even without an id; the id is echoed when usable.
        usable = isinstance(request, dict) and _valid_id(request.get("id"))
        return error_response(request.get("id") if usable else None, error)
    outcome = _run(request["method"], request.get("params", {}), context)
    if "id" not in request:
        return None  # a notification: never answered, not even with an error
    if isinstance(outcome, RpcError):
        return error_response(request_id, outcome)
    return {"jsonrpc": "2.0", "result": outcome, "id": request_id}


def _check_request(request: Any) -> Any:
    if not isinstance(request, dict):
        raise RpcError(INVALID_REQUEST, "Invalid Request: a request is a JSON object.")
    if not all(is_text(item) for item in strings(request)):
        # Before anything runs or is echoed (the id, a method or member name, a value in a message).
        raise RpcError(INVALID_REQUEST, "Invalid Request: a string holds a lone UTF-16 surrogate, which is not text.")
    if request.get("jsonrpc") != "2.0":
        raise RpcError(INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be exactly "2.0".')
    if not isinstance(request.get("method"), str):
        raise RpcError(INVALID_REQUEST, 'Invalid Request: "method" must be a string.')
    if "id" in request and not _valid_id(request["id"]):
        raise RpcError(INVALID_REQUEST, 'Invalid Request: "id" must be a string, a number or null.')
    if "params" in request and not isinstance(request["params"], (dict, list)):
        raise RpcError(INVALID_REQUEST, 'Invalid Request: "params" must be an object or an array.')
    unknown = sorted(set(request) - REQUEST_MEMBERS)
    if unknown:
        raise RpcError(INVALID_REQUEST, f"Invalid Request: unknown member(s) {', '.join(unknown)}.")
    return request.get("id")


def _valid_id(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)  # 1e400 parses as infinity, which no response can echo
    if isinstance(value, str):
        return is_text(value)  # nor a lone surrogate
    return value is None or (isinstance(value, int) and not isinstance(value, bool))


def _run(method: str, params: dict | list, context: CallContext) -> Any:
    """The method's result, or the RpcError it ended with."""
    handler = METHODS.get(method)
    if handler is None:
        return RpcError(METHOD_NOT_FOUND, f"Method not found: {method}.", {"methods": sorted(METHODS)})
    if isinstance(params, list):
        return RpcError(INVALID_PARAMS, "Invalid params: pass them by name, as an object.")
    try:
        return handler(params, context)
    except RpcError as error:
        return error
    except ValidationError as exc:
        details = validation_details(exc.detail)
        message = "; ".join(f"{item['path'] or 'params'}: {item['message']}" for item in details[:3])
        return RpcError(INVALID_PARAMS, f"Invalid params: {message}", {"details": details})
    except ApplicationError as exc:
        return from_application_error(exc)
    except Exception:  # a fault of ours; the caller gets a clean internal error, the log the trace
        logger.exception("JSON-RPC method %s failed", method)
        return RpcError(INTERNAL_ERROR, "Internal error: the server failed to handle the call; it has been logged.")


# --- The endpoint -------------------------------------------------------------------------


def rpc_exception_handler(exc: Exception, context: dict) -> Response:
    """Failures before any request is read, as a JSON-RPC error with the HTTP status kept."""
    response = exception_handler(exc, context)
    envelope = response.data
    data = {"error": envelope["error"], "status": response.status_code}
    error = RpcError(code_for_status(response.status_code), envelope["message"], data)
    response.data = error_response(None, error)
    return response


RPC_BODY = inline_serializer(
    "JsonRpcRequest",
    {
        "jsonrpc": serializers.CharField(default="2.0"),
        "method": serializers.ChoiceField(choices=sorted(METHODS)),
        "params": serializers.DictField(),
        "id": serializers.CharField(required=False),
    },
)


class RpcApi(APIView):
    parser_classes: list = []

    def get_exception_handler(self):
        return rpc_exception_handler

    @extend_schema(
        operation_id="skillsRpc",
        tags=["Skills"],
        request=RPC_BODY,
        responses={200: OpenApiResponse(description="A JSON-RPC 2.0 response (or a list for a batch)"), 204: None},
    )
    def post(self, request: Request) -> HttpResponse:
        if not settings.BLOB_API_ENABLED:
            raise ApplicationError("not_found", "There is no such route.", status=404)
        principal = principal_of(request)
        try:
            payload = json.loads(request._request.body, parse_constant=_refuse_constant)
        except (ValueError, UnicodeDecodeError) as exc:
            return Response(error_response(None, RpcError(PARSE_ERROR, f"Parse error: {exc}.")))
        except RecursionError:
            return Response(error_response(None, RpcError(PARSE_ERROR, "Parse error: the JSON is nested too deeply.")))
        outcome = handle_payload(payload, CallContext(principal, request.META.get(ORG_HEADER)))
        if outcome is None:
            return HttpResponse(status=204)
        return Response(outcome)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")
