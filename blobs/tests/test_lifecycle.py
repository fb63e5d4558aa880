"""The revision lifecycle as a user drives it through the REST API."""

from unittest import mock

import pytest

from blobs import registry
from blobs.channel import BinaryAnswer
from blobs.models import Blob, Event, ManifestEntry, Operation, Revision
from blobs.registry import Engine, Handler, Problem
from blobs.services import content
from blobs.services.revisions import revision_commit_run
from orgs.models import Role

# Commits run their operation from transaction.on_commit, as in production.
pytestmark = pytest.mark.django_db(transaction=True)


def _put_file(ctx, args):
    content.file_put(ctx.revision, args["path"], args["text"].encode())
    return {}


def _read_file(ctx, args):
    data = content.file_read(ctx.revision, args["path"])
    return {"text": None if data is None else data.decode()}


def _refuse_bad(revision):
    return [Problem(path=f"files.{path}", message="bad content") for path in
            content.files(revision).filter(path__startswith="bad").values_list("path", flat=True)]


@pytest.fixture
def files_engine():
    """A small engine over the workflow type, so the tests can write content."""
    engine = Engine(
        type="blobhub.compute.workflow",
        validate=_refuse_bad,
        queries={"read_file": Handler(_read_file)},
        commands={"put_file": Handler(_put_file, writes_content=True, needs=Role.WRITE)},
        limits={"files.per_revision": 5},
    )
    saved = dict(registry._engines)
    registry._engines["blobhub.compute.workflow"] = engine
    yield engine
    registry._engines.clear()
    registry._engines.update(saved)


@pytest.fixture
def api(client_for, write_key):
    return client_for(key=write_key)


def create_blob(api, org, alias="my-workflow", **extra):
    answer = api.post(f"/v1/orgs/{org.alias}/blobs", {"alias": alias, "type": "blobhub.compute.workflow", **extra}, format="json")
    assert answer.status_code == 201, answer.json()
    return answer.json()["blob"]


def default_revision(api, org, blob_alias):
    revisions = api.get(f"/v1/blobs/{org.alias}/{blob_alias}/revisions").json()["revisions"]
    return revisions


def test_a_new_blob_starts_with_revision_1_as_a_ready_draft(api, org):
    blob = create_blob(api, org)
    assert blob["type"] == "blobhub.compute.workflow" and blob["visibility"] == "private"
    assert blob["default_revision_id"] is None
    [revision] = api.get(f"/v1/blobs/{org.alias}/my-workflow/revisions").json()["revisions"]
    assert (revision["number"], revision["phase"], revision["status"]) == (1, "draft", "ready")


def test_the_whole_lifecycle_commit_refused_write_new_draft_metadata_and_resolve(api, org, files_engine):
    create_blob(api, org)
    [first] = default_revision(api, org, "my-workflow")
    rid = first["id"]
    assert api.post(f"/v1/revisions/{rid}/data/command", {"command": "put_file", "path": "a.txt", "text": "one"}, format="json").status_code == 200

    started = api.post(f"/v1/revisions/{rid}/commit", {"comment": "first"}, format="json")
    assert started.status_code == 200
    operation = api.get(f"/v1/operations/{started.json()['operation_id']}").json()["operation"]
    assert operation["status"] == "completed" and operation["progress"] == 1.0
    committed = api.get(f"/v1/revisions/{rid}").json()["revision"]
    assert (committed["phase"], committed["status"], committed["comment"]) == ("commit", "ready", "first")
    assert len(committed["tree_hash"]) == 64
    assert api.get(f"/v1/blobs/{org.alias}/my-workflow").json()["blob"]["default_revision_id"] == rid

    refused = api.post(f"/v1/revisions/{rid}/data/command", {"command": "put_file", "path": "b.txt", "text": "x"}, format="json")
    assert refused.status_code == 409 and refused.json()["error"] == "revision_not_writable"

    created = api.post(f"/v1/blobs/{org.alias}/my-workflow/revisions", {"comment": "second"}, format="json")
    assert created.status_code == 201
    second = api.get(f"/v1/revisions/{created.json()['revision_id']}").json()["revision"]
    assert (second["number"], second["phase"], second["parent_id"]) == (2, "draft", rid)
    read = api.post(f"/v1/revisions/{second['id']}/data/query", {"command": "read_file", "path": "a.txt"}, format="json")
    assert read.json()["text"] == "one"

    assert api.post(f"/v1/blobs/{org.alias}/my-workflow/metadata", {"key": "owner", "value": {"team": "ml"}}, format="json").status_code == 201
    assert api.post(f"/v1/revisions/{second['id']}/metadata", {"key": "note", "value": "wip"}, format="json").status_code == 201
    assert api.post(f"/v1/revisions/{rid}/metadata", {"key": "note", "value": "released"}, format="json").status_code == 201
    from_blob = api.get(f"/v1/revisions/{second['id']}/metadata/owner/resolve").json()
    assert from_blob["source"] == "blob" and from_blob["metadata"]["value"] == {"team": "ml"}
    from_revision = api.get(f"/v1/revisions/{second['id']}/metadata/note/resolve").json()
    assert from_revision["source"] == "revision" and from_revision["metadata"]["value"] == "wip"


def test_a_new_draft_copies_entries_not_bytes(api, org, files_engine):
    create_blob(api, org)
    [first] = default_revision(api, org, "my-workflow")
    api.post(f"/v1/revisions/{first['id']}/data/command", {"command": "put_file", "path": "a.txt", "text": "same"}, format="json")
    api.post(f"/v1/revisions/{first['id']}/commit", {}, format="json")
    api.post(f"/v1/blobs/{org.alias}/my-workflow/revisions", {"comment": "copy"}, format="json")
    entries = ManifestEntry.objects.filter(path="a.txt")
    assert entries.count() == 2 and len({entry.object_id for entry in entries}) == 1


def test_a_draft_is_refused_while_the_blob_has_no_committed_default(api, org):
    create_blob(api, org)
    answer = api.post(f"/v1/blobs/{org.alias}/my-workflow/revisions", {"comment": "too early"}, format="json")
    assert answer.status_code == 409 and answer.json()["error"] == "no_default_revision"
    assert Revision.objects.count() == 1


def test_a_failed_commit_leaves_the_revision_failed_with_its_operation_and_reason(api, org, files_engine):
    create_blob(api, org)
    [first] = default_revision(api, org, "my-workflow")
    api.post(f"/v1/revisions/{first['id']}/data/command", {"command": "put_file", "path": "bad.txt", "text": "no"}, format="json")
    operation_id = api.post(f"/v1/revisions/{first['id']}/commit", {}, format="json").json()["operation_id"]
    operation = api.get(f"/v1/operations/{operation_id}").json()["operation"]
    assert operation["status"] == "failed"
    assert operation["error"]["details"][0]["path"] == "files.bad.txt"
    revision = api.get(f"/v1/revisions/{first['id']}").json()["revision"]
    assert (revision["phase"], revision["status"], revision["failed_operation"]) == ("draft", "failed", operation_id)
    assert "bad content" in revision["failure"]
    assert api.get(f"/v1/blobs/{org.alias}/my-workflow").json()["blob"]["default_revision_id"] is None


def test_a_commit_that_crashes_after_validation_fails_and_its_draft_can_be_mended(api, org, files_engine):
    def lost_connection(blob, revision):  # any fault of the final stage: the database, an engine's hook
        raise RuntimeError("server closed the connection unexpectedly")

    create_blob(api, org)
    [first] = default_revision(api, org, "my-workflow")
    files_engine.on_default_changed = lost_connection
    with mock.patch("blobs.tasks.run_commit.delay") as queued:
        operation_id = api.post(f"/v1/revisions/{first['id']}/commit", {}, format="json").json()["operation_id"]
    with pytest.raises(RuntimeError):
        revision_commit_run(*queued.call_args.args)  # the worker's task fails, and Celery logs it

    operation = api.get(f"/v1/operations/{operation_id}").json()["operation"]
    assert operation["status"] == "failed" and operation["error"]["code"] == "internal_error"
    assert "connection" not in operation["error"]["message"]
    revision = api.get(f"/v1/revisions/{first['id']}").json()["revision"]
    assert (revision["phase"], revision["status"], revision["failed_operation"]) == ("draft", "failed", operation_id)
    assert api.get(f"/v1/blobs/{org.alias}/my-workflow").json()["blob"]["default_revision_id"] is None

    files_engine.on_default_changed = None
    write = {"command": "put_file", "path": "a.txt", "text": "one"}
    assert api.post(f"/v1/revisions/{first['id']}/data/command", write, format="json").status_code == 200
    retried = api.post(f"/v1/revisions/{first['id']}/commit", {}, format="json").json()["operation_id"]
    assert api.get(f"/v1/operations/{retried}").json()["operation"]["status"] == "completed"


def test_the_only_draft_of_a_blob_without_a_default_is_not_deletable(api, org, files_engine):
    create_blob(api, org)
    [first] = default_revision(api, org, "my-workflow")
    refused = api.delete(f"/v1/revisions/{first['id']}")
    assert refused.status_code == 409 and refused.json()["error"] == "revision_not_deletable"
    assert "only revision" in refused.json()["message"]
    assert api.get(f"/v1/revisions/{first['id']}").json()["revision"]["status"] == "ready"


def test_only_drafts_can_be_deleted_and_the_default_can_roll_back(api, org, files_engine):
    create_blob(api, org)
    [first] = default_revision(api, org, "my-workflow")
    api.post(f"/v1/revisions/{first['id']}/commit", {}, format="json")
    second = api.post(f"/v1/blobs/{org.alias}/my-workflow/revisions", {"comment": "two"}, format="json").json()["revision_id"]
    api.post(f"/v1/revisions/{second}/commit", {}, format="json")
    assert api.get(f"/v1/blobs/{org.alias}/my-workflow").json()["blob"]["default_revision_id"] == second

    refused = api.delete(f"/v1/revisions/{first['id']}")
    assert refused.status_code == 409
    rolled = api.patch(f"/v1/blobs/{org.alias}/my-workflow", {"default_revision_id": first["id"]}, format="json")
    assert rolled.status_code == 200 and rolled.json()["blob"]["default_revision_id"] == first["id"]

    third = api.post(f"/v1/blobs/{org.alias}/my-workflow/revisions", {"comment": "three"}, format="json").json()["revision_id"]
    assert api.get(f"/v1/revisions/{third}").json()["revision"]["parent_id"] == first["id"]
    assert api.patch(f"/v1/blobs/{org.alias}/my-workflow", {"default_revision_id": third}, format="json").status_code == 409
    assert api.delete(f"/v1/revisions/{third}").status_code == 200
    assert not Revision.objects.filter(id=third).exists()


def test_snapshot_only_from_commit_and_it_is_final(api, org, files_engine):
    create_blob(api, org)
    [first] = default_revision(api, org, "my-workflow")
    assert api.post(f"/v1/revisions/{first['id']}/snapshot", {}, format="json").status_code == 409
    api.post(f"/v1/revisions/{first['id']}/commit", {}, format="json")
    snap = api.post(f"/v1/revisions/{first['id']}/snapshot", {"comment": "published"}, format="json")
    assert snap.status_code == 200 and snap.json()["revision"]["phase"] == "snapshot"
    assert api.delete(f"/v1/revisions/{first['id']}").status_code == 409


def test_diff_lists_added_removed_and_changed_paths(api, org, files_engine):
    create_blob(api, org)
    [first] = default_revision(api, org, "my-workflow")
    for path, text in [("keep.txt", "k"), ("change.txt", "1"), ("drop.txt", "d")]:
        api.post(f"/v1/revisions/{first['id']}/data/command", {"command": "put_file", "path": path, "text": text}, format="json")
    api.post(f"/v1/revisions/{first['id']}/commit", {}, format="json")
    second = api.post(f"/v1/blobs/{org.alias}/my-workflow/revisions", {"comment": "edit"}, format="json").json()["revision_id"]
    api.post(f"/v1/revisions/{second}/data/command", {"command": "put_file", "path": "change.txt", "text": "2"}, format="json")
    api.post(f"/v1/revisions/{second}/data/command", {"command": "put_file", "path": "new.txt", "text": "n"}, format="json")
    content.file_delete(Revision.objects.get(id=second), "drop.txt")

    answer = api.post(f"/v1/revisions/{second}/data/query", {"command": "diff", "against": first["id"]}, format="json")
    assert answer.json()["diff"] == {"added": ["new.txt"], "removed": ["drop.txt"], "changed": ["change.txt"]}


def test_data_channel_dispatch_errors(api, org, files_engine):
    create_blob(api, org)
    [first] = default_revision(api, org, "my-workflow")
    url = f"/v1/revisions/{first['id']}/data"
    unknown = api.post(f"{url}/query", {"command": "nope"}, format="json")
    assert unknown.status_code == 400 and unknown.json()["error"] == "unknown_command"
    mutating = api.post(f"{url}/query", {"command": "put_file", "path": "a", "text": "b"}, format="json")
    assert mutating.status_code == 400 and mutating.json()["error"] == "mutating_command_in_query_mode"
    Revision.objects.filter(id=first["id"]).update(status="committing")
    busy = api.post(f"{url}/command", {"command": "put_file", "path": "a", "text": "b"}, format="json")
    assert busy.status_code == 409 and busy.json()["error"] == "revision_not_ready"


def test_a_binary_answer_releases_its_idempotency_key(api, org, files_engine):
    # Bytes are not stored for a replay: the key is released, so a retry runs again.
    files_engine.queries["bytes"] = Handler(lambda ctx, args: BinaryAnswer(chunks=[b"abc"], envelope={}, size=3))
    create_blob(api, org)
    [first] = default_revision(api, org, "my-workflow")
    for _ in range(2):
        answer = api.post(
            f"/v1/revisions/{first['id']}/data/query", {"command": "bytes"}, format="json",
            HTTP_ACCEPT="application/octet-stream", HTTP_IDEMPOTENCY_KEY="read-the-bytes",
        )
        assert answer.status_code == 200 and b"".join(answer.streaming_content) == b"abc"


@pytest.mark.parametrize(
    "arguments", ['{"command": "put_file", "path": "a\\u0000b"}', '{"command": "put_file", "path": "\\ud800"}', "[" * 100_000]
)
def test_binary_arguments_that_cannot_be_stored_are_a_400(api, org, files_engine, arguments):
    create_blob(api, org)
    [first] = default_revision(api, org, "my-workflow")
    answer = api.post(
        f"/v1/revisions/{first['id']}/data/command", b"bytes", content_type="application/octet-stream",
        HTTP_X_REQUEST_BODY=arguments,
    )
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_request_body"


def test_events_are_stored_with_a_sequence_per_stream(api, org, files_engine):
    blob = create_blob(api, org)
    [first] = default_revision(api, org, "my-workflow")
    api.post(f"/v1/revisions/{first['id']}/commit", {}, format="json")
    blob_events = list(Event.objects.filter(stream=f"blob:{blob['id']}").order_by("sequence"))
    assert [event.sequence for event in blob_events] == list(range(1, len(blob_events) + 1))
    assert "blob.default_changed" in [event.type for event in blob_events]
    assert Event.objects.filter(stream=f"revision:{first['id']}", type="operation.updated").exists()


def test_limits_are_listed_and_enforced_with_the_limit_in_the_error(api, org, files_engine, settings):
    create_blob(api, org)
    groups = api.get(f"/v1/blobs/{org.alias}/my-workflow/limits").json()["groups"]
    ids = {limit["id"] for group in groups for limit in group["limits"]}
    assert {"core.files_per_revision", "files.per_revision"} <= ids
    settings.LIMITS = {"core.files_per_revision": 2}
    [first] = default_revision(api, org, "my-workflow")
    for path in ("a", "b"):
        api.post(f"/v1/revisions/{first['id']}/data/command", {"command": "put_file", "path": path, "text": "x"}, format="json")
    refused = api.post(f"/v1/revisions/{first['id']}/data/command", {"command": "put_file", "path": "c", "text": "x"}, format="json")
    assert refused.status_code == 400
    assert refused.json()["limit"] == {"id": "core.files_per_revision", "value": 2, "held": 2}
    assert ManifestEntry.objects.count() == 2


def test_cancelling_a_pending_commit_returns_the_draft_to_ready(api, org, settings):
    from blobhub.celery import app

    create_blob(api, org)
    [first] = default_revision(api, org, "my-workflow")
    app.conf.task_always_eager = False  # keep the operation pending: no worker runs here
    try:
        with mock.patch("blobs.tasks.run_commit.delay"):
            operation_id = api.post(f"/v1/revisions/{first['id']}/commit", {}, format="json").json()["operation_id"]
    finally:
        app.conf.task_always_eager = True
    cancelled = api.post(f"/v1/operations/{operation_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["operation"]["status"] == "cancelled"
    assert Revision.objects.get(id=first["id"]).status == "ready"
    assert Operation.objects.get(id=operation_id).status == "cancelled"
    assert api.post(f"/v1/operations/{operation_id}/cancel").status_code == 409


def test_deleting_a_blob_with_committed_revisions_needs_admin(client_for, org, write_key, admin_user, files_engine):
    writer = client_for(key=write_key)
    create_blob(writer, org)
    [first] = default_revision(writer, org, "my-workflow")
    writer.post(f"/v1/revisions/{first['id']}/commit", {}, format="json")
    assert writer.delete(f"/v1/blobs/{org.alias}/my-workflow").status_code == 403
    admin = client_for(user=admin_user)
    assert admin.delete(f"/v1/blobs/{org.alias}/my-workflow").status_code == 200
    assert not Blob.objects.exists() and not ManifestEntry.objects.exists()


def test_a_write_key_cannot_create_a_public_blob(api, org):
    answer = api.post(f"/v1/orgs/{org.alias}/blobs", {"alias": "public-one", "type": "blobhub.compute.workflow", "visibility": "public"}, format="json")
    assert answer.status_code == 403 and not Blob.objects.exists()


def test_deeply_nested_json_is_a_400_not_a_crash(api, org):
    body = '{"alias": "deep-blob", "type": "blobhub.compute.workflow", "description": ' + "[" * 5000 + "]" * 5000 + "}"
    answer = api.post(f"/v1/orgs/{org.alias}/blobs", data=body, content_type="application/json")
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_request_body"
