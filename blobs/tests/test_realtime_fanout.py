"""Live events of the WebSocket API: one layer subscription per process, gaps and lost tails."""

import json

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from blobhub.asgi import application
from blobhub.channel_layer import EmbeddedChannelLayer
from blobs import events, realtime
from orgs.tests.factories import MembershipFactory, make_api_key

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@pytest.fixture
def member():
    membership = MembershipFactory(role="admin")
    return membership.org, make_api_key(membership.org, "read")[1]


async def connected(key) -> WebsocketCommunicator:
    ws = WebsocketCommunicator(application, "/v1/ws", headers=[(b"x-api-key", key.encode())])
    assert (await ws.connect())[0]
    return ws


async def subscribe(ws, org, since=None) -> None:
    params = {"scope": "core", "scope_id": str(org.id), "target": "organization", "target_id": str(org.id)}
    if since is not None:
        params["since"] = since
    await ws.send_to(text_data=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "subscription/add", "params": params}))
    assert json.loads(await ws.receive_from(timeout=5)) == {"jsonrpc": "2.0", "id": 1, "result": {}}


async def sequences(ws, count, timeout=5) -> list[int]:
    received = []
    while len(received) < count:
        message = json.loads(await ws.receive_from(timeout=timeout))
        assert message["method"] == "subscription/event"
        received.append(message["params"]["event"]["sequence"])
    return received


@database_sync_to_async
def record(org, type="test.event"):
    return events.record(org_id=org.id, stream=events.stream_name("org", org.id), type=type, data={}).sequence


class Lossy:
    """The channel layer dropping every group_send while `dropping` is set."""

    def __init__(self, monkeypatch):
        self.layer = get_channel_layer()
        self.dropping = False
        original = self.layer.group_send

        async def group_send(group, message):
            if not self.dropping:
                await original(group, message)

        monkeypatch.setattr(self.layer, "group_send", group_send)


async def test_connections_on_one_stream_share_one_membership_of_its_group_and_all_get_each_event(member):
    org, key = await database_sync_to_async(lambda: member)()
    clients = [await connected(key) for _ in range(3)]
    for ws in clients:
        await subscribe(ws, org)
    group = events.group_name(events.stream_name("org", org.id))
    # Membership is visible on the in-memory layer (the fast suite); channels_redis keeps its own.
    in_memory = isinstance(get_channel_layer(), EmbeddedChannelLayer)
    if in_memory:
        assert len(get_channel_layer().groups.get(group, {})) == 1
    first, second = await record(org), await record(org)
    for ws in clients:
        assert await sequences(ws, 2) == [first, second]
        assert await ws.receive_nothing(timeout=0.2)
    for ws in clients:
        await ws.disconnect()
    if in_memory:
        assert not get_channel_layer().groups.get(group)


async def test_an_event_the_layer_dropped_is_filled_in_from_storage_before_the_next(member, monkeypatch):
    org, key = await database_sync_to_async(lambda: member)()
    layer = Lossy(monkeypatch)
    ws = await connected(key)
    await subscribe(ws, org, since=0)
    layer.dropping = True
    dropped = await record(org)
    layer.dropping = False
    after = await record(org)
    assert await sequences(ws, 2) == [dropped, after]
    assert await ws.receive_nothing(timeout=0.2)
    await ws.disconnect()


async def test_a_dropped_tail_of_a_quiet_stream_is_caught_up_from_storage_once(member, monkeypatch):
    org, key = await database_sync_to_async(lambda: member)()
    monkeypatch.setattr(realtime, "RECHECK_SECONDS", 0.1)
    layer = Lossy(monkeypatch)
    ws = await connected(key)
    await subscribe(ws, org, since=0)
    layer.dropping = True
    tail = [await record(org), await record(org)]
    assert await sequences(ws, 2, timeout=3) == tail  # nothing came after them: the watchdog found them
    layer.dropping = False
    live = await record(org)
    assert await sequences(ws, 1) == [live]
    assert await ws.receive_nothing(timeout=0.5)
    await ws.disconnect()


async def test_a_subscription_removed_and_added_again_keeps_receiving(member):
    org, key = await database_sync_to_async(lambda: member)()
    ws = await connected(key)
    await subscribe(ws, org)
    params = {"scope": "core", "scope_id": str(org.id), "target": "organization", "target_id": str(org.id)}
    await ws.send_to(text_data=json.dumps({"jsonrpc": "2.0", "id": 2, "method": "subscription/remove", "params": params}))
    assert json.loads(await ws.receive_from())["result"] == {}
    await record(org)
    assert await ws.receive_nothing(timeout=0.2)
    await subscribe(ws, org)
    live = await record(org)
    assert await sequences(ws, 1) == [live]
    await ws.disconnect()
