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


@pytest.fixture(autouse=True)
def _release_committed_content(request):
    """Let transactional tests on SQLite flush committed content at teardown.

    The database refuses to delete a committed revision's manifest unless its blob is
    being deleted (blobs migration 0002); SQLite's flush deletes row by row, so mark
    every blob as being deleted first, as the blob deletion service does.
    """
    marker = request.node.get_closest_marker("django_db")
    if not (marker and marker.kwargs.get("transaction")):
        yield
        return
    request.getfixturevalue("transactional_db")
    yield
    from django.db import connection

    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("UPDATE blobs_blob SET status = 'deleting'")


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """pytest-django's test database, and before it is dropped: async tests run Django's sync
    code (the ASGI handler's views) in asgiref's one thread for thread-sensitive code, which
    keeps its database connection open as a server thread does (CONN_MAX_AGE on PostgreSQL).
    Close it, or the drop is refused while that session is open."""
    yield
    from asgiref.sync import SyncToAsync
    from django.db import connections

    with django_db_blocker.unblock():
        SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=30)
