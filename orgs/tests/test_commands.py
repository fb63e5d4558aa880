"""The management commands that scripts use."""

import io
import sys

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command

from orgs import crypto
from orgs.models import ApiKey, Credential, Membership, Organization, User
from orgs.tests.factories import OrganizationFactory, UserFactory

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().strip()


def create_user(monkeypatch, password: str, *args) -> str:
    monkeypatch.setattr(sys, "stdin", io.StringIO(password + "\n"))
    return run("create_user", *args)


def test_create_user_makes_a_superuser_whose_password_logs_in(monkeypatch, client):
    user_id = create_user(monkeypatch, "a long enough passphrase", "--username", "root-user", "--superuser")
    user = User.objects.get(id=user_id)
    assert user.is_superuser and user.is_staff
    assert client.login(username="root-user", password="a long enough passphrase")


@pytest.mark.parametrize(
    "username, reason",
    [("", "blank"), ("bad name/with spaces", "valid username"), ("taken", "already exists")],
)
def test_create_user_refuses_a_bad_username_with_the_reason_and_creates_nothing(monkeypatch, username, reason):
    UserFactory(username="taken")
    with pytest.raises(CommandError, match=reason):
        create_user(monkeypatch, "a long enough passphrase", "--username", username)
    assert User.objects.count() == 1


@pytest.mark.parametrize("password, reason", [("1", "too short"), ("password123", "too common")])
@pytest.mark.parametrize("role", [[], ["--superuser"]], ids=["user", "superuser"])
def test_create_user_refuses_a_weak_password_with_the_reason_and_creates_nothing(monkeypatch, password, reason, role):
    with pytest.raises(CommandError, match=reason):
        create_user(monkeypatch, password, "--username", "weakling", *role)
    assert not User.objects.exists()


def test_create_org_makes_the_owner_its_admin():
    owner = UserFactory()
    org_id = run("create_org", "--alias", "acme-corp", "--name", "Acme", "--owner", owner.username)
    org = Organization.objects.get(alias="acme-corp")
    assert str(org.id) == org_id
    assert Membership.objects.get(org=org, user=owner).role == "admin"


def test_create_org_refuses_a_bad_alias_and_creates_nothing():
    owner = UserFactory()
    with pytest.raises(CommandError, match="alias"):
        run("create_org", "--alias", "A", "--name", "Acme", "--owner", owner.username)
    assert not Organization.objects.exists()


def test_create_api_key_prints_a_key_that_authenticates(client):
    owner = UserFactory()
    run("create_org", "--alias", "acme-corp", "--name", "Acme", "--owner", owner.username)
    key = run("create_api_key", "--org", "acme-corp", "--role", "read", "--description", "ci")
    assert key.startswith("bh_") and "\n" not in key
    answer = client.get("/v1/users/me", HTTP_X_API_KEY=key)
    assert answer.status_code == 200
    assert answer.json()["user"]["alias"] == owner.username
    assert ApiKey.objects.get().role == "read"


def test_create_api_key_refuses_an_unknown_org():
    with pytest.raises(CommandError):
        run("create_api_key", "--org", "no-such-org", "--role", "read")


def test_rotate_credential_keys_moves_every_credential_to_the_newest_key(settings):
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.CREDENTIAL_KEYS = [old_key]
    org = OrganizationFactory()
    Credential.objects.create(org=org, alias="token-one", provider="http", ciphertext=crypto.encrypt("s3cret"))

    settings.CREDENTIAL_KEYS = [new_key, old_key]
    run("rotate_credential_keys")

    settings.CREDENTIAL_KEYS = [new_key]
    assert crypto.decrypt(Credential.objects.get().ciphertext) == "s3cret"
