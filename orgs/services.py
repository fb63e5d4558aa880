"""Writes for organizations, members, API keys and credentials: one transaction each.

Callers pass an org already resolved by `orgs.selectors.organization_get` with the
role the action needs; services check state, write, and record the audit entry.
"""

from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from blobhub.api.errors import AccessDenied, ApplicationError, Conflict, InvalidRequest
from blobhub.concurrency import check_if_match, versioned_update
from blobs import limits
from orgs import crypto
from orgs.audit import audit
from orgs.authentication import new_api_key_secret
from orgs.models import ApiKey, Credential, Membership, Organization, Role, User
from orgs.principal import Principal


def alias_in_use(kind: str, alias: str) -> ApplicationError:
    return ApplicationError("alias_in_use", f"The {kind} alias '{alias}' is already taken.", status=400)


@transaction.atomic
def organization_create(*, principal: Principal, alias: str, name: str) -> Organization:
    if not principal.is_user:
        raise AccessDenied("Only a signed-in user can create an organization.")
    administered = Membership.objects.filter(user=principal.user, role=Role.ADMIN).count()
    limits.check("core.organizations_per_user", administered)
    if Organization.objects.filter(alias=alias).exists():
        raise alias_in_use("organization", alias)
    try:
        with transaction.atomic():
            org = Organization.objects.create(alias=alias, name=name)
    except IntegrityError:
        raise alias_in_use("organization", alias) from None
    Membership.objects.create(org=org, user=principal.user, role=Role.ADMIN)
    audit(principal, "organization.create", org, org=org, changes={"alias": alias, "name": name})
    return org


@transaction.atomic
def organization_update(
    *, principal: Principal, org: Organization, if_match: str | None, changes: dict
) -> Organization:
    alias = changes.get("alias")
    if alias and alias != org.alias and Organization.objects.filter(alias=alias).exists():
        raise alias_in_use("organization", alias)
    try:
        with transaction.atomic():
            versioned_update(org, if_match, **changes)
    except IntegrityError:
        raise alias_in_use("organization", alias) from None
    audit(principal, "organization.update", org, org=org, changes=changes)
    return org


def active_user(user_id: str) -> User:
    """The active user a new membership (org or blob) names; a 400 on `user_id` otherwise."""
    user = User.objects.filter(id=user_id, is_active=True).first()
    if user is None:
        raise InvalidRequest("No active user has this id.", [{"path": "user_id", "message": "Unknown user."}])
    return user


@transaction.atomic
def organization_remove(*, principal: Principal, org: Organization) -> None:
    """Delete the organization and everything in it (for operators: Django admin; there is no
    API route). Blobs go first, the way blob deletes go: the cascade alone trips the database's
    guard on committed manifests."""
    from blobs.models import Blob  # blobs builds on orgs: imported here, not at the top
    from blobs.services.blobs import blob_remove

    for blob in Blob.objects.filter(org=org).select_related("org"):
        blob_remove(principal=principal, blob=blob)
    audit(principal, "organization.delete", org, changes={"alias": org.alias})
    org.delete()


@transaction.atomic
def member_add(*, principal: Principal, org: Organization, user_id: str, role: str) -> Membership:
    user = active_user(user_id)
    exists = Conflict("member_exists", "The user is already a member; change the role with PATCH.")
    if Membership.objects.filter(org=org, user=user).exists():
        raise exists
    limits.check("core.members_per_organization", Membership.objects.filter(org=org).count())
    try:
        with transaction.atomic():  # a concurrent add of the same user wins the unique constraint
            member = Membership.objects.create(org=org, user=user, role=role)
    except IntegrityError:
        raise exists from None
    audit(principal, "member.add", member, org=org, changes={"user_id": str(user.id), "role": role})
    return member


@transaction.atomic
def member_update(
    *, principal: Principal, org: Organization, member: Membership, role: str, if_match: str | None
) -> Membership:
    if member.role == Role.ADMIN and role != Role.ADMIN:
        _keep_an_admin(org)
    versioned_update(member, if_match, role=role)
    audit(principal, "member.update", member, org=org, changes={"user_id": str(member.user_id), "role": role})
    return member


@transaction.atomic
def member_remove(*, principal: Principal, org: Organization, member: Membership, if_match: str | None = None) -> None:
    check_if_match(member, if_match)
    if member.role == Role.ADMIN:
        _keep_an_admin(org)
    audit(principal, "member.remove", member, org=org, changes={"user_id": str(member.user_id)})
    member.delete()


def _keep_an_admin(org: Organization) -> None:
    # Lock the admins' rows so that two concurrent demotions cannot both pass.
    admins = list(
        Membership.objects.select_for_update().filter(org=org, role=Role.ADMIN).values_list("id", flat=True)
    )
    if len(admins) <= 1:
        raise Conflict("last_admin", "An organization keeps at least one admin.")


@transaction.atomic
def api_key_create(
    *,
    principal: Principal,
    org: Organization,
    role: str,
    description: str = "",
    expires_at: datetime | None = None,
    blob=None,
) -> tuple[ApiKey, str]:
    """Create a key (scoped to `blob` if given); the secret is returned here once and never stored."""
    if principal.user is None or principal.api_key is not None:
        raise AccessDenied()
    if expires_at is not None and expires_at <= timezone.now():
        raise InvalidRequest("expires_at must be in the future.", [{"path": "expires_at", "message": "In the past."}])
    live_keys = ApiKey.objects.filter(org=org, blob=blob, revoked_at__isnull=True).count()
    limits.check("core.api_keys_per_blob" if blob is not None else "core.api_keys_per_organization", live_keys)
    key, lookup, hashed = new_api_key_secret()
    api_key = ApiKey.objects.create(
        org=org,
        role=role,
        description=description,
        expires_at=expires_at,
        lookup=lookup,
        hashed_key=hashed,
        created_by=principal.user,
        blob=blob,
    )
    changes = {"role": role, "lookup": lookup} | ({"blob_id": str(blob.id)} if blob is not None else {})
    audit(principal, "api_key.create", api_key, org=org, changes=changes)
    return api_key, key


@transaction.atomic
def api_key_revoke(*, principal: Principal, org: Organization, api_key: ApiKey) -> None:
    ApiKey.objects.filter(id=api_key.id, revoked_at__isnull=True).update(revoked_at=timezone.now())
    audit(principal, "api_key.revoke", api_key, org=org, changes={"lookup": api_key.lookup})


@transaction.atomic
def credential_create(
    *, principal: Principal, org: Organization, alias: str, provider: str, value: str, description: str = ""
) -> Credential:
    limits.check("core.credentials_per_organization", Credential.objects.filter(org=org).count())
    if Credential.objects.filter(org=org, alias=alias).exists():
        raise alias_in_use("credential", alias)
    try:
        with transaction.atomic():
            credential = Credential.objects.create(
                org=org, alias=alias, provider=provider, description=description, ciphertext=crypto.encrypt(value)
            )
    except IntegrityError:
        raise alias_in_use("credential", alias) from None
    audit(principal, "credential.create", credential, org=org, changes={"alias": alias, "provider": provider})
    return credential


@transaction.atomic
def credential_replace(
    *,
    principal: Principal,
    org: Organization,
    credential: Credential,
    provider: str,
    value: str,
    description: str,
    if_match: str | None,
) -> Credential:
    versioned_update(
        credential, if_match, provider=provider, description=description, ciphertext=crypto.encrypt(value)
    )
    audit(principal, "credential.replace", credential, org=org, changes={"provider": provider})
    return credential


@transaction.atomic
def credential_delete(*, principal: Principal, org: Organization, credential: Credential, if_match: str | None = None) -> None:
    check_if_match(credential, if_match)
    audit(principal, "credential.delete", credential, org=org, changes={"alias": credential.alias})
    credential.delete()
