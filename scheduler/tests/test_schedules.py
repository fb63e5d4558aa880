"""Schedules as a user drives them: write, commit, fire on a controllable clock, history."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from rest_framework.test import APIClient
from zoneinfo import ZoneInfo

from blobs.models import Revision
from blobs.services import content
from orgs.models import Membership
from orgs.tests.factories import OrganizationFactory, make_api_key
from scheduler import services
from scheduler.models import ActiveSchedule, Firing
from scheduler.tests.support import commit, create, target
from workflows.models import Execution
from workflows.tests.support import Channel

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_cron_and_a_one_time_schedule_fire_on_time_and_keep_history(setup):
    client, org, channel = setup
    cron = create(channel, org, repeat="recurring_cron", cron_expression="0 9 * * *", timezone="Europe/Paris")
    once = create(channel, org, repeat="one_time", invocation_time="2030-01-15T08:00:00", timezone="America/New_York")
    assert cron["state"] == "active" and cron["enabled"] is True and "_owner" not in cron
    commit(client, channel)

    active = {str(row.schedule_id): row for row in ActiveSchedule.objects.all()}
    assert set(active) == {cron["id"], once["id"]}
    assert active[once["id"]].next_fire_at == datetime(2030, 1, 15, 13, 0, tzinfo=UTC)

    paris_nine = active[cron["id"]].next_fire_at
    assert paris_nine.astimezone(UTC).hour in (7, 8)  # 09:00 in Paris, summer or winter
    assert services.tick(now=paris_nine + timedelta(seconds=2)) == 1
    firing = Firing.objects.get(schedule_id=cron["id"])
    assert firing.status == "success"
    execution = Execution.objects.get(id=firing.result["execution_id"])
    assert execution.status == "completed"
    following = ActiveSchedule.objects.get(schedule_id=cron["id"]).next_fire_at
    assert following > paris_nine and following.astimezone(ZoneInfo("Europe/Paris")).hour == 9

    assert services.tick(now=datetime(2030, 1, 15, 13, 0, 5, tzinfo=UTC)) >= 1
    assert Firing.objects.get(schedule_id=once["id"]).status == "success"
    assert channel.query("get_schedule", schedule_id=once["id"]).json()["schedule"]["state"] == "completed"
    history = channel.query("list_executions", schedule_id=once["id"], include_schedule=True).json()
    assert [item["status"] for item in history["executions"]] == ["success"]
    assert history["schedule"]["id"] == once["id"]
    assert history["executions"][0]["result"]["execution_id"]

    draft = client.post(f"/v1/blobs/{org.alias}/my-schedules/revisions", {"comment": "edit"}, format="json").json()["revision_id"]
    refused = Channel(client, draft).command("update_schedule", schedule_id=once["id"], description="again")
    assert refused.status_code == 409 and refused.json()["error"] == "schedule_completed"


def test_a_tick_fires_each_due_schedule_once_even_when_run_twice(setup):
    client, org, channel = setup
    create(channel, org, repeat="recurring_cron", cron_expression="*/5 * * * *", timezone="UTC")
    commit(client, channel)
    due = ActiveSchedule.objects.get().next_fire_at
    assert services.tick(now=due) == 1
    ActiveSchedule.objects.update(next_fire_at=due)  # as if a second tick saw the same row
    services.tick(now=due)
    assert Firing.objects.filter(scheduled_for=due).count() == 1


def test_after_downtime_a_late_firing_is_skipped_and_there_is_no_burst(setup, settings):
    client, org, channel = setup
    settings.SCHEDULER_GRACE_SECONDS = 60
    create(channel, org, repeat="recurring_cron", cron_expression="0 * * * *", timezone="UTC")
    commit(client, channel)
    first = ActiveSchedule.objects.get().next_fire_at
    services.tick(now=first + timedelta(hours=5, minutes=10))
    statuses = list(Firing.objects.order_by("scheduled_for").values_list("status", flat=True))
    assert statuses == ["skipped"] * 6
    assert Execution.objects.count() == 0
    reasons = Firing.objects.values_list("result", flat=True)
    assert all("missed" in reason["reason"] for reason in reasons)
    assert ActiveSchedule.objects.get().next_fire_at == first + timedelta(hours=6)


def test_a_firing_within_the_grace_window_fires(setup):
    client, org, channel = setup
    create(channel, org, repeat="recurring_cron", cron_expression="0 * * * *", timezone="UTC")
    commit(client, channel)
    first = ActiveSchedule.objects.get().next_fire_at
    services.tick(now=first + timedelta(seconds=45))
    assert Firing.objects.get().status == "success"


def test_an_owner_who_lost_access_records_access_error(setup, admin_user):
    client, org, channel = setup
    schedule = create(channel, org, repeat="recurring_cron", cron_expression="0 * * * *", timezone="UTC")
    commit(client, channel)
    Membership.objects.filter(user=admin_user).delete()
    services.tick(now=ActiveSchedule.objects.get().next_fire_at)
    firing = Firing.objects.get(schedule_id=schedule["id"])
    assert firing.status == "access_error" and Execution.objects.count() == 0


def test_disabled_and_out_of_window_schedules_do_not_fire(setup):
    client, org, channel = setup
    create(channel, org, repeat="recurring_cron", cron_expression="* * * * *", timezone="UTC", enabled=False)
    create(channel, org, repeat="recurring_cron", cron_expression="* * * * *", timezone="UTC",
           start_date="2020-01-01T00:00:00Z", end_date="2020-02-01T00:00:00Z")
    commit(client, channel)
    assert not ActiveSchedule.objects.filter(next_fire_at__isnull=False).exists()
    assert services.tick(now=datetime(2031, 1, 1, tzinfo=UTC)) == 0


def test_rolling_back_switches_the_active_set(setup):
    client, org, channel = setup
    first = create(channel, org, repeat="recurring_cron", cron_expression="0 * * * *", timezone="UTC")
    commit(client, channel)
    first_revision = channel.revision_id
    draft = client.post(f"/v1/blobs/{org.alias}/my-schedules/revisions", {"comment": "more"}, format="json").json()["revision_id"]
    second_channel = Channel(client, draft)
    second = create(second_channel, org, repeat="recurring_cron", cron_expression="30 * * * *", timezone="UTC")
    second_channel.command("delete_schedule", schedule_id=first["id"])
    commit(client, second_channel)
    assert {str(s) for s in ActiveSchedule.objects.values_list("schedule_id", flat=True)} == {second["id"]}
    client.patch(f"/v1/blobs/{org.alias}/my-schedules", {"default_revision_id": first_revision}, format="json")
    assert {str(s) for s in ActiveSchedule.objects.values_list("schedule_id", flat=True)} == {first["id"]}


def test_overlap_skip_skips_while_the_previous_execution_runs(setup):
    client, org, channel = setup
    create(channel, org, repeat="recurring_cron", cron_expression="* * * * *", timezone="UTC", overlap="skip")
    commit(client, channel)
    row = ActiveSchedule.objects.get()
    services.tick(now=row.next_fire_at)
    execution_id = Firing.objects.get().result["execution_id"]
    Execution.objects.filter(id=execution_id).update(status="running")
    row.refresh_from_db()
    services.tick(now=row.next_fire_at)
    statuses = list(Firing.objects.order_by("scheduled_for").values_list("status", flat=True))
    assert statuses == ["success", "skipped"]


def test_bad_schedules_are_refused_at_write(setup):
    client, org, channel = setup
    cases = [
        ({"repeat": "recurring_cron", "cron_expression": "61 * * * *", "timezone": "UTC"}, "cron_expression"),
        ({"repeat": "recurring_cron", "cron_expression": "0 * * * *", "timezone": "Mars/Olympus"}, "timezone"),
        ({"repeat": "one_time", "timezone": "UTC"}, "invocation_time"),
        ({"repeat": "recurring_cron", "cron_expression": "0 * * * *", "timezone": "UTC",
          "start_date": "2030-01-02T00:00:00Z", "end_date": "2030-01-01T00:00:00Z"}, "end_date"),
        ({"repeat": "recurring_cron", "cron_expression": "0 12 * * 1 2027", "timezone": "UTC"}, "cron_expression"),
    ]
    # Times outside the years 1970-2199 (AWS cron's): near datetime's limits they would overflow.
    far = [
        ({"repeat": "one_time", "invocation_time": "0001-01-01T00:00:00", "timezone": "Asia/Tokyo"}, "invocation_time"),
        ({"repeat": "one_time", "invocation_time": "9999-12-31T23:59:59", "timezone": "America/New_York"},
         "invocation_time"),
        ({"repeat": "recurring_cron", "cron_expression": "0 9 * * *", "timezone": "UTC",
          "start_date": "9999-12-30T00:00:00Z"}, "start_date"),
        ({"repeat": "recurring_cron", "cron_expression": "0 9 * * *", "timezone": "UTC",
          "end_date": "1969-12-31T23:59:59Z"}, "end_date"),
    ]
    for fields, path in cases + far:
        answer = channel.command("create_schedule", invocation_target=target(org), **fields)
        assert answer.status_code == 400, fields
        assert answer.json()["error"] == "invalid_request_body"
        assert [item["path"] for item in answer.json()["details"]] == [path]
    unknown = channel.command("create_schedule", invocation_target={**target(org), "workflow": {"definition": "nope"}},
                              repeat="recurring_cron", cron_expression="0 * * * *", timezone="UTC")
    assert unknown.status_code == 400
    aws = channel.command("create_schedule", invocation_target=target(org), repeat="recurring_cron",
                          cron_expression="0 12 ? * 2-6 2030", timezone="UTC")
    assert aws.status_code == 200
    assert channel.query("list_schedules").json()["schedules"][0]["cron_expression"] == "0 12 ? * 2-6 2030"


def test_commit_refuses_a_schedule_whose_target_no_longer_resolves(setup):
    client, org, channel = setup
    create(channel, org, repeat="recurring_cron", cron_expression="0 * * * *", timezone="UTC")
    renamed = client.patch(f"/v1/blobs/{org.alias}/target-flows", {"alias": "renamed-flows"}, format="json")
    assert renamed.status_code == 200, renamed.json()
    operation_id = client.post(f"/v1/revisions/{channel.revision_id}/commit", {}, format="json").json()["operation_id"]
    operation = client.get(f"/v1/operations/{operation_id}").json()["operation"]
    assert operation["status"] == "failed"
    assert operation["error"]["code"] == "validation_failed"
    assert any(item["path"].endswith(".invocation_target") for item in operation["error"]["details"])
    assert not ActiveSchedule.objects.exists()


def test_a_cron_that_names_no_real_date_is_refused(setup):
    client, org, channel = setup
    answer = channel.command("create_schedule", invocation_target=target(org), repeat="recurring_cron",
                             cron_expression="0 0 30 2 *", timezone="UTC")
    assert answer.status_code == 400
    assert [item["path"] for item in answer.json()["details"]] == ["cron_expression"]


def test_a_one_time_schedule_fires_once_and_completes(setup):
    client, org, channel = setup
    once = create(channel, org, repeat="one_time", invocation_time="2030-03-10T02:30:00", timezone="America/New_York")
    commit(client, channel)
    due = ActiveSchedule.objects.get().next_fire_at
    assert due == datetime(2030, 3, 10, 7, 0, tzinfo=UTC)  # 02:30 does not exist that night: 03:00 EDT
    assert services.tick(now=due + timedelta(seconds=1)) == 1
    assert services.tick(now=due + timedelta(hours=1)) == 0
    firing = Firing.objects.get(schedule_id=once["id"])
    assert firing.status == "success"
    assert Execution.objects.get(id=firing.result["execution_id"]).status == "completed"
    assert channel.query("get_schedule", schedule_id=once["id"]).json()["schedule"]["state"] == "completed"
    assert ActiveSchedule.objects.get().next_fire_at is None


def test_commit_refuses_a_draft_schedule_whose_start_date_is_out_of_range(setup):
    """A document written before the dates were bounded fails the commit; it does not hang it."""
    client, org, channel = setup
    schedule = create(channel, org, repeat="recurring_cron", cron_expression="0 9 * * *", timezone="UTC")
    revision, path = Revision.objects.get(id=channel.revision_id), services.schedule_path(schedule["id"])
    document = json.loads(content.file_read(revision, path))
    content.file_put_json(revision, path, {**document, "start_date": "9999-12-30T00:00:00Z"})
    operation_id = client.post(f"/v1/revisions/{channel.revision_id}/commit", {}, format="json").json()["operation_id"]
    operation = client.get(f"/v1/operations/{operation_id}").json()["operation"]
    assert (operation["status"], operation["error"]["code"]) == ("failed", "validation_failed")
    assert [item["path"] for item in operation["error"]["details"]] == [f"schedules.{schedule['id']}.start_date"]
    assert client.get(f"/v1/revisions/{channel.revision_id}").json()["revision"]["status"] == "failed"


def test_public_readers_read_schedules_but_not_the_owners_firing_history(setup, client_for):
    client, org, _ = setup
    made = client.post(f"/v1/orgs/{org.alias}/blobs",
                       {"alias": "public-schedules", "type": "blobhub.compute.scheduler", "visibility": "public"},
                       format="json")
    assert made.status_code == 201, made.json()
    revision_id = client.get(f"/v1/blobs/{org.alias}/public-schedules/revisions").json()["revisions"][0]["id"]
    owner = Channel(client, revision_id)
    schedule = create(owner, org, repeat="recurring_cron", cron_expression="*/5 * * * *", timezone="UTC")
    commit(client, owner)
    assert client.post(f"/v1/revisions/{revision_id}/snapshot", {}, format="json").status_code == 200
    services.tick(now=ActiveSchedule.objects.get().next_fire_at)
    assert len(owner.query("list_executions", schedule_id=schedule["id"]).json()["executions"]) == 1

    anonymous = client_for(token=APIClient().get("/v1/auth/core/anonymous").json()["access_token"])
    for reader in (anonymous, client_for(key=make_api_key(OrganizationFactory(), "write")[1])):
        published = Channel(reader, revision_id)
        assert published.query("get_schedule", schedule_id=schedule["id"]).status_code == 200
        history = published.query("list_executions", schedule_id=schedule["id"])
        assert history.status_code == 403 and history.json()["error"] == "access_denied"
        assert str(Firing.objects.get().id) not in history.content.decode()


def test_an_absent_schedule_is_a_403_as_any_absent_resource(setup):
    client, org, channel = setup
    absent = "7d4f6a9e-0000-4000-8000-000000000000"
    for answer in (channel.query("get_schedule", schedule_id=absent), channel.command("delete_schedule", schedule_id=absent)):
        assert answer.status_code == 403 and answer.json()["error"] == "access_denied"
