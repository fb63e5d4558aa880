"""How a definition runs (API.md §3.1, DESIGN §5): routes, dead paths and joins, retries,
timeouts, deadlines, size limits, idempotency, references, and durable step records."""

import time
from datetime import timedelta
from typing import ClassVar
from unittest import mock

import pytest
from django.utils import timezone

from blobs.models import Event
from workflows import engine
from workflows.components.base import Component, ComponentError, Port, RetryPolicy, component_class, register
from workflows.models import Execution, StepRun
from workflows.tests.support import (
    commit,
    component,
    connect,
    document,
    ensure_session,
    execution_events,
    json_value,
    piped,
    start_execution,
    text,
    upload_definition,
    workflow_blob,
)

pytestmark = pytest.mark.django_db(transaction=True)


# --- Test components ----------------------------------------------------------------------------


@register
class Flaky(Component):
    """Fails retryably on its first two attempts in each execution, then succeeds."""

    type = "test.flaky"
    inputs: ClassVar[dict] = {"input": Port("any")}
    outputs: ClassVar[dict] = {"output": Port("any")}
    retry = RetryPolicy(max_attempts=3, backoff_seconds=0)
    attempts: ClassVar[dict] = {}

    def run(self, ctx, config, inputs):
        seen = self.attempts[ctx.execution.id] = self.attempts.get(ctx.execution.id, 0) + 1
        if seen < 3:
            raise ComponentError("flaky", f"flake number {seen}", retryable=True)
        return {"output": f"worked on attempt {seen}"}


@register
class Patient(Component):
    """Fails retryably once with a long backoff."""

    type = "test.patient"
    outputs: ClassVar[dict] = {"output": Port("any")}
    retry = RetryPolicy(max_attempts=2, backoff_seconds=30)
    attempts: ClassVar[dict] = {}

    def run(self, ctx, config, inputs):
        seen = self.attempts[ctx.execution.id] = self.attempts.get(ctx.execution.id, 0) + 1
        if seen < 2:
            raise ComponentError("busy", "try again later", retryable=True)
        return {"output": "done"}


@register
class Sleepy(Component):
    """Takes far longer than its timeout."""

    type = "test.sleepy"
    outputs: ClassVar[dict] = {"output": Port("any")}
    timeout_seconds = 0.2
    retry = RetryPolicy(max_attempts=2, backoff_seconds=0)

    def run(self, ctx, config, inputs):
        time.sleep(1)
        return {"output": "too late"}


@register
class Infinite(Component):
    """Computes an infinity (as onnx.infer can), counting its runs."""

    type = "test.infinite"
    outputs: ClassVar[dict] = {"output": Port("json")}
    runs: ClassVar[list] = []

    def run(self, ctx, config, inputs):
        self.runs.append(str(ctx.execution.id))
        return {"output": {"score": float("-inf")}}


@register
class Unstorable(Component):
    """Outputs a string holding a NUL (as an http.request text body or a stored blob can)."""

    type = "test.unstorable"
    outputs: ClassVar[dict] = {"output": Port("json")}

    def run(self, ctx, config, inputs):
        return {"output": {"note": "a\x00b"}}


@pytest.fixture
def channel(client_for, org, write_key):
    return workflow_blob(client_for(key=write_key), org)


def run(channel, doc, inputs=None, alias="flow"):
    upload_definition(channel, alias, doc)
    return start_execution(channel, alias, inputs)


def constant(cid, value):
    return component(cid, "logic.transform", config={"expression": text(f"'{value}'")})


def entered(events):
    return [event["attributes"]["processor_id"] for event in events if event["type"] == "processor.entered"]


def steps_of(execution):
    return {step.component_id: step for step in StepRun.objects.filter(execution_id=execution["id"])}


# --- Routes, dead paths, joins ---------------------------------------------------------------------


def diamond():
    """in ─▶ check ─success▶ yes ─────────▶ join ─▶ end
    └failure▶ no ─▶ no2 ─┘"""
    return document(
        [
            component("start", "flow.start"),
            component("in", "flow.input", alias="data"),
            component("check", "logic.condition", config={"expression": text("go")}),
            constant("yes", "took yes"),
            constant("no", "took no"),
            component("no2", "logic.transform", config={"expression": text("@")}),
            component("join", "logic.template", config={"template": text("joined: {{ @ }}")}),
            component("end", "flow.end"),
        ],
        [
            connect("c0", "start", "check"),
            piped("c1", "in", "check", "value", "input"),
            connect("c2", "check", "yes"),
            connect("c3", "check", "no", route="failure"),
            piped("c4", "no", "no2"),
            piped("c5", "yes", "join"),
            piped("c6", "no2", "join"),
            piped("c7", "join", "end", "output", "result"),
        ],
    )


@pytest.mark.parametrize(
    ("go", "taken", "eliminated"),
    [(True, ["yes"], ["no", "no2"]), (False, ["no", "no2"], ["yes"])],
    ids=["true", "false"],
)
def test_a_diamond_with_one_branch_eliminated_runs_its_join_once(channel, go, taken, eliminated):
    execution = run(channel, diamond(), [{"alias": "data", "value": json_value({"go": go})}])

    assert execution["status"] == "completed"
    assert execution["output"] == {"result": text(f"joined: took {taken[0]}")}
    events = execution_events(channel, execution["id"])
    assert entered(events) == ["check", *taken, "join", "end"]
    steps = steps_of(execution)
    assert all(steps[cid].status == "skipped" for cid in eliminated)
    assert steps["join"].status == "completed" and steps["join"].attempt == 1


@pytest.mark.parametrize(("go", "after"), [(True, json_value({"go": True})), (False, None)], ids=["success", "failure"])
def test_a_next_route_fires_whether_the_source_succeeds_or_fails(channel, go, after):
    doc = document(
        [
            component("start", "flow.start"),
            component("in", "flow.input", alias="data"),
            component("check", "logic.condition", config={"expression": text("go")}),
            component("end", "flow.end"),
        ],
        [
            connect("c0", "start", "check"),
            piped("c1", "in", "check", "value", "input"),
            piped("c2", "check", "end", "output", "after", route="next"),
        ],
    )
    execution = run(channel, doc, [{"alias": "data", "value": json_value({"go": go})}])
    assert execution["status"] == "completed"
    if after is not None:
        assert execution["output"] == {"after": after}
    else:  # on failure a connection carries the source's error, whatever its source port
        assert execution["output"]["after"]["json"]["code"] == "condition_false"


def test_a_control_only_connection_orders_components_without_carrying_a_value(channel):
    doc = document(
        [
            component("start", "flow.start"),
            component("in", "flow.input", alias="data"),
            constant("first", "one"),
            component("second", "logic.transform", config={"expression": text("@")}),
            component("end", "flow.end"),
        ],
        [
            connect("c0", "start", "first"),
            connect("c1", "first", "second"),  # control only: second waits for first
            piped("c2", "in", "second", "value", "input"),
            piped("c3", "second", "end", "output", "result"),
        ],
    )
    execution = run(channel, doc, [{"alias": "data", "value": text("from the input")}])
    assert execution["output"] == {"result": text("from the input")}
    assert steps_of(execution)["second"].inputs == {"input": text("from the input")}
    events = execution_events(channel, execution["id"])
    exited_first = next(
        i
        for i, e in enumerate(events)
        if e["type"] == "processor.exited" and e["attributes"]["processor_id"] == "first"
    )
    entered_second = next(
        i
        for i, e in enumerate(events)
        if e["type"] == "processor.entered" and e["attributes"]["processor_id"] == "second"
    )
    assert exited_first < entered_second


def test_independent_branches_both_run_and_both_reach_the_end(channel):
    doc = document(
        [component("start", "flow.start"), constant("left", "L"), constant("right", "R"), component("end", "flow.end")],
        [
            connect("c0", "start", "left"),
            connect("c1", "start", "right"),
            piped("c2", "left", "end", "output", "left"),
            piped("c3", "right", "end", "output", "right"),
        ],
    )
    execution = run(channel, doc)
    assert execution["output"] == {"left": text("L"), "right": text("R")}
    assert sorted(entered(execution_events(channel, execution["id"]))) == ["end", "left", "right"]


def test_a_failure_in_one_branch_without_a_failure_route_fails_the_execution(channel):
    doc = document(
        [
            component("start", "flow.start"),
            constant("fine", "ok"),
            component("boom", "flow.fail", config={"message": text("branch broke")}),
            component("end", "flow.end"),
        ],
        [
            connect("c0", "start", "fine"),
            connect("c1", "start", "boom"),
            piped("c2", "fine", "end", "output", "ok"),
            connect("c3", "boom", "end"),
        ],
    )
    execution = run(channel, doc)
    assert execution["status"] == "failed"
    assert execution["error"] == {"code": "failed", "message": "branch broke", "processor_id": "boom"}
    assert execution["output"] is None
    assert execution_events(channel, execution["id"])[-1]["type"] == "flow.error"


# --- Retries and timeouts ----------------------------------------------------------------------------


def single(step_type):
    return document(
        [component("start", "flow.start"), component("step", step_type), component("end", "flow.end")],
        [connect("c0", "start", "step"), piped("c1", "step", "end", "output", "result")],
    )


def test_a_retryable_failure_is_retried_until_it_succeeds(channel):
    execution = run(channel, single("test.flaky"))

    assert execution["status"] == "completed"
    assert execution["output"] == {"result": text("worked on attempt 3")}
    step = steps_of(execution)["step"]
    assert step.attempt == 3 and step.status == "completed" and step.error is None
    events = [
        e for e in execution_events(channel, execution["id"]) if e.get("attributes", {}).get("processor_id") == "step"
    ]
    assert [e["type"] for e in events] == [
        "processor.entered",
        "processor.error",
        "processor.entered",
        "processor.error",
        "processor.entered",
        "processor.exited",
    ]
    errors = [e for e in events if e["type"] == "processor.error"]
    assert [e["data"]["attempt"] for e in errors] == [1, 2]
    assert all(e["data"]["retrying"] is True for e in errors)
    assert [e["data"]["error"]["code"] for e in errors] == ["flaky", "flaky"]
    assert [e.get("data") for e in events if e["type"] == "processor.entered"] == [None, {"attempt": 2}, {"attempt": 3}]


def test_a_failure_that_is_not_retryable_is_not_retried(channel):
    doc = document(
        [component("start", "flow.start"), component("boom", "flow.fail"), component("end", "flow.end")],
        [connect("c0", "start", "boom"), connect("c1", "boom", "end")],
    )
    execution = run(channel, doc)
    assert execution["status"] == "failed"
    assert steps_of(execution)["boom"].attempt == 1


def test_backoff_grows_by_its_factor():
    policy = RetryPolicy(max_attempts=4, backoff_seconds=1.5, backoff_factor=2)
    assert [policy.delay(attempt) for attempt in (1, 2, 3)] == [1.5, 3.0, 6.0]


def test_a_retry_waits_for_its_backoff_before_it_runs_again(channel):
    execution = run(channel, single("test.patient"))

    assert execution["status"] == "running"
    step = steps_of(execution)["step"]
    assert step.status == "queued" and step.attempt == 1
    assert step.not_before > timezone.now() + timedelta(seconds=25)
    error = execution_events(channel, execution["id"])[-1]
    assert error["type"] == "processor.error" and "retrying in 30 s" in error["message"]

    engine.run_step(step.id)  # a redelivery before the backoff is over
    step.refresh_from_db()
    assert step.status == "queued" and step.attempt == 1

    StepRun.objects.filter(id=step.id).update(not_before=timezone.now() - timedelta(seconds=1))
    engine.run_step(step.id)
    step.refresh_from_db()
    assert step.status == "completed" and step.attempt == 2
    assert Execution.objects.get(id=execution["id"]).output == {"result": text("done")}


def test_a_component_that_outlives_its_timeout_fails_with_timeout_after_its_retries(channel):
    execution = run(channel, single("test.sleepy"))

    assert execution["status"] == "failed"
    assert execution["error"]["code"] == "timeout" and execution["error"]["processor_id"] == "step"
    step = steps_of(execution)["step"]
    assert step.status == "failed" and step.attempt == 2 and step.outputs is None
    # Two attempts cut short at 0.2 s each, not two full 1 s sleeps.
    assert (step.finished_at - step.started_at).total_seconds() < 1.9
    errors = [e for e in execution_events(channel, execution["id"]) if e["type"] == "processor.error"]
    assert [e["data"].get("retrying", False) for e in errors] == [True, False]


# --- Deadlines and limits ----------------------------------------------------------------------------


def test_an_execution_past_its_deadline_is_failed_by_recover(channel, settings):
    settings.WORKFLOW_EXECUTION_TIMEOUT_SECONDS = 0
    upload_definition(channel, "flow", _transform_flow())
    ensure_session(channel)
    with mock.patch("workflows.tasks.run_step.apply_async"):
        created = channel.command(
            "create_execution", target={"session": "main-session"}, workflow={"definition": "flow"}
        ).json()
    execution_id = created["execution"]["id"]
    assert created["execution"]["status"] == "queued"

    assert engine.recover() >= 1

    execution = channel.query("get_execution", execution_id=execution_id).json()["execution"]
    assert execution["status"] == "failed"
    assert execution["error"] == {"code": "execution_timeout", "message": "The execution ran out of time."}
    assert execution["finished_at"] is not None
    assert execution_events(channel, execution_id)[-1]["type"] == "flow.error"
    assert not StepRun.objects.filter(execution_id=execution_id, status__in=["queued", "running"]).exists()


def test_a_step_claimed_after_the_deadline_fails_the_execution_instead_of_running(channel, settings):
    settings.WORKFLOW_EXECUTION_TIMEOUT_SECONDS = 0
    execution = run(channel, _transform_flow())
    assert execution["status"] == "failed" and execution["error"]["code"] == "execution_timeout"
    assert steps_of(execution)["shape"].attempt == 0


def _transform_flow():
    return document(
        [
            component("start", "flow.start"),
            component("in", "flow.input", alias="data"),
            component("shape", "logic.transform", config={"expression": text("@")}),
            component("end", "flow.end"),
        ],
        [
            connect("c0", "start", "shape"),
            piped("c1", "in", "shape", "value", "input"),
            piped("c2", "shape", "end", "output", "result"),
        ],
    )


def test_an_output_larger_than_the_value_limit_is_refused(channel, settings):
    settings.WORKFLOW_MAX_VALUE_BYTES = 200
    triple = _transform_flow()
    triple["components"][2]["ports"][0]["value"] = text("[@, @, @]")
    execution = run(channel, triple, [{"alias": "data", "value": text("x" * 150)}])  # an input within the limit
    assert execution["status"] == "failed"
    assert execution["error"]["code"] == "output_too_large" and execution["error"]["processor_id"] == "shape"
    assert steps_of(execution)["shape"].outputs is None
    small = start_execution(channel, "flow", [{"alias": "data", "value": text("x" * 30)}])
    assert small["status"] == "completed"


def test_a_step_whose_output_is_not_json_fails_with_invalid_output_and_runs_once(channel):
    execution = run(channel, single("test.infinite"))
    assert execution["status"] == "failed"
    assert execution["error"]["code"] == "invalid_output" and execution["error"]["processor_id"] == "step"
    step = steps_of(execution)["step"]
    assert (step.status, step.outputs) == ("failed", None)
    assert engine.recover(now=timezone.now() + timedelta(minutes=1)) == 0  # nothing left running to hand out
    assert Infinite.runs.count(execution["id"]) == 1


def test_a_step_whose_output_holds_a_nul_fails_with_invalid_output(channel):
    # PostgreSQL's jsonb refuses a NUL: stored, the outputs would crash the task instead.
    execution = run(channel, single("test.unstorable"))
    assert execution["status"] == "failed"
    assert execution["error"]["code"] == "invalid_output" and "NUL" in execution["error"]["message"]
    step = steps_of(execution)["step"]
    assert (step.status, step.outputs) == ("failed", None)


def test_a_pure_step_whose_output_is_not_json_takes_its_failure_route(channel):
    doc = document(
        [
            component("start", "flow.start"),
            component("in", "flow.input", alias="data"),
            component("shape", "logic.transform", config={"expression": text("to_number('Infinity')")}),
            constant("fallback", "overflowed"),
            component("end", "flow.end"),
        ],
        [
            connect("c0", "start", "shape"),
            piped("c1", "in", "shape", "value", "input"),
            piped("c2", "shape", "end", "output", "result"),
            connect("c3", "shape", "fallback", route="failure"),
            piped("c4", "fallback", "end", "output", "result"),
        ],
    )
    # to_number reads "Infinity" as a float; a sum of floats near the limit is no test on PostgreSQL,
    # whose jsonb hands 1.7e308 back as a 309-digit integer, which sums without overflowing.
    execution = run(channel, doc, [{"alias": "data", "value": json_value([1, 2])}])
    assert execution["status"] == "completed" and execution["output"] == {"result": text("overflowed")}
    shape = steps_of(execution)["shape"]
    assert (shape.status, shape.error["code"]) == ("failed", "invalid_output")


# --- create_execution -------------------------------------------------------------------------------


def test_create_execution_with_an_idempotency_key_replays_the_same_execution(channel):
    upload_definition(channel, "flow", _transform_flow())
    ensure_session(channel)
    body = {
        "command": "create_execution",
        "target": {"session": "main-session"},
        "workflow": {"definition": "flow"},
        "input_data": [{"alias": "data", "value": text("once")}],
    }
    url = f"/v1/revisions/{channel.revision_id}/data/command"

    first = channel.client.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY="run-once-42")
    second = channel.client.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY="run-once-42")

    assert first.status_code == second.status_code == 200
    assert first.json()["execution"]["id"] == second.json()["execution"]["id"]
    assert Execution.objects.count() == 1
    other = channel.client.post(url, {**body, "input_data": []}, format="json", HTTP_IDEMPOTENCY_KEY="run-once-42")
    assert other.status_code == 409 and other.json()["error"] == "idempotency_key_reused"
    assert Execution.objects.count() == 1


def test_a_new_draft_runs_its_edited_definition_before_it_is_committed(channel, org):
    upload_definition(channel, "flow", _greeting("hello"))
    assert commit(channel)["status"] == "completed"
    committed = channel.revision_id
    draft = channel.client.post(
        f"/v1/blobs/{org.alias}/flows-blob/revisions", {"comment": "try bonjour"}, format="json"
    ).json()["revision_id"]
    channel.revision_id = draft
    upload_definition(channel, "flow", _greeting("bonjour"))

    tried = start_execution(channel, "flow")

    assert tried["output"] == {"result": text("bonjour")}
    assert tried["revision_id"] == draft and tried["definition_revision_id"] == draft
    channel.revision_id = committed
    assert start_execution(channel, "flow")["output"] == {"result": text("hello")}

    channel.revision_id = draft
    assert commit(channel)["status"] == "completed"
    assert start_execution(channel, {"blob": "flows-blob", "revision": "default", "definition": "flow"})["output"] == {
        "result": text("bonjour")
    }


def test_an_execution_keeps_the_definition_it_started_with(channel):
    first = run(channel, _greeting("one"))
    upload_definition(channel, "flow", _greeting("two"))
    second = start_execution(channel, "flow")
    assert (first["output"], second["output"]) == ({"result": text("one")}, {"result": text("two")})
    assert Execution.objects.get(id=first["id"]).output == {"result": text("one")}


def _greeting(word):
    return document(
        [component("start", "flow.start"), constant("say", word), component("end", "flow.end")],
        [connect("c0", "start", "say"), piped("c1", "say", "end", "output", "result")],
    )


def test_the_three_reference_forms_and_the_default_revision(channel, client_for, org, write_key):
    library = workflow_blob(client_for(key=write_key), org, alias="library-blob")
    upload_definition(library, "greet", _greeting("from the library"))
    assert commit(library)["status"] == "completed"
    upload_definition(channel, "greet", _greeting("local"))

    references = [
        {"definition": "greet"},
        {"blob": "library-blob", "revision": "default", "definition": "greet"},
        {"blob": "library-blob", "revision": library.revision_id, "definition": "greet"},
        {"org": org.alias, "blob": "library-blob", "revision": "default", "definition": "greet"},
        {"org": str(org.id), "blob": "library-blob", "revision": library.revision_id, "definition": "greet"},
    ]
    executions = [start_execution(channel, reference) for reference in references]

    assert [e["output"]["result"]["text"] for e in executions] == ["local"] + ["from the library"] * 4
    assert [e["definition_revision_id"] for e in executions] == [channel.revision_id] + [library.revision_id] * 4
    assert {e["revision_id"] for e in executions} == {channel.revision_id}  # they all run in this revision's session


@pytest.mark.parametrize(
    ("workflow", "status", "code"),
    [
        ({"definition": "absent"}, 404, "definition_not_found"),
        ({"blob": "library-blob", "definition": "greet"}, 400, "invalid_request_body"),
        (
            {"blob": "library-blob", "revision": "default", "definition": "greet", "extra": "x"},
            400,
            "invalid_request_body",
        ),
        ({"blob": "no-such-blob", "revision": "default", "definition": "greet"}, 403, "access_denied"),
        ({"blob": "library-blob", "revision": "default", "definition": "greet"}, 404, "revision_not_found"),
        (
            {"blob": "library-blob", "revision": "00000000-0000-4000-8000-000000000000", "definition": "greet"},
            404,
            "revision_not_found",
        ),
    ],
    ids=[
        "a missing definition",
        "no revision",
        "an unknown key",
        "an unknown blob",
        "no default yet",
        "an unknown revision",
    ],
)
def test_a_bad_reference_is_refused_and_creates_nothing(channel, client_for, org, write_key, workflow, status, code):
    library = workflow_blob(client_for(key=write_key), org, alias="library-blob")
    upload_definition(library, "greet", _greeting("never committed"))
    ensure_session(channel)
    answer = channel.command("create_execution", target={"session": "main-session"}, workflow=workflow)
    assert answer.status_code == status and answer.json()["error"] == code
    assert not Execution.objects.exists()


def test_an_execution_in_a_closed_session_is_refused_with_session_not_open(channel):
    upload_definition(channel, "flow", _greeting("hi"))
    ensure_session(channel, "closing-session")
    assert channel.command("close_session", session_id="closing-session").json()["session"]["status"] == "closed"
    answer = channel.command("create_execution", target={"session": "closing-session"}, workflow={"definition": "flow"})
    assert answer.status_code == 409 and answer.json()["error"] == "session_not_open"
    assert not Execution.objects.exists()


# --- Durability ----------------------------------------------------------------------------------------


def test_a_redelivered_run_step_for_a_completed_step_does_nothing(channel):
    execution = run(channel, _transform_flow(), [{"alias": "data", "value": text("x")}])
    assert execution["status"] == "completed"
    steps = StepRun.objects.filter(execution_id=execution["id"])
    before = {step.id: (step.status, step.attempt, step.outputs, step.finished_at) for step in steps}
    events_before = Event.objects.count()

    for step_id in before:
        engine.run_step(step_id)

    after = {
        step.id: (step.status, step.attempt, step.outputs, step.finished_at)
        for step in StepRun.objects.filter(execution_id=execution["id"])
    }
    assert after == before
    assert Event.objects.count() == events_before
    assert Execution.objects.get(id=execution["id"]).status == "completed"


def _undelivered_transform_execution(channel, data: str) -> StepRun:
    """A `_transform_flow` execution whose first step's message never reached a worker: that step."""
    upload_definition(channel, "flow", _transform_flow())
    ensure_session(channel)
    with mock.patch("workflows.tasks.run_step.apply_async"):
        created = channel.command(
            "create_execution",
            target={"session": "main-session"},
            workflow={"definition": "flow"},
            input_data=[{"alias": "data", "value": text(data)}],
        ).json()
    return StepRun.objects.get(execution_id=created["execution"]["id"], component_id="shape")


def test_a_step_whose_worker_died_is_run_again_by_recover_and_nothing_before_it_reruns(channel):
    shape = _undelivered_transform_execution(channel, "survives")
    # A worker claimed the step and died: the step is running under a lease that ran out.
    StepRun.objects.filter(id=shape.id).update(
        status="running", attempt=1, lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    entries = {
        s.id: s.finished_at
        for s in StepRun.objects.filter(execution_id=shape.execution_id, component_id__in=["start", "in"])
    }

    assert engine.recover() >= 1

    execution = channel.query("get_execution", execution_id=str(shape.execution_id)).json()["execution"]
    assert execution["status"] == "completed" and execution["output"] == {"result": text("survives")}
    shape.refresh_from_db()
    assert shape.attempt == 2 and shape.status == "completed"
    assert {s.id: s.finished_at for s in StepRun.objects.filter(id__in=entries)} == entries


class WorkerDied(BaseException):
    """What a worker process killed mid-step looks like from inside: nothing after it runs."""


def test_a_pure_step_is_claimed_run_and_recorded_in_one_transaction(channel, monkeypatch):
    shape = _undelivered_transform_execution(channel, "again")
    execution_id = str(shape.execution_id)
    events_before = Event.objects.count()

    def dies(self, ctx, config, inputs):
        raise WorkerDied()

    with monkeypatch.context() as patched:
        patched.setattr(component_class("logic.transform"), "run", dies)
        with pytest.raises(WorkerDied):
            engine.run_step(shape.id)
    # Nothing of the claim was committed: the step is still queued, as if never delivered,
    # with no lease to wait out and no event of a start that did not last.
    shape.refresh_from_db()
    assert (shape.status, shape.attempt, shape.lease_expires_at) == ("queued", 0, None)
    assert Event.objects.count() == events_before

    engine.run_step(shape.id)  # the message, delivered again
    shape.refresh_from_db()
    assert (shape.status, shape.attempt) == ("completed", 1)
    execution = channel.query("get_execution", execution_id=execution_id).json()["execution"]
    assert execution["status"] == "completed" and execution["output"] == {"result": text("again")}
    types = [event["type"] for event in execution_events(channel, execution_id)]
    assert types.count("processor.entered") == types.count("processor.exited") == 2  # shape and end, once each


def test_a_chain_of_pure_steps_commits_once_and_a_worker_dying_in_it_loses_nothing_stored(channel, monkeypatch):
    upload_definition(channel, "chain", document(
        [
            component("start", "flow.start"),
            component("in", "flow.input", alias="data"),
            *[component(f"t{i}", "logic.transform", config={"expression": text("@")}) for i in (1, 2, 3)],
            component("end", "flow.end"),
        ],
        [
            connect("c0", "start", "t1"),
            piped("c1", "in", "t1", "value", "input"),
            piped("c2", "t1", "t2", "output", "input"),
            piped("c3", "t2", "t3", "output", "input"),
            piped("c4", "t3", "end", "output", "result"),
        ],
    ))
    ensure_session(channel)
    with mock.patch("workflows.tasks.run_step.apply_async"):
        created = channel.command(
            "create_execution", target={"session": "main-session"}, workflow={"definition": "chain"},
            input_data=[{"alias": "data", "value": text("chained")}],
        ).json()  # fmt: skip
    execution_id = created["execution"]["id"]
    first = StepRun.objects.get(execution_id=execution_id, component_id="t1")
    stored_before = (StepRun.objects.filter(execution_id=execution_id).count(), Event.objects.count())
    transform = component_class("logic.transform")
    runs = []

    def third_dies(self, ctx, config, inputs):
        runs.append(ctx.step.component_id)
        if len(runs) == 3:
            raise WorkerDied()
        return real_run(self, ctx, config, inputs)

    real_run = transform.run
    with monkeypatch.context() as patched:
        patched.setattr(transform, "run", third_dies)
        with pytest.raises(WorkerDied):
            engine.run_step(first.id)
    assert runs == ["t1", "t2", "t3"]  # one after another, in one transaction...
    assert (StepRun.objects.filter(execution_id=execution_id).count(), Event.objects.count()) == stored_before
    first.refresh_from_db()
    assert first.status == "queued"  # ...of which nothing was kept

    engine.run_step(first.id)
    execution = channel.query("get_execution", execution_id=execution_id).json()["execution"]
    assert execution["status"] == "completed" and execution["output"] == {"result": text("chained")}
    steps = StepRun.objects.filter(execution_id=execution_id, component_id__in=["t1", "t2", "t3", "end"])
    assert sorted((s.component_id, s.status, s.attempt) for s in steps) == [
        ("end", "completed", 1), ("t1", "completed", 1), ("t2", "completed", 1), ("t3", "completed", 1)
    ]
