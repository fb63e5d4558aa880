"""Running a definition durably (API.md §3.1 "How a definition runs", DESIGN §5).

Every component run is a StepRun row. A step is claimed under a lease, run outside any
transaction (pure components inside one, see `_run_pure`), and recorded; the graph then
advances under a lock on the execution row, creating the steps that became ready (or
skipped) and enqueuing them after commit. A worker that dies leaves a running step whose
lease expires: the reaper hands it out again. A completed step is never run again. Task
messages carry ids only.
"""

import json
import logging
import threading
import time
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from blobs import events, store
from workflows import values
from workflows.components.base import ComponentError, component_class
from workflows.context import StepContext
from workflows.definitions import Graph, graph_of
from workflows.events import execution_event, processor_attributes, session_event
from workflows.models import Execution, Session, StepRun

logger = logging.getLogger("blobhub.workflows")

# A running step's lease: renewed by its worker every few seconds, so a worker that
# dies gives its step away within LEASE of its last renewal.
LEASE = timedelta(seconds=15)
HEARTBEAT_SECONDS = 3.0
# How long one transaction may go on running pure steps one after another (`_run_pure`):
# their events are published at its commit, and it holds the execution's lock meanwhile.
PURE_RUN_SECONDS = 0.1
FIRES_ON = {"completed": ("success", "next"), "failed": ("failure", "next")}

_graphs: dict[str, Graph] = {}


def graph_for(execution: Execution) -> Graph:
    """The execution's graph; definitions are immutable objects, so they cache by hash."""
    sha256 = execution.definition_object_id
    if sha256 not in _graphs:
        remember_graph(sha256, graph_of(json.loads(store.read_bytes(execution.definition_object))))
    return _graphs[sha256]


def cached_graph(sha256: str) -> Graph | None:
    """The graph of a definition object this process has already validated, if any."""
    return _graphs.get(sha256)


def remember_graph(sha256: str, graph: Graph) -> Graph:
    if len(_graphs) > 256:
        _graphs.clear()
    _graphs[sha256] = graph
    return graph


# --- Starting -------------------------------------------------------------------------------


def begin(execution: Execution, inputs: dict[str, dict]) -> list[int]:
    """Record the entry components as completed and advance (in the creating transaction).

    `inputs` maps flow.input aliases to typed values. Returns the steps to enqueue.
    """
    graph = graph_for(execution)
    now = timezone.now()
    entries = []
    for cid in graph.entries():
        component = graph.components[cid]
        outputs = {}
        if component["type"] == "flow.input":
            typed = inputs.get(component.get("alias"))
            if typed is None and "value" in graph.config[cid]:
                typed = values.wrap("any", graph.config[cid]["value"])
            outputs = {"value": typed} if typed is not None else {}
        entries.append(
            StepRun(
                org_id=execution.org_id,
                execution=execution,
                component_id=cid,
                component_type=component["type"],
                status=StepRun.Status.COMPLETED,
                outputs=outputs,
                started_at=now,
                finished_at=now,
            )
        )
    return [step.id for step in _advance(execution, known=entries, all_known=True, unsaved=True)]


def enqueue(step_ids: list[int], countdown: float | None = None) -> None:
    if not step_ids:
        return
    from workflows.tasks import run_step

    def send() -> None:
        for step_id in step_ids:
            run_step.apply_async((step_id,), countdown=countdown)

    transaction.on_commit(send)


# --- Advancing the graph ----------------------------------------------------------------------


def advance(execution: Execution) -> list[int]:
    """Create every step that became ready or skipped; finish the execution if it is done.

    Runs under the caller's lock on the execution row. Returns the new queued steps.
    """
    return [step.id for step in _advance(execution)]


def _advance(
    execution: Execution,
    known: list[StepRun] = (),
    claim_first: bool = False,
    all_known: bool = False,
    unsaved: bool = False,
) -> list[StepRun]:
    """`advance`, returning the new queued steps themselves; `known` are steps the caller has
    just written, whose values it holds (`all_known`: and they are all the execution has;
    `unsaved`: and they are to be inserted here, with the new steps).

    With `claim_first` the first new ready step is inserted already claimed (running under a
    lease, see `_lease`) for the caller to run inline; it is cancelled if the execution ends here.
    The new steps are inserted together, in one statement.
    """
    if execution.status in Execution.FINAL:
        return []
    graph = graph_for(execution)
    claim = claim_first and execution.status == Execution.Status.RUNNING
    # Statuses only: a step's values (inputs, outputs, error) load when they are used, which is
    # for the sources of the connections that fire (usually a `known` one), not for every step
    # of the execution at every advance.
    steps = (
        {}
        if all_known
        else {
            step.component_id: step
            for step in StepRun.objects.filter(execution=execution).only("id", "execution_id", "component_id", "status")
        }
    )
    for step in known:
        if all_known or step.component_id in steps:
            steps[step.component_id] = step
    new: list[StepRun] = list(known) if unsaved else []
    queued: list[StepRun] = []
    changed = True
    while changed:
        changed = False
        for cid, component in graph.components.items():
            if cid in steps:
                continue
            decision = _readiness(graph, cid, steps)
            if decision is None:
                continue
            changed = True
            fired = decision
            step = StepRun(org_id=execution.org_id, execution=execution, component_id=cid, component_type=component["type"])
            if fired:
                step.inputs = _gather_inputs(graph, fired, steps)
                if claim and not queued:
                    _lease(step, timezone.now())
                queued.append(step)
            else:
                step.status, step.finished_at = StepRun.Status.SKIPPED, timezone.now()
            new.append(step)
            steps[cid] = step
    StepRun.objects.bulk_create(new)
    _maybe_finish(execution, graph, steps)
    if execution.status in Execution.FINAL or execution.status == Execution.Status.STOPPING:
        if queued and queued[0].status == StepRun.Status.RUNNING:  # claimed above: never runs
            StepRun.objects.filter(id=queued[0].id).update(status=StepRun.Status.CANCELLED, finished_at=timezone.now())
        return []
    return queued


def _readiness(graph: Graph, cid: str, steps: dict[str, StepRun]) -> list[dict] | None:
    """None while an incoming connection is unresolved; else the connections that fired."""
    fired = []
    for edge in graph.incoming.get(cid, []):
        source = steps.get(edge["source_id"])
        if source is None or source.status not in StepRun.DONE:
            return None
        if edge["route"] in FIRES_ON.get(source.status, ()):
            fired.append(edge)
    return fired


def _gather_inputs(graph: Graph, fired: list[dict], steps: dict[str, StepRun]) -> dict:
    inputs = {}
    for edge in fired:
        target_port = edge.get("target_port")
        if target_port is None:
            continue
        source = steps[edge["source_id"]]
        if source.status == StepRun.Status.FAILED:
            inputs[target_port] = {"type": "json", "json": source.error}
        else:
            value = (source.outputs or {}).get(edge["source_port"])
            if value is not None:
                inputs[target_port] = value
    return inputs


def _unhandled_failure(graph: Graph, steps: dict[str, StepRun]) -> StepRun | None:
    for cid, step in steps.items():
        if step.status == StepRun.Status.FAILED and not any(
            edge["route"] in ("failure", "next") for edge in graph.outgoing.get(cid, [])
        ):
            return step
    return None


def _maybe_finish(execution: Execution, graph: Graph, steps: dict[str, StepRun]) -> None:
    active = [step for step in steps.values() if step.status not in StepRun.DONE]
    if execution.status == Execution.Status.STOPPING:
        if not any(step.status in (StepRun.Status.RUNNING, StepRun.Status.WAITING) for step in active):
            StepRun.objects.filter(execution=execution, status=StepRun.Status.QUEUED).update(
                status=StepRun.Status.CANCELLED, finished_at=timezone.now()
            )
            finish(execution, Execution.Status.STOPPED, queued_left=False)
        return
    failed = _unhandled_failure(graph, steps)
    if failed is not None:
        finish(execution, Execution.Status.FAILED, error={**(failed.error or {}), "processor_id": failed.component_id})
        return
    ended = [steps[cid] for cid in graph.by_type("flow.end") if steps.get(cid) and steps[cid].status == StepRun.Status.COMPLETED]
    if ended:
        finish(execution, Execution.Status.COMPLETED, output=ended[0].inputs)
    elif not active:
        finish(execution, Execution.Status.COMPLETED, output={}, queued_left=False)


def finish(execution: Execution, status: str, *, output=None, error=None, queued_left: bool = True) -> None:
    """Record a final status once, with its events; tell a waiting parent step.

    The queued steps left are cancelled (`queued_left=False`: the caller knows there are none).
    """
    now = timezone.now()
    updated = Execution.objects.filter(id=execution.id).exclude(status__in=Execution.FINAL).update(
        status=status, output=output, error=error, finished_at=now, updated_at=now
    )
    if not updated:
        return
    execution.status, execution.output, execution.error, execution.finished_at = status, output, error, now
    if queued_left:
        StepRun.objects.filter(execution=execution, status=StepRun.Status.QUEUED).update(
            status=StepRun.Status.CANCELLED, finished_at=now
        )
    if status == Execution.Status.COMPLETED:
        execution_event(execution, "flow.exited", message="The execution completed.", data={"output": output})
    elif status == Execution.Status.FAILED:
        execution_event(execution, "flow.error", message=(error or {}).get("message", "The execution failed."), data={"error": error})
    else:
        execution_event(execution, "flow.exited", message="The execution was stopped.")
    status_changed(execution)
    if execution.parent_step_id:
        _resume_parent(execution)


def status_changed(execution: Execution) -> None:
    session = Session(id=execution.session_id, org_id=execution.org_id, revision_id=execution.revision_id)
    session_event(session, "execution_status_changed", execution_id=execution.id, data={"status": execution.status})


def _resume_parent(child: Execution) -> None:
    """A workflow.call step waiting on this child completes (or fails) with it."""
    step = StepRun.objects.select_for_update().filter(id=child.parent_step_id, status=StepRun.Status.WAITING).first()
    if step is None:
        return
    parent = Execution.objects.select_for_update().get(id=step.execution_id)
    if child.status == Execution.Status.COMPLETED:
        outcome = {"output": {"type": "json", "json": _plain_map(child.output or {})}}
        _record(parent, step, outputs=outcome, error=None)
    else:
        message = "The called workflow was stopped." if child.status == Execution.Status.STOPPED else "The called workflow failed."
        _record(parent, step, outputs=None, error={"code": "call_failed", "message": message, "child": child.error})
    enqueue(advance(parent))


def _plain_map(typed_map: dict) -> dict:
    plain = {}
    for route, typed in typed_map.items():
        try:
            plain[route] = values.unwrap(typed)[1]
        except values.ValueError_:
            plain[route] = typed
    return plain


# --- Running one step -----------------------------------------------------------------------------


def run_step(step_id: int) -> None:
    """Claim, run and record one step; then keep going inline with one newly ready step.

    The step run inline is claimed in the transaction that records the one before it: it
    starts only once that one is recorded, and a worker dying after the commit leaves it
    running under a lease, as any claimed step. Pure components run inside a transaction
    instead (`_run_pure`).
    """
    claimed = _claim(step_id)
    while claimed is not None:
        claimed = _run_claimed(*claimed)


def _run_claimed(execution: Execution, step: StepRun, graph: Graph):
    """Run a claimed step and record it; the next step, claimed, to run inline (or None)."""
    pure = _is_pure(step, graph)
    outcome = None if pure else _run(execution, step, graph)  # a pure one runs under the lock
    with transaction.atomic(), events.batched():
        # Lock the execution and read its status again: what follows depends on nothing else of
        # the row that can have changed since the claim read it (the rest changes only along
        # with a final status).
        execution.status = Execution.objects.select_for_update().values_list("status", flat=True).get(id=execution.id)
        claimed, others = _run_pure(execution, step, graph) if pure else _conclude(execution, step, graph, *outcome)
    enqueue_now(others)
    return claimed


def _is_pure(step: StepRun, graph: Graph) -> bool:
    return component_class(graph.components[step.component_id]["type"]).pure


def _run_pure(execution: Execution, step: StepRun, graph: Graph):
    """Run a claimed pure step and record it in the caller's transaction (the execution
    locked), then each next step while it is pure, for up to PURE_RUN_SECONDS: a chain of
    them commits once, with all its events. A worker that dies meanwhile leaves the chain's
    first step where it was before the transaction (queued, or running under its lease), and
    its steps run again; having no side effects, nothing of the lost run shows. Returns what
    `_conclude` returns, the others of every step gathered."""
    until = time.monotonic() + PURE_RUN_SECONDS
    others: list[int] = []
    while True:
        claimed, more = _conclude(execution, step, graph, *_run(execution, step, graph, inline=True))
        others += more
        if claimed is None or not _is_pure(claimed[1], graph) or time.monotonic() >= until:
            return claimed, others
        execution, step, graph = claimed


def _run(execution: Execution, step: StepRun, graph: Graph, inline: bool = False):
    """Run the step's component: its (typed outputs, error), both scrubbed of secrets."""
    component = graph.components[step.component_id]
    cls = component_class(component["type"])
    timeout = cls.timeout_for(graph.config[step.component_id])
    ctx = StepContext(execution=execution, step=step, component=component, deadline=time.monotonic() + timeout)
    outputs, error = _call(cls, ctx, graph.config[step.component_id], step.inputs, timeout, inline=inline)
    return ctx.redactor.scrub(outputs), ctx.redactor.scrub(error)


def _conclude(execution: Execution, step: StepRun, graph: Graph, outputs, error):
    """Record a step's outcome and advance, under the lock on its execution (taken by the
    caller, whose transaction this is). Returns the next step, claimed, to run inline (or
    None), and the ids of the other new steps, to enqueue after commit."""
    cls = component_class(graph.components[step.component_id]["type"])
    # A step changes status only under its execution's lock, so with that lock held an
    # update on condition tells whether the step is still ours (else its lease expired
    # and another worker took it over).
    ours = StepRun.objects.filter(id=step.id, status=StepRun.Status.RUNNING, attempt=step.attempt)
    if outputs is WAIT_FOR_CHILD:
        if not ours.update(status=StepRun.Status.WAITING):
            return None, []
        # A child may have finished before this step waited (a fast worker, or an eager
        # one): its finish found no waiting step to resume, so resume it here.
        child = Execution.objects.filter(parent_step_id=step.id, status__in=Execution.FINAL).order_by("-created_at").first()
        if child is not None:
            _resume_parent(child)
        return None, []
    if error is not None and error.pop("retryable", False) and step.attempt < cls.retry.max_attempts:
        if ours.exists():
            _retry_later(execution, step, error, cls.retry.delay(step.attempt))
        return None, []
    if not _record(execution, step, outputs=outputs, error=error, running_attempt=step.attempt):
        return None, []
    # Continue inline with one ready step (claimed as it is inserted, in this transaction)
    # and hand the others to other workers.
    now = timezone.now()
    in_time = execution.deadline >= now
    queued = _advance(execution, known=[step], claim_first=in_time)
    if queued and not in_time:
        finish(execution, Execution.Status.FAILED, error={"code": "execution_timeout", "message": "The execution ran out of time."})
        return None, []
    if not queued:
        return None, []
    if queued[0].status == StepRun.Status.RUNNING:
        _started(execution, queued[0], graph, now)
    else:
        _start(execution, queued[0], graph, now)
    return (execution, queued[0], graph), [queued_step.id for queued_step in queued[1:]]


def enqueue_now(step_ids: list[int]) -> None:
    from workflows.tasks import run_step as task

    for step_id in step_ids:
        task.apply_async((step_id,))


# A component returns this to say "a child execution will finish me" (workflow.call).
WAIT_FOR_CHILD = object()


def _call(cls, ctx: StepContext, config: dict, typed_inputs: dict, timeout: float, inline: bool = False):
    """Run the component with its inputs unwrapped; returns (typed outputs, error).

    In a thread of its own, watched for its timeout (and its step's lease renewed), unless
    `inline`: a pure component runs in the caller's thread."""
    try:
        plain_inputs = {route: values.unwrap(typed)[1] for route, typed in typed_inputs.items()}
    except values.ValueError_ as exc:
        return None, {"code": "invalid_input", "message": str(exc)}
    result: dict = {}

    def target() -> None:
        try:
            result["outputs"] = cls().run(ctx, config, plain_inputs)
        except ComponentError as exc:
            result["error"] = {**exc.render(), "retryable": exc.retryable}
        except Exception:
            logger.exception("component %s of execution %s crashed", ctx.component.get("id"), ctx.execution.id)
            result["error"] = {"code": "component_crashed", "message": "The component failed unexpectedly.", "retryable": False}

    if inline:
        target()
    else:
        worker = threading.Thread(target=target, name=f"step-{ctx.step.id}", daemon=True)
        worker.start()
        end = time.monotonic() + timeout
        while worker.is_alive() and (left := end - time.monotonic()) > 0:
            worker.join(min(left, HEARTBEAT_SECONDS))
            if worker.is_alive():
                _renew_lease(ctx.step)
        if worker.is_alive():
            return None, {"code": "timeout", "message": f"The component did not finish within {timeout:g} s.", "retryable": True}
    if "error" in result:
        return None, result["error"]
    outputs = result.get("outputs")
    if outputs is WAIT_FOR_CHILD:
        return WAIT_FOR_CHILD, None
    return _typed_outputs(cls, outputs or {})


def _renew_lease(step: StepRun) -> None:
    StepRun.objects.filter(id=step.id, status=StepRun.Status.RUNNING, attempt=step.attempt).update(
        lease_expires_at=timezone.now() + LEASE
    )


def _typed_outputs(cls, outputs: dict):
    typed = {}
    for route, plain in outputs.items():
        spec = cls.outputs.get(route)
        value_type = spec.type if spec else "any"
        if not values.conforms(value_type, plain):
            return None, {"code": "invalid_output", "message": f"The output {route!r} is not a {value_type}."}
        typed[route] = values.wrap(value_type, plain)
    # NaN, an infinity (onnx.infer, JMESPath), a NUL, an object JSON has no form for: a failure
    # of the step like any other, never an exception that leaves it running.
    try:
        size = values.stored_size(typed)
    except store.NotJson as exc:
        return None, {"code": "invalid_output", "message": f"The outputs cannot be stored. {exc.message}"}
    except TypeError:
        return None, {"code": "invalid_output", "message": "The outputs are not JSON: a value has no JSON form."}
    limit = settings.WORKFLOW_MAX_VALUE_BYTES
    if size > limit:
        return None, {"code": "output_too_large", "message": f"The outputs exceed {limit} bytes; store large values as blobs."}
    return typed, None


def _claim(step_id: int):
    now = timezone.now()
    with transaction.atomic(), events.batched():
        # One statement locks the step and its execution.
        step = StepRun.objects.select_related("execution").select_for_update().filter(id=step_id).first()
        if step is None:
            return None
        expired = step.status == StepRun.Status.RUNNING and step.lease_expires_at and step.lease_expires_at < now
        if step.status != StepRun.Status.QUEUED and not expired:
            return None
        if step.not_before and step.not_before > now:
            return None
        execution = step.execution
        if execution.status in Execution.FINAL or execution.status == Execution.Status.STOPPING:
            StepRun.objects.filter(id=step.id).update(status=StepRun.Status.CANCELLED, finished_at=now)
            step.status = StepRun.Status.CANCELLED
            enqueue(advance(execution))
            return None
        if execution.deadline < now:
            finish(execution, Execution.Status.FAILED, error={"code": "execution_timeout", "message": "The execution ran out of time."})
            return None
        graph = graph_for(execution)
        _start(execution, step, graph, now)
        if not _is_pure(step, graph):
            return execution, step, graph
        # Run, record and advance in this transaction, under the locks the claim took: one
        # commit instead of two (a worker that dies meanwhile leaves the step queued).
        claimed, others = _run_pure(execution, step, graph)
    enqueue_now(others)
    return claimed


def _start(execution: Execution, step: StepRun, graph: Graph, now) -> None:
    """Mark a step running under a fresh lease, with its events (under the execution's lock)."""
    _lease(step, now)
    StepRun.objects.filter(id=step.id).update(
        status=step.status, attempt=step.attempt, lease_expires_at=step.lease_expires_at, started_at=step.started_at
    )
    _started(execution, step, graph, now)


def _lease(step: StepRun, now) -> None:
    """A claimed step's fields: running, its next attempt, under a fresh lease (not yet saved)."""
    step.status, step.attempt = StepRun.Status.RUNNING, step.attempt + 1
    step.lease_expires_at = now + LEASE
    step.started_at = step.started_at or now


def _started(execution: Execution, step: StepRun, graph: Graph, now) -> None:
    """The events of a step just claimed (and the execution's start with its first step)."""
    component = graph.components[step.component_id]
    if execution.status == Execution.Status.QUEUED:
        Execution.objects.filter(id=execution.id).update(status=Execution.Status.RUNNING, started_at=now, updated_at=now)
        execution.status, execution.started_at = Execution.Status.RUNNING, now
        execution_event(execution, "flow.entered", message="The execution started.")
        status_changed(execution)
    execution_event(
        execution,
        "processor.entered",
        attributes=processor_attributes(component),
        data={"attempt": step.attempt} if step.attempt > 1 else None,
    )


def _retry_later(execution: Execution, step: StepRun, error: dict, delay: float) -> None:
    not_before = timezone.now() + timedelta(seconds=delay)
    StepRun.objects.filter(id=step.id).update(status=StepRun.Status.QUEUED, not_before=not_before, error=error)
    execution_event(
        execution,
        "processor.error",
        message=f"{error.get('message')} (attempt {step.attempt}; retrying in {delay:g} s)",
        attributes=processor_attributes(graph_for(execution).components[step.component_id]),
        data={"error": error, "attempt": step.attempt, "retrying": True},
    )
    enqueue([step.id], countdown=delay)


def _record(execution: Execution, step: StepRun, *, outputs, error, running_attempt: int | None = None) -> bool:
    """Record a step's outcome and its event; with `running_attempt`, only while the step is
    still running that attempt (False when it is not)."""
    now = timezone.now()
    status = StepRun.Status.FAILED if error is not None else StepRun.Status.COMPLETED
    rows = StepRun.objects.filter(id=step.id)
    if running_attempt is not None:
        rows = rows.filter(status=StepRun.Status.RUNNING, attempt=running_attempt)
    if not rows.update(status=status, outputs=outputs, error=error, finished_at=now):
        return False
    step.status, step.outputs, step.error, step.finished_at = status, outputs, error, now
    attributes = processor_attributes(graph_for(execution).components[step.component_id])
    if error is not None:
        execution_event(execution, "processor.error", message=error.get("message"), attributes=attributes, data={"error": error})
    else:
        execution_event(execution, "processor.exited", attributes=attributes, data={"outputs": outputs} if outputs else None)
    return True


# --- Stopping and recovering ----------------------------------------------------------------------


def stop(execution: Execution) -> Execution:
    """`stopping`, then `stopped` once no component is running (under the caller's transaction)."""
    execution = Execution.objects.select_for_update().get(id=execution.id)
    if execution.status in Execution.FINAL or execution.status == Execution.Status.STOPPING:
        return execution
    Execution.objects.filter(id=execution.id).update(status=Execution.Status.STOPPING, updated_at=timezone.now())
    execution.status = Execution.Status.STOPPING
    execution_event(execution, "flow.exited", message="Stopping the execution.", data={"status": "stopping"})
    status_changed(execution)
    for child in Execution.objects.filter(parent_step__execution=execution).exclude(status__in=Execution.FINAL):
        stop(child)
    advance(execution)
    return execution


def next_lease_expiry():
    return (
        StepRun.objects.filter(status=StepRun.Status.RUNNING)
        .order_by("lease_expires_at")
        .values_list("lease_expires_at", flat=True)
        .first()
    )


def recover(now=None) -> int:
    """Hand out again what died with a worker; fail executions past their deadline."""
    now = now or timezone.now()
    count = 0
    for step_id in StepRun.objects.filter(status=StepRun.Status.RUNNING, lease_expires_at__lt=now).values_list("id", flat=True)[:1000]:
        enqueue_now([step_id])
        count += 1
    stale = now - timedelta(seconds=30)
    for step_id in (
        StepRun.objects.filter(status=StepRun.Status.QUEUED, created_at__lt=stale)
        .exclude(not_before__gt=now)
        .values_list("id", flat=True)[:1000]
    ):
        enqueue_now([step_id])
        count += 1
    for execution_id in Execution.objects.filter(deadline__lt=now).exclude(status__in=Execution.FINAL).values_list("id", flat=True)[:1000]:
        with transaction.atomic():
            execution = Execution.objects.select_for_update().get(id=execution_id)
            finish(execution, Execution.Status.FAILED, error={"code": "execution_timeout", "message": "The execution ran out of time."})
        count += 1
    return count
