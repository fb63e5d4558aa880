"""Reads for blobs, revisions and operations, each narrowed to what the principal may see."""

from django.db.models import QuerySet

from blobhub.api.errors import AccessDenied, ApplicationError
from blobhub.api.serializers import is_uuid, ref_lookup
from blobs import policy
from blobs.models import Blob, Operation, Revision
from orgs.models import Organization, Role
from orgs.principal import Principal


def organization_for_blobs(org_ref: str) -> Organization:
    """The org named in a blob path; its blobs are then narrowed by blobs.policy."""
    org = Organization.objects.filter(**ref_lookup(org_ref)).first()
    if org is None:
        raise AccessDenied()
    return org


def blob_list(principal: Principal, org: Organization, blob_type: str | None = None) -> QuerySet[Blob]:
    blobs = policy.visible_blobs(principal, org).exclude(status=Blob.Status.DELETING)
    return blobs.filter(type=blob_type) if blob_type else blobs


def blob_get(principal: Principal, org_ref: str, blob_ref: str, needs: Role = Role.READ) -> Blob:
    """The blob at `blobs/{org}/{blob}`; absent and forbidden are the same 403."""
    lookup = {f"org__{key}": value for key, value in ref_lookup(org_ref).items()}
    blob = (
        Blob.objects.select_related("org")
        .filter(**lookup, **ref_lookup(blob_ref))
        .exclude(status=Blob.Status.DELETING)
        .first()
    )
    if blob is None:
        raise AccessDenied()
    policy.authorize_blob(principal, needs, blob)
    return blob


def revision_list(principal: Principal, blob: Blob) -> QuerySet[Revision]:
    revisions = Revision.objects.filter(blob=blob)
    if policy.reads_as_public(principal, blob):
        revisions = revisions.filter(phase=Revision.Phase.SNAPSHOT)
    return revisions


def revision_in_blob(principal: Principal, blob: Blob, ref: str) -> Revision:
    """`ref` is a revision id or `default`; a miss inside a readable blob is a 404."""
    revisions = revision_list(principal, blob)
    if ref == "default":
        revision = revisions.filter(id=blob.default_revision_id).first() if blob.default_revision_id else None
    else:
        revision = revisions.filter(id=ref).first() if is_uuid(ref) else None
    if revision is None:
        raise ApplicationError("revision_not_found", "The blob has no such revision.", status=404)
    return revision


def revision_get(principal: Principal, revision_id: str, needs: Role = Role.READ) -> Revision:
    """A revision by bare id: found only through a blob the principal may use."""
    revision = (
        Revision.objects.select_related("blob", "blob__org")
        .filter(id=revision_id)
        .exclude(blob__status=Blob.Status.DELETING)
        .first()
        if is_uuid(revision_id)
        else None
    )
    if revision is None:
        raise AccessDenied()
    policy.authorize_blob(principal, needs, revision.blob)
    if policy.reads_as_public(principal, revision.blob) and revision.phase != Revision.Phase.SNAPSHOT:
        raise AccessDenied()
    return revision


def operation_get(principal: Principal, operation_id: str, needs: Role = Role.READ) -> Operation:
    operation = (
        Operation.objects.select_related("blob", "blob__org").filter(id=operation_id).first()
        if is_uuid(operation_id)
        else None
    )
    if operation is None or policy.reads_as_public(principal, operation.blob):
        raise AccessDenied()
    policy.authorize_blob(principal, needs, operation.blob)
    return operation
