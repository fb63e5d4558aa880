"""This server's own part endpoints for the file store (signed URLs, no API key)."""

import asyncio
from collections.abc import AsyncIterator, Iterator
from uuid import UUID

from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from blobhub.api.errors import error_body
from blobs import store
from blobs.models import ManifestEntry, Operation, StoredObject
from blobs.storage import FileBackend, backend
from onnx_models import transfers


def _refused() -> JsonResponse:
    # One answer for tampered, expired and unknown: the URL is the only credential.
    return JsonResponse(error_body("access_denied", "The part URL is invalid or has expired."), status=403)


@csrf_exempt
@require_http_methods(["PUT"])
def upload_part(request: HttpRequest, operation_id: str, index: int) -> HttpResponse:
    part = transfers.verify("upload", operation_id, index, request.GET)
    if part is None:
        return _refused()
    operation = Operation.objects.filter(id=operation_id, type="upload", status=Operation.Status.PENDING).first()
    if operation is None or operation.arguments.get("completing"):
        return JsonResponse(error_body("upload_not_open", "The upload is no longer open."), status=409)
    try:
        etag = transfers.store_part(operation_id, part, request)
    except ValueError as exc:
        return JsonResponse(error_body("invalid_request_body", str(exc)), status=400)
    response = JsonResponse({"status": "success", "part": {"index": index, "size": part.size, "hash": etag}})
    response["ETag"] = f'"{etag}"'
    return response


@require_http_methods(["GET"])
def download_part(request: HttpRequest, revision_id: UUID, sha256: str, index: int) -> HttpResponse:
    part = transfers.verify("download", f"{revision_id}/{sha256}", index, request.GET)
    if part is None:
        return _refused()
    # The object must still belong to the revision the URL was made for.
    if not ManifestEntry.objects.filter(revision_id=revision_id, object_id=sha256).exists():
        return _refused()
    obj = StoredObject.objects.get(sha256=sha256)
    if obj.inline is not None:
        chunks = [bytes(obj.inline)[part.offset : part.offset + part.size]]
    elif isinstance(backend(), FileBackend):
        chunks = backend().open_range(sha256, part.offset, part.size)
        if isinstance(request, ASGIRequest):
            chunks = _in_thread(chunks)
    else:
        chunks = [store.read_range(obj, part.offset, part.size)]
    response = StreamingHttpResponse(chunks, content_type="application/octet-stream")
    response["Content-Length"] = str(part.size)
    response["X-Object-Sha256"] = sha256
    return response


async def _in_thread(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """The chunks, each read in a worker thread. Under ASGI, Django collects a synchronous
    iterator whole before sending it: a part would sit in memory."""
    done = object()
    try:
        while (chunk := await asyncio.to_thread(next, chunks, done)) is not done:
            yield chunk
    finally:
        await asyncio.to_thread(chunks.close)
