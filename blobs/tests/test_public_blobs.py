"""Public blobs: every authenticated caller and every anonymous token reads their snapshots, and
nothing else of them; private blobs stay invisible to those callers."""

import uuid
from dataclasses import dataclass

import pytest
from rest_framework.test import APIClient

from blobs.models import BlobMetadata, Operation, Revision, RevisionMetadata
from blobs.services import content
from blobs.tests.factories import BlobFactory
from blobs.tests.support import (
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
    freeze,
    next_draft,
    set_default,
)
from orgs.tests.factories import OrganizationFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _engine():
    with engine_registered(files_engine()):
        yield


@dataclass
class Published:
    """World plus Acme's public blob `open-model`: r1 and r2 snapshots, r3 committed (the default), r4 a draft."""

    world: World
    first: Revision
    second: Revision
    committed: Revision
    draft: Revision
    operation: Operation


@pytest.fixture
def published() -> Published:
    world = build_world()
    blob = BlobFactory(org=world.org, alias="open-model", visibility="public")
    first = blob.revisions.get()
    content.file_put(first, "a.txt", b"1")
    freeze(first, Revision.Phase.SNAPSHOT)
    second = next_draft(blob, first)
    content.file_put(second, "a.txt", b"2")
    content.file_put(second, "b.txt", b"new")
    freeze(second, Revision.Phase.SNAPSHOT)
    committed = next_draft(blob, second)
    content.file_put(committed, "c.txt", b"unpublished")
    freeze(committed)
    set_default(blob, committed)
    draft = next_draft(blob, committed)
    BlobMetadata.objects.create(org=world.org, blob=blob, key="owner", value="ml")
    RevisionMetadata.objects.create(org=world.org, revision=second, key="note", value="v2")
    RevisionMetadata.objects.create(org=world.org, revision=draft, key="note", value="wip")
    operation = Operation.objects.create(org=world.org, blob=blob, revision=committed, type="export")
    return Published(world, first, second, committed, draft, operation)


READERS = ["other org's admin", "other org's write key", "blob key for another blob", "anonymous token"]


def reader(world: World, who: str) -> APIClient:
    return {
        "other org's admin": lambda: as_user(world.foreign_admin),
        "other org's write key": lambda: as_key(world.foreign_key),
        "blob key for another blob": lambda: as_key(world.other_blob_key),
        "anonymous token": as_anonymous,
    }[who]()


BLOB = "blobs/acme-corp/open-model"


@pytest.mark.parametrize("who", READERS)
def test_a_public_blob_is_readable_by_an_outsider(published: Published, who: str):
    client = reader(published.world, who)

    blob = assert_success(api(client, "GET", BLOB))["blob"]
    limits = assert_success(api(client, "GET", f"{BLOB}/limits"))

    assert (blob["alias"], blob["visibility"]) == ("open-model", "public")
    assert limits["groups"]


@pytest.mark.parametrize("who", READERS)
def test_an_outsider_sees_only_the_snapshot_revisions(published: Published, who: str):
    client = reader(published.world, who)

    listed = assert_success(api(client, "GET", f"{BLOB}/revisions"))["revisions"]
    in_blob = assert_success(api(client, "GET", f"{BLOB}/revisions/{published.first.id}"))["revision"]
    bare = assert_success(api(client, "GET", f"revisions/{published.second.id}"))["revision"]

    assert [(revision["number"], revision["phase"]) for revision in listed] == [(2, "snapshot"), (1, "snapshot")]
    assert in_blob["id"] == str(published.first.id)
    assert bare["id"] == str(published.second.id)


@pytest.mark.parametrize("who", READERS)
def test_drafts_and_commits_of_a_public_blob_answer_an_outsider_like_absent_revisions(published: Published, who: str):
    client = reader(published.world, who)
    absent_in_blob = assert_error(api(client, "GET", f"{BLOB}/revisions/{uuid.uuid4()}"), 404, "revision_not_found")
    absent_bare = assert_error(api(client, "GET", f"revisions/{uuid.uuid4()}"), 403, "access_denied")

    for hidden in (published.committed, published.draft):
        in_blob = api(client, "GET", f"{BLOB}/revisions/{hidden.id}")
        assert assert_error(in_blob, 404, "revision_not_found") == absent_in_blob
        assert assert_error(api(client, "GET", f"revisions/{hidden.id}"), 403, "access_denied") == absent_bare
        assert assert_error(api(client, "GET", f"revisions/{hidden.id}/metadata"), 403, "access_denied") == absent_bare
        query = {"command": "diff", "against": str(published.first.id)}
        queried = api(client, "POST", f"revisions/{hidden.id}/data/query", query)
        assert assert_error(queried, 403, "access_denied") == absent_bare
    default = api(client, "GET", f"{BLOB}/revisions/default")
    assert assert_error(default, 404, "revision_not_found") == absent_in_blob


def test_the_default_revision_is_readable_by_an_outsider_once_it_is_a_snapshot(published: Published):
    set_default(Revision.objects.get(id=published.second.id).blob, published.second)

    default = assert_success(api(as_anonymous(), "GET", f"{BLOB}/revisions/default"))["revision"]

    assert (default["id"], default["phase"]) == (str(published.second.id), "snapshot")


@pytest.mark.parametrize("who", READERS)
def test_an_outsider_may_query_a_snapshot_but_compare_it_only_with_snapshots(published: Published, who: str):
    client = reader(published.world, who)
    url = f"revisions/{published.second.id}/data/query"

    diff = assert_success(api(client, "POST", url, {"command": "diff", "against": str(published.first.id)}))["diff"]
    text = assert_success(api(client, "POST", url, {"command": "read_file", "path": "b.txt"}))["text"]
    against_commit = api(client, "POST", url, {"command": "diff", "against": str(published.committed.id)})
    against_absent = api(client, "POST", url, {"command": "diff", "against": str(uuid.uuid4())})

    assert diff == {"added": ["b.txt"], "removed": [], "changed": ["a.txt"]}
    assert text == "new"
    absent = assert_error(against_absent, 404, "revision_not_found")
    assert assert_error(against_commit, 404, "revision_not_found") == absent


def test_an_outsider_reads_the_metadata_of_a_snapshot_not_that_of_a_draft(published: Published):
    client = as_anonymous()

    note = assert_success(api(client, "GET", f"revisions/{published.second.id}/metadata/note"))["metadata"]
    resolved = assert_success(api(client, "GET", f"revisions/{published.second.id}/metadata/owner/resolve"))
    draft_note = api(client, "GET", f"revisions/{published.draft.id}/metadata/note")

    assert note["value"] == "v2"
    assert (resolved["source"], resolved["metadata"]["value"]) == ("blob", "ml")
    assert_error(draft_note, 403, "access_denied")


def _writes(published: Published) -> list[tuple[str, str, object]]:
    second, committed, draft = published.second.id, published.committed.id, published.draft.id
    return [
        ("PATCH", BLOB, {"description": "defaced"}),
        ("PATCH", BLOB, {"visibility": "private"}),
        ("PATCH", BLOB, {"default_revision_id": str(second)}),
        ("DELETE", BLOB, None),
        ("POST", f"{BLOB}/revisions", {"comment": "mine now"}),
        ("POST", f"{BLOB}/metadata", {"key": "fresh", "value": 1}),
        ("PUT", f"{BLOB}/metadata/owner", {"value": "me"}),
        ("PUT", f"{BLOB}/metadata/fresh", {"value": "me"}),
        ("DELETE", f"{BLOB}/metadata/owner", None),
        ("POST", f"{BLOB}/members", {"user_id": str(published.world.stranger.id), "role": "admin"}),
        ("POST", f"{BLOB}/api_keys", {"role": "write"}),
        ("POST", f"revisions/{second}/metadata", {"key": "fresh", "value": 1}),
        ("PUT", f"revisions/{second}/metadata/note", {"value": "me"}),
        ("DELETE", f"revisions/{second}/metadata/note", None),
        ("POST", f"revisions/{committed}/snapshot", {}),
        ("POST", f"revisions/{draft}/commit", {}),
        ("DELETE", f"revisions/{draft}", None),
        ("POST", f"revisions/{second}/data/command", {"command": "put_file", "path": "x.txt", "text": "x"}),
        ("POST", f"revisions/{draft}/data/command", {"command": "put_file", "path": "x.txt", "text": "x"}),
        ("POST", f"revisions/{second}/data/command", {"command": "open_session"}),
        ("POST", f"operations/{published.operation.id}/cancel", None),
    ]


@pytest.mark.parametrize("who", READERS)
def test_an_outsider_never_writes_to_a_public_blob(published: Published, who: str):
    client = reader(published.world, who)
    before = db_snapshot()

    for method, path, body in _writes(published):
        answer = api(client, method, path) if body is None else api(client, method, path, body)
        assert_error(answer, 403, "access_denied")

    assert db_snapshot() == before


@pytest.mark.parametrize("who", READERS)
def test_an_outsider_sees_none_of_a_public_blobs_members_keys_or_operations(published: Published, who: str):
    client = reader(published.world, who)
    absent = assert_error(api(client, "GET", f"operations/{uuid.uuid4()}"), 403, "access_denied")

    for path in (f"{BLOB}/members", f"{BLOB}/api_keys", f"operations/{published.operation.id}"):
        assert assert_error(api(client, "GET", path), 403, "access_denied") == absent


@pytest.mark.parametrize("who", READERS)
def test_private_blobs_stay_invisible_next_to_a_public_one(published: Published, who: str):
    world = published.world
    client = reader(world, who)
    absent = assert_error(api(client, "GET", f"blobs/acme-corp/{uuid.uuid4()}"), 403, "access_denied")
    private = world.other_blob if who != "blob key for another blob" else world.blob

    for path in (
        f"blobs/acme-corp/{private.alias}",
        f"blobs/acme-corp/{private.id}/revisions",
        f"revisions/{private.revisions.get(number=1).id}",
    ):
        assert assert_error(api(client, "GET", path), 403, "access_denied") == absent


@pytest.mark.parametrize("who", ["other org's admin", "other org's write key", "anonymous token"])
def test_the_org_blob_list_shows_an_outsider_only_the_public_blobs(published: Published, who: str):
    client = reader(published.world, who)

    listed = assert_success(api(client, "GET", "orgs/acme-corp/blobs"))["blobs"]
    filtered = assert_success(api(client, "GET", "orgs/acme-corp/blobs?type=blobhub.compute.workflow"))["blobs"]

    assert [blob["alias"] for blob in listed] == ["open-model"]
    assert [blob["alias"] for blob in filtered] == ["open-model"]


@pytest.mark.parametrize("who", READERS)
def test_an_org_without_public_blobs_answers_an_outsider_like_one_that_does_not_exist(published: Published, who: str):
    BlobFactory(org=OrganizationFactory(alias="initech-corp"), alias="initech-model")
    client = reader(published.world, who)

    closed = api(client, "GET", "orgs/initech-corp/blobs")
    missing = api(client, "GET", "orgs/no-such-org/blobs")

    assert assert_error(closed, 403, "access_denied") == assert_error(missing, 403, "access_denied")


def test_a_blob_made_private_again_is_gone_for_outsiders(published: Published):
    admin = as_user(published.world.admin)
    assert_success(api(admin, "PATCH", BLOB, {"visibility": "private"}))
    client = as_anonymous()
    absent = assert_error(api(client, "GET", f"blobs/acme-corp/{uuid.uuid4()}"), 403, "access_denied")

    assert assert_error(api(client, "GET", BLOB), 403, "access_denied") == absent
    assert assert_error(api(client, "GET", f"revisions/{published.first.id}"), 403, "access_denied")
    assert_error(api(client, "GET", "orgs/acme-corp/blobs"), 403, "access_denied")


def test_a_member_of_the_org_still_sees_every_revision_of_a_public_blob(published: Published):
    listed = assert_success(api(as_key(published.world.read_key), "GET", f"{BLOB}/revisions"))["revisions"]
    default = assert_success(api(as_key(published.world.read_key), "GET", f"{BLOB}/revisions/default"))["revision"]

    assert [revision["number"] for revision in listed] == [4, 3, 2, 1]
    assert default["id"] == str(published.committed.id)
