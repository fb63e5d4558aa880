"""Putting and getting content on behalf of an organization.

Both surfaces store through here, so a value gets one id wherever it comes from: JSON
as `canonical_json`, text as UTF-8, binary as its bytes. The org's hold (ObjectRef)
remembers how the object was put (its kind, filename and content type) so that a read
can answer in the same terms.
"""

import asyncio
import codecs
import mimetypes
import re
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from django.db import models

from blobhub.api.errors import ApplicationError
from blobs import store
from blobs.models import ObjectRef, StoredObject
from orgs.models import Organization

BLOB_ID = re.compile(r"^[0-9a-fA-F]{64}\Z")
FILENAME_MAX = 255
JSON_CONTENT_TYPE = "application/json"
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"
BINARY_CONTENT_TYPE = "application/octet-stream"
READ_AHEAD = 4


class Kind(models.TextChoices):
    """How an org put an object. Stepflow puts data/flow/binary, Skills text/json/binary."""

    DATA = "data"
    FLOW = "flow"
    BINARY = "binary"
    TEXT = "text"
    JSON = "json"


JSON_KINDS = (Kind.DATA, Kind.FLOW, Kind.JSON)


@dataclass(frozen=True)
class HeldObject:
    """An object the org holds, with what its put recorded."""

    obj: StoredObject
    kind: str
    filename: str
    content_type: str

    @property
    def blob_id(self) -> str:
        return self.obj.sha256

    @property
    def size(self) -> int:
        return self.obj.size


class BlobNotFound(ApplicationError):
    def __init__(self, blob_id: str):
        super().__init__("blob_not_found", f"Blob '{blob_id}' not found.", status=404)


def parse_blob_id(value: str) -> str | None:
    """The canonical (lowercase hex) id, or None when `value` is not a SHA-256 in hex."""
    return value.lower() if isinstance(value, str) and BLOB_ID.match(value) else None


def check_filename(filename: str) -> str:
    if len(filename) > FILENAME_MAX:
        raise ApplicationError(
            "invalid_request_body", f"The filename is longer than {FILENAME_MAX} characters."
        )
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in filename):
        raise ApplicationError("invalid_request_body", "The filename must not contain control characters.")
    return filename


def guess_content_type(filename: str) -> str:
    guessed, _ = mimetypes.guess_type(filename) if filename else (None, None)
    return guessed or BINARY_CONTENT_TYPE


# --- Writes -------------------------------------------------------------------------------


def content_put_json(*, org: Organization, value: Any, kind: str = Kind.DATA, filename: str = "") -> StoredObject:
    return store.put_json(
        value, org=org, kind=kind, filename=check_filename(filename), content_type=JSON_CONTENT_TYPE
    )


def content_put_text(*, org: Organization, text: str) -> StoredObject:
    return store.put_bytes(text.encode("utf-8"), org=org, kind=Kind.TEXT, content_type=TEXT_CONTENT_TYPE)


def content_put_bytes(*, org: Organization, data: bytes, filename: str = "", content_type: str = "") -> StoredObject:
    return content_put_stream(org=org, chunks=[data], filename=filename, content_type=content_type)


def content_put_stream(
    *,
    org: Organization,
    chunks: Iterable[bytes],
    filename: str = "",
    content_type: str = "",
    max_size: int | None = None,
) -> StoredObject:
    """Store binary content as it arrives; memory stays bounded whatever its size."""
    filename = check_filename(filename)
    return store.put_stream(
        chunks,
        max_size=max_size,
        org=org,
        kind=Kind.BINARY,
        filename=filename,
        content_type=content_type or guess_content_type(filename),
    )


# --- Reads --------------------------------------------------------------------------------


def content_get(*, org: Organization, blob_id: str) -> HeldObject:
    """The object if the org holds it; any other id is not found, even if stored for others."""
    obj = store.object_for_org(org, blob_id)
    if obj is None:
        raise BlobNotFound(blob_id)
    ref = ObjectRef.objects.filter(org=org, object=obj).only("kind", "filename", "content_type").first()
    if ref is None:
        # Held only through a revision's manifest: plain bytes, named by nothing.
        return HeldObject(obj, Kind.BINARY, "", BINARY_CONTENT_TYPE)
    return HeldObject(obj, ref.kind, ref.filename, ref.content_type)


def read_all(held: HeldObject, max_size: int | None = None) -> bytes:
    """The verified bytes (the store raises rather than return corrupted ones)."""
    return store.read_bytes(held.obj, max_size=max_size)


def stream(held: HeldObject) -> Iterator[bytes]:
    """The verified bytes in chunks; a corrupted object ends the stream with an error
    before its last chunk, so no reader ever gets a complete, wrong copy."""
    return store.open_object(held.obj)


async def stream_async(held: HeldObject) -> AsyncIterator[bytes]:
    """`stream` for the ASGI handler: chunks are read and hashed in a worker thread.

    Django consumes a synchronous iterator whole before sending it under ASGI, which
    would hold the object in memory. Here READ_AHEAD chunks are read ahead: the thread
    reads and hashes while the server sends, so verification and sending overlap, and
    memory stays at a few chunks.
    """
    chunks = stream(held)
    done = object()
    loop = asyncio.get_running_loop()
    # One thread of its own runs the reads in order, and closing waits for reads in flight.
    reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="blob-read")
    pending = deque(loop.run_in_executor(reader, next, chunks, done) for _ in range(READ_AHEAD))
    try:
        while (chunk := await pending.popleft()) is not done:
            pending.append(loop.run_in_executor(reader, next, chunks, done))
            yield chunk
    finally:
        # An early close (the client left) abandons the reads ahead; their outcome is moot.
        for future in pending:
            future.add_done_callback(lambda future: future.cancelled() or future.exception())
        reader.submit(chunks.close)
        reader.shutdown(wait=False)


def sample_head(held: HeldObject, max_bytes: int) -> bytes:
    return store.read_range(held.obj, 0, max_bytes)


def sample_tail(held: HeldObject, max_bytes: int) -> bytes:
    start = max(held.size - max_bytes, 0)
    return store.read_range(held.obj, start, held.size - start)


def decode_head(data: bytes) -> str:
    """UTF-8 text of a head sample, without the character the cut may have split."""
    return codecs.getincrementaldecoder("utf-8")(errors="replace").decode(data, final=False)


def decode_tail(data: bytes) -> str:
    """UTF-8 text of a tail sample, without the character the cut may have split."""
    skip = 0
    # Continuation bytes (10xxxxxx) at the start belong to a character cut in two.
    while skip < min(3, len(data)) and data[skip] & 0xC0 == 0x80:
        skip += 1
    return data[skip:].decode("utf-8", errors="replace")
