"""The WebSocket API with WebsocketCommunicator: auth, subscriptions, replay, robustness."""

import asyncio
import base64
import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext

from blobhub.api.errors import ApplicationError
from blobhub.asgi import application
from blobs import realtime
from blobs.models import Blob, BlobMember, Revision
from blobs.tests.factories import BlobFactory
from orgs import tokens
from orgs.authentication import principal_from_api_key
from orgs.models import ApiKey, Membership, User
from orgs.principal import Principal
from orgs.tests.factories import MembershipFactory, UserFactory, make_api_key
from workflows.tests.support import approval_flow, commit, start_execution, upload_definition, workflow_blob

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


def connect(key=None, subprotocols=None, headers=None):
    headers = list(headers or [])
    if key:
        headers.append((b"x-api-key", key.encode()))
    return WebsocketCommunicator(application, "/v1/ws", headers=headers, subprotocols=subprotocols)


_pending: dict[int, list] = {}


async def call(ws, method, params=None, request_id=1):
    """Send a request and return its answer; notifications that come first are kept."""
    await ws.send_to(text_data=json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}}))
    while True:
        message = json.loads(await ws.receive_from(timeout=5))
        if message.get("method") == "subscription/event":
            _pending.setdefault(id(ws), []).append(message["params"])
        elif message.get("id") == request_id:
            return message


async def notifications(ws, count, timeout=10):
    received = _pending.pop(id(ws), [])
    while len(received) < count:
        message = json.loads(await ws.receive_from(timeout=timeout))
        if message.get("method") == "subscription/event":
            received.append(message["params"])
    return received


@database_sync_to_async
def run_execution(key, org_alias):
    """Create a workflow blob, upload the approval flow and run it (tasks run inline)."""
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_X_API_KEY=key)
    client.post(f"/v1/orgs/{org_alias}/blobs", {"alias": "live-flows", "type": "blobhub.compute.workflow"}, format="json")
    revision_id = client.get(f"/v1/blobs/{org_alias}/live-flows/revisions").json()["revisions"][0]["id"]
    url = f"/v1/revisions/{revision_id}/data/command"
    client.post(url, {"command": "create_definition", "alias": "approve", "category": "workflow"}, format="json")
    client.post(url, {"command": "upload_definition", "alias": "approve", "definition": approval_flow()}, format="json")
    client.post(url, {"command": "create_session", "alias": "live-session"}, format="json")
    answer = client.post(url, {
        "command": "create_execution", "target": {"session": "live-session"}, "workflow": {"definition": "approve"},
        "input_data": [{"alias": "order", "value": {"type": "json", "json": {"items": [{"price": 1}]}}}],
    }, format="json").json()
    return revision_id, answer["execution"]["id"]


@database_sync_to_async
def stored_sequences(execution_id):
    from workflows.events import stream_events

    return list(stream_events("execution", execution_id).order_by("sequence").values_list("sequence", flat=True))


@pytest.fixture
def member():
    membership = MembershipFactory(role="admin")
    return membership.org, make_api_key(membership.org, "write")[1]


async def test_a_client_replays_an_execution_stream_from_since_with_no_gap_and_no_duplicate(member):
    org, key = await database_sync_to_async(lambda: member)()
    revision_id, execution_id = await run_execution(key, org.alias)
    stored = await stored_sequences(execution_id)
    ws = connect(key)
    connected, _ = await ws.connect()
    assert connected
    assert (await call(ws, "status/initialize", {"client_info": {"name": "test", "version": "1"}}))["result"] == {
        "server_info": realtime.SERVER_INFO
    }
    params = {"scope": "revision", "scope_id": revision_id, "target": "execution", "target_id": execution_id, "since": 3}
    assert (await call(ws, "subscription/add", params))["result"] == {}
    received = await notifications(ws, len(stored) - 3)
    assert [item["event"]["sequence"] for item in received] == stored[3:]
    assert received[-1]["event"]["type"] == "flow.exited"
    assert received[0]["event"]["execution_id"] == execution_id
    assert await ws.receive_nothing(timeout=0.3)
    await ws.disconnect()


async def test_live_events_arrive_after_subscribing_and_types_filter_them(member):
    org, key = await database_sync_to_async(lambda: member)()
    ws = connect(key)
    await ws.connect()
    params = {"scope": "core", "scope_id": str(org.id), "target": "organization", "target_id": str(org.id), "types": ["blob.created"]}
    assert "result" in await call(ws, "subscription/add", params)
    await run_execution(key, org.alias)
    [event] = await notifications(ws, 1)
    assert event["event"]["type"] == "blob.created" and event["event"]["data"]["alias"] == "live-flows"
    assert await ws.receive_nothing(timeout=0.3)
    await ws.disconnect()


async def test_browsers_authenticate_with_the_subprotocol_pair_and_it_is_echoed(member):
    org, key = await database_sync_to_async(lambda: member)()
    encoded = base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")
    ws = connect(subprotocols=["x-api-key.base64", encoded])
    connected, subprotocol = await ws.connect()
    assert connected and subprotocol == "x-api-key.base64"
    assert "result" in await call(ws, "status/initialize")
    await ws.disconnect()


async def test_no_credentials_and_bad_credentials_are_refused():
    for ws in (connect(), connect("bh_000000000000_" + "x" * 43)):
        connected, code = await ws.connect()
        assert not connected and code == realtime.CLOSE_UNAUTHORIZED


@database_sync_to_async
def console_session(user):
    """The session cookie the console's login gives `user`."""
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


async def test_the_console_session_authenticates_pages_of_our_own_origin_only(member):
    org, _ = await database_sync_to_async(lambda: member)()
    user = await database_sync_to_async(lambda: org.memberships.get().user)()
    session = await console_session(user)
    cookie = (b"cookie", f"sessionid={session}".encode())
    host = (b"host", b"blobhub.test")
    ws = connect(headers=[cookie, host, (b"origin", b"https://blobhub.test")])
    connected, _ = await ws.connect()
    assert connected
    params = {"scope": "core", "scope_id": str(org.id), "target": "organization", "target_id": str(org.id)}
    assert "result" in await call(ws, "subscription/add", params)
    await ws.disconnect()
    for headers in (
        [cookie, host, (b"origin", b"https://elsewhere.test")],  # another site's page
        [cookie, host],  # no origin: not a page of ours
        [(b"cookie", b"sessionid=forged"), host, (b"origin", b"https://blobhub.test")],
    ):
        connected, code = await connect(headers=headers).connect()
        assert not connected and code == realtime.CLOSE_UNAUTHORIZED


async def test_an_outsider_cannot_subscribe_and_learns_nothing(member):
    org, key = await database_sync_to_async(lambda: member)()
    revision_id, execution_id = await run_execution(key, org.alias)
    other = await database_sync_to_async(lambda: make_api_key(MembershipFactory().org, "write")[1])()
    ws = connect(other)
    await ws.connect()
    answers = []
    for params in (
        {"scope": "revision", "scope_id": revision_id, "target": "execution", "target_id": execution_id, "since": 0},
        {"scope": "core", "scope_id": str(org.id), "target": "organization", "target_id": str(org.id)},
        {"scope": "revision", "scope_id": revision_id, "target": "execution", "target_id": "00000000-0000-4000-8000-000000000000"},
    ):
        answers.append((await call(ws, "subscription/add", params))["error"])
    assert all(error["code"] == 403 for error in answers)
    assert answers[0] == answers[2]  # an absent execution looks the same
    assert await ws.receive_nothing(timeout=0.3)
    await ws.disconnect()


async def test_bad_messages_get_errors_and_the_connection_stays_usable(member, monkeypatch):
    org, key = await database_sync_to_async(lambda: member)()
    monkeypatch.setattr(realtime, "MAX_SUBSCRIPTIONS", 1)
    ws = connect(key)
    await ws.connect()
    await ws.send_to(text_data="{not json")
    assert json.loads(await ws.receive_from())["error"]["code"] == 400
    await ws.send_to(text_data="x" * (realtime.MAX_FRAME_BYTES + 1))
    assert json.loads(await ws.receive_from())["error"]["code"] == 400
    assert (await call(ws, "no/such"))["error"]["code"] == 405
    assert (await call(ws, "subscription/add", {"scope": "core"}))["error"]["code"] == 400
    assert (await call(ws, "subscription/add", {"scope": "core", "scope_id": "x", "target": "nope", "target_id": "y"}))["error"]["code"] == 400
    first = {"scope": "core", "scope_id": str(org.id), "target": "organization", "target_id": str(org.id)}
    assert "result" in await call(ws, "subscription/add", first)
    second = {"scope": "core", "scope_id": str(org.id), "target": "organization", "target_id": org.alias}
    assert (await call(ws, "subscription/add", second))["error"]["code"] == 400  # over the per-connection limit
    assert (await call(ws, "subscription/remove", first))["result"] == {}
    assert (await call(ws, "status/ping"))["result"] == {}
    await ws.disconnect()


async def test_a_key_revoked_while_connected_is_disconnected(member, monkeypatch):
    org, key = await database_sync_to_async(lambda: member)()
    monkeypatch.setattr(realtime, "RECHECK_SECONDS", 0.1)
    ws = connect(key)
    await ws.connect()
    await database_sync_to_async(lambda: ApiKey.objects.filter(org=org).update(revoked_at="2020-01-01T00:00:00Z"))()
    output = await ws.receive_output(timeout=5)
    assert output == {"type": "websocket.close", "code": realtime.CLOSE_UNAUTHORIZED}


async def test_a_frame_nested_deeper_than_the_parser_goes_is_a_400_and_the_connection_stays(member):
    _, key = await database_sync_to_async(lambda: member)()
    ws = connect(key)
    await ws.connect()
    await ws.send_to(text_data="[" * 30_000 + "]" * 30_000)
    assert json.loads(await ws.receive_from())["error"] == {"code": 400, "message": "The message is not valid JSON."}
    assert (await call(ws, "status/ping"))["result"] == {}
    await ws.disconnect()


@database_sync_to_async
def public_snapshot_with_a_run(key, org):
    """A public workflow blob whose snapshot revision holds a session and an execution."""
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_X_API_KEY=key)
    channel = workflow_blob(client, org, "public-flows")
    upload_definition(channel, "approve", approval_flow())
    commit(channel)
    assert client.post(f"/v1/revisions/{channel.revision_id}/snapshot", {}, format="json").status_code == 200
    Blob.objects.filter(alias="public-flows").update(visibility=Blob.Visibility.PUBLIC)
    inputs = [{"alias": "order", "value": {"type": "json", "json": {"items": [{"price": 1}]}}}]
    execution = start_execution(channel, "approve", inputs, session="live-session")
    return str(Blob.objects.get(alias="public-flows").id), channel.revision_id, execution["id"]


def bearer(token):
    return [(b"authorization", f"Bearer {token}".encode())]


async def test_a_public_blobs_readers_may_not_subscribe_to_its_owners_activity(member):
    org, key = await database_sync_to_async(lambda: member)()
    blob_id, revision_id, execution_id = await public_snapshot_with_a_run(key, org)
    streams = [
        {"scope": "core", "scope_id": str(org.id), "target": "blob", "target_id": blob_id},
        {"scope": "core", "scope_id": revision_id, "target": "revision", "target_id": revision_id},
        {"scope": "revision", "scope_id": revision_id, "target": "session", "target_id": "live-session"},
        {"scope": "revision", "scope_id": revision_id, "target": "execution", "target_id": execution_id},
    ]
    outsider = await database_sync_to_async(lambda: make_api_key(MembershipFactory().org, "write")[1])()
    anonymous = await database_sync_to_async(lambda: tokens.issue_pair(anonymous_id="visitor")["access_token"])()
    for ws in (connect(outsider), connect(headers=bearer(anonymous))):
        assert (await ws.connect())[0]
        for params in streams:
            assert (await call(ws, "subscription/add", {**params, "since": 0}))["error"]["code"] == 403
        assert await ws.receive_nothing(timeout=0.3)  # no draft, operation, session or output
        await ws.disconnect()
    owner = connect(key)
    await owner.connect()
    for params in streams:
        assert (await call(owner, "subscription/add", params))["result"] == {}
    await owner.disconnect()


async def closed_once_access_is_lost(ws, params, lose_access):
    """Subscribe, lose access, and be disconnected with 4403; subscribing again is a 403."""
    assert (await ws.connect())[0]
    assert (await call(ws, "subscription/add", params))["result"] == {}
    await database_sync_to_async(lose_access)()
    assert await ws.receive_output(timeout=5) == {"type": "websocket.close", "code": realtime.CLOSE_FORBIDDEN}


async def test_a_subscriber_who_loses_access_to_its_target_is_disconnected(member, monkeypatch):
    monkeypatch.setattr(realtime, "RECHECK_SECONDS", 0.1)
    org, _ = await database_sync_to_async(lambda: member)()

    def reader_of_the_org():
        user = MembershipFactory(org=org, role="read").user
        return user, tokens.issue_pair(user=user)["access_token"]

    user, token = await database_sync_to_async(reader_of_the_org)()
    org_stream = {"scope": "core", "scope_id": str(org.id), "target": "organization", "target_id": str(org.id)}
    await closed_once_access_is_lost(
        connect(headers=bearer(token)), org_stream, lambda: Membership.objects.filter(org=org, user=user).delete()
    )

    def member_of_a_blob():
        user, blob = UserFactory(), BlobFactory(org=org)
        BlobMember.objects.create(org=org, blob=blob, user=user, role="read")
        return user, blob, tokens.issue_pair(user=user)["access_token"]

    user, blob, token = await database_sync_to_async(member_of_a_blob)()
    blob_stream = {"scope": "core", "scope_id": str(org.id), "target": "blob", "target_id": str(blob.id)}
    await closed_once_access_is_lost(
        connect(headers=bearer(token)), blob_stream, lambda: BlobMember.objects.filter(blob=blob, user=user).delete()
    )

    ws = connect(headers=bearer(token))  # the client reconnects
    assert (await ws.connect())[0]
    assert (await call(ws, "subscription/add", blob_stream))["error"]["code"] == 403
    await ws.disconnect()


async def test_connections_on_one_credential_share_each_recheck_of_a_subscription(member, monkeypatch):
    monkeypatch.setattr(realtime, "RECHECK_SECONDS", 0.4)
    org, key = await database_sync_to_async(lambda: member)()
    checks = []
    authorized_streams = realtime._authorized_streams
    monkeypatch.setattr(realtime, "_authorized_streams", lambda *args: checks.append(args) or authorized_streams(*args))
    params = {"scope": "core", "scope_id": str(org.id), "target": "organization", "target_id": str(org.id)}
    clients = [connect(key) for _ in range(20)]
    for ws in clients:
        await ws.connect()
        assert "result" in await call(ws, "subscription/add", params)
    checks.clear()
    await asyncio.sleep(1.0)  # two or three rechecks of each connection
    assert 1 <= len(checks) < len(clients)  # one query per check, not one per connection
    for ws in clients:
        assert await ws.receive_nothing(timeout=0)  # all still connected
        await ws.disconnect()


async def closed_once_its_credential_ends(headers, end=lambda: None):
    """Connect, end the credential the connection opened with, and be closed with 4401; a new
    connection with that credential is refused as well."""
    ws = connect(headers=headers)
    assert (await ws.connect())[0]
    await database_sync_to_async(end)()
    assert await ws.receive_output(timeout=5) == {"type": "websocket.close", "code": realtime.CLOSE_UNAUTHORIZED}
    assert await connect(headers=headers).connect() == (False, realtime.CLOSE_UNAUTHORIZED)


@database_sync_to_async
def console_user_and_token(org):
    user = MembershipFactory(org=org, role="read").user
    client = Client()
    client.force_login(user)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    return user, client, session, tokens.issue_pair(user=user)["access_token"]


def console_headers(session):
    return [(b"cookie", f"sessionid={session}".encode()), (b"host", b"testserver"), (b"origin", b"http://testserver")]


def change_password(user):
    user = User.objects.get(id=user.id)
    user.set_password("a brand new password")
    user.save()


async def test_logging_out_of_the_console_closes_its_websockets(member, monkeypatch):
    monkeypatch.setattr(realtime, "RECHECK_SECONDS", 0.1)
    org, _ = await database_sync_to_async(lambda: member)()
    _, client, session, _ = await console_user_and_token(org)
    await closed_once_its_credential_ends(console_headers(session), client.logout)


async def test_a_password_change_closes_the_websockets_of_the_users_sessions_and_login_tokens(member, monkeypatch):
    monkeypatch.setattr(realtime, "RECHECK_SECONDS", 0.1)
    org, _ = await database_sync_to_async(lambda: member)()
    user, _, session, token = await console_user_and_token(org)
    with_token = connect(headers=bearer(token))
    assert (await with_token.connect())[0]
    await closed_once_its_credential_ends(console_headers(session), lambda: change_password(user))
    closed = await with_token.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": realtime.CLOSE_UNAUTHORIZED}


async def test_a_websocket_is_closed_when_its_access_token_expires(member, monkeypatch):
    monkeypatch.setattr(realtime, "RECHECK_SECONDS", 0.1)
    org, _ = await database_sync_to_async(lambda: member)()
    user, _, _, _ = await console_user_and_token(org)
    with override_settings(ACCESS_TOKEN_TTL_SECONDS=1):
        token = await database_sync_to_async(lambda: tokens.issue_pair(user=user)["access_token"])()
    await closed_once_its_credential_ends(bearer(token))  # within a second and a recheck


async def test_the_recheck_authorizes_every_target_as_subscription_add_does(member):
    org, key = await database_sync_to_async(lambda: member)()
    blob_id, revision_id, execution_id = await public_snapshot_with_a_run(key, org)

    def compare():
        from workflows.models import Session
        from workflows.services.sessions import session_create

        owner = principal_from_api_key(key)
        revision = Revision.objects.get(id=revision_id)
        session_create(principal=owner, revision=revision, alias=None, description="no alias")
        session_id = str(Session.objects.get(alias="live-session").id)
        readable = [  # by the owner
            ("core", str(org.id), "organization", str(org.id)),
            ("core", str(org.id), "organization", org.alias),
            ("core", str(org.id), "blob", blob_id),
            ("core", revision_id, "revision", revision_id),
            ("revision", revision_id, "session", "live-session"),
            ("revision", revision_id, "session", session_id),
            ("revision", revision_id, "execution", execution_id),
        ]
        absent = "00000000-0000-4000-8000-000000000000"
        keys = readable + [
            ("core", str(org.id), "organization", "no-such-org"),
            ("core", str(org.id), "blob", absent),
            ("core", revision_id, "revision", "!!"),
            ("revision", revision_id, "session", "!!"),  # names no session, not the one without an alias
            ("revision", absent, "session", "live-session"),
            ("revision", revision_id, "execution", absent),
            ("revision", "!!", "execution", execution_id),
        ]
        blob_member = UserFactory()
        BlobMember.objects.create(org=org, blob_id=blob_id, user=blob_member, role="read")
        other_blob = BlobFactory(org=org)
        principals = [
            owner,
            Principal(user=MembershipFactory(org=org, role="read").user),
            Principal(user=blob_member),
            principal_from_api_key(make_api_key(org, "read", blob_id=blob_id)[1]),
            principal_from_api_key(make_api_key(org, "read", blob=other_blob)[1]),
            Principal(user=UserFactory()),  # reads the blob only because it is public
            principal_from_api_key(make_api_key(MembershipFactory().org, "write")[1]),
            Principal(anonymous_id="visitor"),
        ]

        def one_by_one(principal):
            answers = {}
            for key_ in keys:
                try:
                    answers[key_] = realtime._targets[(key_[0], key_[2])].authorize(principal, key_[1], key_[3])
                except ApplicationError:
                    answers[key_] = None
            return answers

        def all_at_once(principal):
            answers = realtime._authorized_streams(principal, [("authorized", key_) for key_ in keys])
            return {question[-1]: stream for question, stream in answers.items()}

        assert [key_ for key_, stream in one_by_one(owner).items() if stream] == readable
        for principal in principals:
            assert all_at_once(principal) == one_by_one(principal), principal.label
        Blob.objects.filter(id=blob_id).update(status=Blob.Status.DELETING)
        for principal in principals:
            assert all_at_once(principal) == one_by_one(principal), principal.label

    await database_sync_to_async(compare)()


async def test_rechecking_a_hundred_subscriptions_is_a_handful_of_queries(member):
    org, _ = await database_sync_to_async(lambda: member)()

    def recheck_queries():
        user = MembershipFactory(org=org, role="read").user
        blobs = BlobFactory.create_batch(realtime.MAX_SUBSCRIPTIONS // 2, org=org)
        revisions = Revision.objects.filter(blob__in=blobs)
        questions = [("authorized", ("core", str(org.id), "blob", str(blob.id))) for blob in blobs]
        questions += [("authorized", ("core", str(r.id), "revision", str(r.id))) for r in revisions]
        with CaptureQueriesContext(connection) as queries:
            streams = realtime._authorized_streams(Principal(user=user), questions)
        assert all(streams.values()) and len(streams) == realtime.MAX_SUBSCRIPTIONS
        return len(queries)

    assert await database_sync_to_async(recheck_queries)() <= 6


async def test_the_connections_client_address_is_the_one_the_trusted_proxy_saw(member):
    _, key = await database_sync_to_async(lambda: member)()
    headers = [(b"x-api-key", key.encode()), (b"x-forwarded-for", b"203.0.113.66, 198.51.100.7")]
    scope = {"client": ["10.0.0.2", 50000], "headers": headers}
    with override_settings(REST_FRAMEWORK={**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}):
        principal, _, _ = await database_sync_to_async(realtime._authenticate)(scope)
    assert principal.client_ip == "198.51.100.7"  # not the entry the client wrote
    principal, _, _ = await database_sync_to_async(realtime._authenticate)(scope)
    assert principal.client_ip == "10.0.0.2"  # no trusted proxy: the header is ignored
