"""Who may use a workflow blob's data channel: outsiders learn nothing and change nothing.

The outsiders (STYLE.md, Tenancy): another org's key and admin, a read key on writes, a
key scoped to another blob, a revoked key, an anonymous token, and no credentials at all.
"""

import json
from unittest import mock

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from blobs.models import Blob, Event, ManifestEntry
from orgs.tests.factories import MembershipFactory, OrganizationFactory, make_api_key
from workflows.models import Execution, Session, SessionObject, StepRun
from workflows.tests.support import (
    Channel,
    commit,
    component,
    connect,
    document,
    ensure_session,
    piped,
    start_execution,
    text,
    upload_definition,
    workflow_blob,
)

pytestmark = pytest.mark.django_db(transaction=True)


def greeting(word="hello"):
    return document(
        [
            component("start", "flow.start"),
            component("say", "logic.transform", config={"expression": text(f"'{word}'")}),
            component("end", "flow.end"),
        ],
        [connect("c0", "start", "say"), piped("c1", "say", "end", "output", "result")],
    )


def binary_command(channel, mode, data=None, **args):
    """A data-channel call with an octet-stream body (upload) or an octet-stream answer (download)."""
    url = f"/v1/revisions/{channel.revision_id}/data/{mode}"
    if data is not None:
        return channel.client.post(
            url, data=data, content_type="application/octet-stream", HTTP_X_REQUEST_BODY=json.dumps(args)
        )
    return channel.client.post(url, args, format="json", HTTP_ACCEPT="application/octet-stream")


class World:
    """A workflow blob with a definition, a session, objects, a file, a finished and a queued execution."""

    def __init__(self, client_for, org, write_key):
        self.org = org
        self.owner = workflow_blob(client_for(key=write_key), org)
        upload_definition(self.owner, "flow", greeting())
        self.session = ensure_session(self.owner)
        self.done = start_execution(self.owner, "flow")
        with mock.patch("workflows.tasks.run_step.apply_async"):
            answer = self.owner.command(
                "create_execution", target={"session": "main-session"}, workflow={"definition": "flow"}
            )
        self.queued = answer.json()["execution"]
        self.owner.command(
            "upload_session_object", session_id="main-session", alias="kept", value={"secret": "session value"}
        )
        assert (
            binary_command(
                self.owner,
                "command",
                b"file bytes",
                command="upload_session_file",
                session_id="main-session",
                alias="kept.bin",
            ).status_code
            == 200
        )

    def as_(self, client):
        return Channel(client, self.owner.revision_id)

    def snapshot(self):
        return {
            "sessions": sorted(Session.objects.values_list("id", "alias", "status", "state")),
            "objects": sorted(SessionObject.objects.values_list("alias", "object_id")),
            "executions": sorted(Execution.objects.values_list("id", "status")),
            "steps": StepRun.objects.count(),
            "content": sorted(ManifestEntry.objects.values_list("revision_id", "path", "object_id")),
            "events": Event.objects.count(),
        }

    def write_calls(self):
        """Every write command of the workflow engine, each with arguments that would work."""
        return {
            "create_definition": lambda ch: ch.command("create_definition", alias="intruder", category="workflow"),
            "upload_definition": lambda ch: ch.command("upload_definition", alias="flow", definition=greeting("pwned")),
            "delete_definition": lambda ch: ch.command("delete_definition", alias="flow"),
            "create_session": lambda ch: ch.command("create_session", alias="intruder-session"),
            "close_session": lambda ch: ch.command("close_session", session_id=self.session["id"]),
            "create_execution": lambda ch: ch.command(
                "create_execution", target={"session": self.session["id"]}, workflow={"definition": "flow"}
            ),
            "stop_execution": lambda ch: ch.command("stop_execution", execution_id=self.queued["id"]),
            "upload_session_object": lambda ch: ch.command(
                "upload_session_object", session_id=self.session["id"], alias="kept", value="overwritten"
            ),
            "delete_session_object": lambda ch: ch.command(
                "delete_session_object", session_id=self.session["id"], alias="kept"
            ),
            "upload_session_file": lambda ch: binary_command(
                ch, "command", b"evil", command="upload_session_file", session_id=self.session["id"], alias="kept.bin"
            ),
        }

    def query_calls(self):
        session_id, execution_id = self.session["id"], self.done["id"]
        return {
            "list_definitions": lambda ch: ch.query("list_definitions"),
            "download_definition": lambda ch: ch.query("download_definition", alias="flow"),
            "check_definition": lambda ch: ch.query("check_definition", alias="flow"),
            "get_session": lambda ch: ch.query("get_session", session_id=session_id),
            "list_sessions": lambda ch: ch.query("list_sessions"),
            "get_execution": lambda ch: ch.query("get_execution", execution_id=execution_id),
            "list_executions": lambda ch: ch.query("list_executions", session_id=session_id),
            "list_execution_events": lambda ch: ch.query("list_execution_events", execution_id=execution_id),
            "list_session_events": lambda ch: ch.query("list_session_events", session_id=session_id),
            "download_session_object": lambda ch: ch.query(
                "download_session_object", session_id=session_id, alias="kept"
            ),
            "list_session_objects": lambda ch: ch.query("list_session_objects", session_id=session_id),
            "download_session_file": lambda ch: binary_command(
                ch, "query", command="download_session_file", session_id=session_id, alias="kept.bin"
            ),
        }


@pytest.fixture
def world(client_for, org, write_key):
    return World(client_for, org, write_key)


def anonymous_client(client_for):
    answer = APIClient().get("/v1/auth/core/anonymous")
    assert answer.status_code == 200, answer.content
    return client_for(token=answer.json()["access_token"])


def side_blob_key(world):
    """A write key of the same org, scoped to another of its blobs."""
    workflow_blob(world.owner.client, world.org, alias="side-blob")
    return make_api_key(world.org, "write", blob=Blob.objects.get(alias="side-blob"))[1]


OUTSIDERS = {
    "another org's write key": (
        403,
        lambda world, client_for: client_for(key=make_api_key(OrganizationFactory(), "write")[1]),
    ),
    "another org's admin": (403, lambda world, client_for: client_for(user=MembershipFactory(role="admin").user)),
    "a write key scoped to another blob": (403, lambda world, client_for: client_for(key=side_blob_key(world))),
    "a revoked write key": (
        401,
        lambda world, client_for: client_for(key=make_api_key(world.org, "write", revoked_at=timezone.now())[1]),
    ),
    "an anonymous token": (403, lambda world, client_for: anonymous_client(client_for)),
    "no credentials": (401, lambda world, client_for: APIClient()),
}
REFUSAL = {401: "unauthenticated", 403: "access_denied"}


def assert_refused(answer, status, what):
    assert answer.status_code == status, f"{what}: {answer.status_code} {answer.content[:300]}"
    body = answer.json()
    assert body["status"] == "error" and body["error"] == REFUSAL[status], f"{what}: {body}"
    assert "session value" not in answer.content.decode() and "file bytes" not in answer.content.decode()


@pytest.mark.parametrize("outsider", list(OUTSIDERS))
def test_an_outsider_can_neither_write_nor_read_and_nothing_changes(world, client_for, outsider):
    status, make = OUTSIDERS[outsider]
    intruder = world.as_(make(world, client_for))
    before = world.snapshot()

    for name, call in {**world.write_calls(), **world.query_calls()}.items():
        assert_refused(call(intruder), status, name)

    assert world.snapshot() == before


def test_a_read_key_can_run_no_write_command_and_nothing_changes(world, client_for, read_key):
    reader = world.as_(client_for(key=read_key))
    before = world.snapshot()

    for name, call in world.write_calls().items():
        assert_refused(call(reader), 403, name)

    assert world.snapshot() == before


def test_a_read_key_may_run_every_query(world, client_for, read_key):
    reader = world.as_(client_for(key=read_key))
    answers = {name: call(reader) for name, call in world.query_calls().items()}

    assert {name: answer.status_code for name, answer in answers.items()} == {name: 200 for name in answers}
    assert answers["download_session_object"].json()["value"] == {"secret": "session value"}
    assert b"".join(answers["download_session_file"].streaming_content) == b"file bytes"
    assert answers["get_execution"].json()["execution"]["output"] == {"result": text("hello")}


def test_a_read_key_cannot_sneak_a_write_through_the_query_route(world, client_for, read_key):
    reader = world.as_(client_for(key=read_key))
    before = world.snapshot()
    answer = reader.query("create_session", alias="sneaky-session")
    assert answer.status_code == 400 and answer.json()["error"] == "mutating_command_in_query_mode"
    assert world.snapshot() == before


# --- Across revisions ------------------------------------------------------------------------------


def test_a_session_or_execution_of_another_revision_is_a_403_there(world, client_for, write_key):
    elsewhere = workflow_blob(world.owner.client, world.org, alias="other-flows")
    upload_definition(elsewhere, "flow", greeting("elsewhere"))
    before = world.snapshot()
    session_id, execution_id = world.session["id"], world.done["id"]

    attempts = {
        "create_execution": elsewhere.command(
            "create_execution", target={"session": session_id}, workflow={"definition": "flow"}
        ),
        "get_session": elsewhere.query("get_session", session_id=session_id),
        "close_session": elsewhere.command("close_session", session_id=session_id),
        "get_execution": elsewhere.query("get_execution", execution_id=execution_id),
        "stop_execution": elsewhere.command("stop_execution", execution_id=world.queued["id"]),
        "list_execution_events": elsewhere.query("list_execution_events", execution_id=execution_id),
        "list_executions": elsewhere.query("list_executions", session_id=session_id),
        "download_session_object": elsewhere.query("download_session_object", session_id=session_id, alias="kept"),
        "upload_session_object": elsewhere.command(
            "upload_session_object", session_id=session_id, alias="kept", value=0
        ),
    }

    for name, answer in attempts.items():
        assert_refused(answer, 403, name)
    assert world.snapshot() == before
    assert elsewhere.query("list_sessions").json()["sessions"] == []


def test_a_new_draft_does_not_see_the_sessions_of_the_revision_it_came_from(world, org):
    assert commit(world.owner)["status"] == "completed"
    draft_id = world.owner.client.post(
        f"/v1/blobs/{org.alias}/flows-blob/revisions", {"comment": "next"}, format="json"
    ).json()["revision_id"]
    draft = Channel(world.owner.client, draft_id)

    assert_refused(draft.query("get_session", session_id="main-session"), 403, "get_session by alias")
    assert_refused(draft.query("get_execution", execution_id=world.done["id"]), 403, "get_execution")
    assert draft.query("list_sessions").json()["sessions"] == []
    ensure_session(draft, "main-session")  # the alias is free in this revision
    assert Session.objects.filter(alias="main-session").count() == 2


# --- Public blobs -----------------------------------------------------------------------------------


def test_a_public_blob_lets_anyone_read_its_snapshot_but_not_run_or_write(client_for, org, admin_user):
    owner = workflow_blob(client_for(user=admin_user), org, alias="public-flows", visibility="public")
    upload_definition(owner, "flow", greeting())
    assert commit(owner)["status"] == "completed"
    assert owner.client.post(f"/v1/revisions/{owner.revision_id}/snapshot", {}, format="json").status_code in (200, 201)
    draft_id = owner.client.post(
        f"/v1/blobs/{org.alias}/public-flows/revisions", {"comment": "wip"}, format="json"
    ).json()["revision_id"]
    before = (Session.objects.count(), Execution.objects.count(), ManifestEntry.objects.count())

    for reader in (anonymous_client(client_for), client_for(key=make_api_key(OrganizationFactory(), "write")[1])):
        published = Channel(reader, owner.revision_id)
        assert published.query("download_definition", alias="flow").json()["definition"] == greeting()
        assert_refused(published.command("create_session", alias="drive-by-session"), 403, "create_session")
        assert_refused(
            published.command("create_execution", target={"session": "x"}, workflow={"definition": "flow"}),
            403,
            "create_execution",
        )
        # The owner's runtime (sessions, executions, their events and objects) stays private.
        for query in ("list_sessions", "get_session", "list_executions", "list_session_events", "list_session_objects"):
            assert_refused(published.query(query, session_id="x"), 403, query)
        assert_refused(Channel(reader, draft_id).query("list_definitions"), 403, "a draft of a public blob")
        assert_refused(
            Channel(reader, draft_id).command("upload_definition", alias="flow", definition=greeting("pwned")),
            403,
            "upload",
        )

    assert (Session.objects.count(), Execution.objects.count(), ManifestEntry.objects.count()) == before
