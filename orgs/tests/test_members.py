"""Org members: add, change role, remove, and an org never loses its last admin."""

import pytest

from orgs.models import Membership
from orgs.tests.factories import MembershipFactory, OrganizationFactory, UserFactory
from orgs.tests.support import another_add_just_committed, api, as_user, assert_error, assert_success, db_snapshot

pytestmark = pytest.mark.django_db


@pytest.fixture
def org():
    return OrganizationFactory(alias="acme-corp")


@pytest.fixture
def admin(org):
    return MembershipFactory(org=org, role="admin").user


def test_an_added_member_is_listed_and_gains_access(org, admin):
    newcomer = UserFactory()
    assert_error(as_user(newcomer).get("/v1/orgs/acme-corp"), 403, "access_denied")

    added = api(as_user(admin), "POST", "orgs/acme-corp/members", {"user_id": str(newcomer.id), "role": "read"})

    member = assert_success(added, 201)["member"]
    assert (member["user_id"], member["user_alias"], member["role"]) == (str(newcomer.id), newcomer.username, "read")
    assert added["ETag"] == f'"{member["etag"]}"'
    listed = assert_success(as_user(admin).get("/v1/orgs/acme-corp/members"))["members"]
    assert {item["user_id"] for item in listed} == {str(admin.id), str(newcomer.id)}
    assert_success(as_user(newcomer).get("/v1/orgs/acme-corp"))
    orgs = assert_success(as_user(newcomer).get("/v1/users/me/orgs"))["organizations"]
    assert [item["alias"] for item in orgs] == ["acme-corp"]


def test_adding_a_member_twice_is_a_conflict_that_changes_nothing(org, admin):
    member = MembershipFactory(org=org, role="read").user
    before = db_snapshot()
    again = api(as_user(admin), "POST", "orgs/acme-corp/members", {"user_id": str(member.id), "role": "admin"})
    assert_error(again, 409, "member_exists")
    assert db_snapshot() == before


def test_of_two_concurrent_adds_of_the_same_user_the_loser_gets_a_conflict(org, admin, monkeypatch):
    member = MembershipFactory(org=org, role="read").user
    another_add_just_committed(monkeypatch, Membership)
    before = db_snapshot()
    answer = api(as_user(admin), "POST", "orgs/acme-corp/members", {"user_id": str(member.id), "role": "admin"})

    assert_error(answer, 409, "member_exists")
    assert db_snapshot() == before


def test_an_org_at_its_member_limit_takes_no_new_member(org, admin, settings):
    settings.LIMITS = {"core.members_per_organization": 2}
    MembershipFactory(org=org, role="read")
    newcomer = UserFactory()
    before = db_snapshot()

    refused = api(as_user(admin), "POST", "orgs/acme-corp/members", {"user_id": str(newcomer.id), "role": "read"})

    body = assert_error(refused, 400, "limit_exceeded")
    assert body["limit"] == {"id": "core.members_per_organization", "value": 2, "held": 2}
    assert db_snapshot() == before


def test_an_inactive_user_cannot_be_added(org, admin):
    inactive = UserFactory(is_active=False)
    answer = api(as_user(admin), "POST", "orgs/acme-corp/members", {"user_id": str(inactive.id), "role": "read"})
    assert_error(answer, 400, "invalid_request_body")
    assert not Membership.objects.filter(user=inactive).exists()


def test_changing_a_role_changes_what_the_member_may_do(org, admin):
    member = MembershipFactory(org=org, role="read").user
    assert_error(as_user(member).get("/v1/orgs/acme-corp/credentials"), 403, "access_denied")

    changed = assert_success(api(as_user(admin), "PATCH", f"orgs/acme-corp/members/{member.id}", {"role": "write"}))

    assert changed["member"]["role"] == "write"
    assert_success(as_user(member).get("/v1/orgs/acme-corp/credentials"))
    assert_error(as_user(member).get("/v1/orgs/acme-corp/api_keys"), 403, "access_denied")


def test_a_removed_member_loses_access_at_once(org, admin):
    member = MembershipFactory(org=org, role="write").user
    client = as_user(member)
    assert_success(client.get("/v1/orgs/acme-corp"))

    assert_success(api(as_user(admin), "DELETE", f"orgs/acme-corp/members/{member.id}"))

    assert_error(client.get("/v1/orgs/acme-corp"), 403, "access_denied")
    assert not Membership.objects.filter(org=org, user=member).exists()
    again = api(as_user(admin), "DELETE", f"orgs/acme-corp/members/{member.id}")
    assert_error(again, 403, "access_denied")


def test_the_last_admin_cannot_be_demoted(org, admin):
    before = db_snapshot()
    answer = api(as_user(admin), "PATCH", f"orgs/acme-corp/members/{admin.id}", {"role": "write"})
    assert_error(answer, 409, "last_admin")
    assert db_snapshot() == before


def test_the_last_admin_cannot_be_removed(org, admin):
    MembershipFactory(org=org, role="write")
    before = db_snapshot()
    answer = api(as_user(admin), "DELETE", f"orgs/acme-corp/members/{admin.id}")
    assert_error(answer, 409, "last_admin")
    assert db_snapshot() == before


def test_an_admin_can_step_down_while_another_admin_remains(org, admin):
    second = MembershipFactory(org=org, role="admin").user
    assert_success(api(as_user(admin), "PATCH", f"orgs/acme-corp/members/{admin.id}", {"role": "read"}))
    assert_error(api(as_user(second), "DELETE", f"orgs/acme-corp/members/{second.id}"), 409, "last_admin")
    assert_success(api(as_user(second), "DELETE", f"orgs/acme-corp/members/{admin.id}"))
    assert list(Membership.objects.filter(org=org).values_list("user_id", "role")) == [(second.id, "admin")]


def test_keeping_an_admin_role_is_not_a_demotion(org, admin):
    answer = api(as_user(admin), "PATCH", f"orgs/acme-corp/members/{admin.id}", {"role": "admin"})
    assert assert_success(answer)["member"]["role"] == "admin"


def test_a_member_change_with_a_stale_if_match_is_refused(org, admin):
    member = MembershipFactory(org=org, role="read")
    etag = member.etag
    client = as_user(admin)

    first = api(client, "PATCH", f"orgs/acme-corp/members/{member.user_id}", {"role": "write"}, HTTP_IF_MATCH=f'"{etag}"')
    second = api(client, "PATCH", f"orgs/acme-corp/members/{member.user_id}", {"role": "admin"}, HTTP_IF_MATCH=f'"{etag}"')

    assert assert_success(first)["member"]["role"] == "write"
    assert_error(second, 412, "precondition_failed")
    assert Membership.objects.get(id=member.id).role == "write"


def test_a_member_removal_with_a_stale_if_match_is_refused(org, admin):
    member = MembershipFactory(org=org, role="read")
    client = as_user(admin)
    path = f"orgs/acme-corp/members/{member.user_id}"
    assert_success(api(client, "PATCH", path, {"role": "write"}, HTTP_IF_MATCH=f'"{member.etag}"'))

    assert_error(api(client, "DELETE", path, HTTP_IF_MATCH=f'"{member.etag}"'), 412, "precondition_failed")
    assert Membership.objects.filter(id=member.id).exists()
    current = Membership.objects.get(id=member.id).etag
    assert_success(api(client, "DELETE", path, HTTP_IF_MATCH=f'"{current}"'))
    assert not Membership.objects.filter(id=member.id).exists()
