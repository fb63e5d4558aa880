"""The tick's batches and its wake-up for a due time that comes before the beat's next tick."""

import time
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from blobs.models import Event
from scheduler import services, tasks
from scheduler.models import ActiveSchedule, Firing
from scheduler.tests.support import commit, create, target
from workflows.models import Execution, Session
from workflows.tests.support import Channel

pytestmark = pytest.mark.django_db(transaction=True)


def the_middle_of_three_daily(setup) -> ActiveSchedule:
    """Three schedules due daily at 09:00 UTC, committed; the second one's active row."""
    client, org, channel = setup
    for _ in range(3):
        create(channel, org, repeat="recurring_cron", cron_expression="0 9 * * *", timezone="UTC")
    commit(client, channel)
    return ActiveSchedule.objects.order_by("id")[1]


def test_a_schedule_that_fails_to_fire_is_left_due_and_the_rest_of_its_batch_fires(setup, settings):
    broken = the_middle_of_three_daily(setup)
    document = {**broken.document, "cron_expression": "not a cron"}  # a row damaged behind our back
    ActiveSchedule.objects.filter(id=broken.id).update(document=document)
    due = broken.next_fire_at

    assert services.tick(now=due + timedelta(seconds=1)) == 2

    assert Firing.objects.filter(scheduled_for=due, status="success").count() == 2
    assert not Firing.objects.filter(schedule_id=broken.schedule_id).exists()
    assert ActiveSchedule.objects.get(id=broken.id).next_fire_at == due  # the next tick tries it again
    assert ActiveSchedule.objects.exclude(id=broken.id).filter(next_fire_at__gt=due).count() == 2
    assert Execution.objects.count() == 2


def test_more_due_schedules_than_a_batch_all_fire_once(setup, settings):
    client, org, channel = setup
    count = services.BATCH_SIZE + 3
    for _ in range(count):
        create(channel, org, repeat="recurring_cron", cron_expression="0 9 * * *", timezone="UTC")
    commit(client, channel)
    due = ActiveSchedule.objects.first().next_fire_at

    assert services.tick(now=due) == count
    assert services.tick(now=due) == 0
    assert Firing.objects.filter(scheduled_for=due, status="success").count() == count
    assert Execution.objects.count() == count


def test_an_occurrence_recorded_already_is_not_fired_again_and_its_schedule_moves_on(setup, settings):
    fired_before = the_middle_of_three_daily(setup)
    due = fired_before.next_fire_at
    earlier = Firing.objects.create(
        org_id=fired_before.org_id,
        blob_id=fired_before.blob_id,
        schedule_id=fired_before.schedule_id,
        scheduled_for=due,
        invocation_target=fired_before.document["invocation_target"],
        status="success",
        result={},
    )

    assert services.tick(now=due + timedelta(seconds=1)) == 3

    assert list(Firing.objects.filter(schedule_id=fired_before.schedule_id)) == [earlier]
    assert Firing.objects.filter(scheduled_for=due, status="success").count() == 3
    assert Execution.objects.count() == 2
    assert ActiveSchedule.objects.filter(next_fire_at=due + timedelta(days=1)).count() == 3


def test_a_tick_wakes_up_for_a_schedule_due_before_the_next_beat(setup, settings, monkeypatch):
    client, org, channel = setup
    settings.SCHEDULER_TICK_SECONDS = 30
    due = (timezone.now() + timedelta(seconds=3)).replace(microsecond=0, tzinfo=UTC)
    create(channel, org, repeat="one_time", invocation_time=due.strftime("%Y-%m-%dT%H:%M:%S"), timezone="UTC")
    commit(client, channel)
    sent = []
    monkeypatch.setattr(tasks.tick, "apply_async", lambda **options: sent.append(options))

    assert tasks.tick() == 0
    assert tasks.tick() == 0  # one wake-up per due time, however many ticks see it
    assert [(item["eta"], item["kwargs"]) for item in sent] == [(due, {"wake_at": due.isoformat()})]

    time.sleep(max(0.0, (due - timezone.now()).total_seconds() - 0.5))  # the broker may hand it over early
    assert tasks.tick(**sent[0]["kwargs"]) == 1
    assert Firing.objects.get().scheduled_for == due
    assert datetime.now(UTC) >= due


def test_no_wake_up_when_the_beat_comes_first(setup, settings, monkeypatch):
    client, org, channel = setup
    settings.SCHEDULER_TICK_SECONDS = 5
    later = (timezone.now() + timedelta(minutes=10)).replace(microsecond=0)
    create(channel, org, repeat="one_time", invocation_time=later.strftime("%Y-%m-%dT%H:%M:%S"), timezone="UTC")
    commit(client, channel)
    sent = []
    monkeypatch.setattr(tasks.tick, "apply_async", lambda **options: sent.append(options))

    assert tasks.tick() == 0
    assert sent == []


def test_a_firing_the_engine_refuses_is_an_invocation_error_and_its_batch_goes_on(setup, settings):
    client, org, channel = setup
    settings.LIMITS = {"workflow.executions_per_session": 1}
    flows = Channel(client, client.get(f"/v1/blobs/{org.alias}/target-flows/revisions").json()["revisions"][0]["id"])
    assert flows.command("create_session", alias="full-session").status_code == 200
    ran = flows.command("create_execution", target={"session": "full-session"}, workflow={"definition": "approve"},
                        input_data=target(org)["input_data"])  # fmt: skip
    assert ran.status_code == 200, ran.json()  # the session now holds its one execution
    full = channel.command(
        "create_schedule", invocation_target=target(org, session="full-session"),
        repeat="recurring_cron", cron_expression="0 9 * * *", timezone="UTC",
    ).json()["schedule"]  # fmt: skip
    create(channel, org, repeat="recurring_cron", cron_expression="0 9 * * *", timezone="UTC")  # a fresh session each
    commit(client, channel)
    due = ActiveSchedule.objects.first().next_fire_at

    assert services.tick(now=due) == 2

    refused = Firing.objects.get(schedule_id=full["id"])
    assert refused.status == "invocation_error" and refused.result["error"]["code"] == "limit_exceeded"
    assert Firing.objects.exclude(schedule_id=full["id"]).get().status == "success"
    assert Execution.objects.count() == 2  # the one run by hand and the fresh session's


def test_a_refused_firing_leaves_nothing_of_its_execution_behind(setup, settings):
    client, org, channel = setup
    settings.LIMITS = {"workflow.executions_per_session": 0}  # the fresh session is made, then refused
    create(channel, org, repeat="recurring_cron", cron_expression="0 9 * * *", timezone="UTC")
    commit(client, channel)
    schedule = ActiveSchedule.objects.get()
    due = schedule.next_fire_at

    assert services.tick(now=due) == 1

    firing = Firing.objects.get()
    assert firing.status == "invocation_error" and firing.result["error"]["code"] == "limit_exceeded"
    assert not Session.objects.exists() and not Execution.objects.exists()
    assert not Event.objects.filter(stream__startswith="session:").exists()
    [announced] = Event.objects.filter(stream=f"blob:{schedule.blob_id}", type="schedule.fired")
    assert announced.data["status"] == "invocation_error" and announced.data["firing_id"] == str(firing.id)
    assert ActiveSchedule.objects.get().next_fire_at > due


def test_an_engine_crash_is_recorded_as_an_internal_invocation_error_and_logged_once(setup, monkeypatch, caplog):
    client, org, channel = setup
    create(channel, org, repeat="recurring_cron", cron_expression="0 9 * * *", timezone="UTC")
    create(channel, org, repeat="recurring_cron", cron_expression="0 9 * * *", timezone="UTC")
    commit(client, channel)
    due = ActiveSchedule.objects.first().next_fire_at
    from workflows.services import executions

    def crash(**kwargs):
        raise RuntimeError("engine bug")

    monkeypatch.setattr(executions, "execution_create", crash)

    assert services.tick(now=due) == 2

    assert {(f.status, f.result["error"]["code"]) for f in Firing.objects.all()} == {("invocation_error", "internal_error")}
    assert not Session.objects.exists() and not Execution.objects.exists()
    crashes = [r for r in caplog.records if r.getMessage().startswith("starting the execution of schedule")]
    assert len(crashes) == 2 and all(r.exc_info for r in crashes)  # once per schedule, with its traceback


def test_a_schedule_stuck_due_does_not_hide_the_next_due_time_from_the_wake_up(setup, settings, monkeypatch):
    client, org, channel = setup
    settings.SCHEDULER_TICK_SECONDS = 30
    due = (timezone.now() + timedelta(seconds=10)).replace(microsecond=0, tzinfo=UTC)
    create(channel, org, repeat="one_time", invocation_time=due.strftime("%Y-%m-%dT%H:%M:%S"), timezone="UTC")
    create(channel, org, repeat="recurring_cron", cron_expression="0 9 * * *", timezone="UTC")
    commit(client, channel)
    stuck = ActiveSchedule.objects.exclude(next_fire_at=due).get()
    damaged = {**stuck.document, "cron_expression": "not a cron"}  # fails every tick, stays due
    ActiveSchedule.objects.filter(id=stuck.id).update(document=damaged, next_fire_at=timezone.now() - timedelta(minutes=1))
    sent = []
    monkeypatch.setattr(tasks.tick, "apply_async", lambda **options: sent.append(options))

    assert tasks.tick() == 0

    assert [item["eta"] for item in sent] == [due]
