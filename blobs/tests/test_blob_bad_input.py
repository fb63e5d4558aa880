"""Bad input on blob routes, and stale writes: each refused in the envelope, nothing changed."""

import json
import uuid

import pytest
from django.test import RequestFactory
from rest_framework.request import Request

from blobhub.api.errors import AccessDenied
from blobhub.api.views import STALE, if_match
from blobs import selectors
from blobs.models import Blob, BlobMetadata
from blobs.tests.support import (
    WORKFLOW,
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
from orgs.principal import Principal

pytestmark = pytest.mark.django_db

ORG_BLOBS = "orgs/acme-corp/blobs"
BLOB = "blobs/acme-corp/secret-model"
UUID_ALIAS = "12345678-1234-4234-8234-123456789abc"
HEX_ALIAS = "0123456789abcdef0123456789abcdef"  # 32 hex digits parse as a UUID too
MAX_VALUE = 64 * 1024
JSON = "application/json"
LARGE_OBJECT = {f"k{n:04d}": "v" * 64 for n in range(1000)}


@pytest.fixture(autouse=True)
def _engine():
    with engine_registered(files_engine()):
        yield


@pytest.fixture
def world() -> World:
    return build_world()


@pytest.fixture
def admin(world: World):
    return as_user(world.admin)


def refused(response, path: str | None = None, status: int = 400, code: str = "invalid_request_body") -> dict:
    """A 400 (by default) in the envelope; with `path`, a detail names that field."""
    body = assert_error(response, status, code)
    if path is not None:
        assert path in [detail["path"] for detail in body["details"]], body
    return body


# --- Creating and changing blobs ---------------------------------------------------------------

VALID_BLOB = {"alias": "new-model", "type": WORKFLOW}

BAD_BLOBS = [
    pytest.param({**VALID_BLOB, "colour": "red"}, "colour", id="unknown field"),
    pytest.param({**VALID_BLOB, "alias": None}, "alias", id="null alias"),
    pytest.param({**VALID_BLOB, "type": None}, "type", id="null type"),
    pytest.param({**VALID_BLOB, "visibility": None}, "visibility", id="null visibility"),
    pytest.param({**VALID_BLOB, "description": None}, "description", id="null description"),
    pytest.param({"type": WORKFLOW}, "alias", id="missing alias"),
    pytest.param({"alias": "new-model"}, "type", id="missing type"),
    pytest.param({**VALID_BLOB, "alias": 123456}, "alias", id="numeric alias"),
    pytest.param({**VALID_BLOB, "type": [WORKFLOW]}, "type", id="type in a list"),
    pytest.param({**VALID_BLOB, "visibility": True}, "visibility", id="boolean visibility"),
    pytest.param({**VALID_BLOB, "description": 5}, "description", id="numeric description"),
    pytest.param({**VALID_BLOB, "alias": "short"}, "alias", id="alias of 5"),
    pytest.param({**VALID_BLOB, "alias": "a" * 43}, "alias", id="alias of 43"),
    pytest.param({**VALID_BLOB, "alias": "New-Model"}, "alias", id="uppercase alias"),
    pytest.param({**VALID_BLOB, "alias": "new model"}, "alias", id="alias with a space"),
    pytest.param({**VALID_BLOB, "alias": UUID_ALIAS}, "alias", id="uuid-shaped alias"),
    pytest.param({**VALID_BLOB, "alias": HEX_ALIAS}, "alias", id="32-hex-digit alias"),
    pytest.param({**VALID_BLOB, "type": "blobhub.compute.spreadsheet"}, "type", id="unknown type"),
    pytest.param({**VALID_BLOB, "type": "BLOBHUB.COMPUTE.WORKFLOW"}, "type", id="type in capitals"),
    pytest.param({**VALID_BLOB, "visibility": "internal"}, "visibility", id="unknown visibility"),
    pytest.param({**VALID_BLOB, "visibility": "PUBLIC"}, "visibility", id="visibility in capitals"),
    pytest.param({**VALID_BLOB, "description": "d" * 1025}, "description", id="description of 1025"),
    pytest.param([VALID_BLOB], None, id="a list"),
    pytest.param("new-model", None, id="a string"),
    pytest.param(None, None, id="null"),
]


@pytest.mark.parametrize(("body", "field"), BAD_BLOBS)
def test_a_bad_blob_is_not_created(world: World, body, field):
    before = db_snapshot()

    refused(api(as_key(world.write_key), "POST", ORG_BLOBS, body), field)

    assert db_snapshot() == before


@pytest.mark.parametrize(
    "body",
    [
        {"alias": "sixsix", "type": WORKFLOW},
        {"alias": "a" * 42, "type": WORKFLOW, "description": "d" * 1024, "visibility": "private"},
        {"alias": "0123456789abcdef0123456789abcdeg", "type": "blobhub.model.onnx"},
    ],
    ids=["alias of 6", "alias of 42 and description of 1024", "hex-like alias that is no uuid"],
)
def test_the_limits_themselves_are_accepted(world: World, body):
    created = assert_success(api(as_key(world.write_key), "POST", ORG_BLOBS, body), 201)["blob"]

    assert created["alias"] == body["alias"]


@pytest.mark.parametrize(
    ("raw", "content_type", "status", "code"),
    [
        ('{"alias": "new-model", "type": ', JSON, 400, "invalid_request_body"),
        ("{'alias': 'new-model'}", JSON, 400, "invalid_request_body"),
        ('{"alias": "new-model", "type": "blobhub.model.onnx", "description": NaN}', JSON, 400, "invalid_request_body"),
        (b'{"alias": "new-model\xff", "type": "blobhub.model.onnx"}', JSON, 400, "invalid_request_body"),
        ("alias=new-model&type=blobhub.model.onnx", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ],
    ids=["truncated", "single quotes", "NaN", "not utf-8", "a form"],
)
def test_a_body_that_is_not_json_is_refused(world: World, raw, content_type, status, code):
    client = as_key(world.write_key)
    before = db_snapshot()

    assert_error(client.post(f"/v1/{ORG_BLOBS}", data=raw, content_type=content_type), status, code)

    assert db_snapshot() == before


def test_an_alias_in_use_is_refused_on_create_and_on_rename(world: World, admin):
    before = db_snapshot()

    created = api(admin, "POST", ORG_BLOBS, {"alias": "secret-model", "type": WORKFLOW})
    renamed = api(admin, "PATCH", "blobs/acme-corp/other-blob", {"alias": "secret-model"})

    for answer in (created, renamed):
        assert_error(answer, 400, "alias_in_use")
    assert db_snapshot() == before


def test_an_alias_is_per_organization_and_a_blob_keeps_its_own(world: World, admin):
    foreign = as_user(world.foreign_admin)

    assert_success(api(foreign, "POST", "orgs/globex-corp/blobs", {"alias": "secret-model", "type": WORKFLOW}), 201)
    assert_success(api(admin, "PATCH", BLOB, {"alias": "secret-model", "description": "same alias"}))


BAD_PATCHES = [
    pytest.param({"colour": "red"}, "colour", id="unknown field"),
    pytest.param({"description": None}, "description", id="null description"),
    pytest.param({"alias": None}, "alias", id="null alias"),
    pytest.param({"visibility": None}, "visibility", id="null visibility"),
    pytest.param({"default_revision_id": None}, "default_revision_id", id="null default"),
    pytest.param({"description": "d" * 1025}, "description", id="description of 1025"),
    pytest.param({"alias": "x" * 43}, "alias", id="alias of 43"),
    pytest.param({"alias": UUID_ALIAS}, "alias", id="uuid-shaped alias"),
    pytest.param({"visibility": "open"}, "visibility", id="unknown visibility"),
    pytest.param({"default_revision_id": "not-a-uuid"}, "default_revision_id", id="malformed default"),
    pytest.param({"default_revision_id": 5}, "default_revision_id", id="numeric default"),
    pytest.param({"type": "blobhub.model.onnx"}, "type", id="type cannot change"),
    pytest.param({"status": "deleting"}, "status", id="status cannot be set"),
    pytest.param([{"description": "x"}], None, id="a list"),
]


@pytest.mark.parametrize(("body", "field"), BAD_PATCHES)
def test_a_bad_blob_change_changes_nothing(world: World, admin, body, field):
    before = db_snapshot()

    refused(api(admin, "PATCH", BLOB, body), field)

    assert db_snapshot() == before


def test_the_default_moves_only_to_a_committed_revision_of_the_same_blob(world: World, admin):
    other_revision = world.other_blob.revisions.get()
    before = db_snapshot()

    for target in (world.draft.id, other_revision.id, uuid.uuid4()):
        assert_error(api(admin, "PATCH", BLOB, {"default_revision_id": str(target)}), 409, "revision_not_committed")

    assert db_snapshot() == before


# --- Revisions ---------------------------------------------------------------------------------

BAD_COMMENTS = [
    pytest.param({"comment": ""}, id="empty"),
    pytest.param({"comment": "c" * 201}, id="201 characters"),
    pytest.param({"comment": None}, id="null"),
    pytest.param({"comment": 7}, id="a number"),
    pytest.param({"comment": "ok", "parent_id": "x"}, id="unknown field"),
]


@pytest.mark.parametrize("body", BAD_COMMENTS)
@pytest.mark.parametrize(
    "route",
    ["blobs/acme-corp/secret-model/revisions", "revisions/{draft}/commit", "revisions/{committed}/snapshot"],
    ids=["new draft", "commit", "snapshot"],
)
def test_a_bad_comment_is_refused(world: World, route, body):
    path = route.format(draft=world.draft.id, committed=world.committed.id)
    before = db_snapshot()

    refused(api(as_key(world.write_key), "POST", path, body), "comment" if "parent_id" not in body else "parent_id")

    assert db_snapshot() == before


def test_a_draft_needs_its_comment_and_takes_one_of_200_characters(world: World):
    client = as_key(world.write_key)
    before = db_snapshot()
    refused(api(client, "POST", f"{BLOB}/revisions", {}), "comment")
    assert db_snapshot() == before

    created = assert_success(api(client, "POST", f"{BLOB}/revisions", {"comment": "c" * 200}), 201)
    revision = assert_success(api(client, "GET", f"revisions/{created['revision_id']}"))["revision"]
    assert revision["comment"] == "c" * 200


@pytest.mark.parametrize("ref", ["not-a-uuid", "DEFAULT", str(uuid.uuid4()), "other-blob", "{other}"])
def test_a_bad_revision_ref_inside_a_readable_blob_is_revision_not_found(world: World, ref):
    ref = ref.replace("{other}", str(world.other_blob.revisions.get().id))

    refused(api(as_key(world.read_key), "GET", f"{BLOB}/revisions/{ref}"), status=404, code="revision_not_found")


def test_the_default_of_a_blob_without_one_is_revision_not_found(world: World):
    answer = api(as_key(world.read_key), "GET", "blobs/acme-corp/other-blob/revisions/default")

    refused(answer, status=404, code="revision_not_found")


@pytest.mark.parametrize(
    ("method", "route", "body"),
    [
        ("GET", "revisions/{}", None),
        ("DELETE", "revisions/{}", None),
        ("POST", "revisions/{}/commit", {}),
        ("GET", "revisions/{}/metadata", None),
        ("GET", "revisions/{}/metadata/owner/resolve", None),
        ("POST", "revisions/{}/data/query", {"command": "diff", "against": str(uuid.uuid4())}),
        ("GET", "operations/{}", None),
        ("POST", "operations/{}/cancel", None),
        ("PATCH", "blobs/acme-corp/secret-model/members/{}", {"role": "write"}),
        ("DELETE", "blobs/acme-corp/secret-model/api_keys/{}", None),
    ],
)
@pytest.mark.parametrize("bad_id", ["not-a-uuid", "12345", "0" * 33, "%20"])
def test_a_malformed_id_in_a_path_is_absent(world: World, admin, method, route, body, bad_id):
    before = db_snapshot()

    def call(value: str):
        path = route.format(value)
        return api(admin, method, path) if body is None else api(admin, method, path, body)

    absent = assert_error(call(str(uuid.uuid4())), 403, "access_denied")
    assert assert_error(call(bad_id), 403, "access_denied") == absent
    assert db_snapshot() == before


@pytest.mark.parametrize("path", ["blobs/acme%00/secret-model", "blobs/acme-corp/secret%00", "orgs/acme%00/blobs"])
def test_a_nul_in_an_org_or_blob_path_part_is_absent(world: World, admin, path):
    # PostgreSQL text cannot hold a NUL: the lookup must not send it (it answered 500 there).
    assert_error(api(admin, "GET", path), 403, "access_denied")


@pytest.mark.parametrize(("org", "blob"), [("acme\x00", "secret-model"), ("acme-corp", "secret\x00")])
def test_a_nul_in_an_org_or_blob_ref_is_looked_up_without_a_query(world: World, org, blob, django_assert_num_queries):
    with django_assert_num_queries(0), pytest.raises(AccessDenied):
        selectors.blob_get(Principal(user=world.admin), org, blob)


@pytest.mark.parametrize(
    "query",
    ["type=", "type=null", "type=blobhub.compute.nope", "limit=0", "limit=201", "limit=ten", "cursor=", "colour=red",
     "limit=5&limit=6"],
)
def test_a_bad_query_parameter_on_a_blob_list_is_refused(world: World, query):
    client = as_key(world.read_key)

    refused(api(client, "GET", f"{ORG_BLOBS}?{query}"))
    refused(api(client, "GET", f"{BLOB}/revisions?{query}"))


# --- Metadata ----------------------------------------------------------------------------------

BAD_METADATA = [
    pytest.param({"key": "k" * 129, "value": 1}, "key", id="key of 129"),
    pytest.param({"key": "bad key", "value": 1}, "key", id="key with a space"),
    pytest.param({"key": "", "value": 1}, "key", id="empty key"),
    pytest.param({"key": None, "value": 1}, "key", id="null key"),
    pytest.param({"key": 5, "value": 1}, "key", id="numeric key"),
    pytest.param({"key": "fresh", "value": None}, "value", id="null value"),
    pytest.param({"key": "fresh", "value": "\ud800"}, "", id="a lone surrogate"),
    pytest.param({"key": "fresh", "value": {"a\x00b": 1}}, "", id="a NUL in a key"),
    pytest.param({"key": "fresh"}, "value", id="missing value"),
    pytest.param({"key": "fresh", "value": 1, "etag": "x"}, "etag", id="unknown field"),
    pytest.param({"key": "fresh", "value": "v" * MAX_VALUE}, "value", id="value over 64 KiB"),
    pytest.param({"key": "fresh", "value": LARGE_OBJECT}, "value", id="object of 75 KiB"),
]


@pytest.mark.parametrize(("body", "field"), BAD_METADATA)
@pytest.mark.parametrize("owner", ["blob", "revision"])
def test_bad_metadata_is_not_stored(world: World, owner, body, field):
    path = f"{BLOB}/metadata" if owner == "blob" else f"revisions/{world.draft.id}/metadata"
    before = db_snapshot()

    refused(api(as_key(world.write_key), "POST", path, body), field)

    assert db_snapshot() == before


@pytest.mark.parametrize("owner", ["blob", "revision"])
def test_a_metadata_key_in_the_path_with_a_trailing_newline_is_not_stored(world: World, owner):
    path = f"{BLOB}/metadata" if owner == "blob" else f"revisions/{world.draft.id}/metadata"
    before = db_snapshot()

    refused(api(as_key(world.write_key), "PUT", f"{path}/owner%0A", {"value": 1}), "key")

    assert db_snapshot() == before


@pytest.mark.parametrize("owner", ["blob", "revision"])
def test_a_value_of_exactly_64_kib_is_stored(world: World, owner):
    path = f"{BLOB}/metadata" if owner == "blob" else f"revisions/{world.draft.id}/metadata"
    value = "v" * (MAX_VALUE - 2)  # the two quotes make it 64 KiB of canonical JSON

    stored = assert_success(api(as_key(world.write_key), "POST", path, {"key": "big", "value": value}), 201)

    assert stored["metadata"]["value"] == value


@pytest.mark.parametrize("owner", ["blob", "revision"])
def test_posting_an_existing_metadata_key_is_a_conflict(world: World, owner):
    path = f"{BLOB}/metadata" if owner == "blob" else f"revisions/{world.draft.id}/metadata"
    before = db_snapshot()

    answer = api(as_key(world.write_key), "POST", path, {"key": "owner", "value": "again"})

    refused(answer, status=409, code="metadata_exists")

    assert db_snapshot() == before


@pytest.mark.parametrize(
    ("method", "key", "body", "status", "code"),
    [
        ("PUT", "owner", {"value": None}, 400, "invalid_request_body"),
        ("PUT", "owner", {}, 400, "invalid_request_body"),
        ("PUT", "owner", {"value": 1, "key": "owner"}, 400, "invalid_request_body"),
        ("PUT", "owner", {"value": "v" * MAX_VALUE}, 400, "invalid_request_body"),
        ("PUT", "fresh", {"value": "v" * MAX_VALUE}, 400, "invalid_request_body"),
        ("PUT", "k" * 129, {"value": 1}, 400, "invalid_request_body"),
        ("PUT", "bad%20key", {"value": 1}, 400, "invalid_request_body"),
        ("GET", "k" * 129, None, 400, "invalid_request_body"),
        ("GET", "no-such-key", None, 404, "metadata_not_found"),
        ("DELETE", "no-such-key", None, 404, "metadata_not_found"),
        ("DELETE", "bad%20key", None, 400, "invalid_request_body"),
    ],
)
@pytest.mark.parametrize("owner", ["blob", "revision"])
def test_a_bad_metadata_key_or_value_in_a_path_changes_nothing(world: World, owner, method, key, body, status, code):
    base = f"{BLOB}/metadata" if owner == "blob" else f"revisions/{world.draft.id}/metadata"
    client = as_key(world.write_key)
    before = db_snapshot()

    answer = api(client, method, f"{base}/{key}") if body is None else api(client, method, f"{base}/{key}", body)

    refused(answer, status=status, code=code)
    assert db_snapshot() == before


def test_resolve_of_a_key_nobody_has_is_metadata_not_found(world: World):
    answer = api(as_key(world.read_key), "GET", f"revisions/{world.draft.id}/metadata/nobody/resolve")

    refused(answer, status=404, code="metadata_not_found")


def test_an_oversized_body_is_refused_before_it_is_read(world: World):
    before = db_snapshot()

    answer = api(as_key(world.write_key), "POST", f"{BLOB}/metadata", {"key": "huge", "value": "v" * (6 * 1024 * 1024)})

    refused(answer, status=413, code="payload_too_large")
    assert db_snapshot() == before


# --- The data channel --------------------------------------------------------------------------

BAD_CHANNEL_BODIES = [
    pytest.param({}, id="no command"),
    pytest.param({"path": "a.txt", "text": "x"}, id="arguments without a command"),
    pytest.param({"command": None}, id="null command"),
    pytest.param({"command": ""}, id="empty command"),
    pytest.param({"command": 5}, id="numeric command"),
    pytest.param({"command": ["put_file"]}, id="command in a list"),
    pytest.param([{"command": "put_file"}], id="a list"),
    pytest.param("put_file", id="a string"),
]


@pytest.mark.parametrize("body", BAD_CHANNEL_BODIES)
@pytest.mark.parametrize("mode", ["query", "command"])
def test_a_data_channel_body_without_a_command_is_refused(world: World, mode, body):
    before = db_snapshot()

    refused(api(as_key(world.write_key), "POST", f"revisions/{world.draft.id}/data/{mode}", body))

    assert db_snapshot() == before


@pytest.mark.parametrize(
    "header",
    [None, "not json", "{\"command\": ", "[\"put_file\"]", "\"put_file\"", "{\"path\": \"a.txt\"}"],
    ids=["absent", "not json", "truncated", "a list", "a string", "no command"],
)
def test_an_octet_stream_body_with_bad_arguments_is_refused(world: World, header):
    client = as_key(world.write_key)
    headers = {} if header is None else {"HTTP_X_REQUEST_BODY": header}
    before = db_snapshot()

    answer = client.post(
        f"/v1/revisions/{world.draft.id}/data/command",
        data=b"\x00\x01bytes",
        content_type="application/octet-stream",
        **headers,
    )

    refused(answer)
    assert db_snapshot() == before


def test_the_data_channel_refuses_unknown_commands_and_writes_to_a_committed_revision(world: World):
    client = as_key(world.write_key)
    before = db_snapshot()

    unknown = api(client, "POST", f"revisions/{world.draft.id}/data/command", {"command": "drop_tables"})
    put = {"command": "put_file", "path": "a.txt", "text": "x"}
    frozen = api(client, "POST", f"revisions/{world.committed.id}/data/command", put)
    bad_path = api(client, "POST", f"revisions/{world.draft.id}/data/command", {**put, "path": "../x"})
    bad_against = api(client, "POST", f"revisions/{world.draft.id}/data/query", {"command": "diff", "against": "nope"})

    refused(unknown, code="unknown_command")
    refused(frozen, status=409, code="revision_not_writable")
    refused(bad_path)
    refused(bad_against, "against")
    assert db_snapshot() == before


# --- Blob members and keys ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "route", "body", "field"),
    [
        ("POST", "members", {"user_id": "not-a-uuid", "role": "read"}, "user_id"),
        ("POST", "members", {"user_id": "{stranger}", "role": "owner"}, "role"),
        ("POST", "members", {"user_id": "{stranger}", "role": None}, "role"),
        ("POST", "members", {"user_id": "{stranger}"}, "role"),
        ("POST", "members", {"user_id": "{stranger}", "role": "read", "org": "x"}, "org"),
        ("PATCH", "members/{member}", {"role": "ADMIN"}, "role"),
        ("PATCH", "members/{member}", {"role": None}, "role"),
        ("PATCH", "members/{member}", {}, "role"),
        ("POST", "api_keys", {"role": "admin"}, "role"),
        ("POST", "api_keys", {"role": "read", "description": "d" * 257}, "description"),
        ("POST", "api_keys", {"role": "read", "expires_at": "tomorrow"}, "expires_at"),
        ("POST", "api_keys", {"role": "read", "expires_at": None}, "expires_at"),
        ("POST", "api_keys", {"role": "read", "blob_id": "{stranger}"}, "blob_id"),
    ],
)
def test_bad_member_and_key_requests_change_nothing(world: World, admin, method, route, body, field):
    path = f"{BLOB}/{route.format(member=world.member.id)}"
    body = json.loads(json.dumps(body).replace("{stranger}", str(world.stranger.id)))
    before = db_snapshot()

    refused(api(admin, method, path, body), field)

    assert db_snapshot() == before


# --- Optimistic concurrency --------------------------------------------------------------------


def _etag(response) -> str:
    return response["ETag"]


def test_a_blob_change_with_a_stale_if_match_is_refused(world: World, admin):
    read = api(admin, "GET", BLOB)
    etag = assert_success(read)["blob"]["etag"]
    assert _etag(read) == f'"{etag}"'
    changed = assert_success(api(admin, "PATCH", BLOB, {"description": "first"}, HTTP_IF_MATCH=_etag(read)))["blob"]
    assert changed["etag"] != etag
    before = db_snapshot()

    stale = api(admin, "PATCH", BLOB, {"description": "second"}, HTTP_IF_MATCH=_etag(read))

    refused(stale, status=412, code="precondition_failed")
    assert db_snapshot() == before
    assert Blob.objects.get(id=world.blob.id).description == "first"


@pytest.mark.parametrize("form", ['"{}"', "{}", 'W/"{}"', "*"])
def test_if_match_takes_the_etag_quoted_bare_or_weak_or_any(world: World, admin, form):
    etag = assert_success(api(admin, "GET", BLOB))["blob"]["etag"]

    changed = api(admin, "PATCH", BLOB, {"description": "matched"}, HTTP_IF_MATCH=form.format(etag))

    assert assert_success(changed)["blob"]["description"] == "matched"


def test_of_two_blob_writers_holding_the_same_etag_exactly_one_wins(world: World):
    alice, bob = as_user(world.admin), as_key(world.write_key)
    seen_by_alice = _etag(api(alice, "GET", BLOB))
    seen_by_bob = _etag(api(bob, "GET", BLOB))
    assert seen_by_alice == seen_by_bob

    first = api(alice, "PATCH", BLOB, {"description": "alice"}, HTTP_IF_MATCH=seen_by_alice)
    second = api(bob, "PATCH", BLOB, {"description": "bob"}, HTTP_IF_MATCH=seen_by_bob)

    assert_success(first)
    refused(second, status=412, code="precondition_failed")
    assert assert_success(api(bob, "GET", BLOB))["blob"]["description"] == "alice"


@pytest.mark.parametrize("owner", ["blob", "revision"])
def test_of_two_metadata_writers_holding_the_same_etag_exactly_one_wins(world: World, owner):
    path = f"{BLOB}/metadata/owner" if owner == "blob" else f"revisions/{world.draft.id}/metadata/owner"
    alice, bob = as_user(world.admin), as_key(world.write_key)
    read = api(alice, "GET", path)
    etag = assert_success(read)["metadata"]["etag"]
    assert _etag(read) == f'"{etag}"' == _etag(api(bob, "GET", path))

    first = api(alice, "PUT", path, {"value": "alice"}, HTTP_IF_MATCH=f'"{etag}"')
    before = db_snapshot()
    second = api(bob, "PUT", path, {"value": "bob"}, HTTP_IF_MATCH=f'"{etag}"')

    assert assert_success(first)["metadata"]["etag"] != etag
    refused(second, status=412, code="precondition_failed")
    assert db_snapshot() == before
    assert assert_success(api(bob, "GET", path))["metadata"]["value"] == "alice"


def test_a_metadata_put_with_if_match_on_a_key_that_does_not_exist_creates_nothing(world: World):
    before = db_snapshot()

    answer = api(as_key(world.write_key), "PUT", f"{BLOB}/metadata/fresh", {"value": 1}, HTTP_IF_MATCH='"0123"')

    refused(answer, status=412, code="precondition_failed")
    assert db_snapshot() == before
    assert not BlobMetadata.objects.filter(key="fresh").exists()


def test_a_blob_member_change_with_a_stale_if_match_is_refused(world: World, admin):
    path = f"{BLOB}/members/{world.member.id}"
    etag = assert_success(api(admin, "GET", f"{BLOB}/members"))["members"][0]["etag"]
    assert_success(api(admin, "PATCH", path, {"role": "write"}, HTTP_IF_MATCH=f'"{etag}"'))
    before = db_snapshot()

    stale = api(admin, "PATCH", path, {"role": "admin"}, HTTP_IF_MATCH=f'"{etag}"')

    refused(stale, status=412, code="precondition_failed")
    assert db_snapshot() == before


@pytest.mark.parametrize("target", ["blob", "blob metadata", "revision metadata", "blob member"])
def test_a_delete_with_a_stale_if_match_deletes_nothing_and_a_current_one_deletes(world: World, admin, target):
    path = {
        "blob": BLOB,
        "blob metadata": f"{BLOB}/metadata/owner",
        "revision metadata": f"revisions/{world.draft.id}/metadata/owner",
        "blob member": f"{BLOB}/members/{world.member.id}",
    }[target]
    listing = f"{BLOB}/members" if target == "blob member" else path
    current = _etag(api(admin, "GET", listing)) if target != "blob member" else (
        '"{}"'.format(assert_success(api(admin, "GET", listing))["members"][0]["etag"])
    )
    before = db_snapshot()

    refused(api(admin, "DELETE", path, HTTP_IF_MATCH='"0123456789abcdef0123456789abcdef"'), status=412, code="precondition_failed")
    assert db_snapshot() == before

    assert_success(api(admin, "DELETE", path, HTTP_IF_MATCH=current))
    assert db_snapshot() != before


# --- Bad input from an outsider ----------------------------------------------------------------


OUTSIDER_BAD_INPUT = [
    # (method, route, body, probes a write: a read key, which may read the blob, is an outsider to it)
    ("PATCH", "blobs/acme-corp/{blob}", {"visibility": "bogus", "colour": None}, True),
    ("DELETE", "blobs/acme-corp/{blob}/members/{bad}", None, True),
    ("POST", "blobs/acme-corp/{blob}/metadata", {"key": "k" * 200, "value": None}, True),
    ("PUT", "blobs/acme-corp/{blob}/metadata/{bad}", {"value": None}, True),
    ("POST", "blobs/acme-corp/{blob}/revisions", {"comment": ""}, True),
    ("POST", "revisions/{draft}/commit", {"comment": "c" * 201}, True),
    ("PUT", "revisions/{draft}/metadata/{bad}", [1], True),
    ("GET", "blobs/acme-corp/{blob}/revisions/{bad}", None, False),
    ("POST", "revisions/{draft}/data/command", {"no": "command"}, False),
]


@pytest.mark.parametrize(
    ("who", "method", "route", "body"),
    [
        pytest.param(who, method, route, body, id=f"{who}-{method} {route}")
        for who in ("other org's admin", "read key")
        for method, route, body, writes in OUTSIDER_BAD_INPUT
        if writes or who != "read key"
    ],
)
def test_bad_input_tells_an_outsider_nothing_about_what_exists(world: World, who, method, route, body):
    """Access is decided before the input is looked at, so bad input probes nothing."""
    client = as_user(world.foreign_admin) if who == "other org's admin" else as_key(world.read_key)
    before = db_snapshot()

    def call(blob: str, draft: str):
        path = route.format(blob=blob, draft=draft, bad="bad%20id")
        return api(client, method, path) if body is None else api(client, method, path, body)

    real = call(world.blob.alias, str(world.draft.id))
    absent = call("no-such-blob", str(uuid.uuid4()))

    assert assert_error(real, 403, "access_denied") == assert_error(absent, 403, "access_denied")
    assert db_snapshot() == before


@pytest.mark.parametrize("value", ['"abc\x00def"', "", '"not an etag!"'])
def test_an_if_match_that_names_no_etag_is_a_412_not_a_lookup(world: World, admin, value):
    assert if_match(Request(RequestFactory().patch("/", HTTP_IF_MATCH=value))) == STALE
    before = db_snapshot()

    refused(api(admin, "PATCH", BLOB, {"description": "x"}, HTTP_IF_MATCH=value), status=412, code="precondition_failed")
    assert db_snapshot() == before
