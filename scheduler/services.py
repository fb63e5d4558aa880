"""Activation of a default revision's schedules, and the tick that fires them (DESIGN §7)."""

import json
import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from blobhub.api.errors import AccessDenied, ApplicationError
from blobs import events, store
from blobs.models import Blob, ManifestEntry, Revision
from scheduler import documents, timing
from scheduler.models import ActiveSchedule, Firing

logger = logging.getLogger("blobhub.scheduler")

MAX_RECORDED_MISSES = 100
BATCH_SIZE = 20  # due schedules a tick claims and fires per transaction


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
    """Fire every due schedule once; returns how many due schedules were handled.

    Due schedules are claimed a batch at a time: their rows are locked with SKIP LOCKED (so
    concurrent ticks share the work and never wait on each other). A firing is recorded
    under the unique (schedule, scheduled_for) constraint (so a second firing is impossible
    anyway), its execution started and its next fire time stored (the batch's firings in one
    INSERT, their next fire times in one UPDATE), and the batch's commit makes all of that
    visible at once. A batch is first fired straight; should any of its
    schedules fail or be refused, nothing of it is kept and it is fired again with a
    savepoint per schedule, so that one that fails is left for the next tick without
    undoing the others. Batches are short (BATCH_SIZE): each execution is enqueued soon
    after it is fired, and the scheduler blob's event counter, which every firing announces
    on, is locked only from the batch's announcements to its commit. The work is
    proportional to the due schedules: one indexed range on next_fire_at.
    """
    now = now or timezone.now()
    handled = 0
    memo = _Memo()
    failed: list[int] = []  # rows that raised: left for the next tick, not retried in this one
    while True:
        try:
            fired = _fire_batch(now, memo, failed, careful=False)
        except Exception:
            logger.debug("a schedule of the batch failed or was refused; firing it schedule by schedule", exc_info=True)
            fired = _fire_batch(now, memo, failed, careful=True)
        if fired is None:
            return handled
        handled += fired


def _fire_batch(now: datetime, memo: "_Memo", failed: list[int], careful: bool) -> int | None:
    """Fire the next batch of due schedules in one transaction; how many, None when none is due.

    Without `careful` a schedule that fails or is refused raises, and the whole batch rolls
    back with it; the batch's firings are then inserted in one statement and its schedules'
    next fire times stored in another. With `careful`, each schedule is fired and written
    under a savepoint of its own, and one that fails is logged and added to `failed`. The
    batch's events (its executions' and its announcements) are written together at its
    end; a schedule whose savepoint rolls back takes its own events with it.
    """
    with transaction.atomic(), events.batched():
        batch = _next_due(now, failed)
        if not batch:
            return None
        recorded = _recorded(batch)
        done: list[tuple[ActiveSchedule, list]] = []
        for schedule in batch:
            if not careful:
                done.append((schedule, _fire(schedule, now, recorded, memo)))
                continue
            try:
                with transaction.atomic():
                    fired = _fire_once(schedule, now, recorded, memo)
                    _save([(schedule, fired)])
            except Exception:
                logger.exception("firing schedule %s failed; the next tick retries it", schedule.schedule_id)
                failed.append(schedule.id)
                continue
            done.append((schedule, fired))
        if not careful:
            _save(done)
        for schedule, fired in done:
            for firing, status, result in fired:
                _announce(schedule, firing, status, result)
        return len(done)


def _recorded(batch: list[ActiveSchedule]) -> set[tuple]:
    """The (schedule, time) pairs of the batch's firings recorded already, from its earliest due time on.

    A tick records a firing and moves its schedule's next fire time in one transaction, so
    this is normally empty; it keeps an occurrence recorded anyway from being fired again.
    """
    earliest = min(schedule.next_fire_at for schedule in batch)
    pairs = Firing.objects.filter(schedule_id__in=[s.schedule_id for s in batch], scheduled_for__gte=earliest)
    return set(pairs.values_list("schedule_id", "scheduled_for"))


def _save(done: list[tuple[ActiveSchedule, list]]) -> None:
    """Insert the firings and store the next fire times (as `_fire` left them on the rows)."""
    Firing.objects.bulk_create([firing for _, fired in done for firing, _, _ in fired])
    ActiveSchedule.objects.bulk_update([schedule for schedule, _ in done], ["next_fire_at", "state", "last_execution_id"])


def due_count(now: datetime | None = None, limit: int = 10_000) -> int:
    """How many schedules are due (at most `limit`): an index range, for spreading the work."""
    now = now or timezone.now()
    return ActiveSchedule.objects.filter(next_fire_at__lte=now).values("id")[:limit].count()


def next_due_at(after: datetime) -> datetime | None:
    """When the soonest schedule due after `after` is due (an index range on next_fire_at).

    Schedules due already are the ticks' business; one left due because it fails to fire
    must not hide the ones coming up.
    """
    upcoming = ActiveSchedule.objects.filter(next_fire_at__gt=after).order_by("next_fire_at")
    return upcoming.values_list("next_fire_at", flat=True).first()


def _next_due(now: datetime, failed: list[int]) -> list[ActiveSchedule]:
    due = ActiveSchedule.objects.select_for_update(skip_locked=True).filter(next_fire_at__lte=now)
    if failed:
        due = due.exclude(id__in=failed)
    return list(due.order_by("next_fire_at")[:BATCH_SIZE])


class _Memo:
    """Per tick: the owner's principal, the target revision and its workflow definition,
    resolved and authorized once per owner and target.

    Many schedules share an owner and a target; resolving them (a handful of queries each)
    once per tick keeps a tick's cost per firing down. Access is still checked on every
    tick: an owner who loses it gets `access_error` from the next tick on.
    """

    def __init__(self):
        self.principals: dict[str, object] = {}
        self.revisions: dict[tuple, object] = {}
        self.workflows: dict[tuple, object] = {}

    def principal(self, document: dict):
        key = json.dumps(document.get("_owner") or {}, sort_keys=True)
        if key not in self.principals:
            self.principals[key] = documents.owner_of(document)
        return self.principals[key]

    def revision(self, principal, target: dict):
        where = target["target"]
        key = (id(principal), where["org"], where["blob"], where["revision"])
        if key not in self.revisions:
            self.revisions[key] = documents.target_revision(principal, target)  # failures are not kept
        return self.revisions[key]

    def workflow(self, principal, revision, reference: dict):
        """The definition `reference` names in `revision`, checked runnable by the principal."""
        from workflows.services.executions import workflow_for

        key = (id(principal), revision.id, json.dumps(reference, sort_keys=True))
        if key not in self.workflows:
            self.workflows[key] = workflow_for(principal, revision, reference)  # failures are not kept
        return self.workflows[key]


class _Refused(Exception):
    """The workflow engine would not start a schedule's execution: the firing's status and result."""

    def __init__(self, status: str, result: dict, crashed: bool = False):
        super().__init__(status)
        self.outcome, self.crashed = (status, result), crashed


def _fire_once(schedule: ActiveSchedule, now: datetime, recorded: set, memo: "_Memo") -> list[tuple[Firing, str, dict]]:
    """`_fire` under a savepoint. An execution the engine refuses leaves nothing behind: the
    savepoint takes back what it wrote, and the firing is recorded with the refusal under
    a second one."""
    try:
        with transaction.atomic(), events.batched():
            return _fire(schedule, now, recorded, memo)
    except _Refused as refused:
        if refused.crashed:  # logged here, once, not in a batch's first try too
            logger.error("starting the execution of schedule %s failed", schedule.schedule_id, exc_info=refused.__cause__)
        with transaction.atomic(), events.batched():
            return _fire(schedule, now, recorded, memo, refused=refused)


def _fire(
    schedule: ActiveSchedule, now: datetime, recorded: set, memo: "_Memo | None" = None, refused: _Refused | None = None
) -> list[tuple[Firing, str, dict]]:
    """Start the schedule's execution for its latest due occurrence; its firings, to be
    inserted (`_save`), and its next fire time, set on the row (not yet stored).

    Earlier occurrences, and one already in `recorded`, start nothing. With `refused`, the
    latest occurrence gets that outcome instead (raises `_Refused` when the engine refuses
    to start it)."""
    document = schedule.document
    moments, following, unrecorded = _occurrences(document, schedule.next_fire_at, now)
    grace = timedelta(seconds=settings.SCHEDULER_GRACE_SECONDS)
    *missed, latest = moments
    fired: list[tuple[Firing, str, dict]] = []

    def skip(moment: datetime, reason: str) -> None:
        if (schedule.schedule_id, moment) not in recorded:
            result = {"reason": reason}
            fired.append((_new_firing(schedule, moment, Firing.Status.SKIPPED, result), Firing.Status.SKIPPED, result))

    for index, moment in enumerate(missed):
        reason = "missed: the scheduler was not running at that time"
        if unrecorded and index == len(missed) - 1:
            reason += f"; the occurrences after it up to {latest.isoformat()} were missed too, not recorded one by one"
        skip(moment, reason)
    lateness = now - latest
    if lateness > grace:
        skip(latest, f"missed: {lateness.total_seconds():.0f} s late, past the grace of {grace.total_seconds():.0f} s")
    elif document.get("overlap") == "skip" and _previous_running(schedule):
        skip(latest, "the previous execution is still running")
    elif (schedule.schedule_id, latest) not in recorded:
        status, result = refused.outcome if refused else _start_execution(schedule, memo or _Memo())
        fired.append((_new_firing(schedule, latest, status, result), status, result))
    schedule.next_fire_at = following
    if document["repeat"] == "one_time":
        schedule.state = ActiveSchedule.State.COMPLETED
    return fired


def _occurrences(
    document: dict, scheduled_for: datetime, now: datetime
) -> tuple[list[datetime], datetime | None, bool]:
    """The occurrences from `scheduled_for` up to `now`, the next one after `now`, and whether some were not listed.

    After a long downtime only the first MAX_RECORDED_MISSES are listed one by one; the list
    then resumes at the grace window, so that the latest occurrence (the one that may still
    fire) is always last.
    """
    if document["repeat"] == "one_time":
        return [scheduled_for], None, False
    spec, tz = timing.parse_cron(document["cron_expression"]), timing.zone(document["timezone"])
    grace_start = now - timedelta(seconds=settings.SCHEDULER_GRACE_SECONDS)
    moments, unrecorded = [scheduled_for], False
    moment = timing.next_cron_fire(spec, tz, scheduled_for)
    while moment is not None and moment <= now and _within_window(document, moment):
        moments.append(moment)
        moment = timing.next_cron_fire(spec, tz, moment)
        if len(moments) >= MAX_RECORDED_MISSES and moment is not None and moment < grace_start:
            unrecorded = True  # resume at the grace window: the latest occurrence is always listed
            moment = timing.next_cron_fire(spec, tz, grace_start - timedelta(microseconds=1))
    return moments, _within_window(document, moment), unrecorded


def _previous_running(schedule: ActiveSchedule) -> bool:
    from workflows.models import Execution

    return bool(schedule.last_execution_id) and Execution.objects.filter(id=schedule.last_execution_id).exclude(
        status__in=Execution.FINAL
    ).exists()


def _start_execution(schedule: ActiveSchedule, memo: _Memo) -> tuple[str, dict]:
    """Start the schedule's execution (in the caller's savepoint); raises `_Refused` if the
    engine will not, or fails."""
    from workflows.services.executions import execution_create
    from workflows.services.sessions import session_create, session_get

    document = schedule.document
    target = document["invocation_target"]
    try:
        principal = memo.principal(document)
        if principal.user is None:
            raise AccessDenied()
        revision = memo.revision(principal, target)
        workflow = memo.workflow(principal, revision, target["workflow"])
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
            workflow=workflow,
            input_data=target.get("input_data"),
            new_session=not session_ref,
        )
    except AccessDenied as exc:
        raise _Refused(Firing.Status.ACCESS_ERROR, {"error": {"code": exc.code, "message": exc.message}}) from exc
    except ApplicationError as exc:
        raise _Refused(Firing.Status.INVOCATION_ERROR, {"error": {"code": exc.code, "message": exc.message}}) from exc
    except Exception as exc:
        # The engine crashed on this target: the firing is recorded (not retried), and the
        # tick goes on with the others.
        error = {"code": "internal_error", "message": "The execution could not be started."}
        raise _Refused(Firing.Status.INVOCATION_ERROR, {"error": error}, crashed=True) from exc
    schedule.last_execution_id = execution.id
    return Firing.Status.SUCCESS, {"execution_id": str(execution.id)}


def _new_firing(schedule: ActiveSchedule, scheduled_for: datetime, status: str, result: dict) -> Firing:
    """A firing row, not yet saved."""
    return Firing(
        org_id=schedule.org_id,
        blob_id=schedule.blob_id,
        schedule_id=schedule.schedule_id,
        scheduled_for=scheduled_for,
        invocation_target=schedule.document["invocation_target"],
        status=status,
        result=result,
    )


def _announce(schedule: ActiveSchedule, firing: Firing, status: str, result: dict) -> None:
    events.record(
        org_id=schedule.org_id,
        stream=events.stream_name("blob", schedule.blob_id),
        type="schedule.fired",
        data={"schedule_id": str(schedule.schedule_id), "firing_id": str(firing.id), "status": status, **result},
    )
