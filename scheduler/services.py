"""Activation of a default revision's schedules, and the tick that fires them (DESIGN §7)."""

import json
import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from blobhub.api.errors import AccessDenied, ApplicationError
from blobs import events, store
from blobs.models import Blob, ManifestEntry, Revision
from scheduler import documents, timing
from scheduler.models import ActiveSchedule, Firing

logger = logging.getLogger("blobhub.scheduler")

MAX_RECORDED_MISSES = 100
TICK_BATCH = 500


def schedule_path(schedule_id) -> str:
    return f"schedules/{schedule_id}.json"


def revision_schedules(revision: Revision) -> list[dict]:
    entries = ManifestEntry.objects.filter(revision=revision, path__startswith="schedules/").select_related("object")
    return [json.loads(store.read_bytes(entry.object)) for entry in entries.order_by("path")]


def first_fire(document: dict, after: datetime) -> datetime | None:
    """When a schedule fires first at or after activation time `after`."""
    if not document.get("enabled", True):
        return None
    tz = timing.zone(document["timezone"])
    if document["repeat"] == "one_time":
        return timing.one_time_fire(document["invocation_time"], tz)
    start = documents.start_date(document)
    moment = timing.next_cron_fire(timing.parse_cron(document["cron_expression"]), tz, max(after, start or after) - timedelta(microseconds=1))
    return _within_window(document, moment)


def _within_window(document: dict, moment: datetime | None) -> datetime | None:
    end = documents.end_date(document)
    return None if moment is None or (end is not None and moment > end) else moment


def activate(blob: Blob, revision: Revision) -> None:
    """Make the revision's schedules the blob's active set (in the caller's transaction)."""
    now = timezone.now()
    previous = {row.schedule_id: row for row in ActiveSchedule.objects.select_for_update().filter(blob=blob)}
    keep = set()
    for document in revision_schedules(revision):
        schedule_id = document["id"]
        keep.add(schedule_id)
        prior = previous.get(_uuid(schedule_id))
        completed = document.get("repeat") == "one_time" and (
            (prior is not None and prior.state == ActiveSchedule.State.COMPLETED)
            or Firing.objects.filter(schedule_id=schedule_id).exists()
        )
        state = ActiveSchedule.State.COMPLETED if completed else ActiveSchedule.State.ACTIVE
        next_fire = None if completed else first_fire(document, now)
        ActiveSchedule.objects.update_or_create(
            blob=blob,
            schedule_id=schedule_id,
            defaults={
                "org_id": blob.org_id,
                "revision": revision,
                "document": document,
                "state": state,
                "next_fire_at": next_fire,
                "last_execution_id": prior.last_execution_id if prior else None,
            },
        )
    ActiveSchedule.objects.filter(blob=blob).exclude(schedule_id__in=[_uuid(s) for s in keep]).delete()


def _uuid(value):
    import uuid

    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def tick(now: datetime | None = None) -> int:
    """Fire every due schedule once; returns how many firings were handled.

    Due rows are locked with SKIP LOCKED, so concurrent ticks share the work; the unique
    (schedule, scheduled_for) firing record makes a second firing impossible anyway.
    The work is proportional to the due schedules: one indexed range on next_fire_at.
    """
    now = now or timezone.now()
    handled = 0
    while True:
        with transaction.atomic():
            due = list(
                ActiveSchedule.objects.select_for_update(skip_locked=True)
                .filter(next_fire_at__lte=now)
                .order_by("next_fire_at")[:TICK_BATCH]
            )
            for schedule in due:
                _fire(schedule, now)
        handled += len(due)
        if len(due) < TICK_BATCH:
            return handled


def _fire(schedule: ActiveSchedule, now: datetime) -> None:
    document = schedule.document
    scheduled_for = schedule.next_fire_at
    following, missed = _following(document, scheduled_for, now)
    grace = timedelta(seconds=settings.SCHEDULER_GRACE_SECONDS)
    for moment in missed:
        _record(schedule, moment, Firing.Status.SKIPPED, {"reason": "missed: the scheduler was not running at that time"})
    lateness = now - scheduled_for
    if lateness > grace:
        _record(schedule, scheduled_for, Firing.Status.SKIPPED, {
            "reason": f"missed: {lateness.total_seconds():.0f} s late, past the grace of {grace.total_seconds():.0f} s",
        })
    elif document.get("overlap") == "skip" and _previous_running(schedule):
        _record(schedule, scheduled_for, Firing.Status.SKIPPED, {"reason": "the previous execution is still running"})
    else:
        _invoke(schedule, scheduled_for)
    state = ActiveSchedule.State.COMPLETED if document["repeat"] == "one_time" else schedule.state
    ActiveSchedule.objects.filter(id=schedule.id).update(next_fire_at=following, state=state, last_execution_id=schedule.last_execution_id)


def _following(document: dict, scheduled_for: datetime, now: datetime) -> tuple[datetime | None, list[datetime]]:
    """The next firing after `now`, and the occurrences strictly between that were missed."""
    if document["repeat"] == "one_time":
        return None, []
    spec, tz = timing.parse_cron(document["cron_expression"]), timing.zone(document["timezone"])
    missed: list[datetime] = []
    moment = timing.next_cron_fire(spec, tz, scheduled_for)
    while moment is not None and moment <= now:
        if len(missed) < MAX_RECORDED_MISSES:
            missed.append(moment)
        moment = timing.next_cron_fire(spec, tz, moment if len(missed) < MAX_RECORDED_MISSES else now)
    return _within_window(document, moment), [m for m in missed if _within_window(document, m)]


def _previous_running(schedule: ActiveSchedule) -> bool:
    from workflows.models import Execution

    return bool(schedule.last_execution_id) and Execution.objects.filter(id=schedule.last_execution_id).exclude(
        status__in=Execution.FINAL
    ).exists()


def _invoke(schedule: ActiveSchedule, scheduled_for: datetime) -> None:
    """Claim the firing, then start the execution on behalf of the schedule's owner."""
    firing = _claim(schedule, scheduled_for)
    if firing is None:
        return  # fired already (another tick, a retried one): exactly once
    status, result = _start_execution(schedule)
    Firing.objects.filter(id=firing.id).update(status=status, result=result)
    _announce(schedule, firing, status, result)


def _start_execution(schedule: ActiveSchedule) -> tuple[str, dict]:
    from workflows.services.executions import execution_create
    from workflows.services.sessions import session_create, session_get

    document = schedule.document
    target = document["invocation_target"]
    principal = documents.owner_of(document)
    try:
        with transaction.atomic():
            if principal.user is None:
                raise AccessDenied()
            revision = documents.target_revision(principal, target)
            session_ref = target["target"].get("session")
            session = (
                session_get(revision, session_ref)
                if session_ref
                else session_create(principal=principal, revision=revision, alias=None, description=f"schedule {schedule.schedule_id}")
            )
            execution = execution_create(
                principal=principal,
                revision=revision,
                session=session,
                workflow=target["workflow"],
                input_data=target.get("input_data"),
            )
    except AccessDenied as exc:
        return Firing.Status.ACCESS_ERROR, {"error": {"code": exc.code, "message": exc.message}}
    except ApplicationError as exc:
        return Firing.Status.INVOCATION_ERROR, {"error": {"code": exc.code, "message": exc.message}}
    schedule.last_execution_id = execution.id
    return Firing.Status.SUCCESS, {"execution_id": str(execution.id)}


def _claim(schedule: ActiveSchedule, scheduled_for: datetime, status: str = Firing.Status.SUCCESS, result=None) -> Firing | None:
    try:
        with transaction.atomic():
            return Firing.objects.create(
                org_id=schedule.org_id,
                blob_id=schedule.blob_id,
                schedule_id=schedule.schedule_id,
                scheduled_for=scheduled_for,
                invocation_target=schedule.document["invocation_target"],
                status=status,
                result=result or {},
            )
    except IntegrityError:
        return None


def _record(schedule: ActiveSchedule, scheduled_for: datetime, status: str, result: dict) -> None:
    firing = _claim(schedule, scheduled_for, status, result)
    if firing is not None:
        _announce(schedule, firing, status, result)


def _announce(schedule: ActiveSchedule, firing: Firing, status: str, result: dict) -> None:
    events.record(
        org_id=schedule.org_id,
        stream=events.stream_name("blob", schedule.blob_id),
        type="schedule.fired",
        data={"schedule_id": str(schedule.schedule_id), "firing_id": str(firing.id), "status": status, **result},
    )
