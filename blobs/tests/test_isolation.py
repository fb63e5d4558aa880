"""The isolation matrix: every route of blobs/api/urls.py against every kind of outsider.

An outsider is refused with 401 or 403 in the envelope, cannot tell an existing resource from
an absent one (the answers are the same, body for body), and changes nothing in the database.
"""

import json
import re
import uuid
from dataclasses import dataclass

import pytest
from rest_framework.test import APIClient

from blobs.api import urls
from blobs.tests.support import (
    NO_BODY,
    WORKFLOW,
    World,
    api,
    as_anonymous,
    as_key,
    as_user,
    assert_error,
    assert_success,
    build_world,
    db_snapshot,
    engine_registered,
    files_engine,
    no_credentials,
)

pytestmark = pytest.mark.django_db

RANK = {"read": 1, "write": 2, "admin": 3}


@pytest.fixture(autouse=True)
def _engine():
    with engine_registered(files_engine()):
        yield


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    needs: str  # the role needed on the world's blob (or in the org, for scope "org")
    body: object = NO_BODY
    success: int = 200
    scope: str = "blob"
    revision: str = "draft"  # which revision `{revision_id}` names: "draft" or "committed"
    label: str = ""

    def __str__(self) -> str:
        return f"{self.method} {self.path}{' ' + self.label if self.label else ''}"


ROUTES = [
    Route("GET", "orgs/{org}/blobs", "read", scope="org"),
    Route("POST", "orgs/{org}/blobs", "write", {"alias": "brand-new-blob", "type": WORKFLOW}, 201, scope="org"),
    Route("GET", "blobs/{org}/{blob}", "read"),
    Route("PATCH", "blobs/{org}/{blob}", "write", {"description": "changed"}, label="description"),
    Route("PATCH", "blobs/{org}/{blob}", "write", {"default_revision_id": "{committed}"}, label="default"),
    Route("PATCH", "blobs/{org}/{blob}", "admin", {"visibility": "public"}, label="visibility"),
    Route("PATCH", "blobs/{org}/{blob}", "admin", {"alias": "renamed-model"}, label="alias"),
    Route("DELETE", "blobs/{org}/{blob}", "admin", label="with a committed revision"),
    Route("GET", "blobs/{org}/{blob}/limits", "read"),
    Route("GET", "blobs/{org}/{blob}/revisions", "read"),
    Route("POST", "blobs/{org}/{blob}/revisions", "write", {"comment": "next one"}, 201),
    Route("GET", "blobs/{org}/{blob}/revisions/{ref}", "read"),
    Route("GET", "blobs/{org}/{blob}/metadata", "read"),
    Route("POST", "blobs/{org}/{blob}/metadata", "write", {"key": "fresh", "value": [1, 2]}, 201),
    Route("GET", "blobs/{org}/{blob}/metadata/{key}", "read"),
    Route("PUT", "blobs/{org}/{blob}/metadata/{key}", "write", {"value": {"team": "ops"}}),
    Route("DELETE", "blobs/{org}/{blob}/metadata/{key}", "write"),
    Route("GET", "blobs/{org}/{blob}/members", "read"),
    Route("POST", "blobs/{org}/{blob}/members", "admin", {"user_id": "{stranger}", "role": "read"}, 201),
    Route("PATCH", "blobs/{org}/{blob}/members/{user_id}", "admin", {"role": "write"}),
    Route("DELETE", "blobs/{org}/{blob}/members/{user_id}", "admin"),
    Route("GET", "blobs/{org}/{blob}/api_keys", "admin"),
    Route("POST", "blobs/{org}/{blob}/api_keys", "admin", {"role": "read", "description": "ci"}, 201),
    Route("DELETE", "blobs/{org}/{blob}/api_keys/{key_id}", "admin"),
    Route("GET", "revisions/{revision_id}", "read"),
    Route("DELETE", "revisions/{revision_id}", "write"),
    Route("POST", "revisions/{revision_id}/commit", "write", {"comment": "done"}),
    Route("POST", "revisions/{revision_id}/snapshot", "write", {}, revision="committed"),
    Route("GET", "revisions/{revision_id}/metadata", "read"),
    Route("POST", "revisions/{revision_id}/metadata", "write", {"key": "fresh", "value": True}, 201),
    Route("GET", "revisions/{revision_id}/metadata/{key}", "read"),
    Route("PUT", "revisions/{revision_id}/metadata/{key}", "write", {"value": "done"}),
    Route("DELETE", "revisions/{revision_id}/metadata/{key}", "write"),
    Route("GET", "revisions/{revision_id}/metadata/{key}/resolve", "read"),
    Route("POST", "revisions/{revision_id}/data/query", "read", {"command": "diff", "against": "{committed}"}),
    Route("POST", "revisions/{revision_id}/data/command", "write", {"command": "put_file", "path": "b", "text": "b"}),
    Route("GET", "operations/{operation_id}", "read"),
    Route("POST", "operations/{operation_id}/cancel", "write"),
]


@dataclass(frozen=True)
class Outsider:
    name: str
    status: int  # 401: the credentials are not usable; 403: usable, but not enough here
    blob_role: str | None = None  # the role held on the world's blob
    org_role: str | None = None  # the role held in its org
    has_own_blob: bool = False  # holds a role on a blob of the org, so the org's blob list is its to read

    def is_refused(self, route: Route) -> bool:
        if self.status == 401:
            return True
        if route.scope == "org":
            if route.method == "GET" and self.has_own_blob:
                return False  # sees its own blob listed: test_a_blob_scoped_caller_lists_only_its_own_blob
            role = self.org_role
        else:
            role = self.blob_role
        return role is None or RANK[role] < RANK[route.needs]

    def client(self, world: World) -> APIClient:
        return {
            "no credentials": no_credentials,
            "revoked key": lambda: as_key(world.revoked_key),
            "expired key": lambda: as_key(world.expired_key),
            "unknown key": lambda: as_key("bh_000000000000_" + "A" * 43),
            "anonymous token": as_anonymous,
            "other org's admin": lambda: as_user(world.foreign_admin),
            "other org's write key": lambda: as_key(world.foreign_key),
            "blob key for another blob": lambda: as_key(world.other_blob_key),
            "blob admin of another blob": lambda: as_user(world.other_blob_member),
            "read key": lambda: as_key(world.read_key),
            "read member": lambda: as_user(world.reader),
            "blob read member": lambda: as_user(world.member),
            "write key": lambda: as_key(world.write_key),
            "write member": lambda: as_user(world.writer),
        }[self.name]()


OUTSIDERS = [
    Outsider("no credentials", 401),
    Outsider("revoked key", 401),
    Outsider("expired key", 401),
    Outsider("unknown key", 401),
    Outsider("anonymous token", 403),
    Outsider("other org's admin", 403),
    Outsider("other org's write key", 403),
    Outsider("blob key for another blob", 403, has_own_blob=True),
    Outsider("blob admin of another blob", 403, has_own_blob=True),
    Outsider("read key", 403, "read", "read"),
    Outsider("read member", 403, "read", "read"),
    Outsider("blob read member", 403, "read", None, has_own_blob=True),
    Outsider("write key", 403, "write", "write"),
    Outsider("write member", 403, "write", "write"),
]

CASES = [
    pytest.param(route, outsider, id=f"{route} as {outsider.name}")
    for route in ROUTES
    for outsider in OUTSIDERS
    if outsider.is_refused(route)
]


def real_params(world: World, route: Route) -> dict:
    revision = world.draft if route.revision == "draft" else world.committed
    return {
        "org": world.org.alias,
        "blob": world.blob.alias,
        "ref": str(world.committed.id),
        "key": "owner",
        "user_id": str(world.member.id),
        "key_id": str(world.blob_key_row.id),
        "revision_id": str(revision.id),
        "operation_id": str(world.operation.id),
    }


def absent_params(world: World) -> dict[str, list[str]]:
    """For each path part, values that name nothing (or nothing under this path)."""
    return {
        "org": ["no-such-org", str(uuid.uuid4())],
        "blob": ["no-such-blob", str(uuid.uuid4()), str(world.foreign_blob.id)],
        "ref": [str(uuid.uuid4())],
        "key": ["no-such-key"],
        "user_id": [str(uuid.uuid4()), str(world.stranger.id)],
        "key_id": [str(uuid.uuid4()), str(world.write_key_row.id)],
        "revision_id": [str(uuid.uuid4()), "not-a-uuid"],
        "operation_id": [str(uuid.uuid4()), "12345"],
    }


def targets(world: World, route: Route) -> list[str]:
    """The route's path for the existing resource first, then for absent ones that must look the same."""
    real = real_params(world, route)
    variants = [real]
    if "{org}" in route.path:
        variants.append({**real, "org": str(world.org.id)})
    if "{blob}" in route.path:
        variants.append({**real, "blob": str(world.blob.id)})
        # The blob's id under another org's path (one the foreign outsiders may use) names nothing.
        variants.append({**real, "org": world.foreign_org.alias, "blob": str(world.blob.id)})
    for name, values in absent_params(world).items():
        if "{" + name + "}" in route.path:
            variants += [{**real, name: value} for value in values]
    return [route.path.format(**values) for values in variants]


def body_for(world: World, route: Route):
    if route.body is NO_BODY:
        return NO_BODY
    text = json.dumps(route.body)
    for name, value in {"{stranger}": world.stranger.id, "{committed}": world.committed.id}.items():
        text = text.replace(name, str(value))
    return json.loads(text)


@pytest.mark.parametrize(("route", "outsider"), CASES)
def test_an_outsider_is_refused_learns_nothing_and_changes_nothing(route: Route, outsider: Outsider):
    world = build_world()
    client = outsider.client(world)
    before = db_snapshot()

    answers = [api(client, route.method, path, body_for(world, route)) for path in targets(world, route)]

    expected_code = "unauthenticated" if outsider.status == 401 else "access_denied"
    bodies = [assert_error(answer, outsider.status, expected_code) for answer in answers]
    assert all(body == bodies[0] for body in bodies), "an existing and an absent target answered differently"
    assert db_snapshot() == before


def holder_of(world: World, role: str) -> APIClient:
    """A caller holding exactly `role` on the world's blob and in its org."""
    return {"read": as_key(world.read_key), "write": as_key(world.write_key), "admin": as_user(world.admin)}[role]


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_a_caller_holding_just_the_needed_role_is_served_where_outsiders_are_refused(route: Route):
    world = build_world()
    path = targets(world, route)[0]
    assert_success(api(holder_of(world, route.needs), route.method, path, body_for(world, route)), route.success)


def test_the_matrix_covers_every_route_and_method_of_the_blobs_api():
    served = set()
    for pattern in urls.urlpatterns:
        path = re.sub(r"<str:(\w+)>", r"{\1}", str(pattern.pattern))
        view = pattern.callback.view_class
        for method in ("get", "post", "put", "patch", "delete"):
            if hasattr(view, method):
                served.add((method.upper(), path))
    assert served == {(route.method, route.path) for route in ROUTES}
    refused_by = {outsider.name for _, outsider in (case.values for case in CASES)}
    assert refused_by == {outsider.name for outsider in OUTSIDERS}


@pytest.mark.parametrize("who", ["blob key for another blob", "blob admin of another blob", "blob read member"])
def test_a_blob_scoped_caller_lists_only_its_own_blob(who: str):
    world = build_world()
    outsider = next(outsider for outsider in OUTSIDERS if outsider.name == who)
    own = world.blob if who == "blob read member" else world.other_blob

    listed = assert_success(api(outsider.client(world), "GET", f"orgs/{world.org.alias}/blobs"))

    assert [blob["alias"] for blob in listed["blobs"]] == [own.alias]


def test_an_id_of_another_tenant_under_the_callers_own_path_is_absent():
    """A foreign revision, member or key id under a blob the caller may use names nothing."""
    world = build_world()
    client = as_user(world.foreign_admin)
    own = f"blobs/{world.foreign_org.alias}/{world.foreign_blob.alias}"
    foreign_draft = world.foreign_blob.revisions.get()
    before = db_snapshot()

    def same_as_absent(method: str, path: str, foreign: str, status: int, code: str, body=NO_BODY) -> None:
        real = api(client, method, path.format(foreign), body)
        absent = api(client, method, path.format(uuid.uuid4()), body)
        assert assert_error(real, status, code) == assert_error(absent, status, code)

    same_as_absent("GET", own + "/revisions/{}", world.committed.id, 404, "revision_not_found")
    same_as_absent("PATCH", own + "/members/{}", world.member.id, 403, "access_denied", {"role": "admin"})
    same_as_absent("DELETE", own + "/members/{}", world.member.id, 403, "access_denied")
    same_as_absent("DELETE", own + "/api_keys/{}", world.blob_key_row.id, 403, "access_denied")
    moved = api(client, "PATCH", own, {"default_revision_id": str(world.committed.id)})
    unknown = api(client, "PATCH", own, {"default_revision_id": str(uuid.uuid4())})
    assert assert_error(moved, 409, "revision_not_committed") == assert_error(unknown, 409, "revision_not_committed")
    diff = {"command": "diff", "against": str(world.committed.id)}
    real = api(client, "POST", f"revisions/{foreign_draft.id}/data/query", diff)
    absent = api(client, "POST", f"revisions/{foreign_draft.id}/data/query", {**diff, "against": str(uuid.uuid4())})
    assert assert_error(real, 404, "revision_not_found") == assert_error(absent, 404, "revision_not_found")
    assert db_snapshot() == before


def test_a_blob_scoped_key_cannot_reach_another_blobs_revision_through_its_own_blob():
    world = build_world()
    client = as_key(world.other_blob_key)
    own = f"blobs/{world.org.alias}/{world.other_blob.alias}"
    before = db_snapshot()

    real = api(client, "GET", f"{own}/revisions/{world.committed.id}")
    absent = api(client, "GET", f"{own}/revisions/{uuid.uuid4()}")

    assert assert_error(real, 404, "revision_not_found") == assert_error(absent, 404, "revision_not_found")
    assert db_snapshot() == before
