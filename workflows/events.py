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
    rendered = {
        "id": str(event.id),
        "revision_id": event.data.get("revision_id"),
        "session_id": event.data.get("session_id"),
        "execution_id": event.data.get("execution_id"),
        "sequence": event.sequence,
        "created_at": event.created_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "type": event.type,
    }
    for key in ("message", "attributes", "data"):
        if key in event.data:
            rendered[key] = event.data[key]
    return rendered


def stream_events(kind: str, object_id) -> QuerySet[Event]:
    return Event.objects.filter(stream=events.stream_name(kind, object_id))
