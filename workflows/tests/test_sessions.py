"""Sessions, their objects and files, and the session events they emit (API.md §3.1)."""

import json
import os
import uuid

import pytest

from workflows.models import Session, SessionObject
from workflows.tests.support import ensure_session, workflow_blob

pytestmark = pytest.mark.django_db


@pytest.fixture
def channel(client_for, org, write_key):
    return workflow_blob(client_for(key=write_key), org)


def ok(answer):
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["status"] == "success"
    return body


def error(answer, status, code):
    assert answer.status_code == status, answer.content
    body = answer.json()
    assert body["status"] == "error" and body["error"] == code, body
    return body


def session_events(channel, session="main-session"):
    return ok(channel.query("list_session_events", session_id=session, limit=200))["session_events"]


# --- Sessions ----------------------------------------------------------------------------------------


def test_create_session_answers_the_new_open_session(channel):
    session = ok(channel.command("create_session", alias="chat-with-ada", description="first chat"))["session"]
    assert set(session) == {"id", "alias", "revision_id", "status", "description", "state", "created_at", "updated_at"}
    assert session["alias"] == "chat-with-ada" and session["description"] == "first chat"
    assert session["status"] == "open" and session["state"] == {}
    assert session["revision_id"] == channel.revision_id
    assert str(uuid.UUID(session["id"])) == session["id"]
    assert session["created_at"].endswith("Z") and len(session["created_at"]) == len("2026-11-21T10:00:00.000000Z")


def test_a_session_without_an_alias_has_none(channel):
    session = ok(channel.command("create_session"))["session"]
    assert session["alias"] is None and session["description"] == ""


def test_a_session_alias_in_use_is_a_400_alias_in_use(channel):
    ok(channel.command("create_session", alias="chat-with-ada"))
    error(channel.command("create_session", alias="chat-with-ada"), 400, "alias_in_use")
    assert Session.objects.count() == 1


@pytest.mark.parametrize("alias", ["short", "Has-Capitals", "00000000-0000-4000-8000-000000000000", ""])
def test_a_bad_session_alias_is_refused(channel, alias):
    error(channel.command("create_session", alias=alias), 400, "invalid_request_body")
    assert not Session.objects.exists()


def test_get_session_finds_a_session_by_id_and_by_alias(channel):
    created = ok(channel.command("create_session", alias="chat-with-ada"))["session"]
    assert ok(channel.query("get_session", session_id=created["id"]))["session"] == created
    assert ok(channel.query("get_session", session_id="chat-with-ada"))["session"] == created


@pytest.mark.parametrize("ref", ["no-such-session", "00000000-0000-4000-8000-000000000000"])
def test_an_absent_session_is_a_403(channel, ref):
    error(channel.query("get_session", session_id=ref), 403, "access_denied")
    error(channel.command("close_session", session_id=ref), 403, "access_denied")


def test_list_sessions_walks_every_session_once_with_limit_and_cursor(channel):
    created = {ok(channel.command("create_session", alias=f"session-{i}"))["session"]["id"] for i in range(5)}
    seen, cursor, pages = [], None, 0
    while True:
        page = ok(channel.query("list_sessions", limit=2, **({"cursor": cursor} if cursor else {})))
        assert len(page["sessions"]) <= 2
        seen += [session["id"] for session in page["sessions"]]
        pages += 1
        cursor = page.get("cursor")
        if cursor is None:
            break
    assert pages == 3
    assert sorted(seen) == sorted(created) and len(seen) == 5


def test_close_session_closes_it(channel):
    ok(channel.command("create_session", alias="chat-with-ada"))
    closed = ok(channel.command("close_session", session_id="chat-with-ada"))["session"]
    assert closed["status"] == "closed"
    assert ok(channel.query("get_session", session_id="chat-with-ada"))["session"]["status"] == "closed"


# --- Session objects -------------------------------------------------------------------------------------


def test_a_session_object_uploads_and_downloads(channel):
    ensure_session(channel)
    value = {"lines": ["tea", "milk"], "total": 2.5, "note": "é"}
    uploaded = ok(
        channel.command("upload_session_object", session_id="main-session", alias="basket.json", value=value)
    )["object"]
    assert uploaded["alias"] == "basket.json" and uploaded["kind"] == "value"
    assert uploaded["size"] == len(
        json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    )

    download = ok(channel.query("download_session_object", session_id="main-session", alias="basket.json"))
    assert download["value"] == value and download["object"] == uploaded

    ok(channel.command("upload_session_object", session_id="main-session", alias="basket.json", value=[]))
    assert ok(channel.query("download_session_object", session_id="main-session", alias="basket.json"))["value"] == []
    assert SessionObject.objects.count() == 1


def test_a_missing_session_object_is_refused_as_absent(channel):
    ensure_session(channel)
    error(channel.query("download_session_object", session_id="main-session", alias="nothing"), 403, "access_denied")


def test_session_objects_are_per_session(channel):
    ensure_session(channel, "session-one")
    ensure_session(channel, "session-two")
    ok(channel.command("upload_session_object", session_id="session-one", alias="mine", value=1))
    error(channel.query("download_session_object", session_id="session-two", alias="mine"), 403, "access_denied")
    assert ok(channel.query("list_session_objects", session_id="session-two"))["objects"] == []


ALIASES = ["a.json", "docs/sub/z.json", "docs/x.json", "docs/y.json", "img/p.png", "z.json"]


@pytest.fixture
def listed(channel):
    ensure_session(channel)
    for alias in reversed(ALIASES):
        ok(channel.command("upload_session_object", session_id="main-session", alias=alias, value=alias))
    return channel


def walk(channel, **args):
    """Every page of list_session_objects: (object aliases, prefixes, number of pages)."""
    objects, prefixes, cursor, pages = [], [], None, 0
    while True:
        page = ok(
            channel.query(
                "list_session_objects", session_id="main-session", **args, **({"cursor": cursor} if cursor else {})
            )
        )
        objects += [item["alias"] for item in page["objects"]]
        prefixes += page["prefixes"]
        pages += 1
        cursor = page.get("cursor")
        if cursor is None:
            return objects, prefixes, pages


def test_list_session_objects_filters_by_prefix(listed):
    objects, prefixes, _ = walk(listed, prefix="docs/")
    assert objects == ["docs/sub/z.json", "docs/x.json", "docs/y.json"] and prefixes == []


def test_list_session_objects_with_a_delimiter_folds_common_prefixes(listed):
    assert walk(listed, delimiter="/")[:2] == (["a.json", "z.json"], ["docs/", "img/"])
    assert walk(listed, prefix="docs/", delimiter="/")[:2] == (["docs/x.json", "docs/y.json"], ["docs/sub/"])


def test_list_session_objects_walks_every_object_once_with_a_cursor(listed):
    objects, prefixes, pages = walk(listed, limit=2)
    assert objects == ALIASES and prefixes == [] and pages == 3


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_list_session_objects_with_a_delimiter_walks_every_entry_once_with_a_cursor(listed, limit):
    objects, prefixes, _ = walk(listed, delimiter="/", limit=limit)
    assert (objects, prefixes) == (["a.json", "z.json"], ["docs/", "img/"])
    objects, prefixes, _ = walk(listed, prefix="docs/", delimiter="/", limit=limit)
    assert (objects, prefixes) == (["docs/x.json", "docs/y.json"], ["docs/sub/"])


def test_a_page_of_session_objects_holds_at_most_limit_entries(listed):
    page = ok(listed.query("list_session_objects", session_id="main-session", delimiter="/", limit=1))
    assert len(page["objects"]) + len(page["prefixes"]) == 1 and "cursor" in page


def test_delete_session_object_deletes_it_and_a_missing_one_is_refused_as_absent(channel):
    ensure_session(channel)
    ok(channel.command("upload_session_object", session_id="main-session", alias="old", value=1))
    assert ok(channel.command("delete_session_object", session_id="main-session", alias="old")) == {"status": "success"}
    error(channel.query("download_session_object", session_id="main-session", alias="old"), 403, "access_denied")
    error(channel.command("delete_session_object", session_id="main-session", alias="old"), 403, "access_denied")


# --- Session files ---------------------------------------------------------------------------------------


def upload_file(channel, data, session="main-session", alias="photos/cat.bin", content_type="application/octet-stream"):
    args = {"command": "upload_session_file", "session_id": session, "alias": alias}
    return channel.client.post(
        f"/v1/revisions/{channel.revision_id}/data/command",
        data=data,
        content_type=content_type,
        HTTP_X_REQUEST_BODY=json.dumps(args),
    )


def download_file(channel, session="main-session", alias="photos/cat.bin", accept="application/octet-stream"):
    return channel.client.post(
        f"/v1/revisions/{channel.revision_id}/data/query",
        {"command": "download_session_file", "session_id": session, "alias": alias},
        format="json",
        HTTP_ACCEPT=accept,
    )


@pytest.mark.parametrize("size", [10, 200 * 1024], ids=["small", "larger than the inline limit"])
def test_a_session_file_uploads_as_octet_stream_and_downloads_as_bytes(channel, size):
    ensure_session(channel)
    data = os.urandom(size)

    uploaded = ok(upload_file(channel, data))["object"]

    assert uploaded["alias"] == "photos/cat.bin" and uploaded["kind"] == "file" and uploaded["size"] == size
    answer = download_file(channel)
    assert answer.status_code == 200
    assert answer["Content-Type"] == "application/octet-stream"
    assert b"".join(answer.streaming_content) == data
    assert json.loads(answer["X-Response-Body"]) == {"status": "success", "object": uploaded}
    listed = ok(channel.query("list_session_objects", session_id="main-session", prefix="photos/"))["objects"]
    assert listed == [uploaded]


def test_a_file_download_without_accept_octet_stream_is_refused(channel):
    ensure_session(channel)
    ok(upload_file(channel, b"bytes"))
    error(download_file(channel, accept="application/json"), 406, "not_acceptable")


def test_a_file_upload_without_an_octet_stream_body_is_refused(channel):
    ensure_session(channel)
    answer = channel.command("upload_session_file", session_id="main-session", alias="photos/cat.bin")
    error(answer, 400, "invalid_request_body")
    assert not SessionObject.objects.exists()


def test_files_and_values_are_read_by_their_own_queries(channel):
    ensure_session(channel)
    ok(upload_file(channel, b"bytes", alias="file.bin"))
    ok(channel.command("upload_session_object", session_id="main-session", alias="value.json", value=1))
    error(
        channel.query("download_session_object", session_id="main-session", alias="file.bin"), 403, "access_denied"
    )
    error(download_file(channel, alias="value.json"), 403, "access_denied")


def test_a_missing_session_file_and_an_absent_session_are_refused_as_absent(channel):
    ensure_session(channel)
    error(download_file(channel, alias="nothing.bin"), 403, "access_denied")
    error(upload_file(channel, b"x", session="no-such-session"), 403, "access_denied")
    assert not SessionObject.objects.exists()


# --- Session events ---------------------------------------------------------------------------------------


def test_session_object_changes_are_session_events_in_order(channel):
    session = ensure_session(channel)
    ok(channel.command("upload_session_object", session_id="main-session", alias="a", value={"x": 1}))
    ok(upload_file(channel, b"12345", alias="b.bin"))
    ok(channel.command("delete_session_object", session_id="main-session", alias="a"))

    events = session_events(channel)

    assert [(e["sequence"], e["type"], e["data"]) for e in events] == [
        (1, "session_object_modified", {"alias": "a", "size": 7}),
        (2, "session_object_modified", {"alias": "b.bin", "size": 5}),
        (3, "session_object_deleted", {"alias": "a"}),
    ]
    assert all(e["session_id"] == session["id"] and e["revision_id"] == channel.revision_id for e in events)
    assert all(e["execution_id"] is None for e in events)
