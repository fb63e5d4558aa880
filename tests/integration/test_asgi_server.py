"""The API as a client meets it: through the real daphne server, on PostgreSQL and Redis."""

import httpx
import pytest

from orgs.tests.factories import OrganizationFactory, make_api_key

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_healthz_reports_database_broker_and_storage_ok(asgi_server):
    response = httpx.get(f"{asgi_server.url}/healthz", timeout=10)

    assert response.status_code == 200
    assert response.json() == {
        "status": "success",
        "checks": {"database": "ok", "broker": "ok", "storage": "ok"},
    }


def test_users_me_with_an_api_key_answers_the_key_creator(asgi_server):
    api_key, secret = make_api_key(OrganizationFactory(), "read")

    response = httpx.get(f"{asgi_server.url}/v1/users/me", headers={"X-API-Key": secret}, timeout=10)

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "success"
    assert body["user"]["id"] == str(api_key.created_by.id)
    assert body["user"]["alias"] == api_key.created_by.username


def test_an_unknown_route_answers_404_in_the_envelope(asgi_server):
    response = httpx.get(f"{asgi_server.url}/v1/no/such/route", timeout=10)

    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["status"] == "error"
    assert body["error"] == "not_found"
    assert isinstance(body["details"], list)


def test_a_key_the_server_never_issued_answers_401_in_the_envelope(asgi_server):
    _, secret = make_api_key(OrganizationFactory(), "write")
    forged = secret[:-4] + ("AAAA" if not secret.endswith("AAAA") else "BBBB")

    response = httpx.get(f"{asgi_server.url}/v1/users/me", headers={"X-API-Key": forged}, timeout=10)

    assert response.status_code == 401
    body = response.json()
    assert body["status"] == "error"
    assert body["error"] == "unauthenticated"
    assert "user" not in body
