"""The one place that decides what a principal may do (DESIGN §4).

Selectors narrow querysets with `visible_organizations`; every decision on a
resolved object goes through `authorize`, which uses `org_role` alone.
"""

from django.db.models import QuerySet

from blobhub.api.errors import AccessDenied
from orgs.models import Membership, Organization, Role
from orgs.principal import Principal


def org_role(principal: Principal, org: Organization) -> Role | None:
    """The role the principal holds in the org, or None."""
    if principal.api_key is not None:
        key = principal.api_key
        return Role(key.role) if key.org_id == org.id and key.blob_id is None else None
    if principal.user is not None:
        role = (
            Membership.objects.filter(org_id=org.id, user_id=principal.user.id)
            .values_list("role", flat=True)
            .first()
        )
        return Role(role) if role else None
    return None


def authorize(principal: Principal, needed: Role, org: Organization) -> Role:
    """Raise access_denied unless the principal holds at least `needed` in the org."""
    role = org_role(principal, org)
    if role is None or not role.allows(needed):
        raise AccessDenied()
    return role


def visible_organizations(principal: Principal) -> QuerySet[Organization]:
    """The organizations the principal holds any role in; nothing for anonymous tokens."""
    if principal.api_key is not None:
        if principal.api_key.blob_id is not None:
            return Organization.objects.none()
        return Organization.objects.filter(id=principal.api_key.org_id)
    if principal.user is not None:
        return Organization.objects.filter(memberships__user_id=principal.user.id)
    return Organization.objects.none()
