"""WebSocket targets of scope `revision`: a session's events and an execution's events."""

from blobhub.api.errors import AccessDenied
from blobhub.api.serializers import is_uuid
from blobs import events as event_store, selectors
from blobs.realtime import Target, refuse_public_readers, register_target
from workflows.events import render_stored
from workflows.models import Execution
from workflows.services.sessions import session_get


def _session(principal, scope_id: str, target_id: str) -> str:
    revision = selectors.revision_get(principal, scope_id)
    refuse_public_readers(principal, revision.blob)
    return event_store.stream_name("session", session_get(revision, target_id).id)


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


def register_targets() -> None:
    register_target("revision", "session", Target(_session, render_stored))
    register_target("revision", "execution", Target(_execution, render_stored))
