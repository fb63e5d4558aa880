"""The scheduler on PostgreSQL, Redis and real processes (DESIGN §7).

- Two ticks running at once, in two separate processes, over 300 due schedules: each schedule
  fires exactly once (SKIP LOCKED shares the rows, the unique firing is the backstop).
- A real `celery beat` (ticking every second, with a schedule file of its own) and a real
  worker: a schedule a few seconds in the future fires and its execution completes.
"""

import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from django.conf import settings
from django.db.models import Count

from blobhub.celery import app as celery_app
from blobs.models import BlobType
from blobs.services import content
from blobs.tests.factories import BlobFactory
from orgs.tests.factories import MembershipFactory
from scheduler.models import ActiveSchedule, Firing
from tests.processes import log_tail, stop, wait_for
from workflows.models import Execution, Session
from workflows.tests.support import Channel, approval_flow

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

BIN = Path(sys.executable).parent
DUE_SCHEDULES = 300

# A tick in its own process, started on a signal so that both really run at once.
TICK_SCRIPT = """
import os, sys, time
import django
django.setup()
from datetime import datetime
from scheduler.services import tick
go = sys.argv[1]
while not os.path.exists(go):
    time.sleep(0.01)
print("handled", tick(now=datetime.fromisoformat(sys.argv[2])), flush=True)
"""


def _document(owner, target_org: str, revision_id: str) -> dict:
    return {
        "id": str(uuid.uuid4()),
        "description": "concurrent ticks",
        "repeat": "recurring_cron",
        "cron_expression": "0 12 * * *",
        "timezone": "UTC",
        "enabled": True,
        "overlap": "allow",
        "invocation_target_type": "workflow",
        "invocation_target": {
            "target": {"org": target_org, "blob": "flows-blob", "revision": revision_id},
            "workflow": {"definition": "approve"},
            "input_data": [{"alias": "order", "value": {"type": "json", "json": {"items": [{"price": 5}]}}}],
        },
        "_owner": {"user_id": str(owner.id), "api_key_id": None},
    }


def test_two_ticks_in_two_processes_fire_each_of_300_due_schedules_exactly_once(server_env, tmp_path):
    membership = MembershipFactory(role="admin")
    flows = BlobFactory(org=membership.org, alias="flows-blob", type=BlobType.WORKFLOW)
    flows_revision = flows.revisions.get()
    content.file_put_json(flows_revision, "definitions/workflow/approve.json", approval_flow())
    schedules = BlobFactory(org=membership.org, type=BlobType.SCHEDULER)
    due = datetime(2031, 1, 1, 12, 0, tzinfo=UTC)
    documents = [_document(membership.user, membership.org.alias, str(flows_revision.id)) for _ in range(DUE_SCHEDULES)]
    ActiveSchedule.objects.bulk_create(
        ActiveSchedule(
            org=membership.org, blob=schedules, revision=schedules.revisions.get(), schedule_id=document["id"],
            document=document, next_fire_at=due,
        )
        for document in documents
    )  # fmt: skip

    # The executions' first steps go to a queue of this test's own, emptied at the end.
    queue = f"scheduler-ticks-{uuid.uuid4().hex[:8]}"
    env = {**server_env, "CELERY_QUEUE": queue, "CELERY_TASK_ALWAYS_EAGER": "false"}
    go = tmp_path / "go"
    now = (due + timedelta(seconds=3)).isoformat()
    logs = [tmp_path / f"tick{i}.log" for i in range(2)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", TICK_SCRIPT, str(go), now], cwd=settings.BASE_DIR, env=env,
            stdin=subprocess.DEVNULL, stdout=log.open("w"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        for log in logs
    ]
    try:
        go.touch()
        for process, log in zip(processes, logs):
            assert process.wait(timeout=600) == 0, log_tail(log)
        handled = [int(log.read_text().split("handled")[-1]) for log in logs]

        firings = Firing.objects.filter(scheduled_for=due)
        assert firings.count() == DUE_SCHEDULES
        assert not firings.values("schedule_id").annotate(n=Count("id")).filter(n__gt=1).exists()
        assert set(map(str, firings.values_list("schedule_id", flat=True))) == {d["id"] for d in documents}
        assert set(firings.values_list("status", flat=True)) == {"success"}
        execution_ids = {firing.result["execution_id"] for firing in firings}
        assert len(execution_ids) == DUE_SCHEDULES
        assert Execution.objects.filter(id__in=execution_ids).count() == DUE_SCHEDULES
        assert Execution.objects.count() == DUE_SCHEDULES  # none started twice, none orphaned
        assert Session.objects.filter(revision=flows_revision).count() == DUE_SCHEDULES  # a fresh one each
        # Both ticks did some of the work, and together exactly all of it.
        assert sum(handled) == DUE_SCHEDULES and min(handled) > 0, handled
        assert not ActiveSchedule.objects.filter(next_fire_at__lte=due + timedelta(days=1) - timedelta(seconds=1)).exists()

        # The management command is the same tick: nothing is left to fire at that moment.
        answer = subprocess.run(
            [sys.executable, "manage.py", "scheduler_tick", "--now", now], cwd=settings.BASE_DIR, env=env,
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert answer.returncode == 0, answer.stderr
        assert answer.stdout.strip() == "0"
        assert Firing.objects.count() == DUE_SCHEDULES
    finally:
        for process in processes:
            stop(process)
        with celery_app.connection_for_write() as connection:
            connection.default_channel.queue_purge(queue)


@pytest.fixture
def beat(server_env, celery_worker_process, tmp_path):
    """`celery -A blobhub beat` ticking every second, with a schedule file in a temp directory."""
    log = tmp_path / "beat.log"
    env = {**server_env, "SCHEDULER_TICK_SECONDS": "1"}
    command = [str(BIN / "celery"), "-A", "blobhub", "beat", "-s", str(tmp_path / "celerybeat-schedule"), "--loglevel", "INFO"]
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=settings.BASE_DIR, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(
            lambda: "Sending due task scheduler-tick" in log.read_text(errors="replace"),
            timeout=60, what="beat sending the scheduler tick", process=process, output=lambda: log_tail(log),
        )  # fmt: skip
        yield log
    finally:
        stop(process)


def test_real_beat_and_worker_fire_a_schedule_and_its_execution_completes(client_for, org, admin_user, beat):
    client = client_for(user=admin_user)

    def blob(alias, type):
        assert client.post(f"/v1/orgs/{org.alias}/blobs", {"alias": alias, "type": type}, format="json").status_code == 201
        return Channel(client, client.get(f"/v1/blobs/{org.alias}/{alias}/revisions").json()["revisions"][0]["id"])

    flows = blob("target-flows", "blobhub.compute.workflow")
    flows.command("create_definition", alias="approve", category="workflow")
    flows.command("upload_definition", alias="approve", definition=approval_flow())
    client.post(f"/v1/revisions/{flows.revision_id}/commit", {}, format="json")
    channel = blob("my-schedules", "blobhub.compute.scheduler")
    zone = ZoneInfo("America/New_York")
    when = (datetime.now(zone) + timedelta(seconds=6)).replace(microsecond=0)
    answer = channel.command(
        "create_schedule",
        repeat="one_time",
        invocation_time=when.replace(tzinfo=None).isoformat(),
        timezone="America/New_York",
        invocation_target={
            "target": {"org": org.alias, "blob": "target-flows", "revision": "default"},
            "workflow": {"definition": "approve"},
            "input_data": [{"alias": "order", "value": {"type": "json", "json": {"items": [{"price": 7}, {"price": 8}]}}}],
        },
    )
    assert answer.status_code == 200, answer.json()
    schedule_id = answer.json()["schedule"]["id"]
    operation = client.post(f"/v1/revisions/{channel.revision_id}/commit", {}, format="json").json()["operation_id"]
    wait_for(
        lambda: client.get(f"/v1/operations/{operation}").json()["operation"]["status"] == "completed",
        timeout=60, what="the scheduler blob's commit",
    )  # fmt: skip
    assert ActiveSchedule.objects.get(schedule_id=schedule_id).next_fire_at == when.astimezone(UTC)
    if datetime.now(UTC) < when:
        assert not Firing.objects.exists(), "nothing fires before its time"

    firing = wait_for(
        lambda: Firing.objects.filter(schedule_id=schedule_id).first(), timeout=60,
        what="the schedule firing", output=lambda: log_tail(beat),
    )  # fmt: skip
    assert firing.created_at >= when.astimezone(UTC)
    assert firing.status == "success", firing.result
    execution = wait_for(
        lambda: Execution.objects.filter(id=firing.result["execution_id"], status__in=Execution.FINAL).first(),
        timeout=60, what="the scheduled execution finishing",
    )  # fmt: skip
    assert execution.status == "completed"
    assert execution.output == {"approved": {"type": "integer", "integer": 15}}

    history = channel.query("list_executions", schedule_id=schedule_id, include_schedule=True).json()
    assert [(item["status"], item["result"]) for item in history["executions"]] == [
        ("success", {"execution_id": str(execution.id)})
    ]
    assert history["schedule"]["state"] == "completed"
    # It fired once: later ticks (one a second) leave it alone.
    ticks = beat.read_text().count("Sending due task scheduler-tick")
    wait_for(lambda: beat.read_text().count("Sending due task scheduler-tick") >= ticks + 3, timeout=30, what="more ticks")
    assert Firing.objects.filter(schedule_id=schedule_id).count() == 1
