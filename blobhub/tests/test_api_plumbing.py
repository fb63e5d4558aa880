"""API plumbing (API.md §1): the envelope on every answer, body limits, faults, throttling,
Idempotency-Key, strict fields, and the schema."""

import json
import logging

import pytest
from django.core.cache import cache
from django.test import Client, RequestFactory, override_settings
from django.urls import get_resolver
from rest_framework.test import APIClient

from blobhub.api.serializers import StrictBooleanField, StrictCharField, StrictIntegerField, StrictSerializer
from blobhub.models import IdempotencyRecord
from orgs import services, tokens
from orgs.api import urls as orgs_urls
from orgs.models import AuditEntry, Organization
from orgs.tests.factories import UserFactory
from orgs.tests.support import NO_BODY, api, as_user, assert_error, assert_success, build_world, db_snapshot

pytestmark = pytest.mark.django_db


@pytest.fixture
def world():
    return build_world()


@pytest.fixture
def throttle_cache():
    cache.clear()
    yield
    cache.clear()


# --- Unknown routes, wrong methods ----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/nope", "/v1/orgs/acme-corp/nope/deeper", "/v1/orgs/", "/nope", "/v2/orgs"])
def test_an_unknown_route_is_a_404_in_the_envelope(path):
    assert_error(Client().get(path), 404, "not_found")


def test_a_post_to_an_unknown_route_is_a_404_even_from_a_client_without_a_csrf_token():
    answer = Client(enforce_csrf_checks=True).post("/v1/nope", "{}", content_type="application/json")
    assert_error(answer, 404, "not_found")


WRONG_METHODS = [
    ("PUT", "orgs"),
    ("DELETE", "users/me"),
    ("POST", "users/me/orgs"),
    ("GET", "auth/login"),
    ("POST", "auth/core/anonymous"),
    ("DELETE", "orgs/acme-corp"),
    ("PUT", "orgs/acme-corp/members"),
    ("GET", "orgs/acme-corp/api_keys/{key}"),
    ("PATCH", "orgs/acme-corp/credentials/mail-token"),
]


@pytest.mark.parametrize(("method", "path"), WRONG_METHODS)
def test_a_wrong_method_is_a_405_in_the_envelope_and_changes_nothing(world, method, path):
    client = as_user(world.admin)
    before = db_snapshot()
    body = {} if method in ("POST", "PUT", "PATCH") else NO_BODY
    answer = api(client, method, path.format(key=world.key_row.id), body)
    assert_error(answer, 405, "method_not_allowed")
    assert method not in answer["Allow"]
    assert db_snapshot() == before


def test_an_options_request_answers_in_the_envelope(world):
    answer = as_user(world.admin).options("/v1/orgs/acme-corp")
    assert_success(answer)
    assert {"GET", "PATCH"} <= {method.strip() for method in answer["Allow"].split(",")}


# --- Body limits -------------------------------------------------------------------------------------


def padded_org_body(size: int) -> bytes:
    """A valid org body padded with whitespace to exactly `size` bytes."""
    body = json.dumps({"alias": "padded-org", "name": "Padded"}).encode()
    return body + b" " * (size - len(body))


@override_settings(MAX_REQUEST_BODY_BYTES=1024)
def test_a_body_over_the_limit_is_a_413_and_changes_nothing(world):
    client = as_user(world.admin)
    before = db_snapshot()
    answer = client.post("/v1/orgs", padded_org_body(1025), content_type="application/json")
    assert_error(answer, 413, "payload_too_large")
    assert db_snapshot() == before
    assert_success(client.post("/v1/orgs", padded_org_body(1024), content_type="application/json"), 201)


@override_settings(MAX_REQUEST_BODY_BYTES=1024)
@pytest.mark.parametrize("path", ["/v1/orgs", "/v1/nope", "/v1/auth/login"])
def test_a_body_over_the_limit_is_refused_before_anything_else_looks_at_it(path):
    answer = Client().post(path, padded_org_body(4096), content_type="application/json")
    assert_error(answer, 413, "payload_too_large")


def test_a_body_over_the_default_limit_is_a_413(world, settings):
    answer = as_user(world.admin).post(
        "/v1/orgs", padded_org_body(settings.MAX_REQUEST_BODY_BYTES + 1), content_type="application/json"
    )
    assert_error(answer, 413, "payload_too_large")
    assert not Organization.objects.filter(alias="padded-org").exists()


def test_a_content_length_that_is_not_a_number_is_a_400(world):
    answer = as_user(world.admin).post("/v1/orgs", b"{}", content_type="application/json", CONTENT_LENGTH="lots")
    assert_error(answer, 400, "invalid_request_body")


# --- Unexpected faults ---------------------------------------------------------------------------------


class Boom(RuntimeError):
    pass


def test_an_unexpected_exception_is_a_500_without_internals_and_its_traceback_is_logged(world, monkeypatch, caplog):
    def explode(**kwargs):
        raise Boom("connection to db-internal.example:5432 failed, password=hunter2")

    monkeypatch.setattr(services, "organization_create", explode)
    caplog.set_level(logging.ERROR)
    before = db_snapshot()

    answer = api(as_user(world.admin), "POST", "orgs", {"alias": "doomed-org", "name": "D"})

    body = assert_error(answer, 500, "internal_error")
    assert body["details"] == []
    text = answer.content.decode()
    for internal in ("hunter2", "db-internal", "Boom", "explode", ".py", "Traceback"):
        assert internal not in text
    logged = [record for record in caplog.records if record.exc_info and record.exc_info[0] is Boom]
    assert logged, "the traceback did not reach the log"
    assert "hunter2" in caplog.text and "Traceback" in caplog.text and "explode" in caplog.text
    assert db_snapshot() == before


def test_a_fault_releases_the_idempotency_key_so_a_retry_runs(world, monkeypatch):
    client = as_user(world.admin)
    real = services.organization_create
    monkeypatch.setattr(services, "organization_create", lambda **kwargs: (_ for _ in ()).throw(Boom("down")))
    body = {"alias": "retried-org", "name": "R"}
    assert_error(api(client, "POST", "orgs", body, HTTP_IDEMPOTENCY_KEY="retry-1"), 500, "internal_error")

    monkeypatch.setattr(services, "organization_create", real)
    retried = api(client, "POST", "orgs", body, HTTP_IDEMPOTENCY_KEY="retry-1")

    assert_success(retried, 201)
    assert retried.get("Idempotent-Replayed") is None
    assert Organization.objects.filter(alias="retried-org").count() == 1


def test_the_projects_500_handler_answers_in_the_envelope():
    handler = get_resolver().resolve_error_handler(500)
    answer = handler(RequestFactory().get("/anything"))
    assert_error(answer, 500, "internal_error")


@pytest.mark.parametrize("status", [400, 403, 404])
def test_the_projects_other_error_handlers_answer_in_the_envelope(status):
    handler = get_resolver().resolve_error_handler(status)
    answer = handler(RequestFactory().get("/anything"), exception=Exception("internal detail"))
    body = assert_error(answer, status, {"invalid_request_body", "access_denied", "not_found"})
    assert "internal detail" not in json.dumps(body)


# --- Throttling --------------------------------------------------------------------------------------


@override_settings(THROTTLE_RATE="3/min")
def test_a_caller_over_the_rate_gets_429_with_retry_after_and_others_do_not(world, throttle_cache):
    client = as_user(world.admin)
    for _ in range(3):
        assert_success(client.get("/v1/orgs/acme-corp"))

    before = db_snapshot()
    throttled = api(client, "PATCH", "orgs/acme-corp", {"name": "Too fast"})

    assert_error(throttled, 429, "rate_limited")
    assert 1 <= int(throttled["Retry-After"]) <= 60
    assert db_snapshot() == before
    assert_success(as_user(world.writer).get("/v1/orgs/acme-corp"))


@override_settings(LOGIN_THROTTLE_RATE="3/min")
def test_admin_login_guesses_share_the_api_login_bucket_and_are_refused_over_it(throttle_cache):
    UserFactory(username="admin", is_staff=True, is_superuser=True)
    web = Client()
    for attempt in range(2):
        assert web.post("/admin/login/", {"username": "admin", "password": f"guess-{attempt}"}).status_code == 200
    assert_error(api(APIClient(), "POST", "auth/login", {"username": "admin", "password": "guess"}), 401, "unauthenticated")

    # The right password too: the bucket is per address, whoever the guesses are for.
    refused = web.post("/admin/login/?next=/admin/", {"username": "admin", "password": "correct horse battery"})
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
    assert "_auth_user_id" not in web.session
    assert web.get("/admin/login/").status_code == 200
    assert_error(api(APIClient(), "POST", "auth/login", {"username": "admin", "password": "guess"}), 429, "rate_limited")


# --- Idempotency-Key ---------------------------------------------------------------------------------


def test_an_idempotent_post_replays_its_first_answer_and_creates_one_row(world):
    client = as_user(world.admin)
    body = {"alias": "once-only-org", "name": "Once"}

    first = api(client, "POST", "orgs", body, HTTP_IDEMPOTENCY_KEY="create-once")
    second = api(client, "POST", "orgs", body, HTTP_IDEMPOTENCY_KEY="create-once")

    assert (first.status_code, second.status_code) == (201, 201)
    assert second.json() == first.json()
    assert second["Idempotent-Replayed"] == "true"
    assert Organization.objects.filter(alias="once-only-org").count() == 1
    assert AuditEntry.objects.filter(action="organization.create").count() == 1


def test_an_idempotent_refusal_is_replayed_too(world):
    client = as_user(world.admin)
    body = {"user_id": str(world.reader.id), "role": "admin"}
    first = api(client, "POST", "orgs/acme-corp/members", body, HTTP_IDEMPOTENCY_KEY="add-twice")
    second = api(client, "POST", "orgs/acme-corp/members", body, HTTP_IDEMPOTENCY_KEY="add-twice")
    assert_error(first, 409, "member_exists")
    assert (second.status_code, second.json()) == (409, first.json())


def test_the_same_key_with_a_different_body_is_409_and_changes_nothing(world):
    client = as_user(world.admin)
    assert_success(api(client, "POST", "orgs", {"alias": "first-org", "name": "F"}, HTTP_IDEMPOTENCY_KEY="k-1"), 201)
    before = db_snapshot()

    reused = api(client, "POST", "orgs", {"alias": "second-org", "name": "S"}, HTTP_IDEMPOTENCY_KEY="k-1")

    assert_error(reused, 409, "idempotency_key_reused")
    assert db_snapshot() == before


def test_idempotency_keys_belong_to_their_caller(world):
    body = {"alias": "shared-key-org", "name": "S"}
    mine = api(as_user(world.admin), "POST", "orgs", body, HTTP_IDEMPOTENCY_KEY="same-key")
    theirs = api(as_user(world.other_admin), "POST", "orgs", body, HTTP_IDEMPOTENCY_KEY="same-key")
    other_body = api(
        as_user(world.writer), "POST", "orgs", {"alias": "writer-org", "name": "W"}, HTTP_IDEMPOTENCY_KEY="same-key"
    )

    assert_success(mine, 201)
    # Not a replay of the first caller's answer: the second caller's own request ran.
    assert_error(theirs, 400, "alias_in_use")
    assert theirs.get("Idempotent-Replayed") is None
    assert_success(other_body, 201)
    assert Organization.objects.get(alias="writer-org").memberships.get().user == world.writer


@pytest.mark.parametrize("key", ["", "k" * 256])
def test_an_idempotency_key_of_a_bad_length_is_refused(world, key):
    before = db_snapshot()
    answer = api(as_user(world.admin), "POST", "orgs", {"alias": "bad-key-org", "name": "B"}, HTTP_IDEMPOTENCY_KEY=key)
    assert_error(answer, 400, "invalid_request_body")
    assert db_snapshot() == before


def test_a_login_with_an_idempotency_key_stores_no_token():
    user = UserFactory()
    body = {"username": user.username, "password": "correct horse battery"}
    first = assert_success(api(APIClient(), "POST", "auth/login", body, HTTP_IDEMPOTENCY_KEY="login-1"))
    second = assert_success(api(APIClient(), "POST", "auth/login", body, HTTP_IDEMPOTENCY_KEY="login-1"))

    stored = repr(list(IdempotencyRecord.objects.values()))
    for pair in (first, second):
        assert pair["access_token"] not in stored and pair["refresh_token"] not in stored
    assert_success(api(APIClient(), "POST", "auth/core/refresh", {"refresh_token": second["refresh_token"]}))


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("auth/login", lambda user: {"username": user.username, "password": "correct horse battery"}),
        ("auth/core/refresh", lambda user: {"refresh_token": tokens.issue_pair(user=user)["refresh_token"]}),
    ],
)
def test_the_token_routes_ignore_an_idempotency_key_even_a_malformed_one(path, body):
    user = UserFactory()
    for key in ("k" * 300, "token-1", "token-1"):
        answer = assert_success(api(APIClient(), "POST", path, body(user), HTTP_IDEMPOTENCY_KEY=key))
        assert answer.get("Idempotent-Replayed") is None
    assert not IdempotencyRecord.objects.exists()


@pytest.mark.parametrize("key", ["", "k" * 256, "good-key"])
def test_without_valid_credentials_a_request_is_a_401_whatever_its_idempotency_key(world, key):
    before = db_snapshot()
    answer = api(APIClient(), "POST", "orgs", {"alias": "no-creds-org", "name": "N"}, HTTP_IDEMPOTENCY_KEY=key)
    assert_error(answer, 401, "unauthenticated")
    assert db_snapshot() == before


# --- Query parameters on routes that take none -------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "orgs/acme-corp", NO_BODY),
        ("GET", "users/me", NO_BODY),
        ("GET", "orgs/acme-corp/credentials/mail-token", NO_BODY),
        ("GET", "auth/core/anonymous", NO_BODY),
        ("PATCH", "orgs/acme-corp", {"name": "Renamed"}),
        ("POST", "orgs", {"alias": "query-org", "name": "Q"}),
        ("POST", "orgs/acme-corp/api_keys", {"role": "read"}),
        ("DELETE", "orgs/acme-corp/credentials/mail-token", NO_BODY),
    ],
)
@pytest.mark.parametrize("query", ["bogus=1", "limit=5"])
def test_a_route_that_takes_no_query_parameters_refuses_any_and_changes_nothing(world, method, path, body, query):
    before = db_snapshot()
    answer = api(as_user(world.admin), method, f"{path}?{query}", body)
    refused = assert_error(answer, 400, "invalid_request_body")
    assert [item["path"] for item in refused["details"]] == [query.split("=")[0]]
    assert db_snapshot() == before


def test_query_parameters_tell_an_outsider_nothing(world):
    assert_error(as_user(world.other_admin).get("/v1/orgs/acme-corp?bogus=1"), 403, "access_denied")
    assert_error(APIClient().get("/v1/orgs/acme-corp?bogus=1"), 401, "unauthenticated")


# --- Strict fields ------------------------------------------------------------------------------------


class Example(StrictSerializer):
    name = StrictCharField(max_length=8)
    enabled = StrictBooleanField(required=False)
    count = StrictIntegerField(required=False)


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"name": 5}, "name"),
        ({"name": "ok", "enabled": "true"}, "enabled"),
        ({"name": "ok", "enabled": 1}, "enabled"),
        ({"name": "ok", "enabled": "yes"}, "enabled"),
        ({"name": "ok", "enabled": None}, "enabled"),
        ({"name": "ok", "count": "5"}, "count"),
        ({"name": "ok", "count": True}, "count"),
        ({"name": "ok", "count": 5.5}, "count"),
        ({"name": "123456789"}, "name"),
        ({"name": "ok", "colour": "red"}, "colour"),
    ],
)
def test_strict_fields_refuse_what_drf_would_coerce(data, path):
    serializer = Example(data=data)
    assert not serializer.is_valid()
    assert path in serializer.errors


def test_strict_fields_take_the_right_types():
    serializer = Example(data={"name": "ok", "enabled": False, "count": 3})
    assert serializer.is_valid(), serializer.errors
    assert serializer.validated_data == {"name": "ok", "enabled": False, "count": 3}


# --- Schema and docs ------------------------------------------------------------------------------------


def test_the_schema_describes_every_orgs_route_and_method():
    schema = Client().get("/v1/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    paths = json.loads(schema.content)["paths"]
    for pattern in orgs_urls.urlpatterns:
        path = "/v1/" + str(pattern.pattern).replace("<str:", "{").replace(">", "}")
        view = pattern.callback.view_class
        methods = {m for m in ("get", "post", "put", "patch", "delete") if hasattr(view, m)}
        assert path in paths, path
        assert methods <= set(paths[path]), (path, methods, set(paths[path]))


def test_the_docs_page_answers():
    answer = Client().get("/v1/docs")
    assert answer.status_code == 200
    assert b"swagger" in answer.content.lower()
