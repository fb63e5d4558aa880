"""The content-addressed store (DESIGN §3): SHA-256 names, written once, verified on read.

Small objects (≤ 64 KiB) live inline in the database; larger ones in the storage
backend. Bytes are streamed through a temp file on the way in and in chunks on the way
out, so memory does not grow with object size. Access is per organization: an org
reaches an object only through a reference it holds (a put of its own, or a manifest
entry of one of its revisions).
"""

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from blobhub.api.errors import ApplicationError
from blobs.models import ManifestEntry, ObjectRef, StoredObject
from blobs.storage import CHUNK, backend
from orgs.models import Organization

logger = logging.getLogger("blobhub.store")

INLINE_LIMIT = 64 * 1024


class CorruptObject(ApplicationError):
    def __init__(self, sha256: str):
        super().__init__(
            "object_corrupted",
            "The stored object does not match its hash; it cannot be served.",
            status=500,
        )
        self.sha256 = sha256


class ObjectTooLarge(ApplicationError):
    def __init__(self, limit: int):
        super().__init__("payload_too_large", f"The object is larger than the limit of {limit} bytes.", status=413)


class NotJson(ApplicationError, ValueError):
    """Still the ValueError json.dumps raises, for callers that catch that to say where."""

    def __init__(self, message: str):
        super().__init__("invalid_request_body", message)


def canonical_json(value: Any) -> bytes:
    """The one serialization of JSON content: sorted keys, no insignificant space, UTF-8."""
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError as exc:
        # Parsers read a number past the float range (1e400) as infinity, which JSON cannot hold.
        raise NotJson(
            "The value holds a number too large for a 64-bit float (such as 1e400); non-finite numbers are not JSON."
        ) from exc
    try:
        return text.encode()
    except UnicodeEncodeError as exc:  # a \ud800 escape parses to a lone surrogate, which UTF-8 cannot hold
        raise NotJson("A string holds a lone UTF-16 surrogate (such as \\ud800), which is not text.") from exc


@dataclass
class _Spool:
    """Bytes being received: in memory while small, in a temp file once larger."""

    digest: Any
    size: int = 0
    head: bytearray | None = None
    path: Path | None = None
    handle: Any = None

    def write(self, chunk: bytes) -> None:
        self.digest.update(chunk)
        self.size += len(chunk)
        if self.handle is None and self.size <= INLINE_LIMIT:
            self.head.extend(chunk)
            return
        if self.handle is None:
            tmp_dir = settings.DATA_DIR / "tmp"
            tmp_dir.mkdir(exist_ok=True)
            fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="upload-")
            self.path, self.handle = Path(name), os.fdopen(fd, "wb")
            self.handle.write(self.head)
            self.head = None
            self.handle.write(chunk)
        else:
            self.handle.write(chunk)

    def finish(self) -> None:
        if self.handle is not None:
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()

    def discard(self) -> None:
        if self.handle is not None and not self.handle.closed:
            self.handle.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def put_stream(chunks: Iterable[bytes], *, max_size: int | None = None, **hold_for: Any) -> StoredObject:
    """Store the bytes once under their SHA-256 and return the object's row.

    With `org=` (and optionally `kind`, `filename`, `content_type`) the org's hold on the
    object is recorded in the same transaction, so the collector cannot slip between.
    """
    spool = _Spool(digest=hashlib.sha256(), head=bytearray())
    try:
        for chunk in chunks:
            spool.write(chunk)
            if max_size is not None and spool.size > max_size:
                raise ObjectTooLarge(max_size)
        spool.finish()
        return _commit(spool.digest.hexdigest(), spool, hold_for)
    finally:
        spool.discard()


def put_file(path: Path, *, sha256: str | None = None, **hold_for: Any) -> StoredObject:
    """Store a finished file's bytes without copying them: the file store links the file
    into place (S3 uploads it). As `put_stream` otherwise.

    `sha256` is the file's hash when the caller took it while writing the file (else it
    is computed here). The file must not change afterwards: it may now be the object.
    """
    size = path.stat().st_size
    if size <= INLINE_LIMIT:
        return put_bytes(path.read_bytes(), **hold_for)
    with open(path, "rb") as handle:
        if sha256 is None:
            digest = hashlib.sha256()
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
            sha256 = digest.hexdigest()
        os.fsync(handle.fileno())
    return _commit(sha256, _Spool(digest=None, size=size, path=path), hold_for)


def put_bytes(data: bytes, **hold_for: Any) -> StoredObject:
    return put_stream([data], **hold_for)


def put_json(value: Any, **hold_for: Any) -> StoredObject:
    return put_bytes(canonical_json(value), **hold_for)


def _commit(sha256: str, spool: _Spool, hold_for: dict) -> StoredObject:
    inline = bytes(spool.head) if spool.path is None else None
    # The row lock orders this put against the garbage collector, which deletes the
    # bytes only while holding the same lock and only when nothing references them.
    with transaction.atomic():
        obj, created = StoredObject.objects.select_for_update().get_or_create(
            sha256=sha256, defaults={"size": spool.size, "inline": inline}
        )
        if inline is None and (created or not backend().exists(sha256)):
            backend().write(sha256, spool.path)
        if not created:
            # A put renews the object's stamp, so the collector's cutoff spares it for the
            # retention period: the caller has that long to record its reference (a
            # manifest entry, a session object), which it does in a later transaction.
            StoredObject.objects.filter(sha256=sha256).update(created_at=timezone.now())
        if hold_for:
            hold(obj=obj, **hold_for)
    return obj


def hold(*, org: Organization, obj: StoredObject, kind: str = "binary", filename: str = "", content_type: str = "") -> ObjectRef:
    """Record the org's put of the object: it may now read it, and it stays for the retention period."""
    ref, created = ObjectRef.objects.get_or_create(
        org=org, object=obj, defaults={"kind": kind, "filename": filename, "content_type": content_type}
    )
    if not created:
        ObjectRef.objects.filter(id=ref.id).update(
            kind=kind, filename=filename, content_type=content_type, last_put_at=timezone.now()
        )
        ref.kind, ref.filename, ref.content_type = kind, filename, content_type
    return ref


def object_for_org(org: Organization, sha256: str) -> StoredObject | None:
    """The object if the org holds a reference to it, else None (as if it did not exist)."""
    held = (
        ObjectRef.objects.filter(org=org, object_id=sha256).exists()
        or ManifestEntry.objects.filter(org=org, object_id=sha256).exists()
        or any(StoredObject.objects.filter(sha256=sha256, sha256__in=src(org)).exists() for src in _org_reference_sources)
    )
    return StoredObject.objects.filter(sha256=sha256).first() if held else None


def open_object(obj: StoredObject) -> Iterator[bytes]:
    """Stream the object's bytes, verifying the hash.

    The last chunk is held back until the hash is checked, so a client never receives
    a complete answer with wrong bytes: a corrupted object ends the stream with an error.
    """
    if obj.inline is not None:
        data = bytes(obj.inline)
        _verify(obj, hashlib.sha256(data).hexdigest(), len(data))
        yield data
        return
    digest, size, pending = hashlib.sha256(), 0, None
    for chunk in backend().open(obj.sha256):
        digest.update(chunk)
        size += len(chunk)
        if pending is not None:
            yield pending
        pending = chunk
    _verify(obj, digest.hexdigest(), size)
    if pending is not None:
        yield pending


def read_bytes(obj: StoredObject, max_size: int | None = None) -> bytes:
    if max_size is not None and obj.size > max_size:
        raise ObjectTooLarge(max_size)
    return b"".join(open_object(obj))


def read_range(obj: StoredObject, start: int, length: int) -> bytes:
    """Bytes [start, start+length) of a verified object (the whole object is hashed)."""
    out, position = bytearray(), 0
    end = start + length
    for chunk in open_object(obj):
        lo, hi = max(start - position, 0), min(end - position, len(chunk))
        if lo < hi:
            out.extend(chunk[lo:hi])
        position += len(chunk)
    return bytes(out)


def _verify(obj: StoredObject, sha256: str, size: int) -> None:
    if sha256 != obj.sha256 or size != obj.size:
        logger.error("object %s is corrupted: read %d bytes hashing to %s", obj.sha256, size, sha256)
        raise CorruptObject(obj.sha256)


def collect_garbage(*, now=None) -> int:
    """Remove objects nothing references after the retention period; returns how many."""
    now = now or timezone.now()
    cutoff = now - timezone.timedelta(hours=settings.BLOB_RETENTION_HOURS)
    ObjectRef.objects.filter(last_put_at__lt=cutoff).delete()
    candidates = (
        StoredObject.objects.filter(created_at__lt=cutoff)
        .exclude(sha256__in=ObjectRef.objects.values("object_id"))
        .exclude(sha256__in=ManifestEntry.objects.values("object_id"))
    )
    for extra in _reference_sources:
        candidates = candidates.exclude(sha256__in=extra())
    removed = 0
    for sha256 in list(candidates.values_list("sha256", flat=True)[:10000]):
        removed += _remove_if_unreferenced(sha256, cutoff)
    return removed


def _remove_if_unreferenced(sha256: str, cutoff) -> int:
    with transaction.atomic():
        obj = StoredObject.objects.select_for_update().filter(sha256=sha256, created_at__lt=cutoff).first()
        if obj is None or _is_referenced(sha256):
            return 0
        if obj.inline is None:
            backend().delete(sha256)
        obj.delete()
    return 1


def _is_referenced(sha256: str) -> bool:
    if ObjectRef.objects.filter(object_id=sha256).exists():
        return True
    if ManifestEntry.objects.filter(object_id=sha256).exists():
        return True
    return any(StoredObject.objects.filter(sha256=sha256, sha256__in=source()).exists() for source in _reference_sources)


# Engines that keep object references outside manifests (sessions, executions) register
# a callable returning a flat values queryset of the object ids they hold.
_reference_sources: list = []


def register_reference_source(source) -> None:
    _reference_sources.append(source)


# Those of them that also let the org read what they hold (an execution, the objects its
# steps put) register a callable taking the org and returning that org's object ids.
_org_reference_sources: list = []


def register_org_reference_source(source) -> None:
    _org_reference_sources.append(source)
