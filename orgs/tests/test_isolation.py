"""The isolation matrix: every route of orgs/api/urls.py against every kind of outsider.

An outsider is refused with 401 or 403 in the envelope, cannot tell an existing resource
from an absent one (the answers are byte-for-byte the same), and changes nothing.
"""

import json
import re
import uuid
from dataclasses import dataclass, field

import pytest
from rest_framework.test import APIClient

from orgs.api import urls
from orgs.tests.support import (
    NO_BODY,
    World,
    api,
    as_key,
    as_user,
    assert_error,
    assert_success,
    bearer,
    build_world,
    db_snapshot,
)

pytestmark = pytest.mark.django_db

RANK = {"read": 1, "write": 2, "admin": 3}
PUBLIC_ROUTES = {("POST", "auth/login"), ("GET", "auth/core/anonymous"), ("POST", "auth/core/refresh")}


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    needs: str  # a role in the org, "user" (a signed-in user) or "anyone" (any user or key)
    body: object = NO_BODY
    success: int = 200

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


ROUTES = [
    Route("GET", "users/me", "anyone"),
    Route("GET", "users/me/orgs", "user"),
    Route("POST", "orgs", "user", {"alias": "brand-new-org", "name": "New"}, 201),
    Route("GET", "orgs/{org}", "read"),
    Route("PATCH", "orgs/{org}", "admin", {"name": "Renamed"}),
    Route("GET", "orgs/{org}/members", "read"),
    Route("POST", "orgs/{org}/members", "admin", {"user_id": "{stranger}", "role": "read"}, 201),
    Route("PATCH", "orgs/{org}/members/{user_id}", "admin", {"role": "write"}),
    Route("DELETE", "orgs/{org}/members/{user_id}", "admin"),
    Route("GET", "orgs/{org}/api_keys", "admin"),
    Route("POST", "orgs/{org}/api_keys", "admin", {"role": "read", "description": "ci"}, 201),
    Route("DELETE", "orgs/{org}/api_keys/{key_id}", "admin"),
    Route("GET", "orgs/{org}/credentials", "write"),
    Route("POST", "orgs/{org}/credentials", "admin", {"alias": "new-token", "provider": "http", "value": "v"}, 201),
    Route("GET", "orgs/{org}/credentials/{alias}", "write"),
    Route("PUT", "orgs/{org}/credentials/{alias}", "admin", {"provider": "http", "value": "new value"}),
    Route("DELETE", "orgs/{org}/credentials/{alias}", "admin"),
]


@dataclass(frozen=True)
class Outsider:
    name: str
    kind: str  # "none", "bad" (unusable credentials), "anonymous", "user" or "key"
    role: str | None = None  # the role held in the target org, if any
    expected: int = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "expected", 401 if self.kind in ("none", "bad") else 403)

    def is_refused(self, route: Route) -> bool:
        if self.kind in ("none", "bad", "anonymous"):
            return True
        if route.needs == "anyone":
            return False
        if route.needs == "user":
            return self.kind != "user"
        return self.role is None or RANK[self.role] < RANK[route.needs]

    def client(self, world: World) -> APIClient:
        return {
            "no credentials": lambda: APIClient(),
            "revoked key": lambda: as_key(world.revoked_key),
            "expired key": lambda: as_key(world.expired_key),
            "unknown key": lambda: as_key("bh_000000000000_" + "A" * 43),
            "malformed key": lambda: as_key("let-me-in"),
            "forged bearer token": lambda: bearer("eyJ1Ijoibm9ib2R5In0:forged:signature"),
            "anonymous token": lambda: bearer(_anonymous_token()),
            "other org's admin": lambda: as_user(world.other_admin),
            "other org's write key": lambda: as_key(world.other_key),
            "read key": lambda: as_key(world.read_key),
            "write key": lambda: as_key(world.write_key),
            "read member": lambda: as_user(world.reader),
            "write member": lambda: as_user(world.writer),
        }[self.name]()


def _anonymous_token() -> str:
    return assert_success(APIClient().get("/v1/auth/core/anonymous"))["access_token"]


OUTSIDERS = [
    Outsider("no credentials", "none"),
    Outsider("revoked key", "bad"),
    Outsider("expired key", "bad"),
    Outsider("unknown key", "bad"),
    Outsider("malformed key", "bad"),
    Outsider("forged bearer token", "bad"),
    Outsider("anonymous token", "anonymous"),
    Outsider("other org's admin", "user"),
    Outsider("other org's write key", "key"),
    Outsider("read key", "key", "read"),
    Outsider("write key", "key", "write"),
    Outsider("read member", "user", "read"),
    Outsider("write member", "user", "write"),
]

CASES = [
    pytest.param(route, outsider, id=f"{route} as {outsider.name}")
    for route in ROUTES
    for outsider in OUTSIDERS
    if outsider.is_refused(route)
]


def targets(world: World, route: Route) -> list[str]:
    """The route's path for the existing resource, then for absent ones that must look the same."""
    real = {
        "org": world.org.alias,
        "user_id": str(world.reader.id),
        "key_id": str(world.key_row.id),
        "alias": world.credential.alias,
    }
    variants = [real, {**real, "org": str(world.org.id)}]
    if "{org}" in route.path:
        variants += [{**real, "org": "no-such-org"}, {**real, "org": str(uuid.uuid4())}]
    absent = {"user_id": str(uuid.uuid4()), "key_id": str(uuid.uuid4()), "alias": "no-such-credential"}
    for name, value in absent.items():
        if "{" + name + "}" in route.path:
            variants.append({**real, name: value})
    return [route.path.format(**values) for values in variants]


def body_for(world: World, route: Route):
    if route.body is NO_BODY:
        return NO_BODY
    return json.loads(json.dumps(route.body).replace("{stranger}", str(world.stranger.id)))


@pytest.mark.parametrize(("route", "outsider"), CASES)
def test_an_outsider_is_refused_learns_nothing_and_changes_nothing(route: Route, outsider: Outsider):
    world = build_world()
    client = outsider.client(world)
    before = db_snapshot()

    answers = [api(client, route.method, path, body_for(world, route)) for path in targets(world, route)]

    expected_code = "unauthenticated" if outsider.expected == 401 else "access_denied"
    bodies = [assert_error(answer, outsider.expected, expected_code) for answer in answers]
    assert all(body == bodies[0] for body in bodies), "existing and absent resources answered differently"
    assert all(answer.status_code == answers[0].status_code for answer in answers)
    assert db_snapshot() == before


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_the_org_admin_is_served_on_every_route_outsiders_are_refused(route: Route):
    world = build_world()
    path = targets(world, route)[0]
    assert_success(api(as_user(world.admin), route.method, path, body_for(world, route)), route.success)


def test_the_matrix_covers_every_route_and_method_of_the_orgs_api():
    served = set()
    for pattern in urls.urlpatterns:
        path = re.sub(r"<str:(\w+)>", r"{\1}", str(pattern.pattern))
        view = pattern.callback.view_class
        for method in ("get", "post", "put", "patch", "delete"):
            if hasattr(view, method):
                served.add((method.upper(), path))
    assert served == {(route.method, route.path) for route in ROUTES} | PUBLIC_ROUTES


def test_a_revoked_key_and_a_key_that_never_existed_get_the_same_answer():
    world = build_world()
    revoked = as_key(world.revoked_key).get("/v1/users/me")
    expired = as_key(world.expired_key).get("/v1/users/me")
    unknown = as_key("bh_000000000000_" + "A" * 43).get("/v1/users/me")
    assert assert_error(revoked, 401, "unauthenticated") == assert_error(unknown, 401, "unauthenticated")
    assert assert_error(expired, 401, "unauthenticated") == assert_error(unknown, 401, "unauthenticated")


def test_a_key_of_one_org_cannot_reach_a_resource_of_another_through_its_own_org():
    """A foreign key id or member id under the caller's own org path is absent, not found."""
    world = build_world()
    other_admin_client = as_user(world.other_admin)
    before = db_snapshot()

    foreign_key = api(other_admin_client, "DELETE", f"orgs/{world.other_org.alias}/api_keys/{world.key_row.id}")
    foreign_member = api(other_admin_client, "DELETE", f"orgs/{world.other_org.alias}/members/{world.admin.id}")
    foreign_credential = api(
        other_admin_client, "GET", f"orgs/{world.other_org.alias}/credentials/{world.credential.alias}"
    )

    for answer in (foreign_key, foreign_member, foreign_credential):
        assert_error(answer, 403, "access_denied")
    assert db_snapshot() == before
