"""Org API keys: shown once, stored as a hash, revocable, expiring, and recording their last use."""

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from blobhub.models import IdempotencyRecord
from orgs.models import ApiKey, AuditEntry
from orgs.tests.factories import MembershipFactory, OrganizationFactory
from orgs.tests.support import api, as_key, as_user, assert_error, assert_success, secret_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin():
    org = OrganizationFactory(alias="acme-corp")
    return MembershipFactory(org=org, role="admin").user


def create_key(admin, **body) -> dict:
    answer = api(as_user(admin), "POST", "orgs/acme-corp/api_keys", {"role": "write", **body})
    return assert_success(answer, 201)["api_key"]


def every_stored_value() -> str:
    """Every column of every row that could hold a key, as the database returns it."""
    with connection.cursor() as cursor:
        rows = []
        for table in (ApiKey._meta.db_table, AuditEntry._meta.db_table, IdempotencyRecord._meta.db_table):
            cursor.execute(f"SELECT * FROM {table}")  # noqa: S608 - fixed table names
            rows.extend(cursor.fetchall())
    return repr(rows)


def test_the_create_answer_shows_the_key_once_and_the_key_works(admin):
    created = create_key(admin, description="deploy bot")

    assert set(created) == {"id", "role", "description", "created_at", "expires_at", "last_used_at", "key"}
    assert created["key"].startswith("bh_")
    assert (created["role"], created["description"], created["last_used_at"]) == ("write", "deploy bot", None)
    assert_success(as_key(created["key"]).get("/v1/orgs/acme-corp"))


def test_the_key_list_never_shows_a_key(admin):
    created = create_key(admin)
    answer = as_user(admin).get("/v1/orgs/acme-corp/api_keys")
    listed = assert_success(answer)["api_keys"]
    assert [item["id"] for item in listed] == [created["id"]]
    assert "key" not in listed[0]
    assert created["key"] not in answer.content.decode()
    assert secret_of(created["key"]) not in answer.content.decode()


def test_no_column_of_the_database_holds_the_key(admin):
    created = create_key(admin)
    secret_part = secret_of(created["key"])

    stored = every_stored_value()

    assert created["key"] not in stored
    assert secret_part not in stored
    row = ApiKey.objects.get(id=created["id"])
    assert row.hashed_key != created["key"] and len(row.hashed_key) == 64


def test_a_replayed_create_neither_stores_nor_shows_the_key_again(admin):
    client = as_user(admin)
    first = api(client, "POST", "orgs/acme-corp/api_keys", {"role": "read"}, HTTP_IDEMPOTENCY_KEY="make-key-1")
    key = assert_success(first, 201)["api_key"]["key"]

    replay = api(client, "POST", "orgs/acme-corp/api_keys", {"role": "read"}, HTTP_IDEMPOTENCY_KEY="make-key-1")

    assert replay.status_code == 201
    assert replay["Idempotent-Replayed"] == "true"
    assert replay.json()["api_key"]["id"] == first.json()["api_key"]["id"]
    assert key not in replay.content.decode()
    assert secret_of(key) not in every_stored_value()
    assert ApiKey.objects.count() == 1


def test_a_revoked_key_is_refused_and_leaves_the_list(admin):
    created = create_key(admin)
    assert_success(as_user(admin).delete(f"/v1/orgs/acme-corp/api_keys/{created['id']}"))

    assert_error(as_key(created["key"]).get("/v1/orgs/acme-corp"), 401, "unauthenticated")
    assert assert_success(as_user(admin).get("/v1/orgs/acme-corp/api_keys"))["api_keys"] == []
    assert ApiKey.objects.get(id=created["id"]).revoked_at is not None


def test_an_org_at_its_key_limit_gets_no_new_key_until_one_is_revoked(admin, settings):
    settings.LIMITS = {"core.api_keys_per_organization": 1}
    first = create_key(admin)

    refused = api(as_user(admin), "POST", "orgs/acme-corp/api_keys", {"role": "read"})
    body = assert_error(refused, 400, "limit_exceeded")
    assert body["limit"] == {"id": "core.api_keys_per_organization", "value": 1, "held": 1}

    assert_success(api(as_user(admin), "DELETE", f"orgs/acme-corp/api_keys/{first['id']}"))
    create_key(admin)  # a revoked key no longer counts


def test_revoking_a_revoked_key_again_is_refused_as_absent(admin):
    created = create_key(admin)
    assert_success(as_user(admin).delete(f"/v1/orgs/acme-corp/api_keys/{created['id']}"))
    again = as_user(admin).delete(f"/v1/orgs/acme-corp/api_keys/{created['id']}")
    assert_error(again, 403, "access_denied")


def test_a_key_past_its_expiry_is_refused(admin):
    created = create_key(admin, expires_at=(timezone.now() + timedelta(hours=1)).isoformat())
    assert_success(as_key(created["key"]).get("/v1/orgs/acme-corp"))

    ApiKey.objects.filter(id=created["id"]).update(expires_at=timezone.now() - timedelta(seconds=1))

    assert_error(as_key(created["key"]).get("/v1/orgs/acme-corp"), 401, "unauthenticated")


def test_a_key_with_a_wrong_secret_for_a_real_lookup_id_is_refused(admin):
    created = create_key(admin)
    secret = secret_of(created["key"])
    prefix = created["key"][: -len(secret) - 1]
    forged = f"{prefix}_{'A' if secret[0] != 'A' else 'B'}{secret[1:]}"
    assert_error(as_key(forged).get("/v1/orgs/acme-corp"), 401, "unauthenticated")


def test_using_a_key_sets_last_used_at(admin):
    created = create_key(admin)
    assert ApiKey.objects.get(id=created["id"]).last_used_at is None

    before = timezone.now()
    assert_success(as_key(created["key"]).get("/v1/users/me"))

    last_used = ApiKey.objects.get(id=created["id"]).last_used_at
    assert last_used is not None and before <= last_used <= timezone.now()
    listed = assert_success(as_user(admin).get("/v1/orgs/acme-corp/api_keys"))["api_keys"][0]
    assert listed["last_used_at"] is not None


def test_a_key_holds_its_own_role_not_its_creators(admin):
    created = create_key(admin, role="read")
    client = as_key(created["key"])
    assert_success(client.get("/v1/orgs/acme-corp/members"))
    assert_error(api(client, "PATCH", "orgs/acme-corp", {"name": "Taken over"}), 403, "access_denied")
    assert_error(client.get("/v1/orgs/acme-corp/api_keys"), 403, "access_denied")
