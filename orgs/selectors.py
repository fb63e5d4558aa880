"""Reads, each starting from what the principal may see."""

from django.db.models import QuerySet

from blobhub.api.errors import AccessDenied
from blobhub.api.serializers import is_alias, is_uuid, ref_lookup
from orgs import policy
from orgs.models import ApiKey, Credential, Membership, Organization, Role
from orgs.principal import Principal


def organization_get(principal: Principal, ref: str, needs: Role = Role.READ) -> Organization:
    """The org named by id or alias; absent and forbidden are the same 403."""
    org = policy.visible_organizations(principal).filter(**ref_lookup(ref)).first()
    if org is None:
        raise AccessDenied()
    policy.authorize(principal, needs, org)
    return org


def organization_list_for_user(principal: Principal) -> QuerySet[Organization]:
    if not principal.is_user:
        raise AccessDenied("Only a signed-in user has a list of organizations; API keys are scoped to one.")
    return policy.visible_organizations(principal)


def member_list(org: Organization) -> QuerySet[Membership]:
    return Membership.objects.filter(org=org).select_related("user")


def member_get(org: Organization, user_id: str) -> Membership:
    member = member_list(org).filter(user_id=user_id).first() if is_uuid(user_id) else None
    if member is None:
        raise AccessDenied()
    return member


def api_key_list(org: Organization) -> QuerySet[ApiKey]:
    """The org-scoped keys; blob-scoped keys are listed under their blob."""
    return ApiKey.objects.filter(org=org, blob__isnull=True, revoked_at__isnull=True)


def api_key_get(org: Organization, key_id: str) -> ApiKey:
    key = api_key_list(org).filter(id=key_id).first() if is_uuid(key_id) else None
    if key is None:
        raise AccessDenied()
    return key


def credential_list(org: Organization) -> QuerySet[Credential]:
    return Credential.objects.filter(org=org)


def credential_get(org: Organization, alias: str) -> Credential:
    credential = credential_list(org).filter(alias=alias).first() if is_alias(alias) else None
    if credential is None:
        raise AccessDenied()
    return credential


def holds_role(principal: Principal, org: Organization) -> bool:
    return policy.org_role(principal, org) is not None
