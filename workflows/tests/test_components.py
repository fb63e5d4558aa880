"""Each built-in component (but http.request, covered in test_http_component), run as a user runs it.

Tasks run inline in the fast suite, so `create_execution` answers once the execution is over.
"""

import base64
import hashlib
import itertools
import json
import threading
import time
from datetime import timedelta
from unittest import mock

import pytest
from django.db import connections
from django.utils import timezone

from blobs import store
from blobs.models import StoredObject
from orgs.tests.factories import OrganizationFactory
from workflows import engine
from workflows.context import StepContext
from workflows.models import Execution, StepRun
from workflows.tests.support import (
    blob_value,
    boolean,
    choice,
    commit,
    component,
    connect,
    document,
    ensure_session,
    execution_events,
    integer,
    json_value,
    number,
    piped,
    start_execution,
    text,
    upload_definition,
    workflow_blob,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def channel(client_for, org, write_key):
    return workflow_blob(client_for(key=write_key), org)


def chain(*steps, alias="data", end_route="result"):
    """start ─▶ steps… ─▶ end, the `data` input feeding the first step and each output the next input."""
    components = [
        component("start", "flow.start"),
        component("in", "flow.input", alias=alias),
        *steps,
        component("end", "flow.end"),
    ]
    ids = [step["id"] for step in steps]
    connections = [connect("go", "start", ids[0]), piped("feed", "in", ids[0], "value", "input")]
    for i, (source, target) in enumerate(itertools.pairwise(ids)):
        connections.append(piped(f"c{i}", source, target))
    connections.append(piped("last", ids[-1], "end", "output", end_route))
    return document(components, connections)


def run(channel, doc, inputs=None, alias="flow", session="main-session"):
    upload_definition(channel, alias, doc)
    return start_execution(channel, alias, inputs, session=session)


def data(value):
    return [{"alias": "data", "value": value}]


# --- flow.input, flow.end --------------------------------------------------------------------------


def test_flow_input_hands_its_value_on_with_its_type(channel):
    execution = run(
        channel, chain(component("same", "logic.transform", config={"expression": text("@")})), data(integer(7))
    )
    assert execution["status"] == "completed"
    assert execution["output"] == {"result": integer(7)}


def test_flow_input_falls_back_to_its_configured_value(channel):
    doc = document(
        [
            component("start", "flow.start"),
            component("in", "flow.input", alias="greeting", config={"value": text("hello")}),
            component("end", "flow.end"),
        ],
        [piped("a", "in", "end", "value", "greeting"), connect("b", "start", "end")],
    )
    assert run(channel, doc)["output"] == {"greeting": text("hello")}
    assert run(channel, doc, [{"alias": "greeting", "value": text("bonjour")}])["output"] == {
        "greeting": text("bonjour")
    }


def test_a_required_flow_input_left_out_refuses_the_execution(channel):
    doc = document(
        [
            component("start", "flow.start"),
            component("in", "flow.input", alias="order", config={"required": boolean(True)}),
            component("end", "flow.end"),
        ],
        [piped("a", "in", "end", "value", "order"), connect("b", "start", "end")],
    )
    upload_definition(channel, "flow", doc)
    ensure_session(channel)

    answer = channel.command("create_execution", target={"session": "main-session"}, workflow={"definition": "flow"})

    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_request_body"
    assert answer.json()["details"] == [{"path": "input_data", "message": "Missing order."}]
    assert not Execution.objects.exists()
    given = start_execution(channel, "flow", [{"alias": "order", "value": json_value({"id": 1})}])
    assert given["output"] == {"order": json_value({"id": 1})}


def test_an_input_the_definition_does_not_declare_is_refused(channel):
    upload_definition(channel, "flow", chain(component("same", "logic.transform", config={"expression": text("@")})))
    ensure_session(channel)
    answer = channel.command(
        "create_execution",
        target={"session": "main-session"},
        workflow={"definition": "flow"},
        input_data=[{"alias": "nope", "value": text("x")}],
    )
    assert answer.status_code == 400 and answer.json()["details"][0]["path"] == "input_data[0].alias"
    assert not Execution.objects.exists()


def test_flow_end_outputs_each_of_its_input_routes(channel):
    doc = document(
        [
            component("start", "flow.start"),
            component("in", "flow.input", alias="data"),
            component("name", "logic.transform", config={"expression": text("name")}),
            component("size", "logic.transform", config={"expression": text("length(items)")}),
            component("end", "flow.end"),
        ],
        [
            connect("a", "start", "name"),
            connect("b", "start", "size"),
            piped("c", "in", "name", "value", "input"),
            piped("d", "in", "size", "value", "input"),
            piped("e", "name", "end", "output", "who"),
            piped("f", "size", "end", "output", "how_many"),
        ],
    )
    execution = run(channel, doc, data(json_value({"name": "ada", "items": [1, 2, 3]})))
    assert execution["output"] == {"who": text("ada"), "how_many": integer(3)}


# --- logic.transform, logic.condition ----------------------------------------------------------------


def test_transform_searches_its_input_with_jmespath(channel):
    step = component("pick", "logic.transform", config={"expression": text("items[?price > `10`].name")})
    execution = run(
        channel, chain(step), data(json_value({"items": [{"name": "a", "price": 5}, {"name": "b", "price": 20}]}))
    )
    assert execution["output"] == {"result": json_value(["b"])}


def test_transform_with_a_broken_expression_fails_with_expression_error(channel):
    execution = run(
        channel,
        chain(component("pick", "logic.transform", config={"expression": text("items[?")})),
        data(json_value({})),
    )
    assert execution["status"] == "failed"
    assert execution["error"]["code"] == "expression_error" and execution["error"]["processor_id"] == "pick"


def condition_flow():
    doc = chain(
        component("check", "logic.condition", config={"expression": text("amount < `100`")}), end_route="approved"
    )
    doc["connections"].append(piped("no", "check", "end", "error", "rejected", route="failure"))
    return doc


def test_a_true_condition_takes_the_success_route_with_its_input(channel):
    execution = run(channel, condition_flow(), data(json_value({"amount": 30})))
    assert execution["status"] == "completed"
    assert execution["output"] == {"approved": json_value({"amount": 30})}


def test_a_false_condition_takes_the_failure_route_with_a_code_and_message(channel):
    execution = run(channel, condition_flow(), data(json_value({"amount": 300})))
    assert execution["status"] == "completed"
    assert list(execution["output"]) == ["rejected"]
    error = execution["output"]["rejected"]
    assert error["type"] == "json" and set(error["json"]) == {"code", "message"}
    assert error["json"]["code"] == "condition_false"
    assert "amount < `100`" in error["json"]["message"]


# --- logic.template --------------------------------------------------------------------------------


def test_template_fills_placeholders_from_its_input(channel):
    template = (
        "Dear {{ name }}, {{ order.lines[0].item }} x{{ order.count }}: "
        "{{ order.lines }} {{ flags }}|{{ missing }}|{{missing.deeper}}."
    )
    payload = {"name": "Ada", "order": {"count": 2, "lines": [{"item": "tea"}]}, "flags": {"vip": True}}
    execution = run(
        channel,
        chain(component("render", "logic.template", config={"template": text(template)})),
        data(json_value(payload)),
    )
    assert execution["output"] == {"result": text('Dear Ada, tea x2: [{"item":"tea"}] {"vip":true}||.')}


def test_template_runs_no_code_a_python_expression_is_only_a_jmespath_error(channel, tmp_path):
    marker = tmp_path / "pwned"
    template = "{{ __import__('os').system('touch " + str(marker) + "') }}"
    execution = run(
        channel, chain(component("render", "logic.template", config={"template": text(template)})), data(json_value({}))
    )
    assert execution["status"] == "failed"
    assert execution["error"]["code"] == "expression_error"
    assert not marker.exists()


def test_template_leaves_other_template_syntax_as_plain_text(channel):
    template = "{% for x in y %}{{ name }}{% endfor %} ${name} {name}"
    execution = run(
        channel,
        chain(component("render", "logic.template", config={"template": text(template)})),
        data(json_value({"name": "z"})),
    )
    assert execution["output"] == {"result": text("{% for x in y %}z{% endfor %} ${name} {name}")}


# --- flow.delay, flow.fail --------------------------------------------------------------------------


def test_delay_waits_and_hands_its_input_on(channel):
    execution = run(
        channel, chain(component("wait", "flow.delay", config={"seconds": number(0.3)})), data(text("later"))
    )
    assert execution["output"] == {"result": text("later")}
    step = StepRun.objects.get(component_id="wait")
    assert (step.finished_at - step.started_at).total_seconds() >= 0.3


def test_a_running_delay_ends_soon_after_the_execution_is_stopped(channel):
    upload_definition(channel, "slow", chain(component("wait", "flow.delay", config={"seconds": number(60)})))
    ensure_session(channel)
    with mock.patch("workflows.tasks.run_step.apply_async"):
        created = channel.command(
            "create_execution", target={"session": "main-session"}, workflow={"definition": "slow"}
        ).json()
    execution_id = created["execution"]["id"]
    step = StepRun.objects.get(component_id="wait")
    # The in-memory test database allows one writer at a time: the delay is held at its
    # start until the stop is recorded, then sleeps and must notice the stop by itself.
    sleeping, stop_recorded = threading.Event(), threading.Event()
    real_sleep = StepContext.sleep

    def sleep_after_the_stop(ctx, seconds):
        sleeping.set()
        stop_recorded.wait(10)
        return real_sleep(ctx, seconds)

    def worker():
        try:
            engine.run_step(step.id)
        finally:
            connections.close_all()

    with mock.patch.object(StepContext, "sleep", sleep_after_the_stop):
        thread = threading.Thread(target=worker)
        thread.start()
        assert sleeping.wait(10)
        stopping = channel.command("stop_execution", execution_id=execution_id).json()["execution"]
        began = time.monotonic()
        stop_recorded.set()
        thread.join(timeout=10)

    assert stopping["status"] == "stopping"
    assert not thread.is_alive() and time.monotonic() - began < 5
    execution = channel.query("get_execution", execution_id=execution_id).json()["execution"]
    assert execution["status"] == "stopped"
    step.refresh_from_db()
    assert step.status == "failed" and step.error["code"] == "stopped"
    assert StepRun.objects.get(component_id="end").status in ("skipped", "cancelled")  # never ran


def failing(message, alias="data"):
    """start ─▶ flow.fail(message) ─▶ end, the input feeding the fail."""
    return document(
        [
            component("start", "flow.start"),
            component("in", "flow.input", alias=alias),
            component("stop", "flow.fail", config={"message": text(message)}),
            component("end", "flow.end"),
        ],
        [connect("a", "start", "stop"), piped("b", "in", "stop", "value", "input"), connect("c", "stop", "end")],
    )


def test_fail_fails_the_execution_with_its_message(channel):
    execution = run(channel, failing("out of stock"), data(text("x")))
    assert execution["status"] == "failed"
    assert execution["error"] == {"code": "failed", "message": "out of stock", "processor_id": "stop"}


def test_fail_without_a_message_says_the_workflow_failed(channel):
    doc = document(
        [component("start", "flow.start"), component("stop", "flow.fail"), component("end", "flow.end")],
        [connect("a", "start", "stop"), piped("b", "stop", "end", "error", "why", route="failure")],
    )
    execution = run(channel, doc)
    assert execution["output"] == {"why": json_value({"code": "failed", "message": "The workflow failed."})}


# --- data.blob_put, data.blob_get --------------------------------------------------------------------


def test_a_data_blob_round_trips_and_is_named_by_its_canonical_json(channel, org):
    value = {"b": [1, 2.5, "é"], "a": {"nested": True}}
    doc = document(
        [
            component("start", "flow.start"),
            component("in", "flow.input", alias="data"),
            component("put", "data.blob_put"),
            component("get", "data.blob_get"),
            component("end", "flow.end"),
        ],
        [
            connect("a", "start", "put"),
            piped("b", "in", "put", "value", "input"),
            piped("c", "put", "get"),
            piped("d", "put", "end", "output", "stored"),
            piped("e", "get", "end", "output", "read"),
        ],
    )
    execution = run(channel, doc, data(json_value(value)))
    sha256 = hashlib.sha256(store.canonical_json(value)).hexdigest()
    assert execution["output"] == {"stored": blob_value(sha256), "read": json_value(value)}
    assert store.object_for_org(org, sha256) is not None


def test_a_binary_blob_round_trips_from_base64(channel, org):
    raw = b"\x00\xff\x80binary\n"
    doc = document(
        [
            component("start", "flow.start"),
            component("in", "flow.input", alias="data"),
            component("put", "data.blob_put", config={"blob_type": choice("binary")}),
            component("get", "data.blob_get"),
            component("end", "flow.end"),
        ],
        [
            connect("a", "start", "put"),
            piped("b", "in", "put", "value", "input"),
            piped("c", "put", "get"),
            piped("d", "put", "end", "output", "stored"),
            piped("e", "get", "end", "output", "read"),
        ],
    )
    execution = run(channel, doc, data(text(base64.b64encode(raw).decode())))
    sha256 = hashlib.sha256(raw).hexdigest()
    assert execution["output"] == {"stored": blob_value(sha256), "read": text(base64.b64encode(raw).decode())}
    assert store.read_bytes(store.object_for_org(org, sha256)) == raw


def test_a_blob_a_step_put_outlives_the_retention_period_while_its_execution_exists(channel, settings):
    value = {"kept": "while the execution exists"}
    execution = run(channel, chain(component("put", "data.blob_put")), data(json_value(value)))
    sha256 = execution["output"]["result"]["blob_id"]
    after_retention = timezone.now() + timedelta(hours=settings.BLOB_RETENTION_HOURS + 1)

    store.collect_garbage(now=after_retention)
    assert json.loads(store.read_bytes(StoredObject.objects.get(sha256=sha256))) == value

    Execution.objects.filter(id=execution["id"]).delete()
    store.collect_garbage(now=after_retention)
    assert not StoredObject.objects.filter(sha256=sha256).exists()


def test_a_blob_a_step_put_stays_readable_by_its_org_while_its_execution_exists(
    channel, settings, client_for, write_key
):
    value = {"kept": "while the execution exists"}
    execution = run(channel, chain(component("put", "data.blob_put")), data(json_value(value)))
    sha256 = execution["output"]["result"]["blob_id"]
    store.collect_garbage(now=timezone.now() + timedelta(hours=settings.BLOB_RETENTION_HOURS + 1))

    read = run(channel, chain(component("get", "data.blob_get")), data(blob_value(sha256)), alias="reader")
    assert read["status"] == "completed" and read["output"] == {"result": json_value(value)}
    assert client_for(key=write_key).get(f"/api/v1/blobs/{sha256}").status_code == 200
    assert store.object_for_org(OrganizationFactory(), sha256) is None  # the hold is the execution's org's only


def test_a_binary_blob_put_refuses_input_that_is_not_base64(channel):
    execution = run(
        channel,
        chain(component("put", "data.blob_put", config={"blob_type": choice("binary")})),
        data(text("not base64!")),
    )
    assert execution["status"] == "failed" and execution["error"]["code"] == "invalid_input"


def test_blob_get_of_a_blob_the_org_does_not_hold_fails(channel, org):
    someone_elses = store.put_bytes(b'{"secret": "theirs"}', org=OrganizationFactory())
    execution = run(channel, chain(component("get", "data.blob_get")), data(blob_value(someone_elses.sha256)))
    assert execution["status"] == "failed"
    assert execution["error"]["code"] == "blob_not_found"
    assert "theirs" not in json.dumps(execution_events(channel, execution["id"]))


# --- session.state_*, session.object_* -----------------------------------------------------------------


def test_state_set_then_state_get_share_the_sessions_state(channel):
    setter = chain(component("set", "session.state_set", config={"key": text("counter")}))
    assert run(channel, setter, data(integer(41)), alias="setter")["output"] == {"result": integer(41)}
    getter = document(
        [
            component("start", "flow.start"),
            component("get", "session.state_get", config={"key": text("counter")}),
            component("end", "flow.end"),
        ],
        [connect("a", "start", "get"), piped("b", "get", "end", "output", "counter")],
    )

    assert run(channel, getter, alias="getter")["output"] == {"counter": integer(41)}
    assert channel.query("get_session", session_id="main-session").json()["session"]["state"] == {"counter": 41}
    other = start_execution(channel, "getter", session="other-session")
    assert other["output"] == {"counter": json_value(None)}  # another session's state is its own


def test_object_put_stores_a_session_object_and_object_get_reads_one(channel):
    putter = chain(component("put", "session.object_put", config={"alias": text("notes/today.json")}))
    assert run(channel, putter, data(json_value({"todo": ["tea"]})), alias="putter")["status"] == "completed"
    download = channel.query("download_session_object", session_id="main-session", alias="notes/today.json").json()
    assert download["value"] == {"todo": ["tea"]}

    channel.command("upload_session_object", session_id="main-session", alias="settings", value={"lang": "fr"})
    getter = document(
        [
            component("start", "flow.start"),
            component("get", "session.object_get", config={"alias": text("settings")}),
            component("end", "flow.end"),
        ],
        [connect("a", "start", "get"), piped("b", "get", "end", "output", "settings")],
    )
    assert run(channel, getter, alias="getter")["output"] == {"settings": json_value({"lang": "fr"})}


def test_object_get_of_a_missing_object_fails(channel):
    getter = document(
        [
            component("start", "flow.start"),
            component("get", "session.object_get", config={"alias": text("nothing")}),
            component("end", "flow.end"),
        ],
        [connect("a", "start", "get"), piped("b", "get", "end", "output", "value")],
    )
    execution = run(channel, getter)
    assert execution["status"] == "failed" and execution["error"]["code"] == "object_not_found"


# --- workflow.call ------------------------------------------------------------------------------------


def doubler():
    return chain(
        component("double", "logic.transform", config={"expression": text("sum([n, n])")}),
        alias="payload",
        end_route="doubled",
    )


def caller(reference, alias="data"):
    doc = chain(component("call", "workflow.call", config={"workflow": json_value(reference)}), alias=alias)
    doc["connections"].append(piped("oops", "call", "end", "error", "failed", route="failure"))
    return doc


def test_workflow_call_runs_a_child_execution_and_returns_its_output(channel):
    upload_definition(channel, "double", doubler())
    execution = run(channel, caller({"definition": "double"}), data(json_value({"payload": {"n": 21}})))
    assert execution["status"] == "completed"
    assert execution["output"] == {"result": json_value({"doubled": 42})}
    child = Execution.objects.exclude(id=execution["id"]).get()
    assert child.status == "completed" and child.depth == 1
    assert str(child.parent_step.execution_id) == execution["id"]
    listed = channel.query("list_executions", session_id="main-session").json()["executions"]
    assert {item["id"] for item in listed} == {execution["id"], str(child.id)}


def test_a_failing_child_routes_the_calling_step_to_failure(channel):
    upload_definition(channel, "broken", failing("child says no", alias="payload"))
    execution = run(channel, caller({"definition": "broken"}), data(json_value({"payload": 1})))
    assert execution["status"] == "completed"
    error = execution["output"]["failed"]["json"]
    assert error["code"] == "call_failed"
    assert error["child"]["message"] == "child says no"
    assert Execution.objects.exclude(id=execution["id"]).get().status == "failed"


def test_workflow_call_beyond_the_depth_limit_fails_with_call_depth_exceeded(channel, settings):
    settings.WORKFLOW_MAX_CALL_DEPTH = 0
    upload_definition(channel, "double", doubler())
    execution = run(channel, caller({"definition": "double"}), data(json_value({"payload": {"n": 1}})))
    assert execution["output"]["failed"]["json"]["code"] == "call_depth_exceeded"
    assert Execution.objects.count() == 1


def test_a_workflow_that_calls_itself_stops_at_the_depth_limit(channel, settings):
    settings.WORKFLOW_MAX_CALL_DEPTH = 2
    execution = run(channel, caller({"definition": "flow"}), data(json_value({})))
    assert execution["status"] == "completed"
    assert Execution.objects.count() == 3  # the execution, its child and its grandchild
    innermost = Execution.objects.get(depth=2)
    assert innermost.output["failed"]["json"]["code"] == "call_depth_exceeded"


def test_workflow_call_reaches_another_blobs_default_revision_once_it_is_committed(channel, client_for, org, write_key):
    library = workflow_blob(client_for(key=write_key), org, alias="library-blob")
    upload_definition(library, "double", doubler())
    reference = {"blob": "library-blob", "revision": "default", "definition": "double"}
    upload_definition(channel, "flow", caller(reference))

    before = start_execution(channel, "flow", data(json_value({"payload": {"n": 4}})))
    assert before["output"]["failed"]["json"]["code"] == "revision_not_found"

    assert commit(library)["status"] == "completed"
    after = start_execution(channel, "flow", data(json_value({"payload": {"n": 4}})))
    assert after["status"] == "completed"
    assert after["output"] == {"result": json_value({"doubled": 8})}
