"""The event table (DESIGN §6): stored with a per-stream sequence, published after commit.

A stream is one thing that changes: `org:<id>`, `blob:<id>`, `revision:<id>`, and the
engines' `execution:<id>`, `session:<id>`. The channel layer is treated as lossy; a
client that missed something reads the stored events after its last sequence.
"""

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import IntegrityError, transaction
from django.db.models import F

from blobs.models import Event, EventStream

logger = logging.getLogger("blobhub.events")


def stream_name(kind: str, object_id) -> str:
    return f"{kind}:{object_id}"


def group_name(stream: str) -> str:
    """The channel-layer group of a stream (group names allow no colons)."""
    return "events." + stream.replace(":", ".")


def record(*, org_id, stream: str, type: str, data: dict | None = None) -> Event:
    """Store an event with the stream's next sequence; publish it once the transaction commits."""
    with transaction.atomic():
        sequence = _next_sequence(stream)
        event = Event.objects.create(org_id=org_id, stream=stream, sequence=sequence, type=type, data=data or {})
        transaction.on_commit(lambda: publish(event))
    return event


def _next_sequence(stream: str) -> int:
    # The UPDATE locks the stream's counter row until our transaction ends, so two
    # writers on one stream take turns and never get the same number.
    if not EventStream.objects.filter(name=stream).update(last_sequence=F("last_sequence") + 1):
        try:
            with transaction.atomic():
                EventStream.objects.create(name=stream, last_sequence=1)
            return 1
        except IntegrityError:
            EventStream.objects.filter(name=stream).update(last_sequence=F("last_sequence") + 1)
    return EventStream.objects.values_list("last_sequence", flat=True).get(name=stream)


def render(event: Event) -> dict:
    return {
        "id": str(event.id),
        "stream": event.stream,
        "sequence": event.sequence,
        "type": event.type,
        "created_at": event.created_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "data": event.data,
    }


def publish(event: Event) -> None:
    """Send to the stream's group. Losing a live event is survivable; failing the caller is not."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group_name(event.stream), {"type": "stream.event", "event": render(event)})
    except Exception:
        logger.warning("could not publish event %s of %s", event.sequence, event.stream, exc_info=True)
