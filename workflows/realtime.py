"""WebSocket targets of scope `revision`: a session's events and an execution's events."""

from django.db.models import Q

from blobhub.api.errors import AccessDenied
from blobhub.api.serializers import is_uuid
from blobs import events as event_store
from blobs import selectors
from blobs.realtime import Target, ref_id, ref_name, refuse_public_readers, register_target, subscribable_revisions
from workflows.events import render_stored
from workflows.models import Execution, Session
from workflows.services.sessions import session_get


def _session(principal, scope_id: str, target_id: str) -> str:
    revision = selectors.revision_get(principal, scope_id)
    refuse_public_readers(principal, revision.blob)
    return event_store.stream_name("session", session_get(revision, target_id).id)


def _sessions(principal, refs: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """`_session` for many (revision, session id or alias) at once, in four queries."""
    revisions = subscribable_revisions(principal, [scope_id for scope_id, _ in refs])
    names = {ref_name(target_id) for _, target_id in refs} - {None}
    ids = {name for name in names if not isinstance(name, str)}
    rows = Session.objects.filter(Q(id__in=ids) | Q(alias__in=names - ids), revision_id__in=revisions)
    streams = {}
    for session_id, alias, revision_id in rows.values_list("id", "alias", "revision_id"):
        streams[(revision_id, session_id)] = event_store.stream_name("session", session_id)
        if alias:
            streams[(revision_id, alias)] = streams[(revision_id, session_id)]
    return {
        (scope_id, target_id): streams[named]
        for scope_id, target_id in refs
        if (named := (ref_id(scope_id), ref_name(target_id))) in streams
    }


def _execution(principal, scope_id: str, target_id: str) -> str:
    revision = selectors.revision_get(principal, scope_id)
    refuse_public_readers(principal, revision.blob)
    execution_id = (
        Execution.objects.filter(id=target_id, revision=revision).values_list("id", flat=True).first()
        if is_uuid(target_id)
        else None
    )
    if execution_id is None:
        raise AccessDenied()
    return event_store.stream_name("execution", execution_id)


def _executions(principal, refs: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """`_execution` for many (revision, execution id) at once, in four queries."""
    revisions = subscribable_revisions(principal, [scope_id for scope_id, _ in refs])
    ids = {ref_id(target_id) for _, target_id in refs} - {None}
    found = set(Execution.objects.filter(id__in=ids, revision_id__in=revisions).values_list("revision_id", "id"))
    return {
        (scope_id, target_id): event_store.stream_name("execution", ref_id(target_id))
        for scope_id, target_id in refs
        if (ref_id(scope_id), ref_id(target_id)) in found
    }


def register_targets() -> None:
    register_target("revision", "session", Target(_session, _sessions, render_stored))
    register_target("revision", "execution", Target(_execution, _executions, render_stored))
