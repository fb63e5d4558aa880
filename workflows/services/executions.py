"""Starting and stopping executions; the public service other engines (the scheduler) use."""

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from blobhub.api.errors import AccessDenied, ApplicationError, InvalidRequest
from blobhub.api.serializers import is_uuid
from blobs import limits, policy, selectors
from blobs.models import BlobType, ManifestEntry, Revision
from blobs.store import NotJson, read_bytes
from orgs.models import ApiKey, Role
from orgs.principal import Principal
from workflows import engine, values
from workflows.definitions import Graph, graph_of, validate
from workflows.models import Execution, Session
from workflows.services.sessions import require_open

WORKFLOW_REFERENCE_KEYS = ({"definition"}, {"blob", "revision", "definition"}, {"org", "blob", "revision", "definition"})


def definition_path(category: str, alias: str) -> str:
    return f"definitions/{category}/{alias}.json"


def definition_entry(revision: Revision, alias: str) -> ManifestEntry | None:
    return (
        ManifestEntry.objects.select_related("object")
        .filter(revision=revision, path__in=[definition_path("workflow", alias), definition_path("playground", alias)])
        .first()
    )


def resolve_workflow(principal: Principal, revision: Revision, reference: Any) -> tuple[Revision, str, ManifestEntry]:
    """The revision and definition a `workflow` reference names (API.md §3.1), read-checked."""
    if not isinstance(reference, dict) or set(reference) not in WORKFLOW_REFERENCE_KEYS:
        raise InvalidRequest(
            "workflow is {definition}, {blob, revision, definition} or {org, blob, revision, definition}.",
            [{"path": "workflow", "message": "Bad reference."}],
        )
    if any(not isinstance(value, str) or not value for value in reference.values()):
        raise InvalidRequest("The reference's parts are non-empty strings.", [{"path": "workflow", "message": "Bad reference."}])
    if set(reference) == {"definition"}:
        target = revision
    else:
        org_ref = reference.get("org", str(revision.org_id))
        blob = selectors.blob_get(principal, org_ref, reference["blob"])
        if blob.type != BlobType.WORKFLOW:
            raise InvalidRequest("The referenced blob is not a workflow blob.", [{"path": "workflow.blob", "message": "Not a workflow."}])
        target = selectors.revision_in_blob(principal, blob, reference["revision"])
    entry = definition_entry(target, reference["definition"])
    if entry is None:
        raise ApplicationError("definition_not_found", f"No definition {reference['definition']!r} in that revision.", status=404)
    return target, reference["definition"], entry


def _inputs(graph, input_data: Any) -> dict[str, dict]:
    if input_data is None:
        input_data = []
    if not isinstance(input_data, list):
        raise InvalidRequest("input_data is a list of {alias, value}.", [{"path": "input_data", "message": "Must be a list."}])
    declared = {graph.components[cid].get("alias"): cid for cid in graph.by_type("flow.input")}
    inputs: dict[str, dict] = {}
    for i, item in enumerate(input_data):
        path = f"input_data[{i}]"
        if not isinstance(item, dict) or set(item) != {"alias", "value"}:
            raise InvalidRequest("Each input is {alias, value}.", [{"path": path, "message": "Bad input."}])
        alias = item["alias"]
        if not isinstance(alias, str) or alias not in declared:
            raise InvalidRequest(f"The definition has no flow.input {alias!r}.", [{"path": f"{path}.alias", "message": "Unknown input."}])
        if alias in inputs:
            raise InvalidRequest(f"The input {alias!r} is given twice.", [{"path": f"{path}.alias", "message": "Duplicate."}])
        inputs[alias] = _input_value(item["value"], f"{path}.value")
    for alias, cid in declared.items():
        config = graph.config[cid]
        if config.get("required") and alias not in inputs and "value" not in config:
            raise InvalidRequest(f"The input {alias!r} is required.", [{"path": "input_data", "message": f"Missing {alias}."}])
    return inputs


def _input_value(typed: Any, path: str) -> dict:
    """A well-formed typed value within WORKFLOW_MAX_VALUE_BYTES, as any step output is."""
    try:
        values.unwrap(typed)
        size = values.stored_size(typed)
    except values.ValueError_ as exc:
        raise InvalidRequest(str(exc), [{"path": path, "message": str(exc)}]) from None
    except NotJson as exc:  # 1e400 (an infinity), a lone surrogate, a NUL: no record holds them
        raise InvalidRequest(exc.message, [{"path": path, "message": exc.message}]) from None
    limit = settings.WORKFLOW_MAX_VALUE_BYTES
    if size > limit:
        raise ApplicationError(
            "payload_too_large",
            f"An input value is at most {limit} bytes; store large values as blobs.",
            status=413,
            details=[{"path": path, "message": f"Larger than {limit} bytes."}],
        )
    return typed


@dataclass(frozen=True)
class Workflow:
    """A `workflow` reference resolved for a principal allowed to run it: the revision that
    holds the definition, its alias and manifest entry, and its validated graph."""

    revision: Revision
    alias: str
    entry: ManifestEntry
    graph: Graph


def workflow_for(principal: Principal, revision: Revision, reference: Any) -> Workflow:
    """Check that the principal may run workflows in `revision` and resolve `reference`."""
    policy.authorize_blob(principal, Role.WRITE, revision.blob)
    target, alias, entry = resolve_workflow(principal, revision, reference)
    # A definition is an immutable object: once valid, its graph is cached by hash.
    graph = engine.cached_graph(entry.object_id)
    if graph is None:
        document = json.loads(read_bytes(entry.object))
        problems = validate(document)
        if problems:
            raise ApplicationError(
                "invalid_definition",
                f"The definition is not valid: {problems[0].path}: {problems[0].message}",
                status=400,
                details=[{"path": p.path, "message": p.message} for p in problems[:50]],
            )
        graph = engine.remember_graph(entry.object_id, graph_of(document))
    return Workflow(target, alias, entry, graph)


def execution_create(
    *,
    principal: Principal,
    revision: Revision,
    session: Session,
    workflow: Any,
    input_data: Any = None,
    depth: int = 0,
    parent_step=None,
    new_session: bool = False,
) -> Execution:
    """Validate, store the execution as queued, and enqueue its first steps after commit.

    `workflow` is a reference (API.md §3.1) or a `Workflow` that `workflow_for` resolved for
    this principal and revision: a caller starting many executions of one definition (the
    scheduler's tick) resolves and authorizes it once. `new_session`: the caller created the
    session in this transaction, so it has no executions to count against its limit.
    """
    if not isinstance(workflow, Workflow):
        workflow = workflow_for(principal, revision, workflow)
    require_open(session)
    inputs = _inputs(workflow.graph, input_data)
    # No savepoint of its own: a caller that goes on after an error here (the scheduler) has one.
    with transaction.atomic(savepoint=False):
        held = 0 if new_session else Execution.objects.filter(session=session).count()
        limits.check("workflow.executions_per_session", held)
        now = timezone.now()
        execution = Execution.objects.create(
            org_id=revision.org_id,
            session=session,
            revision=revision,
            definition_revision=workflow.revision,
            definition_alias=workflow.alias,
            definition_object=workflow.entry.object,
            input_data=input_data or [],
            deadline=now + timedelta(seconds=settings.WORKFLOW_EXECUTION_TIMEOUT_SECONDS),
            depth=depth,
            parent_step=parent_step,
            created_by=principal.user,
            api_key_id=principal.api_key.id if principal.api_key else None,
        )
        engine.status_changed(execution)
        engine.enqueue(engine.begin(execution, inputs))
    return execution


def execution_get(revision: Revision, execution_id: Any) -> Execution:
    execution = Execution.objects.filter(revision=revision, id=execution_id).first() if isinstance(execution_id, str) and is_uuid(execution_id) else None
    if execution is None:
        raise AccessDenied()
    return execution


def execution_stop(*, execution: Execution) -> Execution:
    with transaction.atomic():
        return engine.stop(execution)


def principal_of_execution(execution: Execution) -> Principal:
    """Who an execution acts for (its creator, or the key it was started with), as of now."""
    if execution.api_key_id:
        key = ApiKey.objects.select_related("org", "created_by").filter(id=execution.api_key_id).first()
        if key is None or not key.is_usable:
            return Principal()
        return Principal(user=key.created_by, api_key=key)
    return Principal(user=execution.created_by) if execution.created_by else Principal()

