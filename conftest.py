import pytest
from rest_framework.test import APIClient

from orgs.tests.factories import MembershipFactory, OrganizationFactory, UserFactory, make_api_key


@pytest.fixture
def client_for():
    """An API client authenticated as a user, with an API key, or not at all."""

    def make(user=None, key: str | None = None, token: str | None = None) -> APIClient:
        client = APIClient()
        if user is not None:
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {_login_token(user)}")
        if key is not None:
            client.credentials(HTTP_X_API_KEY=key)
        if token is not None:
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        return client

    return make


def _login_token(user) -> str:
    from orgs import tokens

    return tokens.issue_pair(user=user)["access_token"]


@pytest.fixture
def org(db):
    return OrganizationFactory()


@pytest.fixture
def admin_user(org):
    return MembershipFactory(org=org, role="admin").user


@pytest.fixture
def write_key(org):
    return make_api_key(org, "write")[1]


@pytest.fixture
def read_key(org):
    return make_api_key(org, "read")[1]


@pytest.fixture
def user(db):
    return UserFactory()
