"""The scheduler blob type's data channel (API.md §3.2), its commit validator and activation."""

import json
import uuid

from blobhub.api.errors import AccessDenied, ApplicationError, InvalidRequest
from blobhub.api.serializers import StrictBooleanField, StrictSerializer, StrictUUIDField, parse
from blobs import limits, store
from blobs.channel import DataContext
from blobs.models import Revision
from blobs.registry import Engine, Handler, Problem
from blobs.services import content
from orgs.models import Role
from scheduler import documents
from scheduler.models import ActiveSchedule, Firing
from scheduler.services import activate, schedule_path

LIMITS = {"scheduler.schedules_per_revision": 1000}
PAGE = 50
HISTORY_PAGE = 10


class ScheduleIdIn(StrictSerializer):
    schedule_id = StrictUUIDField()


class ListSchedulesIn(StrictSerializer):
    start_schedule_id = StrictUUIDField(required=False)


class HistoryIn(StrictSerializer):
    schedule_id = StrictUUIDField()
    start_execution_id = StrictUUIDField(required=False)
    include_schedule = StrictBooleanField(required=False, default=False)


def _document(revision: Revision, schedule_id) -> dict:
    data = content.file_read(revision, schedule_path(schedule_id))
    if data is None:
        raise AccessDenied("The revision has no such schedule.")
    return json.loads(data)


def _state(revision: Revision, document: dict) -> str:
    """A schedule's state: `completed` once its blob's active copy has fired for good."""
    completed = ActiveSchedule.objects.filter(
        blob_id=revision.blob_id, schedule_id=document["id"], state=ActiveSchedule.State.COMPLETED
    ).exists()
    return "completed" if completed else "active"


def _validated(ctx: DataContext, document: dict) -> dict:
    problems = documents.problems_of(document)
    if problems:
        raise InvalidRequest(
            f"The schedule is not valid: {problems[0].path}: {problems[0].message}",
            [{"path": p.path, "message": p.message} for p in problems],
        )
    try:
        documents.check_target(ctx.principal, document["invocation_target"])
    except ApplicationError as exc:
        raise InvalidRequest(
            f"The invocation target cannot be run by you: {exc.message}",
            [{"path": "invocation_target", "message": exc.message}],
        ) from None
    return document


def _arguments(args: dict, *, partial: bool) -> dict:
    fields = documents.FIELDS | ({"schedule_id"} if partial else set())
    unknown = sorted(set(args) - fields)
    if unknown:
        raise InvalidRequest("Unknown field(s).", [{"path": name, "message": "Unknown field."} for name in unknown])
    nulls = sorted(key for key, value in args.items() if value is None and key not in ("start_date", "end_date", "alias"))
    if nulls:
        raise InvalidRequest("Explicit nulls are refused.", [{"path": name, "message": "May not be null."} for name in nulls])
    return dict(args)


def create_schedule(ctx: DataContext, args: dict) -> dict:
    fields = _arguments(args, partial=False)
    held = content.files(ctx.revision, "schedules/").count()
    limits.check("scheduler.schedules_per_revision", held)
    document = {"id": str(uuid.uuid4()), "enabled": True, "overlap": "allow", "invocation_target_type": "workflow", **fields}
    document = {key: value for key, value in document.items() if value is not None}
    document["_owner"] = documents.owner_record(ctx.principal)
    _validated(ctx, document)
    content.file_put_json(ctx.revision, schedule_path(document["id"]), document)
    return {"schedule": documents.render(document, "active")}


def update_schedule(ctx: DataContext, args: dict) -> dict:
    fields = _arguments(args, partial=True)
    schedule_id = parse(ScheduleIdIn, {"schedule_id": fields.pop("schedule_id", None)})["schedule_id"]
    document = _document(ctx.revision, schedule_id)
    if _state(ctx.revision, document) == "completed":
        raise ApplicationError("schedule_completed", "A completed schedule cannot be changed.", status=409)
    document.update(fields)
    document = {key: value for key, value in document.items() if value is not None}
    _validated(ctx, document)
    content.file_put_json(ctx.revision, schedule_path(schedule_id), document)
    return {"schedule": documents.render(document, "active")}


def delete_schedule(ctx: DataContext, args: dict) -> dict:
    schedule_id = parse(ScheduleIdIn, args)["schedule_id"]
    if not content.file_delete(ctx.revision, schedule_path(schedule_id)):
        raise AccessDenied("The revision has no such schedule.")
    return {}


def get_schedule(ctx: DataContext, args: dict) -> dict:
    document = _document(ctx.revision, parse(ScheduleIdIn, args)["schedule_id"])
    return {"schedule": documents.render(document, _state(ctx.revision, document))}


def list_schedules(ctx: DataContext, args: dict) -> dict:
    start = parse(ListSchedulesIn, args).get("start_schedule_id")
    entries = content.files(ctx.revision, "schedules/").select_related("object")
    if start:
        entries = entries.filter(path__gt=schedule_path(start))
    page = list(entries[: PAGE + 1])
    schedules = []
    for entry in page[:PAGE]:
        document = json.loads(store.read_bytes(entry.object))
        schedules.append(documents.render(document, _state(ctx.revision, document)))
    return {"schedules": schedules, "last_schedule_id": schedules[-1]["id"] if len(page) > PAGE else None}


def list_executions(ctx: DataContext, args: dict) -> dict:
    data = parse(HistoryIn, args)
    document = _document(ctx.revision, data["schedule_id"])
    firings = Firing.objects.filter(blob_id=ctx.revision.blob_id, schedule_id=data["schedule_id"]).order_by("-created_at", "-id")
    if data.get("start_execution_id"):
        start = Firing.objects.filter(id=data["start_execution_id"], schedule_id=data["schedule_id"]).first()
        if start is None:
            raise InvalidRequest("start_execution_id is not a firing of this schedule.")
        firings = firings.filter(created_at__lte=start.created_at).exclude(created_at=start.created_at, id__gte=start.id)
    page = list(firings[: HISTORY_PAGE + 1])
    answer = {
        "executions": [_render_firing(firing) for firing in page[:HISTORY_PAGE]],
        "last_execution_id": str(page[HISTORY_PAGE - 1].id) if len(page) > HISTORY_PAGE else None,
    }
    if data["include_schedule"]:
        answer["schedule"] = documents.render(document, _state(ctx.revision, document))
    return answer


def _render_firing(firing: Firing) -> dict:
    return {
        "id": str(firing.id),
        "schedule_id": str(firing.schedule_id),
        "scheduled_for": firing.scheduled_for.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "created_at": firing.created_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "invocation_target_type": firing.invocation_target_type,
        "invocation_target": firing.invocation_target,
        "status": firing.status,
        "result": firing.result,
    }


def validate_revision(revision: Revision) -> list[Problem]:
    """Commit: every schedule is well-formed and its owner may still run its target."""
    problems: list[Problem] = []
    for entry in content.files(revision, "schedules/").select_related("object"):
        document = json.loads(store.read_bytes(entry.object))
        prefix = f"schedules.{document.get('id')}"
        found = documents.problems_of(document)
        problems.extend(Problem(path=f"{prefix}.{p.path}", message=p.message) for p in found)
        if not found:
            try:
                documents.check_target(documents.owner_of(document), document["invocation_target"])
            except ApplicationError as exc:
                problems.append(Problem(path=f"{prefix}.invocation_target", message=exc.message))
    return problems


ENGINE = Engine(
    type="blobhub.compute.scheduler",
    validate=validate_revision,
    queries={
        "get_schedule": Handler(get_schedule),
        "list_schedules": Handler(list_schedules),
        # Firing history is the owner's activity, not the blob's content: never for public readers.
        "list_executions": Handler(list_executions, public=False),
    },
    commands={
        "create_schedule": Handler(create_schedule, writes_content=True, needs=Role.WRITE),
        "update_schedule": Handler(update_schedule, writes_content=True, needs=Role.WRITE),
        "delete_schedule": Handler(delete_schedule, writes_content=True, needs=Role.WRITE),
    },
    limits=LIMITS,
    on_default_changed=activate,
)
