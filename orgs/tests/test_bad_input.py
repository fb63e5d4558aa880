"""Every route refuses bad input with a 400 `invalid_request_body` that says where, and changes nothing."""

import base64
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from rest_framework.test import APIClient

from blobhub.api.errors import AccessDenied
from orgs import selectors, tokens
from orgs.principal import Principal
from orgs.tests.support import World, api, as_user, assert_error, assert_success, build_world, db_snapshot

pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class BodyRoute:
    method: str
    path: str
    valid: Callable[[World], dict]
    strings: dict  # string field -> longest accepted length (None: bounded by a pattern instead)
    required: tuple
    others: tuple = ()  # the remaining declared fields that are not free strings
    success: int = 200
    signed_in: bool = True


BODY_ROUTES = {
    "login": BodyRoute(
        "POST",
        "auth/login",
        lambda w: {"username": w.admin.username, "password": "correct horse battery"},
        {"username": 150, "password": 256},
        ("username", "password"),
        signed_in=False,
    ),
    "refresh": BodyRoute(
        "POST",
        "auth/core/refresh",
        lambda w: {"refresh_token": tokens.issue_pair(user=w.admin)["refresh_token"]},
        {"refresh_token": 2048},
        ("refresh_token",),
        signed_in=False,
    ),
    "org create": BodyRoute(
        "POST", "orgs", lambda w: {"alias": "brand-new-org", "name": "New"}, {"alias": None, "name": 128}, ("alias", "name"), success=201
    ),
    "org update": BodyRoute(
        "PATCH", "orgs/acme-corp", lambda w: {"alias": "acme-renamed", "name": "Renamed"}, {"alias": None, "name": 128}, ()
    ),
    "member add": BodyRoute(
        "POST",
        "orgs/acme-corp/members",
        lambda w: {"user_id": str(w.stranger.id), "role": "read"},
        {},
        ("user_id", "role"),
        success=201,
    ),
    "member update": BodyRoute("PATCH", "orgs/acme-corp/members/{reader}", lambda w: {"role": "write"}, {}, ("role",)),
    "api key create": BodyRoute(
        "POST",
        "orgs/acme-corp/api_keys",
        lambda w: {"role": "read", "description": "ci", "expires_at": "2099-01-01T00:00:00Z"},
        {"description": 256},
        ("role",),
        ("expires_at",),
        201,
    ),
    "credential create": BodyRoute(
        "POST",
        "orgs/acme-corp/credentials",
        lambda w: {"alias": "new-token", "provider": "http", "description": "d", "value": "v"},
        {"alias": None, "provider": 64, "description": 256, "value": 16384},
        ("alias", "provider", "value"),
        success=201,
    ),
    "credential replace": BodyRoute(
        "PUT",
        "orgs/acme-corp/credentials/mail-token",
        lambda w: {"provider": "http", "description": "d", "value": "v2"},
        {"provider": 64, "description": 256, "value": 16384},
        ("provider", "value"),
    ),
}

UUID_TEXT = "6f1c2b1e-0a4b-4e36-9d1a-2f3c4d5e6f70"


def _set(field, value):
    return lambda body: {**body, field: value}


def _drop(field):
    return lambda body: {k: v for k, v in body.items() if k != field}


def _cases():
    """(route, label, change to the valid body, the path `details` must name)."""
    for name, route in BODY_ROUTES.items():
        yield name, "an unknown field", _set("is_admin", True), "is_admin"
        for field in sorted(set(route.strings) | set(route.required) | set(route.others)):
            yield name, f"null {field}", _set(field, None), field
        for field, longest in route.strings.items():
            yield name, f"a number for {field}", _set(field, 12345), field
            yield name, f"a list for {field}", _set(field, ["x"]), field
            yield name, f"an object for {field}", _set(field, {"x": 1}), field
            yield name, f"a boolean for {field}", _set(field, True), field
            if longest is not None:
                yield name, f"an over-long {field}", _set(field, "x" * (longest + 1)), field
        for field in route.required:
            yield name, f"no {field}", _drop(field), field
    for name in ("org create", "org update", "credential create"):
        yield name, "a UUID-shaped alias", _set("alias", UUID_TEXT), "alias"
        yield name, "a hex UUID alias", _set("alias", UUID_TEXT.replace("-", "")), "alias"
        yield name, "an upper-case alias", _set("alias", "Acme-Corp"), "alias"
        yield name, "a short alias", _set("alias", "abc"), "alias"
        yield name, "an over-long alias", _set("alias", "a" * 43), "alias"
        yield name, "an alias with a slash", _set("alias", "acme/corp"), "alias"
    for name in ("org create", "org update"):
        yield name, "a blank name", _set("name", "   "), "name"
    for name in ("member add", "member update", "api key create"):
        yield name, "an unknown role", _set("role", "owner"), "role"
        yield name, "a boolean role", _set("role", True), "role"
        yield name, "a number role", _set("role", 3), "role"
        yield name, "a capitalised role", _set("role", "Read"), "role"
    yield "api key create", "an admin role for a key", _set("role", "admin"), "role"
    yield "member add", "a number user_id", _set("user_id", 12345), "user_id"
    yield "member add", "a non-UUID user_id", _set("user_id", "not-a-uuid"), "user_id"
    yield "member add", "a boolean user_id", _set("user_id", True), "user_id"
    yield "member add", "an unknown user_id", _set("user_id", str(uuid.uuid4())), "user_id"
    yield "api key create", "a number expires_at", _set("expires_at", 1893456000), "expires_at"
    yield "api key create", "a word expires_at", _set("expires_at", "tomorrow"), "expires_at"
    yield "api key create", "a past expires_at", _set("expires_at", "2001-01-01T00:00:00Z"), "expires_at"
    yield "api key create", "a boolean expires_at", _set("expires_at", True), "expires_at"


def resolve(world: World, route: BodyRoute) -> str:
    return route.path.format(reader=world.reader.id)


def client_for_route(world: World, route: BodyRoute) -> APIClient:
    return as_user(world.admin) if route.signed_in else APIClient()


@pytest.mark.parametrize("name", BODY_ROUTES)
def test_the_valid_body_each_bad_input_case_starts_from_is_accepted(name):
    world = build_world()
    route = BODY_ROUTES[name]
    answer = api(client_for_route(world, route), route.method, resolve(world, route), route.valid(world))
    assert_success(answer, route.success)


@pytest.mark.parametrize(("name", "label", "change", "path"), [pytest.param(*case, id=f"{case[0]}: {case[1]}") for case in _cases()])
def test_a_bad_field_is_refused_with_its_path_and_nothing_changes(name, label, change, path):
    world = build_world()
    route = BODY_ROUTES[name]
    client = client_for_route(world, route)
    before = db_snapshot()

    answer = api(client, route.method, resolve(world, route), change(route.valid(world)))

    body = assert_error(answer, 400, "invalid_request_body")
    assert path in [item["path"] for item in body["details"]], body
    assert all(set(item) == {"path", "message"} for item in body["details"])
    assert db_snapshot() == before


NOT_OBJECTS = [[], ["alias"], "brand-new-org", 42, 4.2, True, None]


@pytest.mark.parametrize("name", BODY_ROUTES)
@pytest.mark.parametrize("payload", NOT_OBJECTS, ids=json.dumps)
def test_a_json_body_that_is_not_an_object_is_refused(name, payload):
    world = build_world()
    route = BODY_ROUTES[name]
    before = db_snapshot()

    answer = api(client_for_route(world, route), route.method, resolve(world, route), payload)

    body = assert_error(answer, 400, "invalid_request_body")
    assert body["details"], body
    assert db_snapshot() == before


MALFORMED = [b'{"alias": ', b"{'alias': 'acme'}", b'{"alias": "a",}', b"\xff\xfe{}", b"nul", b'{"a": 1} {"b": 2}']


@pytest.mark.parametrize("name", BODY_ROUTES)
@pytest.mark.parametrize("raw", MALFORMED, ids=repr)
def test_malformed_json_is_refused_in_the_envelope(name, raw):
    world = build_world()
    route = BODY_ROUTES[name]
    client = client_for_route(world, route)
    before = db_snapshot()

    send = getattr(client, route.method.lower())
    answer = send(f"/v1/{resolve(world, route)}", data=raw, content_type="application/json")

    body = assert_error(answer, 400, "invalid_request_body")
    assert body["details"], body
    assert db_snapshot() == before


@pytest.mark.parametrize("name", ["org create", "credential create"])
def test_a_form_encoded_body_is_refused_in_the_envelope(name):
    world = build_world()
    route = BODY_ROUTES[name]
    before = db_snapshot()
    answer = as_user(world.admin).post(f"/v1/{route.path}", data="alias=brand-new-org&name=New", content_type="application/x-www-form-urlencoded")
    assert_error(answer, 415, "unsupported_media_type")
    assert db_snapshot() == before


# --- Query parameters ---------------------------------------------------------------------------

LIST_ROUTES = ["users/me/orgs", "orgs/acme-corp/members", "orgs/acme-corp/api_keys", "orgs/acme-corp/credentials"]


def _cursor(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


BAD_QUERIES = [
    ("limit=", "limit"),
    ("limit=null", "limit"),
    ("cursor=", "cursor"),
    ("cursor=null", "cursor"),
    ("limit=0", "limit"),
    ("limit=201", "limit"),
    ("limit=-1", "limit"),
    ("limit=ten", "limit"),
    ("limit=true", "limit"),
    ("limit=1&limit=2", "limit"),
    ("order=name", "order"),
    ("cursor=%25%25%25", "cursor"),
    ("cursor=bm90IGpzb24", "cursor"),
    (f"cursor={_cursor(5)}", "cursor"),
    (f"cursor={_cursor(['2026-01-01T00:00:00+00:00', 'not-a-uuid'])}", "cursor"),
    (f"cursor={_cursor([None, str(uuid.uuid4())])}", "cursor"),
    (f"cursor={_cursor([1, str(uuid.uuid4())])}", "cursor"),
    (f"cursor={_cursor([True, str(uuid.uuid4())])}", "cursor"),
    (f"cursor={_cursor([{'a': 1}, str(uuid.uuid4())])}", "cursor"),
    (f"cursor={_cursor(['yesterday', str(uuid.uuid4())])}", "cursor"),
    (f"cursor={_cursor(['2026-01-01T00:00:00', str(uuid.uuid4())])}", "cursor"),
    # Offsets that push the timestamp past year 9999 or before year 1 once converted to UTC.
    (f"cursor={_cursor(['9999-12-31T23:59:59.999999-23:59', str(uuid.uuid4())])}", "cursor"),
    (f"cursor={_cursor(['0001-01-01T00:00:00+23:59', str(uuid.uuid4())])}", "cursor"),
    (f"cursor={_cursor([float('inf'), str(uuid.uuid4())])}", "cursor"),
    ("cursor=" + "A" * 600, "cursor"),
]


@pytest.mark.parametrize("route", LIST_ROUTES)
@pytest.mark.parametrize(("query", "path"), BAD_QUERIES, ids=[q[:40] for q, _ in BAD_QUERIES])
def test_a_bad_query_parameter_is_refused_with_its_name(route, query, path):
    world = build_world()
    before = db_snapshot()

    answer = as_user(world.admin).get(f"/v1/{route}?{query}")

    body = assert_error(answer, 400, "invalid_request_body")
    assert path in [item["path"] for item in body["details"]], body
    assert db_snapshot() == before


@pytest.mark.parametrize("route", LIST_ROUTES)
def test_a_good_query_is_served(route):
    world = build_world()
    assert_success(as_user(world.admin).get(f"/v1/{route}?limit=200"))


@pytest.mark.parametrize("edge", ["9999-12-31T23:59:59.999999+00:00", "0001-01-01T00:00:00Z"])
def test_a_utc_cursor_at_the_edge_of_time_is_served(edge):
    world = build_world()
    answer = as_user(world.admin).get(f"/v1/orgs/acme-corp/members?cursor={_cursor([edge, str(uuid.uuid4())])}")
    assert isinstance(assert_success(answer)["members"], list)


def test_an_alias_that_parses_as_a_uuid_in_a_path_is_taken_as_an_id():
    world = build_world()
    by_id = as_user(world.admin).get(f"/v1/orgs/{str(world.org.id).upper()}")
    assert assert_success(by_id)["organization"]["alias"] == "acme-corp"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "orgs/acme%00"),
        ("GET", "orgs/acme-corp/credentials/mail%00"),
        ("DELETE", "orgs/acme-corp/credentials/mail-token%00"),
        ("GET", "orgs/ACME-CORP"),
        ("GET", "orgs/" + "a" * 500),
    ],
)
def test_a_path_part_that_is_neither_an_id_nor_an_alias_is_absent(method, path):
    world = build_world()
    before = db_snapshot()
    assert_error(api(as_user(world.admin), method, path), 403, "access_denied")
    assert db_snapshot() == before


@pytest.mark.parametrize("ref", ["acme\x00", "acme-corp\n", "Acme-Corp", "a" * 43])
def test_a_ref_that_cannot_be_an_alias_is_looked_up_without_a_query(ref, django_assert_num_queries):
    # PostgreSQL refuses a NUL in text with an error (a 500): such a value must not reach it.
    world = build_world()
    with django_assert_num_queries(0), pytest.raises(AccessDenied):
        selectors.organization_get(Principal(user=world.admin), ref)
    with django_assert_num_queries(0), pytest.raises(AccessDenied):
        selectors.credential_get(world.org, ref)


def test_an_expiry_without_a_timezone_is_read_as_utc():
    world = build_world()
    body = {"role": "read", "expires_at": "2099-01-01T00:00:00"}
    answer = assert_success(api(as_user(world.admin), "POST", "orgs/acme-corp/api_keys", body), 201)
    assert answer["api_key"]["expires_at"] == "2099-01-01T00:00:00.000000Z"
