"""Access to one blob: the org role, a blob role, a blob-scoped key, or public reading.

Reads an org role as orgs.policy.org_role does, so that it means the same here as on org routes.
"""

import uuid

from django.db.models import Q, QuerySet

from blobhub.api.errors import AccessDenied
from blobs.models import Blob, BlobMember
from orgs.models import Membership, Organization, Role
from orgs.principal import Principal


def blob_role(principal: Principal, blob: Blob) -> Role | None:
    """The strongest role the principal holds on the blob, or None."""
    key = principal.api_key
    if key is not None:
        if key.blob_id is not None:
            return Role(key.role) if key.blob_id == blob.id else None
        return Role(key.role) if key.org_id == blob.org_id else None
    if principal.user is None:
        return None
    # The org role (as orgs.policy.org_role reads it) and a blob role, in one round trip.
    user_id = principal.user.id
    in_org = Membership.objects.filter(org_id=blob.org_id, user_id=user_id).values_list("role", flat=True)
    on_blob = BlobMember.objects.filter(blob_id=blob.id, user_id=user_id).values_list("role", flat=True)
    held = [Role(role) for role in in_org.union(on_blob, all=True)]
    return max(held, key=lambda role: role.rank) if held else None


def blobs_with_a_role(principal: Principal, blobs: list[Blob]) -> set[uuid.UUID]:
    """The ids of those of `blobs` the principal holds a role on (as `blob_role` reads it), in
    two queries for all of them (the WebSocket's recheck of its subscriptions)."""
    user = principal.user
    if principal.api_key is not None or user is None or not blobs:
        return {blob.id for blob in blobs if blob_role(principal, blob) is not None}  # no query
    memberships = Membership.objects.filter(user_id=user.id, org_id__in={blob.org_id for blob in blobs})
    blob_memberships = BlobMember.objects.filter(user_id=user.id, blob_id__in=[blob.id for blob in blobs])
    in_orgs = set(memberships.values_list("org_id", flat=True))
    on_blobs = set(blob_memberships.values_list("blob_id", flat=True))
    return {blob.id for blob in blobs if blob.org_id in in_orgs or blob.id in on_blobs}


def reads_as_public(principal: Principal, blob: Blob) -> bool:
    """True when the principal reads the blob only because it is public (published revisions only)."""
    return blob_role(principal, blob) is None and blob.visibility == Blob.Visibility.PUBLIC


def authorize_blob(principal: Principal, needed: Role, blob: Blob) -> Role:
    role = blob_role(principal, blob)
    if role is not None and role.allows(needed):
        return role
    if needed == Role.READ and blob.visibility == Blob.Visibility.PUBLIC:
        return Role.READ
    raise AccessDenied()


def visible_blobs(principal: Principal, org: Organization) -> QuerySet[Blob]:
    """The org's blobs the principal may read, in one query."""
    blobs = Blob.objects.filter(org=org)
    key = principal.api_key
    if key is not None:
        if key.blob_id is not None:
            return blobs.filter(Q(id=key.blob_id) | Q(visibility=Blob.Visibility.PUBLIC))
        if key.org_id == org.id:
            return blobs
        return blobs.filter(visibility=Blob.Visibility.PUBLIC)
    if principal.user is not None:
        if Membership.objects.filter(org=org, user_id=principal.user.id).exists():
            return blobs
        return blobs.filter(
            Q(visibility=Blob.Visibility.PUBLIC) | Q(members__user_id=principal.user.id)
        ).distinct()
    return blobs.filter(visibility=Blob.Visibility.PUBLIC)
