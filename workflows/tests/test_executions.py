"""Running workflows through the data channel, as a user does (tasks run inline here)."""

import pytest

from workflows.models import StepRun
from workflows.tests.support import Channel, approval_flow, component, connect, document, number, text

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def channel(client_for, org, write_key):
    client = client_for(key=write_key)
    client.post(f"/v1/orgs/{org.alias}/blobs", {"alias": "flows-blob", "type": "blobhub.compute.workflow"}, format="json")
    revision_id = client.get(f"/v1/blobs/{org.alias}/flows-blob/revisions").json()["revisions"][0]["id"]
    return Channel(client, revision_id)


def upload(channel, alias, doc):
    assert channel.command("create_definition", alias=alias, category="workflow").status_code == 200
    answer = channel.command("upload_definition", alias=alias, definition=doc)
    assert answer.status_code == 200, answer.json()


def run(channel, alias, inputs=None, session="main-session"):
    if channel.query("get_session", session_id=session).status_code != 200:
        channel.command("create_session", alias=session)
    answer = channel.command(
        "create_execution", target={"session": session}, workflow={"definition": alias}, input_data=inputs or []
    )
    assert answer.status_code == 200, answer.json()
    execution_id = answer.json()["execution"]["id"]
    return channel.query("get_execution", execution_id=execution_id).json()["execution"]


def test_the_approval_flow_approves_small_orders_and_routes_big_ones_to_failure(channel):
    upload(channel, "approve", approval_flow())
    assert channel.query("check_definition", alias="approve").json() == {"status": "valid", "events": []}
    small = run(channel, "approve", [{"alias": "order", "value": {"type": "json", "json": {"items": [{"price": 30}, {"price": 20}]}}}])
    assert small["status"] == "completed"
    assert small["output"] == {"approved": {"type": "integer", "integer": 50}}
    big = run(channel, "approve", [{"alias": "order", "value": {"type": "json", "json": {"items": [{"price": 300}]}}}])
    assert big["status"] == "completed"
    assert big["output"]["rejected"]["text"].startswith("rejected: The condition")


def test_events_tell_the_story_in_order(channel):
    upload(channel, "approve", approval_flow())
    execution = run(channel, "approve", [{"alias": "order", "value": {"type": "json", "json": {"items": []}}}])
    events = channel.query("list_execution_events", execution_id=execution["id"]).json()["execution_events"]
    assert [event["sequence"] for event in events] == list(range(1, len(events) + 1))
    types = [event["type"] for event in events]
    assert types[0] == "flow.entered" and types[-1] == "flow.exited"
    entered = [event["attributes"]["processor_id"] for event in events if event["type"] == "processor.entered"]
    assert entered == ["total", "check", "end"]
    assert "rejected" not in entered  # dead path eliminated
    assert StepRun.objects.get(component_id="rejected").status == "skipped"


def test_an_unhandled_failure_fails_the_execution(channel):
    upload(channel, "boom", document(
        [component("start", "flow.start"), component("fail", "flow.fail", config={"message": text("no way")}), component("end", "flow.end")],
        [connect("a", "start", "fail"), connect("b", "fail", "end")],
    ))
    execution = run(channel, "boom")
    assert execution["status"] == "failed"
    assert execution["error"]["message"] == "no way" and execution["error"]["processor_id"] == "fail"


def test_commit_refuses_an_invalid_definition_with_its_path(channel):
    upload(channel, "broken", document([component("start", "flow.start"), component("x", "no.such")], []))
    operation_id = channel.client.post(f"/v1/revisions/{channel.revision_id}/commit", {}, format="json").json()["operation_id"]
    operation = channel.client.get(f"/v1/operations/{operation_id}").json()["operation"]
    assert operation["status"] == "failed"
    paths = [item["path"] for item in operation["error"]["details"]]
    assert "definitions.broken.components[1].type" in paths


def test_check_definition_reports_problems_with_json_paths(channel):
    doc = approval_flow()
    doc["connections"].append(connect("bad", "total", "ghost"))
    doc["components"][2]["ports"][0]["value"] = {"type": "integer", "integer": 3}
    upload(channel, "approve", doc)
    answer = channel.query("check_definition", alias="approve").json()
    assert answer["status"] == "invalid"
    paths = {event["path"] for event in answer["events"]}
    assert "connections[6].target_id" in paths
    assert "components[2].ports[0].value" in paths


def test_a_stopped_execution_stops(channel, settings):
    upload(channel, "slow", document(
        [component("start", "flow.start"), component("wait", "flow.delay", config={"seconds": number(30)}), component("end", "flow.end")],
        [connect("a", "start", "wait"), connect("b", "wait", "end")],
    ))
    from unittest import mock

    channel.command("create_session", alias="main-session")
    with mock.patch("workflows.tasks.run_step.apply_async"):
        answer = channel.command("create_execution", target={"session": "main-session"}, workflow={"definition": "slow"})
    execution_id = answer.json()["execution"]["id"]
    stopped = channel.command("stop_execution", execution_id=execution_id).json()["execution"]
    assert stopped["status"] == "stopped"
    assert not StepRun.objects.filter(status="queued").exists()


def test_an_execution_in_a_closed_session_is_refused(channel):
    upload(channel, "approve", approval_flow())
    channel.command("create_session", alias="closed-one")
    channel.command("close_session", session_id="closed-one")
    answer = channel.command("create_execution", target={"session": "closed-one"}, workflow={"definition": "approve"})
    assert answer.status_code == 409 and answer.json()["error"] == "session_not_open"


def test_session_state_and_objects_flow_through_components(channel):
    upload(channel, "state", document(
        [
            component("start", "flow.start"),
            component("in", "flow.input", alias="name"),
            component("set", "session.state_set", config={"key": text("greeted")}),
            component("put", "session.object_put", config={"alias": text("greetings/last")}),
            component("end", "flow.end"),
        ],
        [
            connect("a", "in", "set", source_port="value", target_port="input"),
            connect("b", "set", "put", source_port="output", target_port="input"),
            connect("c", "put", "end", source_port="output", target_port="name"),
            connect("d", "start", "set"),
        ],
    ))
    execution = run(channel, "state", [{"alias": "name", "value": text("ada")}])
    assert execution["status"] == "completed"
    session = channel.query("get_session", session_id="main-session").json()["session"]
    assert session["state"] == {"greeted": "ada"}
    listed = channel.query("list_session_objects", session_id="main-session", prefix="greetings/").json()
    assert [item["alias"] for item in listed["objects"]] == ["greetings/last"]
    assert channel.query("download_session_object", session_id="main-session", alias="greetings/last").json()["value"] == "ada"
    session_events = channel.query("list_session_events", session_id="main-session").json()["session_events"]
    assert {"session_state_changed", "session_object_modified", "execution_status_changed"} <= {e["type"] for e in session_events}


def test_a_session_at_its_execution_limit_refuses_one_more_and_changes_nothing(channel, settings):
    from workflows.models import Execution

    settings.LIMITS = {"workflow.executions_per_session": 1}
    upload(channel, "approve", approval_flow())
    order = [{"alias": "order", "value": {"type": "json", "json": {"items": []}}}]
    run(channel, "approve", order)

    refused = channel.client.post(
        f"/v1/revisions/{channel.revision_id}/data/command",
        {"command": "create_execution", "target": {"session": "main-session"}, "workflow": {"definition": "approve"}, "input_data": order},
        format="json",
        HTTP_IDEMPOTENCY_KEY="one-more",
    )

    assert refused.status_code == 400
    assert refused.json()["error"] == "limit_exceeded"
    assert refused.json()["limit"] == {"id": "workflow.executions_per_session", "value": 1, "held": 1}
    assert Execution.objects.count() == 1
    assert not StepRun.objects.exclude(execution=Execution.objects.get()).exists()
    # The request's transaction was rolled back cleanly: the next ones work.
    assert channel.command("create_session", alias="second-session").status_code == 200
    assert run(channel, "approve", order, session="second-session")["status"] == "completed"


def _create(channel, input_data):
    if channel.query("get_session", session_id="main-session").status_code != 200:
        channel.command("create_session", alias="main-session")
    return channel.command(
        "create_execution", target={"session": "main-session"}, workflow={"definition": "approve"}, input_data=input_data
    )


@pytest.mark.parametrize(
    ("item", "path"),
    [
        ({"alias": ["order"], "value": {"type": "json", "json": {}}}, "input_data[0].alias"),
        ({"alias": "order", "value": {"type": ["json"], "json": {}}}, "input_data[0].value"),
        ({"alias": "order", "value": {"type": {"json": 1}, "json": {}}}, "input_data[0].value"),
    ],
    ids=["an alias that is a list", "a type that is a list", "a type that is an object"],
)
def test_an_input_with_a_list_or_object_where_a_name_belongs_is_a_400_with_its_path(channel, item, path):
    from workflows.models import Execution

    upload(channel, "approve", approval_flow())
    refused = _create(channel, [item])
    assert refused.status_code == 400, refused.content
    assert [detail["path"] for detail in refused.json()["details"]] == [path]
    assert not Execution.objects.exists()


def test_an_input_value_over_the_value_limit_is_a_413_and_stores_nothing(channel, settings):
    from workflows.models import Execution

    settings.WORKFLOW_MAX_VALUE_BYTES = 200
    upload(channel, "approve", approval_flow())
    big = {"type": "json", "json": {"items": [{"price": 1, "note": "x" * 300}]}}
    refused = _create(channel, [{"alias": "order", "value": big}])
    assert refused.status_code == 413, refused.content
    assert refused.json()["error"] == "payload_too_large"
    assert [detail["path"] for detail in refused.json()["details"]] == ["input_data[0].value"]
    assert not Execution.objects.exists() and not StepRun.objects.exists()
    small = {"type": "json", "json": {"items": [{"price": 1, "note": "x" * 30}]}}
    assert run(channel, "approve", [{"alias": "order", "value": small}])["status"] == "completed"
