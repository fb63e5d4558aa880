"""A revision's content as files: `(path, object)` manifest entries over the content store.

Engines read and write their files through these functions; writes need a draft.
"""

import json
import re
from typing import Any

from django.db import transaction
from django.utils import timezone

from blobhub.api.errors import ApplicationError
from blobs import events, limits, store
from blobs.models import ManifestEntry, Revision
from blobs.services.revisions import not_ready, not_writable

PATH_PATTERN = re.compile(r"^(?!/)(?!.*//)[A-Za-z0-9._/-]{1,1024}\Z")


def check_path(path: str) -> None:
    if not PATH_PATTERN.match(path) or any(part in ("", ".", "..") for part in path.split("/")):
        raise ApplicationError("invalid_request_body", f"The path {path!r} is not a valid relative file path.", status=400)


def lock_draft(revision: Revision) -> Revision:
    """Lock a writable draft for a content write (inside the caller's transaction).

    A draft whose commit failed becomes a ready draft again on its next write.
    """
    locked = Revision.objects.select_for_update().get(id=revision.id)
    if locked.phase != Revision.Phase.DRAFT:
        raise not_writable()
    if locked.status == Revision.Status.FAILED:
        Revision.objects.filter(id=locked.id).update(status=Revision.Status.READY, failed_operation=None, failure="")
        locked.status = Revision.Status.READY
    if locked.status != Revision.Status.READY:
        raise not_ready(locked)
    return locked


def _changed(revision: Revision, path: str, change: str) -> None:
    events.record(
        org_id=revision.org_id,
        stream=events.stream_name("revision", revision.id),
        type="content.changed",
        data={"path": path, "change": change},
    )


def file_put(revision: Revision, path: str, data: bytes) -> ManifestEntry:
    check_path(path)
    return file_put_object(revision, path, store.put_bytes(data))


def file_put_stream(revision: Revision, path: str, chunks) -> ManifestEntry:
    """Store a file of the draft from an iterable of byte chunks (streamed, never whole).

    The bytes go to the store first, outside any lock; only the manifest entry is
    written under the draft's lock. The put (of new bytes or of bytes stored long ago)
    stamps the object, which keeps the collector off it for the retention period: long
    enough for its entry to be written.
    """
    check_path(path)
    return file_put_object(revision, path, store.put_stream(chunks))


@transaction.atomic
def file_put_object(revision: Revision, path: str, obj) -> ManifestEntry:
    check_path(path)
    revision = lock_draft(revision)
    existing = ManifestEntry.objects.filter(revision=revision, path=path).first()
    if existing is None:
        limits.check("core.files_per_revision", ManifestEntry.objects.filter(revision=revision).count())
    entry, _ = ManifestEntry.objects.update_or_create(
        revision=revision,
        path=path,
        defaults={"org_id": revision.org_id, "object": obj, "size": obj.size, "updated_at": timezone.now()},
    )
    _changed(revision, path, "put")
    return entry


def file_put_json(revision: Revision, path: str, value: Any) -> ManifestEntry:
    return file_put(revision, path, store.canonical_json(value))


@transaction.atomic
def file_delete(revision: Revision, path: str) -> bool:
    revision = lock_draft(revision)
    deleted, _ = ManifestEntry.objects.filter(revision=revision, path=path).delete()
    if deleted:
        _changed(revision, path, "delete")
    return bool(deleted)


def file_get(revision: Revision, path: str) -> ManifestEntry | None:
    return ManifestEntry.objects.select_related("object").filter(revision=revision, path=path).first()


def file_read(revision: Revision, path: str, max_size: int | None = None) -> bytes | None:
    entry = file_get(revision, path)
    return None if entry is None else store.read_bytes(entry.object, max_size)


def file_read_json(revision: Revision, path: str) -> Any:
    data = file_read(revision, path)
    return None if data is None else json.loads(data)


def files(revision: Revision, prefix: str = ""):
    entries = ManifestEntry.objects.filter(revision=revision).order_by("path")
    return entries.filter(path__startswith=prefix) if prefix else entries


def diff(revision: Revision, against: Revision) -> dict:
    """Paths added, removed and changed going from `against` to `revision`."""
    mine = dict(ManifestEntry.objects.filter(revision=revision).values_list("path", "object_id"))
    theirs = dict(ManifestEntry.objects.filter(revision=against).values_list("path", "object_id"))
    return {
        "added": sorted(set(mine) - set(theirs)),
        "removed": sorted(set(theirs) - set(mine)),
        "changed": sorted(path for path in set(mine) & set(theirs) if mine[path] != theirs[path]),
    }
