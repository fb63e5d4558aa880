"""Access to one blob: blob members, blob-scoped API keys, and the effective role of a user."""

import json
import uuid

import pytest
from django.test import Client
from django.urls import reverse

from blobhub.models import IdempotencyRecord
from blobs.limits import CORE_LIMITS
from blobs.models import BlobMember, ManifestEntry, StoredObject
from blobs.services import content
from blobs.tests.support import (
    World,
    api,
    as_key,
    as_user,
    assert_error,
    assert_success,
    build_world,
    db_snapshot,
    engine_registered,
    files_engine,
)
from orgs.models import ApiKey, Membership, Role
from orgs.tests.factories import UserFactory
from orgs.tests.support import another_add_just_committed

pytestmark = pytest.mark.django_db

BLOB = "blobs/acme-corp/secret-model"
OTHER = "blobs/acme-corp/other-blob"


@pytest.fixture(autouse=True)
def _engine():
    with engine_registered(files_engine()):
        yield


@pytest.fixture
def world() -> World:
    return build_world()


def blob_user(world: World, role: str, blob=None):
    user = UserFactory()
    BlobMember.objects.create(org=world.org, blob=blob or world.blob, user=user, role=role)
    return user


# --- Blob members ------------------------------------------------------------------------------


def test_an_admin_adds_changes_and_removes_a_blob_member_and_the_access_follows(world: World):
    admin = as_user(world.admin)
    newcomer = as_user(world.stranger)
    assert_error(api(newcomer, "GET", BLOB), 403, "access_denied")

    body = {"user_id": str(world.stranger.id), "role": "read"}
    added = assert_success(api(admin, "POST", f"{BLOB}/members", body), 201)
    assert (added["member"]["user_id"], added["member"]["role"]) == (str(world.stranger.id), "read")
    listed = assert_success(api(admin, "GET", f"{BLOB}/members"))["members"]
    assert {(m["user_id"], m["role"]) for m in listed} == {(str(world.member.id), "read"), (body["user_id"], "read")}
    assert_success(api(newcomer, "GET", BLOB))
    assert_error(api(newcomer, "POST", f"{BLOB}/metadata", {"key": "k", "value": 1}), 403, "access_denied")

    changed = assert_success(api(admin, "PATCH", f"{BLOB}/members/{world.stranger.id}", {"role": "write"}))
    assert changed["member"]["role"] == "write" and changed["member"]["etag"] != added["member"]["etag"]
    assert_success(api(newcomer, "POST", f"{BLOB}/metadata", {"key": "k", "value": 1}), 201)

    assert_success(api(admin, "DELETE", f"{BLOB}/members/{world.stranger.id}"))
    assert_error(api(newcomer, "GET", BLOB), 403, "access_denied")
    listed = assert_success(api(admin, "GET", f"{BLOB}/members"))["members"]
    assert [m["user_id"] for m in listed] == [str(world.member.id)]


def test_a_user_is_a_member_of_a_blob_once(world: World):
    admin = as_user(world.admin)
    before = db_snapshot()

    again = api(admin, "POST", f"{BLOB}/members", {"user_id": str(world.member.id), "role": "admin"})

    assert_error(again, 409, "member_exists")
    assert db_snapshot() == before


def test_of_two_concurrent_adds_of_the_same_blob_member_the_loser_gets_a_conflict(world: World, monkeypatch):
    another_add_just_committed(monkeypatch, BlobMember)
    before = db_snapshot()
    answer = api(as_user(world.admin), "POST", f"{BLOB}/members", {"user_id": str(world.member.id), "role": "admin"})

    assert_error(answer, 409, "member_exists")
    assert db_snapshot() == before


def test_a_blob_at_its_member_limit_takes_no_new_member(world: World, settings):
    settings.LIMITS = {"core.members_per_blob": 1}
    before = db_snapshot()

    refused = api(as_user(world.admin), "POST", f"{BLOB}/members", {"user_id": str(world.stranger.id), "role": "read"})

    body = assert_error(refused, 400, "limit_exceeded")
    assert body["limit"] == {"id": "core.members_per_blob", "value": 1, "held": 1}
    assert db_snapshot() == before


def test_only_an_active_user_becomes_a_member(world: World):
    admin = as_user(world.admin)
    world.stranger.is_active = False
    world.stranger.save()
    before = db_snapshot()

    for user_id in (str(world.stranger.id), str(uuid.uuid4())):
        answer = api(admin, "POST", f"{BLOB}/members", {"user_id": user_id, "role": "read"})
        assert_error(answer, 400, "invalid_request_body")

    assert db_snapshot() == before


def test_an_operator_adds_a_blob_member_in_the_admin_and_its_org_follows_the_blob(world: World):
    operator = Client()
    operator.force_login(UserFactory(is_staff=True, is_superuser=True))
    form = {"blob": str(world.blob.id), "user": str(world.stranger.id), "role": "read"}

    assert operator.post(reverse("admin:blobs_blobmember_add"), form).status_code == 302
    member = BlobMember.objects.get(blob=world.blob, user=world.stranger)
    assert member.org == world.org
    assert_success(api(as_user(world.stranger), "GET", BLOB))

    moved = {**form, "blob": str(world.foreign_blob.id)}
    assert operator.post(reverse("admin:blobs_blobmember_change", args=[member.id]), moved).status_code == 302
    member.refresh_from_db()
    assert (member.blob, member.org) == (world.foreign_blob, world.foreign_blob.org)


def test_a_blob_admin_manages_the_members_of_that_blob_only(world: World):
    blob_admin = as_user(world.other_blob_member)  # admin of other-blob, nothing else
    body = {"user_id": str(world.stranger.id), "role": "write"}

    assert_success(api(blob_admin, "POST", f"{OTHER}/members", body), 201)
    assert_error(api(blob_admin, "POST", f"{BLOB}/members", body), 403, "access_denied")
    assert_error(api(blob_admin, "DELETE", f"{BLOB}/members/{world.member.id}"), 403, "access_denied")
    assert BlobMember.objects.filter(blob=world.blob).count() == 1


def test_a_user_with_only_a_blob_role_uses_that_blob_and_nothing_else_of_the_org(world: World):
    client = as_user(blob_user(world, "write"))
    draft = f"revisions/{world.draft.id}"

    assert_success(api(client, "GET", BLOB))
    assert_success(api(client, "GET", f"{BLOB}/revisions"))
    assert_success(api(client, "POST", f"{BLOB}/metadata", {"key": "mine", "value": 1}), 201)
    assert_success(api(client, "POST", f"{draft}/data/command", {"command": "put_file", "path": "m.txt", "text": "m"}))
    assert_success(api(client, "POST", f"{BLOB}/revisions", {"comment": "from a blob member"}), 201)
    listed = assert_success(api(client, "GET", "orgs/acme-corp/blobs"))["blobs"]
    assert [blob["alias"] for blob in listed] == ["secret-model"]
    assert assert_success(api(client, "GET", "users/me/orgs"))["organizations"] == []

    before = db_snapshot()
    for method, path, body in [
        ("GET", OTHER, None),
        ("GET", f"revisions/{world.other_blob.revisions.get().id}", None),
        ("GET", "orgs/acme-corp", None),
        ("GET", "orgs/acme-corp/members", None),
        ("GET", "orgs/acme-corp/api_keys", None),
        ("GET", "orgs/acme-corp/credentials", None),
        ("POST", "orgs/acme-corp/blobs", {"alias": "sneaky-blob", "type": "blobhub.compute.workflow"}),
        ("PATCH", BLOB, {"visibility": "public"}),
        ("POST", f"{BLOB}/members", {"user_id": str(world.stranger.id), "role": "admin"}),
        ("GET", f"{BLOB}/api_keys", None),
    ]:
        answer = api(client, method, path) if body is None else api(client, method, path, body)
        assert_error(answer, 403, "access_denied")
    assert db_snapshot() == before


def test_a_blob_read_member_reads_the_blob_but_writes_nothing(world: World):
    client = as_user(world.member)
    before = db_snapshot()

    assert_success(api(client, "GET", f"{BLOB}/revisions/{world.draft.id}"))
    assert_success(api(client, "GET", f"revisions/{world.draft.id}/metadata/owner"))
    put = {"command": "put_file", "path": "m.txt", "text": "m"}
    assert_error(api(client, "POST", f"revisions/{world.draft.id}/data/command", put), 403, "access_denied")
    assert_error(api(client, "PUT", f"{BLOB}/metadata/owner", {"value": 2}), 403, "access_denied")
    assert_error(api(client, "DELETE", f"revisions/{world.draft.id}"), 403, "access_denied")
    assert db_snapshot() == before


# --- Blob-scoped API keys ----------------------------------------------------------------------


def _create_blob_key(client, role: str = "write", **headers) -> dict:
    answer = api(client, "POST", f"{BLOB}/api_keys", {"role": role, "description": "deploy"}, **headers)
    return assert_success(answer, 201)["api_key"]


def test_a_blob_admin_creates_a_blob_key_that_is_shown_once_and_listed_under_the_blob(world: World):
    blob_admin = as_user(blob_user(world, "admin"))

    created = _create_blob_key(blob_admin)

    assert created["key"].startswith("bh_") and created["blob_id"] == str(world.blob.id)
    assert (created["role"], created["description"]) == ("write", "deploy")
    assert created["key"] not in json.dumps(list(ApiKey.objects.values()), default=str)
    listed = assert_success(api(blob_admin, "GET", f"{BLOB}/api_keys"))["api_keys"]
    assert created["id"] in [key["id"] for key in listed]
    assert all("key" not in key for key in listed)
    org_keys = assert_success(api(as_user(world.admin), "GET", "orgs/acme-corp/api_keys"))["api_keys"]
    assert created["id"] not in [key["id"] for key in org_keys]
    assert str(world.blob_key_row.id) not in [key["id"] for key in org_keys]


def test_a_blob_at_its_key_limit_gets_no_new_key_and_the_limits_route_lists_it(world: World, settings):
    settings.LIMITS = {"core.api_keys_per_blob": 1}
    refused = api(as_user(world.admin), "POST", f"{BLOB}/api_keys", {"role": "read"})
    body = assert_error(refused, 400, "limit_exceeded")
    assert body["limit"] == {"id": "core.api_keys_per_blob", "value": 1, "held": 1}

    groups = assert_success(api(as_user(world.admin), "GET", f"{BLOB}/limits"))["groups"]
    core = {item["id"]: item["value"] for group in groups if group["id"] == "core" for item in group["limits"]}
    assert core["core.api_keys_per_blob"] == 1
    assert core["core.members_per_blob"] == CORE_LIMITS["core.members_per_blob"]  # the default, unchanged


def test_an_idempotent_replay_of_a_blob_key_creation_does_not_show_or_store_the_secret(world: World):
    admin = as_user(world.admin)

    first = _create_blob_key(admin, HTTP_IDEMPOTENCY_KEY="create-deploy-key")
    body = {"role": "write", "description": "deploy"}
    replay = api(admin, "POST", f"{BLOB}/api_keys", body, HTTP_IDEMPOTENCY_KEY="create-deploy-key")

    replayed = assert_success(replay, 201)["api_key"]
    assert replayed["id"] == first["id"] and "key" not in replayed
    assert ApiKey.objects.filter(blob=world.blob).count() == 2  # the world's blob key and this one
    stored = json.dumps(list(IdempotencyRecord.objects.values("response_body")))
    assert first["key"] not in stored


def test_a_blob_key_works_on_its_blob_and_nowhere_else(world: World):
    client = as_key(_create_blob_key(as_user(world.admin))["key"])

    assert_success(api(client, "GET", BLOB))
    assert_success(api(client, "PUT", f"{BLOB}/metadata/owner", {"value": "deploy"}))
    put = {"command": "put_file", "path": "k.txt", "text": "k"}
    assert_success(api(client, "POST", f"revisions/{world.draft.id}/data/command", put))
    listed = assert_success(api(client, "GET", "orgs/acme-corp/blobs"))["blobs"]
    assert [blob["alias"] for blob in listed] == ["secret-model"]

    before = db_snapshot()
    for method, path, body in [
        ("GET", OTHER, None),
        ("GET", f"revisions/{world.other_blob.revisions.get().id}", None),
        ("GET", "users/me/orgs", None),
        ("GET", "orgs/acme-corp", None),
        ("GET", "orgs/acme-corp/members", None),
        ("GET", "orgs/acme-corp/api_keys", None),
        ("POST", "orgs/acme-corp/blobs", {"alias": "sneaky-blob", "type": "blobhub.compute.workflow"}),
        ("POST", f"{BLOB}/api_keys", {"role": "write"}),
        ("GET", f"{BLOB}/api_keys", None),
        ("PATCH", BLOB, {"visibility": "public"}),
        ("DELETE", BLOB, None),
    ]:
        answer = api(client, method, path) if body is None else api(client, method, path, body)
        assert_error(answer, 403, "access_denied")
    assert db_snapshot() == before


def test_a_read_blob_key_reads_its_blob_and_writes_nothing(world: World):
    client = as_key(_create_blob_key(as_user(world.admin), role="read")["key"])
    before = db_snapshot()

    assert_success(api(client, "GET", f"revisions/{world.draft.id}"))
    assert_error(api(client, "PUT", f"{BLOB}/metadata/owner", {"value": "x"}), 403, "access_denied")
    assert_error(api(client, "POST", f"{BLOB}/revisions", {"comment": "x"}), 403, "access_denied")
    assert db_snapshot() == before


def test_a_revoked_blob_key_stops_working_and_leaves_the_list(world: World):
    admin = as_user(world.admin)
    created = _create_blob_key(admin)
    client = as_key(created["key"])
    assert_success(api(client, "GET", BLOB))

    assert_success(api(admin, "DELETE", f"{BLOB}/api_keys/{created['id']}"))

    assert_error(api(client, "GET", BLOB), 401, "unauthenticated")
    listed = assert_success(api(admin, "GET", f"{BLOB}/api_keys"))["api_keys"]
    assert created["id"] not in [key["id"] for key in listed]
    assert_error(api(admin, "DELETE", f"{BLOB}/api_keys/{created['id']}"), 403, "access_denied")


def test_a_blob_key_is_revoked_under_its_own_blob_only(world: World):
    admin = as_user(world.admin)
    before = db_snapshot()

    via_other_blob = api(admin, "DELETE", f"{OTHER}/api_keys/{world.blob_key_row.id}")
    via_org = api(admin, "DELETE", f"orgs/acme-corp/api_keys/{world.blob_key_row.id}")

    assert_error(via_other_blob, 403, "access_denied")
    assert_error(via_org, 403, "access_denied")
    assert db_snapshot() == before
    assert_success(api(as_key(world.blob_key), "GET", BLOB))


def test_a_blob_key_cannot_be_created_already_expired(world: World):
    before = db_snapshot()

    body = {"role": "read", "expires_at": "2001-01-01T00:00:00Z"}
    answer = api(as_user(world.admin), "POST", f"{BLOB}/api_keys", body)

    assert_error(answer, 400, "invalid_request_body")
    assert db_snapshot() == before


# --- The effective role ------------------------------------------------------------------------

PROBES = {
    "read": ("GET", f"{BLOB}/metadata/owner", None, 200),
    "write": ("PUT", f"{BLOB}/metadata/owner", {"value": "probe"}, 200),
    "admin": ("GET", f"{BLOB}/api_keys", None, 200),
}
RANK = {None: 0, "read": 1, "write": 2, "admin": 3}


@pytest.mark.parametrize(
    ("org_role", "blob_role", "effective"),
    [
        ("read", "admin", "admin"),
        ("read", "write", "write"),
        ("admin", "read", "admin"),
        ("write", "read", "write"),
        (None, "read", "read"),
        ("read", None, "read"),
    ],
)
def test_a_users_role_on_a_blob_is_the_stronger_of_org_and_blob_role(world: World, org_role, blob_role, effective):
    user = UserFactory()
    if org_role:
        Membership.objects.create(org=world.org, user=user, role=org_role)
    if blob_role:
        BlobMember.objects.create(org=world.org, blob=world.blob, user=user, role=blob_role)
    client = as_user(user)

    for level, (method, path, body, status) in PROBES.items():
        answer = api(client, method, path) if body is None else api(client, method, path, body)
        if RANK[level] <= RANK[effective]:
            assert_success(answer, status)
        else:
            assert_error(answer, 403, "access_denied")


def test_a_blob_role_on_one_blob_lifts_nothing_on_another(world: World):
    user = UserFactory()
    Membership.objects.create(org=world.org, user=user, role=Role.READ)
    BlobMember.objects.create(org=world.org, blob=world.other_blob, user=user, role=Role.ADMIN)
    client = as_user(user)

    assert_success(api(client, "GET", BLOB))
    assert_error(api(client, "PUT", f"{BLOB}/metadata/owner", {"value": "x"}), 403, "access_denied")
    assert_error(api(client, "PATCH", BLOB, {"visibility": "public"}), 403, "access_denied")
    assert_success(api(client, "PATCH", OTHER, {"visibility": "public"}))


def test_a_blob_admin_deletes_a_blob_with_committed_revisions_and_a_writer_does_not(world: World):
    writer = as_user(blob_user(world, "write"))
    assert_error(api(writer, "DELETE", BLOB), 403, "access_denied")

    assert_success(api(as_user(blob_user(world, "admin")), "DELETE", BLOB))

    assert_error(api(as_user(world.admin), "GET", BLOB), 403, "access_denied")
    assert not ApiKey.objects.filter(id=world.blob_key_row.id).exists()


def test_deleting_a_blob_removes_nothing_another_org_references(world: World):
    foreign_draft = world.foreign_blob.revisions.get()
    content.file_put(foreign_draft, "copy.txt", b"one")  # the same bytes as the world blob's a.txt
    shared = ManifestEntry.objects.get(revision=foreign_draft).object_id

    assert_success(api(as_user(world.admin), "DELETE", BLOB))

    assert StoredObject.objects.filter(sha256=shared).exists()
    read = {"command": "read_file", "path": "copy.txt"}
    answer = assert_success(api(as_user(world.foreign_admin), "POST", f"revisions/{foreign_draft.id}/data/query", read))
    assert answer["text"] == "one"
