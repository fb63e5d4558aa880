"""Metadata on blobs and revisions: small JSON values by key (not content: any phase)."""

from django.db import IntegrityError, transaction

from blobhub.api.errors import ApplicationError, Conflict
from blobhub.concurrency import check_if_match, versioned_update
from blobs import events, limits, store
from blobs.models import Blob, BlobMetadata, Revision, RevisionMetadata
from orgs.audit import audit
from orgs.principal import Principal

MAX_VALUE_BYTES = 64 * 1024


def check_value(value) -> None:
    if len(store.canonical_json(value)) > MAX_VALUE_BYTES:
        raise ApplicationError(
            "invalid_request_body",
            f"A metadata value is at most {MAX_VALUE_BYTES} bytes of JSON.",
            status=400,
            details=[{"path": "value", "message": "Too large."}],
        )


def _scope(owner: Blob | Revision) -> tuple[type, dict, str, str]:
    if isinstance(owner, Blob):
        return BlobMetadata, {"blob": owner}, "core.metadata_per_blob", events.stream_name("blob", owner.id)
    return (
        RevisionMetadata,
        {"revision": owner},
        "core.metadata_per_revision",
        events.stream_name("blob", owner.blob_id),
    )


def _announce(owner: Blob | Revision, stream: str, key: str, change: str) -> None:
    data = {"key": key, "change": change}
    if isinstance(owner, Revision):
        data["revision_id"] = str(owner.id)
    events.record(org_id=owner.org_id, stream=stream, type="metadata.changed", data=data)


@transaction.atomic
def metadata_create(*, principal: Principal, owner: Blob | Revision, key: str, value) -> BlobMetadata | RevisionMetadata:
    model, scope, limit_id, stream = _scope(owner)
    check_value(value)
    if model.objects.filter(**scope, key=key).exists():
        raise Conflict("metadata_exists", f"The key {key!r} exists; change it with PUT.")
    limits.check(limit_id, model.objects.filter(**scope).count())
    try:
        with transaction.atomic():
            item = model.objects.create(**scope, org_id=owner.org_id, key=key, value=value)
    except IntegrityError:
        raise Conflict("metadata_exists", f"The key {key!r} exists; change it with PUT.") from None
    audit(principal, "metadata.create", item, org=owner.org, changes={"key": key})
    _announce(owner, stream, key, "created")
    return item


@transaction.atomic
def metadata_put(
    *, principal: Principal, owner: Blob | Revision, key: str, value, if_match: str | None
) -> tuple[BlobMetadata | RevisionMetadata, bool]:
    """Create or replace the value; returns (item, created)."""
    model, scope, _, stream = _scope(owner)
    item = model.objects.filter(**scope, key=key).first()
    if item is None:
        if if_match not in (None, "*"):
            raise ApplicationError("precondition_failed", "The key does not exist.", status=412)
        return metadata_create(principal=principal, owner=owner, key=key, value=value), True
    check_value(value)
    versioned_update(item, if_match, value=value)
    audit(principal, "metadata.update", item, org=owner.org, changes={"key": key})
    _announce(owner, stream, key, "updated")
    return item, False


@transaction.atomic
def metadata_delete(*, principal: Principal, owner: Blob | Revision, item, if_match: str | None = None) -> None:
    check_if_match(item, if_match)
    _, _, _, stream = _scope(owner)
    audit(principal, "metadata.delete", item, org=owner.org, changes={"key": item.key})
    item.delete()
    _announce(owner, stream, item.key, "deleted")
