"""Blob writes: create (with its first draft), update, delete."""

from django.db import IntegrityError, transaction

from blobhub.api.errors import ApplicationError, Conflict
from blobhub.concurrency import check_if_match, versioned_update
from blobs import events, limits, policy
from blobs.models import Blob, Revision
from blobs.registry import engine_for
from orgs.audit import audit
from orgs.models import Organization, Role
from orgs.principal import Principal


def _alias_in_use(alias: str) -> ApplicationError:
    return ApplicationError("alias_in_use", f"The blob alias '{alias}' is already taken.", status=400)


def render_blob_event(blob: Blob) -> dict:
    return {"blob_id": str(blob.id), "alias": blob.alias, "type": blob.type}


@transaction.atomic
def blob_create(
    *, principal: Principal, org: Organization, alias: str, type: str, visibility: str, description: str
) -> Blob:
    if visibility == Blob.Visibility.PUBLIC:
        # Publishing is an admin's decision, at creation as on a later change.
        from orgs.policy import authorize

        authorize(principal, Role.ADMIN, org)
    limits.check("core.blobs_per_organization", Blob.objects.filter(org=org).count())
    if Blob.objects.filter(org=org, alias=alias).exists():
        raise _alias_in_use(alias)
    try:
        with transaction.atomic():
            blob = Blob.objects.create(
                org=org,
                alias=alias,
                type=type,
                visibility=visibility,
                description=description,
                created_by=principal.user,
            )
    except IntegrityError:
        raise _alias_in_use(alias) from None
    revision = Revision.objects.create(org=org, blob=blob, number=1, comment="Initial revision")
    audit(principal, "blob.create", blob, org=org, changes={"alias": alias, "type": type})
    events.record(org_id=org.id, stream=events.stream_name("org", org.id), type="blob.created", data=render_blob_event(blob))
    events.record(
        org_id=org.id,
        stream=events.stream_name("blob", blob.id),
        type="revision.created",
        data={"revision_id": str(revision.id), "number": 1},
    )
    return blob


@transaction.atomic
def blob_update(*, principal: Principal, blob: Blob, changes: dict, if_match: str | None) -> Blob:
    """Change alias, description, visibility (admin) or the default revision (write)."""
    needs = Role.ADMIN if {"visibility", "alias"} & set(changes) else Role.WRITE
    policy.authorize_blob(principal, needs, blob)
    updates = dict(changes)
    new_default = None
    if "default_revision_id" in updates:
        new_default = (
            Revision.objects.filter(blob=blob, id=updates.pop("default_revision_id"))
            .exclude(phase=Revision.Phase.DRAFT)
            .filter(status=Revision.Status.READY)
            .first()
        )
        if new_default is None:
            raise Conflict("revision_not_committed", "The default revision must be a committed or snapshot revision of this blob.")
        updates["default_revision"] = new_default
    alias = updates.get("alias")
    if alias and alias != blob.alias and Blob.objects.filter(org_id=blob.org_id, alias=alias).exists():
        raise _alias_in_use(alias)
    previous_default = blob.default_revision_id
    try:
        with transaction.atomic():
            versioned_update(blob, if_match, **updates)
    except IntegrityError:
        raise _alias_in_use(alias) from None
    audit(principal, "blob.update", blob, org=blob.org, changes={k: str(v) for k, v in changes.items()})
    events.record(
        org_id=blob.org_id, stream=events.stream_name("org", blob.org_id), type="blob.updated", data=render_blob_event(blob)
    )
    if new_default is not None and new_default.id != previous_default:
        default_changed(blob, new_default)
    return blob


def default_changed(blob: Blob, revision: Revision) -> None:
    """Tell the blob's watchers and its engine that the default moved (same transaction)."""
    events.record(
        org_id=blob.org_id,
        stream=events.stream_name("blob", blob.id),
        type="blob.default_changed",
        data={"revision_id": str(revision.id), "number": revision.number},
    )
    hook = engine_for(blob.type).on_default_changed
    if hook is not None:
        hook(blob, revision)


@transaction.atomic
def blob_delete(*, principal: Principal, blob: Blob, if_match: str | None = None) -> None:
    """Delete the blob and its revisions; stored objects go only when nothing references them."""
    check_if_match(blob, if_match)
    needs = Role.ADMIN if blob.revisions.exclude(phase=Revision.Phase.DRAFT).exists() else Role.WRITE
    policy.authorize_blob(principal, needs, blob)
    blob_remove(principal=principal, blob=blob)


@transaction.atomic
def blob_remove(*, principal: Principal, blob: Blob) -> None:
    """`blob_delete` past its checks: for operators (Django admin), who hold no org role."""
    # 'deleting' lets the database's immutability guard release committed manifests.
    Blob.objects.filter(id=blob.id).update(status=Blob.Status.DELETING, default_revision=None)
    audit(principal, "blob.delete", blob, org=blob.org, changes={"alias": blob.alias})
    events.record(
        org_id=blob.org_id, stream=events.stream_name("org", blob.org_id), type="blob.deleted", data=render_blob_event(blob)
    )
    Blob.objects.filter(id=blob.id).delete()
