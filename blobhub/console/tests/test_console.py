"""The web console's pages, with Django's test client (its browser tests: tests/integration/test_console.py)."""

import pytest
from django.conf import settings
from django.core.cache import cache
from django.test import Client, override_settings

from orgs.tests.factories import UserFactory

PASSWORD = "correct horse battery"  # UserFactory's

pytestmark = pytest.mark.django_db


@pytest.fixture
def throttle_cache():
    cache.clear()
    yield
    cache.clear()


def sign_in(client: Client, username: str, password: str = PASSWORD):
    return client.post("/console/login/", {"username": username, "password": password})


def test_the_login_page_renders_a_form_with_a_csrf_token():
    answer = Client().get("/console/login/")
    assert answer.status_code == 200
    page = answer.content.decode()
    assert 'name="csrfmiddlewaretoken"' in page
    assert 'name="password"' in page
    assert "script-src 'self'" in answer["Content-Security-Policy"]


def test_signing_in_opens_the_console_with_a_session(throttle_cache):
    client = Client()
    answer = sign_in(client, UserFactory().username)
    assert answer.status_code == 302 and answer["Location"] == "/console/"
    page = client.get("/console/")
    assert page.status_code == 200
    assert b"console/console.js" in page.content
    # The page's script reads this cookie for X-CSRFToken; the session cookie stays out of its reach.
    assert settings.CSRF_COOKIE_NAME in page.cookies
    assert client.cookies[settings.SESSION_COOKIE_NAME]["httponly"]


def test_a_wrong_password_does_not_sign_in(throttle_cache):
    client = Client()
    answer = sign_in(client, UserFactory().username, "guess")
    assert answer.status_code == 200
    assert b"did not match" in answer.content
    assert settings.SESSION_COOKIE_NAME not in client.cookies
    assert client.get("/console/").status_code == 302


def test_the_login_form_refuses_a_post_without_the_csrf_token():
    client = Client(enforce_csrf_checks=True)
    answer = sign_in(client, UserFactory().username)
    assert answer.status_code == 403
    assert settings.SESSION_COOKIE_NAME not in client.cookies


@override_settings(LOGIN_THROTTLE_RATE="3/min")
def test_password_guessing_on_the_form_is_throttled_in_the_api_login_bucket(throttle_cache):
    user = UserFactory()
    client = Client()
    for _ in range(2):
        assert sign_in(client, user.username, "guess").status_code == 200
    # The API's auth/login counts against the same address.
    client.post("/v1/auth/login", {"username": user.username, "password": "guess"}, content_type="application/json")
    answer = sign_in(client, user.username)
    assert answer.status_code == 429
    assert int(answer["Retry-After"]) > 0
    assert b"Too many sign-in attempts" in answer.content
    assert settings.SESSION_COOKIE_NAME not in client.cookies


def test_the_console_sends_a_visitor_without_a_session_to_the_login_form():
    answer = Client().get("/console/")
    assert answer.status_code == 302
    assert answer["Location"] == "/console/login/?next=/console/"


def test_signing_out_ends_the_session(throttle_cache):
    client = Client()
    sign_in(client, UserFactory().username)
    assert client.get("/console/").status_code == 200
    answer = client.post("/console/logout/")
    assert answer.status_code == 302 and answer["Location"] == "/console/login/"
    assert client.get("/console/").status_code == 302
    assert client.get("/v1/users/me").status_code == 401


def test_signing_out_needs_a_post():
    assert Client().get("/console/logout/").status_code == 405


@pytest.mark.parametrize(
    ("path", "media_type"),
    [("/static/console/console.js", "text/javascript"), ("/static/console/console.css", "text/css")],
)
def test_the_console_assets_are_served(path, media_type):
    answer = Client().get(path)
    assert answer.status_code == 200
    assert answer["Content-Type"].startswith(media_type)


def test_a_next_back_to_the_login_page_sends_a_signed_in_user_to_the_console(throttle_cache):
    client = Client()
    sign_in(client, UserFactory().username)
    # Django refuses to redirect the login page to itself (a 500): the console is the way out.
    answer = client.get("/console/login/?next=/console/login/")
    assert answer.status_code == 302 and answer["Location"] == "/console/"
