"""Workflows on real worker processes over Redis and PostgreSQL (DESIGN §5)."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from blobhub.celery import app as celery_app
from blobs.tests.factories import BlobFactory
from orgs.principal import Principal
from orgs.tests.factories import MembershipFactory
from tests.processes import log_tail, stop, wait_for
from workflows.models import Execution, StepRun
from workflows.services import executions, sessions
from workflows.tests.support import approval_flow, component, connect, document, number, text

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

BIN = Path(sys.executable).parent


@pytest.fixture
def workspace():
    """A workflow blob's draft with the definitions these tests run, and a session."""
    from blobs.services import content

    membership = MembershipFactory(role="admin")
    blob = BlobFactory(org=membership.org)
    revision = blob.revisions.get()
    content.file_put_json(revision, "definitions/workflow/approve.json", approval_flow())
    content.file_put_json(revision, "definitions/workflow/slow.json", document(
        [
            component("start", "flow.start"),
            component("wait", "flow.delay", config={"seconds": number(3)}),
            component("after", "logic.transform", config={"expression": text("`\"done\"`")}),
            component("end", "flow.end"),
        ],
        [connect("a", "start", "wait"), connect("b", "wait", "after"), connect("c", "after", "end", source_port="output", target_port="result")],
    ))
    content.file_put_json(revision, "definitions/workflow/sleepy.json", document(
        [component("start", "flow.start"), component("wait", "flow.delay", config={"seconds": number(60)}), component("end", "flow.end")],
        [connect("a", "start", "wait"), connect("b", "wait", "end")],
    ))
    principal = Principal(user=membership.user)
    session = sessions.session_create(principal=principal, revision=revision, alias="integration", description="")
    return principal, revision, session


def start(workspace, definition, items=None):
    principal, revision, session = workspace
    inputs = [{"alias": "order", "value": {"type": "json", "json": {"items": items or []}}}] if definition == "approve" else []
    return executions.execution_create(
        principal=principal, revision=revision, session=session, workflow={"definition": definition}, input_data=inputs
    )


def finished(execution_id, timeout=60):
    return wait_for(
        lambda: Execution.objects.filter(id=execution_id, status__in=Execution.FINAL).first(),
        timeout=timeout,
        what=f"execution {execution_id} finishing",
    )


def test_an_execution_completes_on_the_worker_with_its_events_in_order(tasks_go_through_the_broker, workspace):
    from workflows.events import stream_events

    execution = finished(start(workspace, "approve", [{"price": 10}, {"price": 5}]).id)
    assert execution.status == "completed"
    assert execution.output == {"approved": {"type": "integer", "integer": 15}}
    events = list(stream_events("execution", execution.id).order_by("sequence"))
    assert [event.sequence for event in events] == list(range(1, len(events) + 1))
    assert events[0].type == "flow.entered" and events[-1].type == "flow.exited"


def test_fifty_executions_started_at_once_all_complete(tasks_go_through_the_broker, workspace):
    ids = [start(workspace, "approve", [{"price": n}]).id for n in range(50)]
    wait_for(
        lambda: Execution.objects.filter(id__in=ids, status="completed").count() == 50,
        timeout=120,
        what="50 executions completing",
    )
    assert not Execution.objects.filter(id__in=ids).exclude(status="completed").exists()


def _worker_backends() -> set[int]:
    """The pids of the other PostgreSQL sessions on the test database (the worker's, here)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
        return {pid for (pid,) in cursor.fetchall()}


def test_the_worker_keeps_its_database_connections_from_task_to_task(tasks_go_through_the_broker, workspace):
    warm_up = [start(workspace, "approve", [{"price": n}]).id for n in range(10)]  # every worker thread connects
    wait_for(lambda: Execution.objects.filter(id__in=warm_up, status="completed").count() == 10, timeout=60, what="the warm-up")
    connected = _worker_backends()
    assert connected
    for n in range(5):
        assert finished(start(workspace, "approve", [{"price": n}]).id).status == "completed"
    assert _worker_backends() <= connected  # no task opened a connection of its own


def test_a_stopped_execution_stops(tasks_go_through_the_broker, workspace):
    execution = start(workspace, "sleepy")
    wait_for(lambda: StepRun.objects.filter(execution=execution, component_id="wait", status="running").exists(), timeout=30, what="the delay running")
    executions.execution_stop(execution=execution)
    stopped = finished(execution.id, timeout=30)
    assert stopped.status == "stopped"
    assert StepRun.objects.get(execution=execution, component_id="end").status in ("cancelled", "skipped")


def _worker(name: str, queue: str, env: dict, log: Path) -> subprocess.Popen:
    command = [
        str(BIN / "celery"), "-A", "blobhub", "worker", "--pool", "threads", "-c", "2", "-n", f"{name}@localhost",
        "-Q", queue, "--without-mingle", "--without-gossip", "--loglevel", "INFO",
    ]  # fmt: skip
    return subprocess.Popen(
        command, cwd=settings.BASE_DIR, env={**env, "CELERY_QUEUE": queue}, stdin=subprocess.DEVNULL,
        stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def test_a_worker_killed_mid_execution_is_replaced_and_no_completed_step_runs_twice(server_env, workspace, tmp_path):
    queue = f"kill-test-{os.getpid()}"
    previous = (celery_app.conf.task_always_eager, celery_app.conf.task_default_queue)
    celery_app.conf.task_always_eager, celery_app.conf.task_default_queue = False, queue
    first = _worker("doomed", queue, server_env, tmp_path / "doomed.log")
    second = None
    try:
        execution = start(workspace, "slow")
        wait_for(
            lambda: StepRun.objects.filter(execution=execution, component_id="wait", status="running").exists(),
            timeout=60,
            what="the delay step running on the first worker",
            process=first,
            output=lambda: log_tail(tmp_path / "doomed.log"),
        )
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        second = _worker("heir", queue, server_env, tmp_path / "heir.log")
        done = finished(execution.id, timeout=90)
        assert done.status == "completed", log_tail(tmp_path / "heir.log")
        assert done.output == {"result": {"type": "text", "text": "done"}}
        steps = {step.component_id: step for step in StepRun.objects.filter(execution=execution)}
        assert steps["wait"].attempt == 2  # it was running when the worker died, and ran again
        assert steps["after"].attempt == 1 and steps["end"].attempt == 1
        from workflows.events import stream_events

        exited = [e.data["attributes"]["processor_id"] for e in stream_events("execution", execution.id) if e.type == "processor.exited"]
        assert sorted(exited) == ["after", "end", "wait"]  # each completed exactly once
    finally:
        celery_app.conf.task_always_eager, celery_app.conf.task_default_queue = previous
        for process in (first, second):
            if process is not None:
                stop(process, timeout=20)
