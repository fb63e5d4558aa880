"""Blob members and blob-scoped API keys."""

from django.db import IntegrityError, transaction

from blobhub.api.errors import Conflict
from blobhub.concurrency import check_if_match, versioned_update
from blobs import limits
from blobs.models import Blob, BlobMember
from orgs.audit import audit
from orgs.services import active_user
from orgs.principal import Principal


@transaction.atomic
def blob_member_add(*, principal: Principal, blob: Blob, user_id: str, role: str) -> BlobMember:
    user = active_user(user_id)
    exists = Conflict("member_exists", "The user is already a member of this blob; change the role with PATCH.")
    if BlobMember.objects.filter(blob=blob, user=user).exists():
        raise exists
    limits.check("core.members_per_blob", BlobMember.objects.filter(blob=blob).count())
    try:
        with transaction.atomic():  # a concurrent add of the same user wins the unique constraint
            member = BlobMember.objects.create(org_id=blob.org_id, blob=blob, user=user, role=role)
    except IntegrityError:
        raise exists from None
    audit(principal, "blob_member.add", member, org=blob.org, changes={"user_id": str(user.id), "role": role})
    return member


@transaction.atomic
def blob_member_update(*, principal: Principal, blob: Blob, member: BlobMember, role: str, if_match: str | None) -> BlobMember:
    versioned_update(member, if_match, role=role)
    audit(principal, "blob_member.update", member, org=blob.org, changes={"user_id": str(member.user_id), "role": role})
    return member


@transaction.atomic
def blob_member_remove(*, principal: Principal, blob: Blob, member: BlobMember, if_match: str | None = None) -> None:
    check_if_match(member, if_match)
    audit(principal, "blob_member.remove", member, org=blob.org, changes={"user_id": str(member.user_id)})
    member.delete()
