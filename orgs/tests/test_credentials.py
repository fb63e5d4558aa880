"""Credentials: write-only on every route, encrypted at rest, absent from logs and admin pages."""

import logging

import pytest
from cryptography.fernet import Fernet
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from orgs import crypto
from orgs.models import Credential
from orgs.models import AuditEntry
from orgs.tests.factories import MembershipFactory, OrganizationFactory, UserFactory, make_api_key
from orgs.tests.support import NO_BODY, api, as_key, as_user, assert_error, assert_success, make_credential, secret_of

pytestmark = pytest.mark.django_db

SECRET = "sk-live-do-not-leak-7f3a9c"
NEW_SECRET = "sk-live-rotated-value-1b2c3d"


@pytest.fixture
def fresh_fernet():
    crypto._fernet.cache_clear()
    yield
    crypto._fernet.cache_clear()


@pytest.fixture
def org_admin():
    org = OrganizationFactory(alias="acme-corp")
    return MembershipFactory(org=org, role="admin").user


def full_flow(admin) -> list:
    """Create, read, list, replace, fail a few ways and delete a credential; every answer."""
    client = as_user(admin)
    _, write_key = make_api_key(admin.memberships.get().org, "write", created_by=admin)
    body = {"alias": "mail-token", "provider": "smtp", "description": "outgoing mail", "value": SECRET}
    answers = [api(client, "POST", "orgs/acme-corp/credentials", body)]
    assert_success(answers[0], 201)
    answers.append(api(client, "GET", "orgs/acme-corp/credentials/mail-token"))
    answers.append(api(as_key(write_key), "GET", "orgs/acme-corp/credentials/mail-token"))
    answers.append(api(client, "GET", "orgs/acme-corp/credentials"))
    answers.append(api(client, "POST", "orgs/acme-corp/credentials", body))  # alias in use
    answers.append(api(client, "POST", "orgs/acme-corp/credentials", {**body, "alias": "x", "extra": SECRET}))
    answers.append(api(client, "PUT", "orgs/acme-corp/credentials/mail-token", {"provider": "smtp", "value": NEW_SECRET}))
    answers.append(
        api(client, "PUT", "orgs/acme-corp/credentials/mail-token", {"provider": "smtp", "value": SECRET}, HTTP_IF_MATCH="stale")
    )
    answers.append(api(client, "DELETE", "orgs/acme-corp/credentials/mail-token"))
    return answers


def test_the_value_is_in_no_answer_of_any_route(org_admin):
    client = as_user(org_admin)
    body = {"alias": "mail-token", "provider": "smtp", "value": SECRET}
    created = api(client, "POST", "orgs/acme-corp/credentials", body)
    answers = [
        created,
        api(client, "GET", "orgs/acme-corp/credentials/mail-token"),
        api(client, "GET", "orgs/acme-corp/credentials"),
        api(client, "POST", "orgs/acme-corp/credentials", body),
        api(client, "PUT", "orgs/acme-corp/credentials/mail-token", {"provider": "smtp", "value": NEW_SECRET}),
        api(client, "PUT", "orgs/acme-corp/credentials/mail-token", {"provider": "smtp", "value": SECRET}, HTTP_IF_MATCH="x"),
        api(client, "POST", "orgs/acme-corp/credentials", {**body, "alias": "other-token", "provider": 5}),
    ]

    assert assert_success(created, 201)["credential"].keys() == {
        "id", "alias", "provider", "description", "created_at", "updated_at", "etag"
    }
    assert [answer.status_code for answer in answers] == [201, 200, 200, 400, 200, 412, 400]
    for answer in answers:
        text = answer.content.decode() + str(dict(answer.headers))
        assert SECRET not in text and NEW_SECRET not in text
        assert "value" not in answer.json().get("credential", {})


def test_the_value_is_in_no_log_line_even_at_debug(org_admin, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="django.db.backends")
    with CaptureQueriesContext(connection) as queries:  # turns on SQL logging, so stored values are logged too
        full_flow(org_admin)

    assert len(queries) > 0 and caplog.records, "the flow logged nothing: the check would be empty"
    logged = "\n".join(record.getMessage() + str(record.args) for record in caplog.records)
    assert any("orgs_credential" in record.getMessage() for record in caplog.records)
    assert SECRET not in logged and NEW_SECRET not in logged
    sql = "\n".join(query["sql"] for query in queries.captured_queries)
    assert SECRET not in sql and NEW_SECRET not in sql


def test_an_org_at_its_credential_limit_stores_no_new_one(org_admin, settings):
    settings.LIMITS = {"core.credentials_per_organization": 1}
    make_credential(org_admin.memberships.get().org)

    body = {"alias": "one-too-many", "provider": "http", "value": SECRET}
    refused = api(as_user(org_admin), "POST", "orgs/acme-corp/credentials", body)

    answer = assert_error(refused, 400, "limit_exceeded")
    assert answer["limit"] == {"id": "core.credentials_per_organization", "value": 1, "held": 1}
    assert not Credential.objects.filter(alias="one-too-many").exists()


def test_the_stored_ciphertext_decrypts_back_to_the_value(org_admin):
    assert_success(api(as_user(org_admin), "POST", "orgs/acme-corp/credentials",
                       {"alias": "mail-token", "provider": "smtp", "value": SECRET}), 201)
    stored = Credential.objects.get(alias="mail-token").ciphertext
    assert SECRET not in stored
    assert crypto.decrypt(stored) == SECRET


def test_replacing_a_credential_stores_the_new_value(org_admin):
    client = as_user(org_admin)
    created = assert_success(api(client, "POST", "orgs/acme-corp/credentials",
                                 {"alias": "mail-token", "provider": "smtp", "value": SECRET}), 201)
    replaced = api(client, "PUT", "orgs/acme-corp/credentials/mail-token",
                   {"provider": "imap", "value": NEW_SECRET}, HTTP_IF_MATCH=created["credential"]["etag"])
    body = assert_success(replaced)["credential"]
    assert body["provider"] == "imap"
    assert replaced["ETag"] == f'"{body["etag"]}"' and body["etag"] != created["credential"]["etag"]
    assert crypto.decrypt(Credential.objects.get(alias="mail-token").ciphertext) == NEW_SECRET


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_a_write_with_a_stale_etag_changes_nothing(org_admin, method):
    client = as_user(org_admin)
    created = assert_success(api(client, "POST", "orgs/acme-corp/credentials",
                                 {"alias": "mail-token", "provider": "smtp", "value": SECRET}), 201)
    etag = created["credential"]["etag"]
    assert_success(api(client, "PUT", "orgs/acme-corp/credentials/mail-token",
                       {"provider": "smtp", "value": NEW_SECRET}, HTTP_IF_MATCH=etag))
    body = {"provider": "smtp", "value": "third"} if method == "PUT" else NO_BODY

    stale = api(client, method, "orgs/acme-corp/credentials/mail-token", body, HTTP_IF_MATCH=etag)

    assert_error(stale, 412, "precondition_failed")
    assert crypto.decrypt(Credential.objects.get(alias="mail-token").ciphertext) == NEW_SECRET


def test_a_deleted_credential_is_gone_and_answers_like_an_absent_one(org_admin):
    client = as_user(org_admin)
    make_credential(org_admin.memberships.get().org, "mail-token")
    assert_success(api(client, "DELETE", "orgs/acme-corp/credentials/mail-token"))
    gone = assert_error(api(client, "GET", "orgs/acme-corp/credentials/mail-token"), 403, "access_denied")
    never = assert_error(api(client, "GET", "orgs/acme-corp/credentials/never-was"), 403, "access_denied")
    assert gone == never
    assert not Credential.objects.exists()


# --- The Django admin ------------------------------------------------------------------------------


def test_no_admin_page_shows_a_credential_or_an_api_key(org_admin):
    full_flow(org_admin)  # leaves audit entries behind
    org = org_admin.memberships.get().org
    credential = make_credential(org, "kept-token", SECRET)
    key_row, key = make_api_key(org, "write", created_by=org_admin)
    operator = UserFactory(is_staff=True, is_superuser=True)
    browser = Client()
    browser.force_login(operator)

    pages = [
        "/admin/orgs/credential/",
        f"/admin/orgs/credential/{credential.id}/change/",
        "/admin/orgs/apikey/",
        f"/admin/orgs/apikey/{key_row.id}/change/",
        "/admin/orgs/auditentry/",
        "/admin/orgs/organization/",
        f"/admin/orgs/organization/{org.id}/change/",
    ]
    pages += [f"/admin/orgs/auditentry/{entry.id}/change/" for entry in AuditEntry.objects.all()]
    for page in pages:
        answer = browser.get(page)
        assert answer.status_code == 200, page
        html = answer.content.decode()
        assert SECRET not in html and NEW_SECRET not in html, page
        assert credential.ciphertext not in html, page
        assert key not in html and secret_of(key) not in html, page
        assert key_row.hashed_key not in html, page
    assert "kept-token" in browser.get("/admin/orgs/credential/").content.decode()


# --- Key rotation ---------------------------------------------------------------------------------


def test_after_rotation_old_ciphertexts_decrypt_and_reencrypt_under_the_new_key(settings, fresh_fernet):
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.CREDENTIAL_KEYS = [old_key]
    old_ciphertext = crypto.encrypt(SECRET)

    settings.CREDENTIAL_KEYS = [new_key, old_key]
    crypto._fernet.cache_clear()
    assert crypto.decrypt(old_ciphertext) == SECRET
    rotated = crypto.reencrypt(old_ciphertext)
    fresh = crypto.encrypt(NEW_SECRET)

    settings.CREDENTIAL_KEYS = [new_key]
    crypto._fernet.cache_clear()
    assert crypto.decrypt(rotated) == SECRET
    assert crypto.decrypt(fresh) == NEW_SECRET

    settings.CREDENTIAL_KEYS = [old_key]
    crypto._fernet.cache_clear()
    with pytest.raises(RuntimeError):
        crypto.decrypt(rotated)


def test_a_ciphertext_no_configured_key_opens_is_an_error_not_garbage(settings, fresh_fernet):
    settings.CREDENTIAL_KEYS = [Fernet.generate_key().decode()]
    ciphertext = crypto.encrypt(SECRET)
    settings.CREDENTIAL_KEYS = [Fernet.generate_key().decode()]
    crypto._fernet.cache_clear()
    with pytest.raises(RuntimeError, match="No configured credential key"):
        crypto.decrypt(ciphertext)
