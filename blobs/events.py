"""The event table (DESIGN §6): stored with a per-stream sequence, published after commit.

A stream is one thing that changes: `org:<id>`, `blob:<id>`, `revision:<id>`, and the
engines' `execution:<id>`, `session:<id>`. The channel layer is treated as lossy; a
client that missed something reads the stored events after its last sequence.
"""

import asyncio
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from channels.layers import get_channel_layer
from django.db import connection, transaction

from blobs.models import Event, EventStream

logger = logging.getLogger("blobhub.events")

PUBLISH_TIMEOUT_SECONDS = 10


def stream_name(kind: str, object_id) -> str:
    return f"{kind}:{object_id}"


def group_name(stream: str) -> str:
    """The channel-layer group of a stream (group names allow no colons)."""
    return "events." + stream.replace(":", ".")


def record(*, org_id, stream: str, type: str, data: dict | None = None) -> Event:
    """Store an event with the stream's next sequence; publish it once the transaction commits.

    Inside `batched()` the event is only queued: it gets its sequence and is written when the
    batch ends (the returned object is filled in then).
    """
    event = Event(org_id=org_id, stream=stream, type=type, data=data or {})
    batch = getattr(_local, "batch", None)
    if batch is not None:
        batch.append(event)
    else:
        _write([event])
    return event


_local = threading.local()


@contextmanager
def batched() -> Iterator[None]:
    """Write the events recorded in this block together when it ends, inside the caller's transaction.

    Their sequences are taken and they are stored in one statement on PostgreSQL (two on
    SQLite); they are published together after commit. Events keep the order they were
    recorded in. A block that raises writes none of its events. A nested `batched()` joins the enclosing one, so its
    events are written when that one ends; if it raises, its own events leave the enclosing
    batch (a caller that rolls back a savepoint and goes on keeps the others).
    """
    enclosing = getattr(_local, "batch", None)
    if enclosing is not None:
        mark = len(enclosing)
        try:
            yield
        except BaseException:
            del enclosing[mark:]
            raise
        return
    batch: list[Event] = []
    _local.batch = batch
    try:
        yield
    finally:
        _local.batch = None
    if batch:
        _write(batch)


def _write(events: list[Event]) -> None:
    with transaction.atomic(savepoint=False):
        by_stream: dict[str, list[Event]] = {}
        for event in events:
            by_stream.setdefault(event.stream, []).append(event)
        counts = {stream: len(on_stream) for stream, on_stream in by_stream.items()}
        if connection.vendor == "postgresql":
            _take_and_insert(events, counts)
        else:
            lasts = _take_sequences(counts)
            for stream, on_stream in by_stream.items():
                first = lasts[stream] - len(on_stream) + 1
                for offset, event in enumerate(on_stream):
                    event.sequence = first + offset
            _insert(events)
        transaction.on_commit(lambda: publish_all(events))


_COUNTER_UPSERT = (
    "INSERT INTO {table} (name, last_sequence) VALUES {rows} "
    "ON CONFLICT (name) DO UPDATE SET last_sequence = {table}.last_sequence + excluded.last_sequence "
    "RETURNING name, last_sequence"
)


def _event_fields():
    return [field for field in Event._meta.concrete_fields if not field.primary_key and field.name != "sequence"]


def _saved(event: Event, pk: int) -> None:
    event.pk = pk
    event._state.adding, event._state.db = False, connection.alias


def _insert(events: list[Event]) -> None:
    """One INSERT for all of them (their sequences set): what bulk_create does, without most
    of its cost per call."""
    quote = connection.ops.quote_name
    fields = [*_event_fields(), Event._meta.get_field("sequence")]
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    params = [field.get_db_prep_save(field.pre_save(event, True), connection) for event in events for field in fields]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {quote(Event._meta.db_table)} ({', '.join(quote(field.column) for field in fields)}) "
            f"VALUES {', '.join([row] * len(events))} RETURNING {quote(Event._meta.pk.column)}",
            params,
        )
        for event, (pk,) in zip(events, cursor.fetchall(), strict=True):
            _saved(event, pk)


def _take_sequences(counts: dict[str, int]) -> dict[str, int]:
    """Reserve `counts[stream]` sequence numbers on each stream, in one statement; the last of each.

    The upsert locks each stream's counter row until our transaction ends, so two writers on
    one stream take turns and never get the same number (PostgreSQL and SQLite alike). Rows
    are taken in one order (by name), so two writers cannot deadlock on them.
    """
    table = connection.ops.quote_name(EventStream._meta.db_table)
    streams = sorted(counts)
    with connection.cursor() as cursor:
        cursor.execute(
            _COUNTER_UPSERT.format(table=table, rows=", ".join(["(%s, %s)"] * len(streams))),
            [value for stream in streams for value in (stream, counts[stream])],
        )
        return dict(cursor.fetchall())


def _take_and_insert(events: list[Event], counts: dict[str, int]) -> None:
    """`_take_sequences` and `_insert` in one PostgreSQL statement (one round trip): the
    upsert's RETURNING feeds the INSERT, each event numbered back from its stream's last.

    The events are inserted in the order given, so their ids follow it too.
    """
    quote = connection.ops.quote_name
    table = quote(EventStream._meta.db_table)
    streams = sorted(counts)
    fields = _event_fields()
    row = "(" + ", ".join([f"CAST(%s AS {f.db_type(connection)})" for f in fields] + ["%s", "%s"]) + ")"
    left = dict(counts)
    params = []
    for order, event in enumerate(events):
        left[event.stream] -= 1
        params += [f.get_db_prep_save(f.pre_save(event, True), connection) for f in fields]
        params += [left[event.stream], order]  # how far from its stream's last; its place
    columns = [quote(f.column) for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH counter AS ({_COUNTER_UPSERT.format(table=table, rows=', '.join(['(%s, %s)'] * len(streams)))}) "
            f"INSERT INTO {quote(Event._meta.db_table)} ({', '.join(columns)}, {quote('sequence')}) "
            f"SELECT {', '.join('v.' + c for c in columns)}, counter.last_sequence - v.from_last "
            f"FROM (VALUES {', '.join([row] * len(events))}) AS v({', '.join(columns)}, from_last, place) "
            f"JOIN counter ON counter.name = v.{quote('stream')} ORDER BY v.place "
            f"RETURNING {quote(Event._meta.pk.column)}, {quote('stream')}, {quote('sequence')}",
            [value for stream in streams for value in (stream, counts[stream])] + params,
        )
        returned = sorted(cursor.fetchall())
    if len(returned) != len(events):
        raise RuntimeError("the event insert did not store every event")
    # Ids rise in insert order, which is the events' order.
    for event, (pk, stream, sequence) in zip(events, returned, strict=True):
        if stream != event.stream:
            raise RuntimeError("the event insert returned its rows out of order")
        event.sequence = sequence
        _saved(event, pk)


def render(event: Event) -> dict:
    return {
        "id": str(event.id),
        "stream": event.stream,
        "sequence": event.sequence,
        "type": event.type,
        "created_at": event.created_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "data": event.data,
    }


def publish_all(events: list[Event]) -> None:
    """Send each event to its stream's group, in order, without waiting for it. Losing a live
    event is survivable; failing or holding up the caller is not."""
    layer = get_channel_layer()
    if layer is None or not events:
        return
    messages = [(event, group_name(event.stream), {"type": "stream.event", "event": render(event)}) for event in events]

    async def send() -> None:
        for event, group, message in messages:
            try:
                await layer.group_send(group, message)
            except Exception:
                logger.warning("could not publish event %s of %s", event.sequence, event.stream, exc_info=True)

    _publisher.submit(send)


class _Publisher:
    """One event loop per process, on a daemon thread, that publishes everything, in the
    order it was submitted, while the callers go on.

    `async_to_sync` from a plain thread (a worker's) makes a new loop per call, and with it a
    new Redis connection of the channel layer: that cost more than the rest of a workflow step.
    Here the layer keeps its connections on one loop, and one task sends the batches one after
    another, so that events leave in the order they were committed; a caller no longer waits
    for the round trip (a workflow step's events used to hold up its next step). When the
    channel layer is down, at most `BACKLOG` batches wait; later ones are dropped, with a
    warning. The loop is made again after a fork.
    """

    BACKLOG = 10_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue | None = None
        self._pid: int | None = None

    def _current(self) -> tuple[asyncio.AbstractEventLoop, asyncio.Queue]:
        with self._lock:
            if self._loop is None or self._pid != os.getpid() or self._loop.is_closed():
                loop, queue = asyncio.new_event_loop(), asyncio.Queue(self.BACKLOG)
                threading.Thread(target=loop.run_forever, name="event-publisher", daemon=True).start()
                loop.call_soon_threadsafe(loop.create_task, self._drain(queue))
                self._loop, self._queue, self._pid = loop, queue, os.getpid()
            return self._loop, self._queue

    @staticmethod
    async def _drain(queue: asyncio.Queue) -> None:
        while True:
            send = await queue.get()
            try:
                await asyncio.wait_for(send(), PUBLISH_TIMEOUT_SECONDS)
            except Exception:
                logger.warning("could not publish a batch of events", exc_info=True)
            finally:
                queue.task_done()

    @staticmethod
    def _offer(queue: asyncio.Queue, send) -> None:
        try:
            queue.put_nowait(send)
        except asyncio.QueueFull:
            logger.warning("the event publisher is %d batches behind; a batch of live events is dropped", queue.qsize())

    def submit(self, send) -> None:
        """Queue `send` (a coroutine function) to run after everything submitted before it."""
        loop, queue = self._current()
        loop.call_soon_threadsafe(self._offer, queue, send)

    def flush(self, timeout: float = PUBLISH_TIMEOUT_SECONDS) -> None:
        """Wait until everything submitted so far is sent (or given up on), if anything was."""
        with self._lock:
            loop, queue = (self._loop, self._queue) if self._pid == os.getpid() else (None, None)
        if loop is not None and not loop.is_closed():
            asyncio.run_coroutine_threadsafe(queue.join(), loop).result(timeout)


_publisher = _Publisher()
flush = _publisher.flush
