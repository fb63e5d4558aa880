"""Organizations: create, read by id or alias, update with If-Match, and list pages."""

import re
from datetime import datetime, timezone

import pytest

from orgs.models import ApiKey, Credential, Membership, Organization
from orgs.tests.factories import MembershipFactory, OrganizationFactory, UserFactory, make_api_key
from orgs.tests.support import api, as_user, assert_error, assert_success, db_snapshot, make_credential

pytestmark = pytest.mark.django_db

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


@pytest.fixture
def admin():
    return MembershipFactory(org=OrganizationFactory(alias="acme-corp", name="Acme"), role="admin").user


def test_creating_an_org_makes_the_creator_its_admin():
    user = UserFactory()
    answer = api(as_user(user), "POST", "orgs", {"alias": "new-org-1", "name": "New Org"})

    org = assert_success(answer, 201)["organization"]
    assert set(org) == {"id", "alias", "name", "created_at", "updated_at", "etag"}
    assert (org["alias"], org["name"]) == ("new-org-1", "New Org")
    assert TIMESTAMP.match(org["created_at"]) and TIMESTAMP.match(org["updated_at"])
    assert answer["ETag"] == f'"{org["etag"]}"'
    assert Membership.objects.get(org_id=org["id"]).user == user
    assert Membership.objects.get(org_id=org["id"]).role == "admin"


def test_a_user_who_administers_the_limit_of_orgs_cannot_create_another(admin, settings):
    settings.LIMITS = {"core.organizations_per_user": 1}
    before = db_snapshot()

    refused = api(as_user(admin), "POST", "orgs", {"alias": "one-too-many", "name": "More"})

    body = assert_error(refused, 400, "limit_exceeded")
    assert body["limit"] == {"id": "core.organizations_per_user", "value": 1, "held": 1}
    assert db_snapshot() == before
    assert_success(api(as_user(UserFactory()), "POST", "orgs", {"alias": "someone-else", "name": "S"}), 201)


def test_an_alias_in_use_is_refused_with_alias_in_use_and_nothing_changes(admin):
    client = as_user(UserFactory())
    before = db_snapshot()
    answer = api(client, "POST", "orgs", {"alias": "acme-corp", "name": "Copycat"})
    assert_error(answer, 400, "alias_in_use")
    assert db_snapshot() == before


def test_an_org_reads_the_same_by_id_and_by_alias(admin):
    org = Organization.objects.get(alias="acme-corp")
    by_alias = assert_success(as_user(admin).get("/v1/orgs/acme-corp"))
    by_id = assert_success(as_user(admin).get(f"/v1/orgs/{org.id}"))
    assert by_alias == by_id
    assert by_alias["organization"]["id"] == str(org.id)


def test_the_etag_header_matches_the_etag_field(admin):
    answer = as_user(admin).get("/v1/orgs/acme-corp")
    assert answer["ETag"] == f'"{answer.json()["organization"]["etag"]}"'


def test_two_updates_with_the_same_if_match_give_one_success_and_one_412(admin):
    client = as_user(admin)
    etag = assert_success(client.get("/v1/orgs/acme-corp"))["organization"]["etag"]

    first = api(client, "PATCH", "orgs/acme-corp", {"name": "First"}, HTTP_IF_MATCH=f'"{etag}"')
    second = api(client, "PATCH", "orgs/acme-corp", {"name": "Second"}, HTTP_IF_MATCH=f'"{etag}"')

    assert sorted([first.status_code, second.status_code]) == [200, 412]
    assert_error(second, 412, "precondition_failed")
    updated = assert_success(first)["organization"]
    assert updated["name"] == "First" and updated["etag"] != etag
    assert first["ETag"] == f'"{updated["etag"]}"'
    assert Organization.objects.get(alias="acme-corp").name == "First"


@pytest.mark.parametrize("form", ["{etag}", '"{etag}"', 'W/"{etag}"', "*"])
def test_if_match_takes_the_etag_bare_quoted_weak_or_star(admin, form):
    client = as_user(admin)
    etag = assert_success(client.get("/v1/orgs/acme-corp"))["organization"]["etag"]
    answer = api(client, "PATCH", "orgs/acme-corp", {"name": "Renamed"}, HTTP_IF_MATCH=form.format(etag=etag))
    assert assert_success(answer)["organization"]["name"] == "Renamed"


def test_a_rename_to_a_taken_alias_is_refused_and_an_alias_change_keeps_the_id(admin):
    OrganizationFactory(alias="globex-corp")
    client = as_user(admin)
    assert_error(api(client, "PATCH", "orgs/acme-corp", {"alias": "globex-corp"}), 400, "alias_in_use")

    org_id = str(Organization.objects.get(alias="acme-corp").id)
    renamed = assert_success(api(client, "PATCH", "orgs/acme-corp", {"alias": "acme-renamed"}))
    assert renamed["organization"]["id"] == org_id
    assert_success(client.get("/v1/orgs/acme-renamed"))
    assert_error(client.get("/v1/orgs/acme-corp"), 403, "access_denied")


# --- Pagination --------------------------------------------------------------------------------


def walk(client, path: str, key: str, limit: int) -> list[list[str]]:
    """Follow cursors to the end; the ids on each page."""
    pages, cursor = [], None
    for _ in range(50):
        query = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        answer = assert_success(client.get(path, query))
        pages.append([item.get("id") or item.get("user_id") for item in answer[key]])
        cursor = answer.get("cursor")
        if cursor is None:
            return pages
    raise AssertionError("the cursor never ran out")


def _same_created_at(model, **filters) -> None:
    # Rows made in the same instant must still page by their id, each exactly once.
    model.objects.filter(**filters).update(created_at=datetime(2026, 1, 1, tzinfo=timezone.utc))


def test_walking_a_users_orgs_page_by_page_serves_each_exactly_once():
    user = UserFactory()
    memberships = [MembershipFactory(user=user) for _ in range(7)]
    _same_created_at(Organization, id__in=[m.org_id for m in memberships[2:5]])

    pages = walk(as_user(user), "/v1/users/me/orgs", "organizations", limit=2)

    assert [len(page) for page in pages] == [2, 2, 2, 1]
    served = [item for page in pages for item in page]
    assert sorted(served) == sorted(str(m.org_id) for m in memberships)


def test_walking_members_page_by_page_serves_each_exactly_once(admin):
    org = Organization.objects.get(alias="acme-corp")
    for _ in range(5):
        MembershipFactory(org=org, role="read")
    _same_created_at(Membership, org=org)

    pages = walk(as_user(admin), "/v1/orgs/acme-corp/members", "members", limit=2)

    served = [item for page in pages for item in page]
    assert len(pages) == 3 and len(served) == 6
    assert sorted(served) == sorted(str(user_id) for user_id in org.memberships.values_list("user_id", flat=True))


def test_walking_keys_and_credentials_page_by_page_serves_each_exactly_once(admin):
    org = Organization.objects.get(alias="acme-corp")
    keys = [make_api_key(org, "read")[0] for _ in range(4)]
    credentials = [make_credential(org, f"token-{n:03d}") for n in range(4)]

    key_pages = walk(as_user(admin), "/v1/orgs/acme-corp/api_keys", "api_keys", limit=3)
    credential_pages = walk(as_user(admin), "/v1/orgs/acme-corp/credentials", "credentials", limit=4)

    assert sorted(sum(key_pages, [])) == sorted(str(key.id) for key in keys)
    assert [len(page) for page in key_pages] == [3, 1]
    assert sorted(sum(credential_pages, [])) == sorted(str(c.id) for c in credentials)
    assert len(credential_pages) == 1, "a page that holds the rest carries no cursor"
    assert ApiKey.objects.count() == 4 and Credential.objects.count() == 4


def test_a_list_without_limit_gives_fifty_a_page(admin):
    org = Organization.objects.get(alias="acme-corp")
    for _ in range(50):
        MembershipFactory(org=org, role="read")
    first = assert_success(as_user(admin).get("/v1/orgs/acme-corp/members"))
    assert len(first["members"]) == 50 and "cursor" in first
    rest = assert_success(as_user(admin).get("/v1/orgs/acme-corp/members", {"cursor": first["cursor"]}))
    assert len(rest["members"]) == 1 and "cursor" not in rest
