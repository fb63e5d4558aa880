"""The caller's organization on the content surfaces.

These routes name no org in their path (a Stepflow or Skills client does not know about
orgs), so it comes from the credentials: an API key's own org, or for a signed-in user
the org named in `X-BlobHub-Org` (id or alias), or their only org.
"""

from blobhub.api.errors import AccessDenied, ApplicationError
from orgs import selectors
from orgs.models import Organization, Role
from orgs.policy import authorize, visible_organizations
from orgs.principal import Principal

ORG_HEADER = "HTTP_X_BLOBHUB_ORG"


def caller_org(principal: Principal, header: str | None, needed: Role) -> Organization:
    """The org the call acts in, once the principal is known to hold `needed` there."""
    if principal.api_key is None and principal.user is None:
        raise AccessDenied("Anonymous tokens cannot use the content store: sign in or send an API key.")
    if header is not None and not header.strip():
        raise ApplicationError(
            "invalid_request_body", "The X-BlobHub-Org header is empty: send an organization id or alias."
        )
    if principal.api_key is not None:
        return _key_org(principal, header, needed)
    if header is not None:
        return selectors.organization_get(principal, header.strip(), needs=needed)
    orgs = list(visible_organizations(principal).order_by("created_at")[:2])
    if not orgs:
        raise AccessDenied("You belong to no organization, so there is nowhere to store or read blobs.")
    if len(orgs) > 1:
        raise ApplicationError(
            "organization_required",
            "You belong to several organizations: name one in the X-BlobHub-Org header (its id or alias).",
        )
    authorize(principal, needed, orgs[0])
    return orgs[0]


def _key_org(principal: Principal, header: str | None, needed: Role) -> Organization:
    key = principal.api_key
    if key.blob_id is not None:
        raise AccessDenied("A blob-scoped API key cannot use the content store; use an organization key.")
    org = key.org
    if header is not None and header.strip() not in (str(org.id), org.alias):
        # A key acts in its own org only; naming another one is as if it did not exist.
        raise AccessDenied()
    authorize(principal, needed, org)
    return org
