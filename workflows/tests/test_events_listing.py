"""list_execution_events and list_session_events: order, time windows, limit and cursor.

The events' times are set one second apart after the run, so that the window bounds
fall exactly on an event and `created_since` (exclusive) is tested at its edge.
"""

from datetime import UTC, datetime, timedelta

import pytest

from blobs.models import Event
from workflows.tests.support import (
    component,
    connect,
    document,
    ensure_session,
    piped,
    start_execution,
    text,
    upload_definition,
    workflow_blob,
)

pytestmark = pytest.mark.django_db(transaction=True)

BASE = datetime(2026, 11, 21, 10, 0, 0, 123456, tzinfo=UTC)


def iso(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def chain_of(length):
    steps = [component(f"step{i}", "logic.transform", config={"expression": text("@")}) for i in range(length)]
    connections = [connect("go", "start", "step0"), piped("feed", "in", "step0", "value", "input")]
    connections += [piped(f"c{i}", f"step{i}", f"step{i + 1}") for i in range(length - 1)]
    connections.append(piped("last", f"step{length - 1}", "end", "output", "result"))
    return document(
        [
            component("start", "flow.start"),
            component("in", "flow.input", alias="data"),
            *steps,
            component("end", "flow.end"),
        ],
        connections,
    )


def spread(stream):
    """Set the stream's events one second apart from BASE, in sequence order; their count."""
    events = list(Event.objects.filter(stream=stream).order_by("sequence"))
    for i, event in enumerate(events):
        Event.objects.filter(id=event.id).update(created_at=BASE + timedelta(seconds=i))
    return len(events)


@pytest.fixture
def channel(client_for, org, write_key):
    return workflow_blob(client_for(key=write_key), org)


@pytest.fixture
def execution(channel):
    upload_definition(channel, "long", chain_of(4))
    upload_definition(channel, "short", chain_of(1))
    first = start_execution(channel, "long", [{"alias": "data", "value": text("x")}])
    start_execution(channel, "short", [{"alias": "data", "value": text("another run, other events")}])
    count = spread(f"execution:{first['id']}")
    assert count == 2 + 2 * 5  # flow.entered, entered+exited for 4 steps and the end, flow.exited
    return first["id"], count


def page(channel, execution_id, **args):
    answer = channel.query("list_execution_events", execution_id=execution_id, **args)
    assert answer.status_code == 200, answer.content
    return answer.json()


def sequences(body, key="execution_events"):
    return [event["sequence"] for event in body[key]]


def walk(channel, command, key, **args):
    seen, cursor, pages = [], None, 0
    while True:
        answer = channel.query(command, **args, **({"cursor": cursor} if cursor else {}))
        assert answer.status_code == 200, answer.content
        body = answer.json()
        seen += sequences(body, key)
        pages += 1
        cursor = body.get("cursor")
        if cursor is None:
            return seen, pages


def test_execution_events_come_oldest_first_by_default_and_newest_first_on_request(channel, execution):
    execution_id, count = execution
    assert sequences(page(channel, execution_id)) == list(range(1, count + 1))
    assert sequences(page(channel, execution_id, ascending=True)) == list(range(1, count + 1))
    assert sequences(page(channel, execution_id, ascending=False)) == list(range(count, 0, -1))


def test_an_event_has_the_documented_shape(channel, execution):
    execution_id, _ = execution
    events = page(channel, execution_id)["execution_events"]
    first, processor = events[0], events[1]
    assert set(first) >= {"id", "revision_id", "session_id", "execution_id", "sequence", "created_at", "type"}
    assert first["type"] == "flow.entered" and first["execution_id"] == execution_id
    assert first["created_at"] == iso(BASE) and first["revision_id"] == channel.revision_id
    assert processor["type"] == "processor.entered"
    assert processor["attributes"] == {
        "processor_id": "step0",
        "processor_type": "logic.transform",
        "processor_name": "step0",
    }


def test_created_since_is_exclusive(channel, execution):
    execution_id, count = execution
    at_fifth = iso(BASE + timedelta(seconds=4))  # exactly when sequence 5 was created
    assert sequences(page(channel, execution_id, created_since=at_fifth)) == list(range(6, count + 1))
    just_before = iso(BASE + timedelta(seconds=4) - timedelta(microseconds=1))
    assert sequences(page(channel, execution_id, created_since=just_before)) == list(range(5, count + 1))


def test_created_before_is_exclusive_and_combines_with_created_since(channel, execution):
    execution_id, _ = execution
    at_fifth = iso(BASE + timedelta(seconds=4))
    assert sequences(page(channel, execution_id, created_before=at_fifth)) == [1, 2, 3, 4]
    window = page(channel, execution_id, created_since=iso(BASE + timedelta(seconds=1)), created_before=at_fifth)
    assert sequences(window) == [3, 4]
    newest_first = page(
        channel, execution_id, created_since=iso(BASE + timedelta(seconds=1)), created_before=at_fifth, ascending=False
    )
    assert sequences(newest_first) == [4, 3]


def test_a_window_after_the_last_event_is_empty(channel, execution):
    execution_id, count = execution
    body = page(channel, execution_id, created_since=iso(BASE + timedelta(seconds=count - 1)))
    assert body["execution_events"] == [] and "cursor" not in body


@pytest.mark.parametrize("ascending", [True, False])
@pytest.mark.parametrize("limit", [1, 3, 5, 200])
def test_limit_and_cursor_walk_the_whole_stream_exactly_once(channel, execution, ascending, limit):
    execution_id, count = execution
    seen, pages = walk(
        channel,
        "list_execution_events",
        "execution_events",
        execution_id=execution_id,
        limit=limit,
        ascending=ascending,
    )
    expected = list(range(1, count + 1)) if ascending else list(range(count, 0, -1))
    assert seen == expected
    assert pages == -(-count // limit)


def test_a_cursor_walk_stays_inside_its_time_window(channel, execution):
    execution_id, _ = execution
    seen, _ = walk(
        channel,
        "list_execution_events",
        "execution_events",
        execution_id=execution_id,
        limit=2,
        created_since=iso(BASE + timedelta(seconds=2)),
        created_before=iso(BASE + timedelta(seconds=9)),
    )
    assert seen == [4, 5, 6, 7, 8, 9]


def test_a_page_with_room_to_spare_has_no_cursor(channel, execution):
    execution_id, count = execution
    assert "cursor" not in page(channel, execution_id, limit=count)
    assert "cursor" in page(channel, execution_id, limit=count - 1)


@pytest.mark.parametrize(
    "args",
    [
        {"limit": 0},
        {"limit": 201},
        {"limit": "5"},
        {"created_since": "yesterday"},
        {"created_before": 12},
        {"ascending": "yes"},
        {"ascending": None},
        {"unknown": 1},
    ],
    ids=[
        "limit 0",
        "limit 201",
        "limit as text",
        "a bad time",
        "a number as time",
        "ascending as text",
        "a null",
        "an unknown argument",
    ],
)
def test_bad_listing_arguments_are_a_400(channel, args):
    # Arguments are checked before the execution is looked up.
    answer = channel.query("list_execution_events", execution_id="00000000-0000-4000-8000-000000000000", **args)
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_request_body"


def test_a_cursor_this_server_did_not_issue_is_a_400(channel, execution):
    execution_id, _ = execution
    answer = channel.query("list_execution_events", execution_id=execution_id, cursor="not-a-cursor")
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_request_body"


def test_events_of_an_execution_id_this_revision_does_not_have_are_a_403(channel):
    answer = channel.query("list_execution_events", execution_id="00000000-0000-4000-8000-000000000000")
    assert answer.status_code == 403 and answer.json()["error"] == "access_denied"


# --- Session events -----------------------------------------------------------------------------


@pytest.fixture
def session_stream(channel):
    session = ensure_session(channel)
    upload_definition(
        channel,
        "remember",
        document(
            [
                component("start", "flow.start"),
                component("in", "flow.input", alias="data"),
                component("set", "session.state_set", config={"key": text("last")}),
                component("end", "flow.end"),
            ],
            [
                connect("go", "start", "set"),
                piped("feed", "in", "set", "value", "input"),
                piped("out", "set", "end", "output", "result"),
            ],
        ),
    )
    for i in range(3):
        start_execution(channel, "remember", [{"alias": "data", "value": text(f"run {i}")}])
        channel.command("upload_session_object", session_id="main-session", alias=f"note-{i}", value=i)
    count = spread(f"session:{session['id']}")
    # per run: queued, running, state changed, completed; then the object upload
    assert count == 3 * 5
    return session["id"], count


def test_session_events_tell_what_happened_in_the_session(channel, session_stream):
    session_id, count = session_stream
    events = channel.query("list_session_events", session_id="main-session", limit=200).json()["session_events"]
    assert [e["sequence"] for e in events] == list(range(1, count + 1))
    assert [e["type"] for e in events[:5]] == [
        "execution_status_changed",
        "execution_status_changed",
        "session_state_changed",
        "execution_status_changed",
        "session_object_modified",
    ]
    assert [e["data"]["status"] for e in events[:5] if e["type"] == "execution_status_changed"] == [
        "queued",
        "running",
        "completed",
    ]
    assert all(e["session_id"] == session_id for e in events)
    assert events[2]["execution_id"] == events[0]["execution_id"] is not None
    assert events[4]["execution_id"] is None


def test_session_events_honour_order_window_limit_and_cursor(channel, session_stream):
    session_id, count = session_stream
    newest = channel.query("list_session_events", session_id=session_id, ascending=False, limit=3).json()
    assert sequences(newest, "session_events") == [count, count - 1, count - 2] and "cursor" in newest
    since = channel.query(
        "list_session_events", session_id="main-session", created_since=iso(BASE + timedelta(seconds=9))
    ).json()
    assert sequences(since, "session_events") == list(range(11, count + 1))
    before = channel.query(
        "list_session_events", session_id="main-session", created_before=iso(BASE + timedelta(seconds=2))
    ).json()
    assert sequences(before, "session_events") == [1, 2]
    for ascending in (True, False):
        seen, _ = walk(
            channel, "list_session_events", "session_events", session_id="main-session", limit=4, ascending=ascending
        )
        assert seen == (list(range(1, count + 1)) if ascending else list(range(count, 0, -1)))


def test_session_events_of_an_absent_session_are_a_403(channel):
    answer = channel.query("list_session_events", session_id="no-such-session")
    assert answer.status_code == 403 and answer.json()["error"] == "access_denied"
