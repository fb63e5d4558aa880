"""The embedded default's first start: an admin user, a demo organization and a write key."""

import secrets
from dataclasses import dataclass

from django.db import transaction

from orgs import services
from orgs.models import User
from orgs.principal import Principal

DEMO_ORG_ALIAS = "demo-org"


@dataclass(frozen=True)
class FirstStart:
    username: str
    password: str
    org_alias: str
    api_key: str


@transaction.atomic
def bootstrap_first_start() -> FirstStart | None:
    """Create the first user, org and key on an empty database; otherwise do nothing."""
    if User.objects.exists():
        return None
    password = secrets.token_urlsafe(12)
    admin = User.objects.create_superuser(username="admin", email="admin@localhost", password=password)
    principal = Principal(user=admin)
    org = services.organization_create(principal=principal, alias=DEMO_ORG_ALIAS, name="Demo organization")
    _, key = services.api_key_create(
        principal=principal, org=org, role="write", description="Created on first start"
    )
    return FirstStart(username=admin.username, password=password, org_alias=org.alias, api_key=key)
