"""Login, bearer and anonymous tokens, refresh and expiry, API keys on users/me, session + CSRF."""

import json
import time

import pytest
from django.conf import settings
from django.core.cache import cache
from django.middleware.csrf import _get_new_csrf_string
from django.test import Client, override_settings
from rest_framework.test import APIClient

from orgs import tokens
from orgs.models import Organization
from orgs.tests.factories import MembershipFactory, OrganizationFactory, UserFactory, make_api_key
from orgs.tests.support import api, as_key, assert_error, assert_success, bearer

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery"


class Clock:
    """Stands in for the `time` module inside orgs.tokens."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(tokens, "time", fake)
    return fake


def login(username: str, password: str = PASSWORD):
    return api(APIClient(), "POST", "auth/login", {"username": username, "password": password})


def test_login_answers_a_pair_whose_access_token_authenticates_as_the_user():
    user = UserFactory()
    before = time.time()

    pair = assert_success(login(user.username))

    assert set(pair) == {"status", "access_token", "refresh_token", "expires_at"}
    expected_expiry_ms = (before + settings.ACCESS_TOKEN_TTL_SECONDS) * 1000
    assert expected_expiry_ms - 5000 <= pair["expires_at"] <= expected_expiry_ms + 5000
    me = assert_success(bearer(pair["access_token"]).get("/v1/users/me"))["user"]
    assert me == {
        "id": str(user.id),
        "alias": user.username,
        "email": user.email,
        "created_at": me["created_at"],
    }


def test_a_wrong_password_and_an_unknown_user_get_the_same_401():
    user = UserFactory()
    wrong_password = assert_error(login(user.username, "not the password"), 401, "unauthenticated")
    unknown_user = assert_error(login("nobody-at-all"), 401, "unauthenticated")
    assert wrong_password == unknown_user
    assert "access_token" not in wrong_password


def test_an_inactive_user_cannot_log_in():
    user = UserFactory(is_active=False)
    assert_error(login(user.username), 401, "unauthenticated")


def test_refresh_answers_a_new_pair_that_works():
    user = UserFactory()
    first = assert_success(login(user.username))

    second = assert_success(api(APIClient(), "POST", "auth/core/refresh", {"refresh_token": first["refresh_token"]}))

    assert second["access_token"] != first["access_token"]
    assert second["refresh_token"] != first["refresh_token"]
    me = assert_success(bearer(second["access_token"]).get("/v1/users/me"))
    assert me["user"]["id"] == str(user.id)


def test_refresh_refuses_an_access_token():
    pair = assert_success(login(UserFactory().username))
    answer = api(APIClient(), "POST", "auth/core/refresh", {"refresh_token": pair["access_token"]})
    assert_error(answer, 401, "unauthenticated")


def test_a_refresh_token_is_not_accepted_as_a_bearer_token():
    pair = assert_success(login(UserFactory().username))
    assert_error(bearer(pair["refresh_token"]).get("/v1/users/me"), 401, "unauthenticated")


def test_a_tampered_token_is_refused():
    pair = assert_success(login(UserFactory().username))
    head, _, signature = pair["access_token"].rpartition(":")
    tampered = head + ":" + ("A" if signature[0] != "A" else "B") + signature[1:]
    assert_error(bearer(tampered).get("/v1/users/me"), 401, "unauthenticated")


def test_an_authorization_header_that_is_not_bearer_is_refused():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Basic dXNlcjpwYXNz")
    assert_error(client.get("/v1/users/me"), 401, "unauthenticated")


def test_an_access_token_works_until_its_expiry_and_is_refused_after(clock):
    user = UserFactory()
    pair = assert_success(login(user.username))

    clock.now += settings.ACCESS_TOKEN_TTL_SECONDS - 1
    assert_success(bearer(pair["access_token"]).get("/v1/users/me"))

    clock.now += 2
    assert_error(bearer(pair["access_token"]).get("/v1/users/me"), 401, "unauthenticated")


def test_an_expired_refresh_token_is_refused(clock):
    pair = assert_success(login(UserFactory().username))
    clock.now += settings.REFRESH_TOKEN_TTL_SECONDS + 1
    answer = api(APIClient(), "POST", "auth/core/refresh", {"refresh_token": pair["refresh_token"]})
    assert_error(answer, 401, "unauthenticated")


@override_settings(ACCESS_TOKEN_TTL_SECONDS=0)
def test_a_token_issued_with_no_lifetime_is_already_expired():
    pair = assert_success(login(UserFactory().username))
    assert_error(bearer(pair["access_token"]).get("/v1/users/me"), 401, "unauthenticated")


def test_a_password_change_ends_every_token_the_user_held():
    user = UserFactory()
    pair = assert_success(login(user.username))

    user.set_password("a brand new passphrase")
    user.save()

    assert_error(bearer(pair["access_token"]).get("/v1/users/me"), 401, "unauthenticated")
    refreshed = api(APIClient(), "POST", "auth/core/refresh", {"refresh_token": pair["refresh_token"]})
    assert_error(refreshed, 401, "unauthenticated")
    assert_success(login(user.username, "a brand new passphrase"))


def test_deactivating_a_user_ends_their_tokens():
    user = UserFactory()
    pair = assert_success(login(user.username))
    user.is_active = False
    user.save()
    assert_error(bearer(pair["access_token"]).get("/v1/users/me"), 401, "unauthenticated")
    refreshed = api(APIClient(), "POST", "auth/core/refresh", {"refresh_token": pair["refresh_token"]})
    assert_error(refreshed, 401, "unauthenticated")


# --- Anonymous tokens ------------------------------------------------------------------------


def test_an_anonymous_pair_has_the_token_shape_and_cannot_read_orgs_or_a_user():
    org = OrganizationFactory()
    pair = assert_success(APIClient().get("/v1/auth/core/anonymous"))
    assert set(pair) == {"status", "access_token", "refresh_token", "expires_at"}
    client = bearer(pair["access_token"])

    assert_error(client.get(f"/v1/orgs/{org.alias}"), 403, "access_denied")
    assert_error(client.get(f"/v1/orgs/{org.alias}/members"), 403, "access_denied")
    assert_error(client.get("/v1/users/me"), 403, "access_denied")
    assert_error(client.get("/v1/users/me/orgs"), 403, "access_denied")
    assert_error(api(client, "POST", "orgs", {"alias": "anon-made-org", "name": "No"}), 403, "access_denied")
    assert not Organization.objects.filter(alias="anon-made-org").exists()


def test_an_anonymous_pair_refreshes_into_another_anonymous_pair():
    pair = assert_success(APIClient().get("/v1/auth/core/anonymous"))
    renewed = assert_success(api(APIClient(), "POST", "auth/core/refresh", {"refresh_token": pair["refresh_token"]}))
    claims = tokens.read(renewed["access_token"], tokens.ACCESS)
    assert claims.user_id is None
    assert claims.anonymous_id == tokens.read(pair["access_token"], tokens.ACCESS).anonymous_id
    # Still anonymous: authenticated (not 401) but without a user.
    assert_error(bearer(renewed["access_token"]).get("/v1/users/me"), 403, "access_denied")


# --- API keys on the user routes ---------------------------------------------------------------


def test_users_me_with_a_key_answers_the_keys_creator():
    org = OrganizationFactory()
    creator = MembershipFactory(org=org, role="admin").user
    _, key = make_api_key(org, "read", created_by=creator)
    me = assert_success(as_key(key).get("/v1/users/me"))["user"]
    assert me["id"] == str(creator.id)
    assert me["alias"] == creator.username


def test_users_me_orgs_lists_the_callers_orgs_and_no_others():
    user = UserFactory()
    mine = [MembershipFactory(user=user, role=role).org for role in ("read", "write", "admin")]
    OrganizationFactory()
    MembershipFactory(role="admin")
    answer = assert_success(api(bearer(tokens.issue_pair(user=user)["access_token"]), "GET", "users/me/orgs"))
    assert sorted(org["id"] for org in answer["organizations"]) == sorted(str(org.id) for org in mine)
    assert "cursor" not in answer


def test_users_me_orgs_is_refused_to_api_keys():
    org = OrganizationFactory()
    MembershipFactory(org=org)
    _, key = make_api_key(org, "write")
    assert_error(as_key(key).get("/v1/users/me/orgs"), 403, "access_denied")


# --- Session and CSRF (the web console) -----------------------------------------------------------


@pytest.fixture
def console():
    """A browser-like client signed in with a session, with Django's CSRF checks on."""
    user = UserFactory()
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client, user


def test_a_signed_in_session_can_read(console):
    client, user = console
    me = assert_success(client.get("/v1/users/me"))
    assert me["user"]["id"] == str(user.id)


def test_a_session_write_without_the_csrf_token_is_refused_and_changes_nothing(console):
    client, _ = console
    answer = client.post("/v1/orgs", json.dumps({"alias": "console-org", "name": "C"}), content_type="application/json")
    assert_error(answer, 403, "access_denied")
    assert not Organization.objects.filter(alias="console-org").exists()


def test_a_session_write_with_a_wrong_csrf_token_is_refused(console):
    client, _ = console
    client.cookies[settings.CSRF_COOKIE_NAME] = _get_new_csrf_string()
    answer = client.post(
        "/v1/orgs",
        json.dumps({"alias": "console-org", "name": "C"}),
        content_type="application/json",
        HTTP_X_CSRFTOKEN=_get_new_csrf_string(),
    )
    assert_error(answer, 403, "access_denied")
    assert not Organization.objects.filter(alias="console-org").exists()


def test_a_session_write_with_the_csrf_token_goes_through(console):
    client, user = console
    token = _get_new_csrf_string()
    client.cookies[settings.CSRF_COOKIE_NAME] = token
    answer = client.post(
        "/v1/orgs", json.dumps({"alias": "console-org", "name": "C"}), content_type="application/json", HTTP_X_CSRFTOKEN=token
    )
    assert_success(answer, 201)
    assert Organization.objects.get(alias="console-org").memberships.get().user == user


# --- Login throttling ------------------------------------------------------------------------------


@override_settings(LOGIN_THROTTLE_RATE="3/min")
def test_password_guessing_is_throttled_per_address_with_retry_after():
    cache.clear()
    user = UserFactory()
    for _ in range(3):
        assert_error(login(user.username, "guess"), 401, "unauthenticated")
    answer = login(user.username)
    assert_error(answer, 429, "rate_limited")
    assert int(answer["Retry-After"]) > 0
    cache.clear()


@override_settings(LOGIN_THROTTLE_RATE="3/min")
def test_a_forged_x_forwarded_for_does_not_escape_the_login_throttle():
    cache.clear()
    user = UserFactory()
    answers = [
        api(APIClient(), "POST", "auth/login", {"username": user.username, "password": "guess"},
            HTTP_X_FORWARDED_FOR=f"10.0.0.{attempt}")
        for attempt in range(4)
    ]
    assert_error(answers[-1], 429, "rate_limited")
    cache.clear()


@override_settings(LOGIN_THROTTLE_RATE="3/min", REST_FRAMEWORK={**settings.REST_FRAMEWORK, "NUM_PROXIES": 1})
def test_behind_a_trusted_proxy_the_login_throttle_counts_the_address_it_forwards():
    cache.clear()
    user = UserFactory()
    for attempt in range(4):
        answer = api(APIClient(), "POST", "auth/login", {"username": user.username, "password": "guess"},
                     HTTP_X_FORWARDED_FOR=f"spoofed, 10.0.0.{attempt}")
        assert_error(answer, 401, "unauthenticated")
    cache.clear()
