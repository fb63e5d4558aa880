"""The workflow blob type's data channel (API.md §3.1) and its commit validator."""

import json

from django.core.validators import RegexValidator
from rest_framework import serializers

from blobhub.api.errors import AccessDenied, ApplicationError
from blobhub.api.pagination import paginate
from blobhub.api.serializers import (
    AliasField,
    StrictBooleanField,
    StrictChoiceField,
    StrictCharField,
    StrictDateTimeField,
    StrictIntegerField,
    StrictSerializer,
    parse,
)
from blobs import limits, store
from blobs.channel import BinaryAnswer, DataContext
from blobs.models import ManifestEntry, Revision
from blobs.registry import Engine, Handler, Problem
from blobs.services import content
from orgs.models import Role
from workflows import definitions
from workflows.events import render as render_event, stream_events
from workflows.models import Execution, Session, SessionObject
from workflows.services import executions, sessions
from workflows.services.executions import definition_entry, definition_path

DEFINITION_ALIAS = r"^[a-z0-9_-]{1,64}\Z"
MAX_DEFINITION_BYTES = 1024 * 1024
LIMITS = {
    "workflow.definitions_per_revision": 100,
    "workflow.playgrounds_per_revision": 100,
    "workflow.executions_per_session": 10_000,
}

# --- Rendering -----------------------------------------------------------------------------


def _iso(value) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if value else None


def render_definition(entry: ManifestEntry) -> dict:
    category, name = entry.path.split("/")[1:]
    return {"alias": name.removesuffix(".json"), "category": category, "updated_at": _iso(entry.updated_at)}


def render_session(session: Session) -> dict:
    return {
        "id": str(session.id),
        "alias": session.alias,
        "revision_id": str(session.revision_id),
        "status": session.status,
        "description": session.description,
        "state": session.state,
        "created_at": _iso(session.created_at),
        "updated_at": _iso(session.updated_at),
    }


def render_execution(execution: Execution) -> dict:
    return {
        "id": str(execution.id),
        "session_id": str(execution.session_id),
        "revision_id": str(execution.revision_id),
        "definition": execution.definition_alias,
        "definition_revision_id": str(execution.definition_revision_id),
        "status": execution.status,
        "created_at": _iso(execution.created_at),
        "updated_at": _iso(execution.updated_at),
        "started_at": _iso(execution.started_at),
        "finished_at": _iso(execution.finished_at),
        "output": execution.output,
        "error": execution.error,
    }


def render_object(item: SessionObject) -> dict:
    return {
        "alias": item.alias,
        "kind": item.kind,
        "size": item.size,
        "created_at": _iso(item.created_at),
        "updated_at": _iso(item.updated_at),
    }


# --- Arguments -------------------------------------------------------------------------------


class DefinitionAliasField(StrictCharField):
    def __init__(self, **kwargs):
        super().__init__(max_length=64, **kwargs)
        self.validators.append(RegexValidator(DEFINITION_ALIAS, "Must match ^[a-z0-9_-]{1,64}$."))


class CreateDefinitionIn(StrictSerializer):
    alias = DefinitionAliasField()
    category = StrictChoiceField(choices=["workflow", "playground"])


class UploadDefinitionIn(StrictSerializer):
    alias = DefinitionAliasField()
    definition = serializers.JSONField()


class AliasIn(StrictSerializer):
    alias = DefinitionAliasField()


class ListDefinitionsIn(StrictSerializer):
    category = StrictChoiceField(choices=["workflow", "playground"], required=False)


class CreateSessionIn(StrictSerializer):
    alias = AliasField(required=False)
    description = StrictCharField(max_length=1024, required=False, allow_blank=True, default="")


class SessionIn(StrictSerializer):
    session_id = StrictCharField(max_length=64)


class PageIn(StrictSerializer):
    limit = StrictIntegerField(min_value=1, max_value=200, required=False)
    cursor = StrictCharField(max_length=512, required=False)


class ListExecutionsIn(SessionIn, PageIn):
    pass


class CreateExecutionIn(StrictSerializer):
    target = serializers.DictField()
    workflow = serializers.DictField()
    input_data = serializers.ListField(required=False, max_length=1000)


class ExecutionIn(StrictSerializer):
    execution_id = StrictCharField(max_length=64)


class EventsIn(PageIn):
    ascending = StrictBooleanField(required=False, default=True)
    created_since = StrictDateTimeField(required=False)
    created_before = StrictDateTimeField(required=False)


class ExecutionEventsIn(ExecutionIn, EventsIn):
    pass


class SessionEventsIn(SessionIn, EventsIn):
    pass


class ObjectAliasField(StrictCharField):
    def __init__(self, **kwargs):
        super().__init__(max_length=1024, **kwargs)
        self.validators.append(RegexValidator(r"^[A-Za-z0-9._/-]+\Z", "Use letters, digits and . _ / -."))


class ObjectIn(SessionIn):
    alias = ObjectAliasField()


class UploadObjectIn(ObjectIn):
    value = serializers.JSONField()


class ListObjectsIn(SessionIn, PageIn):
    prefix = StrictCharField(max_length=1024, required=False, allow_blank=True)
    delimiter = StrictCharField(max_length=8, required=False)


# --- Definitions ---------------------------------------------------------------------------------


def _definition(revision: Revision, alias: str) -> ManifestEntry:
    entry = definition_entry(revision, alias)
    if entry is None:
        raise ApplicationError("definition_not_found", f"There is no definition {alias!r}.", status=404)
    return entry


def create_definition(ctx: DataContext, args: dict) -> dict:
    data = parse(CreateDefinitionIn, args)
    if definition_entry(ctx.revision, data["alias"]) is not None:
        raise ApplicationError("alias_in_use", f"The definition alias '{data['alias']}' is already taken.", status=400)
    category = data["category"]
    held = content.files(ctx.revision, f"definitions/{category}/").count()
    limits.check(f"workflow.{'definitions' if category == 'workflow' else 'playgrounds'}_per_revision", held)
    entry = content.file_put_json(ctx.revision, definition_path(category, data["alias"]), definitions.empty_document(category))
    return {"definition": render_definition(entry)}


def upload_definition(ctx: DataContext, args: dict) -> dict:
    data = parse(UploadDefinitionIn, args)
    document = data["definition"]
    if not isinstance(document, dict) or document.get("type") not in definitions.CATEGORIES.values():
        raise ApplicationError(
            "invalid_request_body",
            "A definition is an object whose type is workflow_definition or playground_definition.",
            status=400,
            details=[{"path": "definition.type", "message": "Bad type."}],
        )
    if len(store.canonical_json(document)) > MAX_DEFINITION_BYTES:
        raise ApplicationError("payload_too_large", f"A definition is at most {MAX_DEFINITION_BYTES} bytes.", status=413)
    category = "workflow" if document["type"] == "workflow_definition" else "playground"
    existing = definition_entry(ctx.revision, data["alias"])
    if existing is not None and existing.path != definition_path(category, data["alias"]):
        raise ApplicationError("invalid_request_body", "A definition keeps its category.", status=400)
    if existing is None:
        held = content.files(ctx.revision, f"definitions/{category}/").count()
        limits.check(f"workflow.{'definitions' if category == 'workflow' else 'playgrounds'}_per_revision", held)
    entry = content.file_put_json(ctx.revision, definition_path(category, data["alias"]), document)
    return {"definition": render_definition(entry)}


def delete_definition(ctx: DataContext, args: dict) -> dict:
    entry = _definition(ctx.revision, parse(AliasIn, args)["alias"])
    content.file_delete(ctx.revision, entry.path)
    return {}


def list_definitions(ctx: DataContext, args: dict) -> dict:
    category = parse(ListDefinitionsIn, args).get("category")
    entries = content.files(ctx.revision, f"definitions/{category}/" if category else "definitions/")
    return {"definitions": [render_definition(entry) for entry in entries]}


def download_definition(ctx: DataContext, args: dict) -> dict:
    entry = _definition(ctx.revision, parse(AliasIn, args)["alias"])
    return {"definition": json.loads(store.read_bytes(entry.object))}


def check_definition(ctx: DataContext, args: dict) -> dict:
    entry = _definition(ctx.revision, parse(AliasIn, args)["alias"])
    problems = definitions.validate(json.loads(store.read_bytes(entry.object)))
    return {"status": "invalid" if problems else "valid", "events": [p.render() for p in problems]}


def validate_revision(revision: Revision) -> list[Problem]:
    """Commit: every definition of the revision must be valid."""
    problems: list[Problem] = []
    for entry in content.files(revision, "definitions/").select_related("object"):
        alias = render_definition(entry)["alias"]
        try:
            document = json.loads(store.read_bytes(entry.object))
        except ValueError:
            problems.append(Problem(path=f"definitions.{alias}", message="Not valid JSON."))
            continue
        for problem in definitions.validate(document):
            path = f"definitions.{alias}.{problem.path}" if problem.path else f"definitions.{alias}"
            problems.append(Problem(path=path, message=problem.message))
    return problems


# --- Sessions --------------------------------------------------------------------------------------


def create_session(ctx: DataContext, args: dict) -> dict:
    data = parse(CreateSessionIn, args)
    session = sessions.session_create(
        principal=ctx.principal, revision=ctx.revision, alias=data.get("alias"), description=data["description"]
    )
    return {"session": render_session(session)}


def get_session(ctx: DataContext, args: dict) -> dict:
    return {"session": render_session(sessions.session_get(ctx.revision, parse(SessionIn, args)["session_id"]))}


def list_sessions(ctx: DataContext, args: dict) -> dict:
    data = parse(PageIn, args)
    page = paginate(Session.objects.filter(revision=ctx.revision), limit=data.get("limit"), cursor=data.get("cursor"))
    return page.payload("sessions", render_session)


def close_session(ctx: DataContext, args: dict) -> dict:
    session = sessions.session_get(ctx.revision, parse(SessionIn, args)["session_id"])
    return {"session": render_session(sessions.session_close(session=session))}


def upload_session_object(ctx: DataContext, args: dict) -> dict:
    data = parse(UploadObjectIn, args)
    session = sessions.session_get(ctx.revision, data["session_id"])
    if len(store.canonical_json(data["value"])) > 10 * 1024 * 1024:
        raise ApplicationError("payload_too_large", "A session object value is at most 10 MiB.", status=413)
    item = sessions.session_object_put(session=session, alias=data["alias"], value=data["value"])
    return {"object": render_object(item)}


def _object(ctx: DataContext, args: dict, kind: str) -> SessionObject:
    data = parse(ObjectIn, args)
    session = sessions.session_get(ctx.revision, data["session_id"])
    item = SessionObject.objects.select_related("object").filter(session=session, alias=data["alias"], kind=kind).first()
    if item is None:
        raise AccessDenied(f"The session has no {kind} {data['alias']!r}.")
    return item


def download_session_object(ctx: DataContext, args: dict) -> dict:
    item = _object(ctx, args, SessionObject.Kind.VALUE)
    return {"object": render_object(item), "value": json.loads(store.read_bytes(item.object))}


def list_session_objects(ctx: DataContext, args: dict) -> dict:
    data = parse(ListObjectsIn, args)
    session = sessions.session_get(ctx.revision, data["session_id"])
    prefix, delimiter = data.get("prefix", ""), data.get("delimiter")
    items = SessionObject.objects.filter(session=session, alias__startswith=prefix).order_by("alias")
    limit = data.get("limit") or 50
    after = data.get("cursor")
    if after:
        items = items.filter(alias__gt=after)
    # A page holds at most `limit` entries, objects and common prefixes alike; the cursor
    # is the last alias the page accounted for (a prefix accounts for the aliases under it).
    objects, prefixes, last, more = [], [], None, False
    for item in items.iterator():
        rest = item.alias[len(prefix):]
        common = prefix + rest.split(delimiter, 1)[0] + delimiter if delimiter and delimiter in rest else None
        if common is not None and common in prefixes:
            last = item.alias
            continue
        if len(objects) + len(prefixes) == limit:
            more = True
            break
        if common is not None:
            prefixes.append(common)
        else:
            objects.append(item)
        last = item.alias
    answer = {"objects": [render_object(item) for item in objects], "prefixes": prefixes}
    if more:
        answer["cursor"] = last
    return answer


def delete_session_object(ctx: DataContext, args: dict) -> dict:
    data = parse(ObjectIn, args)
    session = sessions.session_get(ctx.revision, data["session_id"])
    sessions.session_object_delete(session=session, alias=data["alias"])
    return {}


def upload_session_file(ctx: DataContext, args: dict) -> dict:
    if ctx.body is None:
        raise ApplicationError("invalid_request_body", "Send the file as an application/octet-stream body.", status=400)
    data = parse(ObjectIn, args)
    session = sessions.session_get(ctx.revision, data["session_id"])
    item = sessions.session_object_put(session=session, alias=data["alias"], stream=ctx.body)
    return {"object": render_object(item)}


def download_session_file(ctx: DataContext, args: dict) -> BinaryAnswer:
    item = _object(ctx, args, SessionObject.Kind.FILE)
    return BinaryAnswer(
        chunks=store.open_object(item.object),
        envelope={"object": render_object(item)},
        size=item.size,
        filename=item.alias.rsplit("/", 1)[-1],
    )


# --- Executions --------------------------------------------------------------------------------------


def create_execution(ctx: DataContext, args: dict) -> dict:
    data = parse(CreateExecutionIn, args)
    target = data["target"]
    if set(target) != {"session"}:
        raise ApplicationError("invalid_request_body", "target is {session}.", status=400, details=[{"path": "target", "message": "Bad target."}])
    session = sessions.session_get(ctx.revision, target["session"])
    execution = executions.execution_create(
        principal=ctx.principal,
        revision=ctx.revision,
        session=session,
        workflow=data["workflow"],
        input_data=data.get("input_data"),
    )
    execution.refresh_from_db()
    return {"execution": render_execution(execution)}


def get_execution(ctx: DataContext, args: dict) -> dict:
    return {"execution": render_execution(executions.execution_get(ctx.revision, parse(ExecutionIn, args)["execution_id"]))}


def list_executions(ctx: DataContext, args: dict) -> dict:
    data = parse(ListExecutionsIn, args)
    session = sessions.session_get(ctx.revision, data["session_id"])
    page = paginate(
        Execution.objects.filter(session=session), limit=data.get("limit"), cursor=data.get("cursor"), newest_first=True
    )
    return page.payload("executions", render_execution)


def stop_execution(ctx: DataContext, args: dict) -> dict:
    execution = executions.execution_get(ctx.revision, parse(ExecutionIn, args)["execution_id"])
    return {"execution": render_execution(executions.execution_stop(execution=execution))}


def _events(queryset, data: dict, key: str) -> dict:
    if data.get("created_since"):
        queryset = queryset.filter(created_at__gt=data["created_since"])
    if data.get("created_before"):
        queryset = queryset.filter(created_at__lt=data["created_before"])
    ascending = data.get("ascending", True)
    limit = data.get("limit") or 50
    queryset = queryset.order_by("sequence" if ascending else "-sequence")
    if data.get("cursor"):
        try:
            after = int(data["cursor"])
        except ValueError:
            raise ApplicationError("invalid_request_body", "The cursor is not one this server issued.", status=400) from None
        queryset = queryset.filter(sequence__gt=after) if ascending else queryset.filter(sequence__lt=after)
    rows = list(queryset[: limit + 1])
    answer = {key: [render_event(event) for event in rows[:limit]]}
    if len(rows) > limit:
        answer["cursor"] = str(rows[limit - 1].sequence)
    return answer


def list_execution_events(ctx: DataContext, args: dict) -> dict:
    data = parse(ExecutionEventsIn, args)
    execution = executions.execution_get(ctx.revision, data["execution_id"])
    return _events(stream_events("execution", execution.id), data, "execution_events")


def list_session_events(ctx: DataContext, args: dict) -> dict:
    data = parse(SessionEventsIn, args)
    session = sessions.session_get(ctx.revision, data["session_id"])
    return _events(stream_events("session", session.id), data, "session_events")


def _write(run) -> Handler:
    return Handler(run, writes_content=True, needs=Role.WRITE)


def _runtime(run) -> Handler:
    return Handler(run, needs=Role.WRITE)


def _read(run) -> Handler:
    return Handler(run, needs=Role.READ)


def _private_read(run) -> Handler:
    """Runtime reads (sessions, executions, objects): never for public readers."""
    return Handler(run, needs=Role.READ, public=False)


ENGINE = Engine(
    type="blobhub.compute.workflow",
    validate=validate_revision,
    queries={
        "list_definitions": _read(list_definitions),
        "download_definition": _read(download_definition),
        "check_definition": _read(check_definition),
        "get_session": _private_read(get_session),
        "list_sessions": _private_read(list_sessions),
        "get_execution": _private_read(get_execution),
        "list_executions": _private_read(list_executions),
        "list_execution_events": _private_read(list_execution_events),
        "list_session_events": _private_read(list_session_events),
        "download_session_object": _private_read(download_session_object),
        "list_session_objects": _private_read(list_session_objects),
        "download_session_file": _private_read(download_session_file),
    },
    commands={
        "create_definition": _write(create_definition),
        "upload_definition": _write(upload_definition),
        "delete_definition": _write(delete_definition),
        "create_session": _runtime(create_session),
        "close_session": _runtime(close_session),
        "create_execution": _runtime(create_execution),
        "stop_execution": _runtime(stop_execution),
        "upload_session_object": _runtime(upload_session_object),
        "delete_session_object": _runtime(delete_session_object),
        "upload_session_file": _runtime(upload_session_file),
    },
    limits=LIMITS,
)
