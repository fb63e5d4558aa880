"""Execution and session events (API.md §3.1) on the shared event table."""

from django.db.models import QuerySet

from blobs import events
from blobs.models import Event
from workflows.models import Execution, Session


def execution_event(
    execution: Execution, type: str, *, message: str | None = None, attributes: dict | None = None, data=None
) -> Event:
    return events.record(
        org_id=execution.org_id,
        stream=events.stream_name("execution", execution.id),
        type=type,
        data=_body(execution.revision_id, execution.session_id, execution.id, message, attributes, data),
    )


def processor_attributes(component: dict) -> dict:
    return {"processor_id": component["id"], "processor_type": component["type"], "processor_name": component.get("name", "")}


def session_event(session: Session, type: str, *, execution_id=None, message: str | None = None, data=None) -> Event:
    return events.record(
        org_id=session.org_id,
        stream=events.stream_name("session", session.id),
        type=type,
        data=_body(session.revision_id, session.id, execution_id, message, None, data),
    )


def _body(revision_id, session_id, execution_id, message, attributes, data) -> dict:
    body = {
        "revision_id": str(revision_id),
        "session_id": str(session_id),
        "execution_id": str(execution_id) if execution_id else None,
    }
    if message is not None:
        body["message"] = message
    if attributes is not None:
        body["attributes"] = attributes
    if data is not None:
        body["data"] = data
    return body


def render(event: Event) -> dict:
    """The API shape: `{id, revision_id, session_id, execution_id, sequence, created_at, type, ...}`."""
    return render_stored(events.render(event))


def render_stored(stored: dict) -> dict:
    """The API shape of an event in the event table's generic form (blobs.events.render)."""
    body = stored["data"]
    rendered = {
        "id": stored["id"],
        "revision_id": body.get("revision_id"),
        "session_id": body.get("session_id"),
        "execution_id": body.get("execution_id"),
        "sequence": stored["sequence"],
        "created_at": stored["created_at"],
        "type": stored["type"],
    }
    for key in ("message", "attributes", "data"):
        if key in body:
            rendered[key] = body[key]
    return rendered


def stream_events(kind: str, object_id) -> QuerySet[Event]:
    return Event.objects.filter(stream=events.stream_name(kind, object_id))
