"""Helpers for the orgs API tests: a populated world, a request shortcut, envelope checks."""

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone
from rest_framework.test import APIClient

from blobhub.models import IdempotencyRecord
from orgs import crypto, tokens
from orgs.models import ApiKey, AuditEntry, Credential, Membership, Organization, User
from orgs.tests.factories import MembershipFactory, OrganizationFactory, UserFactory, make_api_key

NO_BODY = object()
CREDENTIAL_VALUE = "sk-live-the-credential-value-4242"


def api(client: APIClient, method: str, path: str, body: Any = NO_BODY, **headers):
    """Send `method /v1/<path>`; `body` is JSON-encoded as is (so `None` sends `null`)."""
    send = getattr(client, method.lower())
    if body is NO_BODY:
        return send(f"/v1/{path}", **headers)
    return send(f"/v1/{path}", data=json.dumps(body), content_type="application/json", **headers)


def secret_of(key: str) -> str:
    """The secret part of an API key `bh_<lookup>_<secret>` (the secret may itself hold "_")."""
    return key.split("_", 2)[2]


def as_user(user: User) -> APIClient:
    return bearer(tokens.issue_pair(user=user)["access_token"])


def as_key(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=key)
    return client


def bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def assert_error(response, status: int, code: str | set[str]) -> dict:
    """The failure envelope of API.md §1, as JSON, with the expected status and code."""
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = json.loads(response.content)
    assert body["status"] == "error"
    assert body["error"] in ({code} if isinstance(code, str) else code)
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["details"], list)
    assert "Traceback" not in response.content.decode()
    return body


def assert_success(response, status: int = 200) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["status"] == "success"
    return body


def another_add_just_committed(monkeypatch, model) -> None:
    """Simulate a concurrent add of the same row: the next `exists()` check on `model` misses
    it (the other add committed just after the check looked), so only the insert finds it."""
    real_exists = QuerySet.exists

    def misses_the_other_add(queryset) -> bool:
        if queryset.model is not model:
            return real_exists(queryset)
        monkeypatch.setattr(QuerySet, "exists", real_exists)
        return False

    monkeypatch.setattr(QuerySet, "exists", misses_the_other_add)


def db_snapshot() -> dict:
    """Every row a route of this app could change. `last_used_at` moves on any key use."""
    return {
        "users": list(User.objects.order_by("id").values()),
        "orgs": list(Organization.objects.order_by("id").values()),
        "members": list(Membership.objects.order_by("id").values()),
        "keys": list(ApiKey.objects.order_by("id").values(*_fields(ApiKey, exclude={"last_used_at"}))),
        "credentials": list(Credential.objects.order_by("id").values()),
        "audit": list(AuditEntry.objects.order_by("id").values()),
        "idempotency": list(IdempotencyRecord.objects.order_by("id").values()),
    }


def _fields(model, exclude: set[str]) -> list[str]:
    return [field.attname for field in model._meta.concrete_fields if field.attname not in exclude]


def make_credential(org: Organization, alias: str = "mail-token", value: str = CREDENTIAL_VALUE) -> Credential:
    return Credential.objects.create(org=org, alias=alias, provider="http", ciphertext=crypto.encrypt(value))


@dataclass
class World:
    """Org A with one user per role, keys and a credential; org B with its own admin and key."""

    org: Organization
    admin: User
    writer: User
    reader: User
    stranger: User
    write_key: str
    read_key: str
    revoked_key: str
    expired_key: str
    key_row: ApiKey
    credential: Credential
    other_org: Organization
    other_admin: User
    other_key: str


def build_world() -> World:
    org = OrganizationFactory(alias="acme-corp", name="Acme")
    admin = MembershipFactory(org=org, role="admin").user
    writer = MembershipFactory(org=org, role="write").user
    reader = MembershipFactory(org=org, role="read").user
    key_row, write_key = make_api_key(org, "write", created_by=admin)
    _, read_key = make_api_key(org, "read", created_by=admin)
    _, revoked_key = make_api_key(org, "write", created_by=admin, revoked_at=timezone.now())
    _, expired_key = make_api_key(org, "write", created_by=admin, expires_at=timezone.now() - timedelta(seconds=1))
    other_org = OrganizationFactory(alias="globex-corp", name="Globex")
    other_admin = MembershipFactory(org=other_org, role="admin").user
    _, other_key = make_api_key(other_org, "write", created_by=other_admin)
    return World(
        org=org,
        admin=admin,
        writer=writer,
        reader=reader,
        stranger=UserFactory(),
        write_key=write_key,
        read_key=read_key,
        revoked_key=revoked_key,
        expired_key=expired_key,
        key_row=key_row,
        credential=make_credential(org),
        other_org=other_org,
        other_admin=other_admin,
        other_key=other_key,
    )
