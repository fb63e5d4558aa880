"""The WebSocket API on the real ASGI server with Redis and a worker process (API.md §4)."""

import asyncio
import base64
import json

import pytest
import websockets

from blobs.services import content
from blobs.tests.factories import BlobFactory
from orgs.principal import Principal
from orgs.tests.factories import MembershipFactory, make_api_key
from tests.processes import wait_for
from workflows.events import stream_events
from workflows.models import Execution
from workflows.services import executions, sessions
from workflows.tests.support import component, connect, document, number, text

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SLOW = document(
    [
        component("start", "flow.start"),
        component("first", "logic.transform", config={"expression": text("`1`")}),
        component("wait", "flow.delay", config={"seconds": number(1.5)}),
        component("second", "logic.transform", config={"expression": text("`2`")}),
        component("end", "flow.end"),
    ],
    [
        connect("a", "start", "first"),
        connect("b", "first", "wait", source_port="output", target_port="input"),
        connect("c", "wait", "second"),
        connect("d", "second", "end", source_port="output", target_port="result"),
    ],
)


@pytest.fixture
def running(tasks_go_through_the_broker):
    membership = MembershipFactory(role="admin")
    key = make_api_key(membership.org, "read")[1]
    blob = BlobFactory(org=membership.org)
    revision = blob.revisions.get()
    content.file_put_json(revision, "definitions/workflow/slow.json", SLOW)
    principal = Principal(user=membership.user)
    session = sessions.session_create(principal=principal, revision=revision, alias="ws-session", description="")
    execution = executions.execution_create(principal=principal, revision=revision, session=session, workflow={"definition": "slow"})
    return key, revision, execution


def ws_url(asgi_server) -> str:
    return asgi_server.url.replace("http://", "ws://") + "/v1/ws"


async def rpc(ws, method, params, request_id):
    await ws.send(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}))
    events = []
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if message.get("method") == "subscription/event":
            events.append(message["params"]["event"])
        elif message.get("id") == request_id:
            return message, events


async def collect(ws, events, until_type="flow.exited", stop_after=None):
    while not events or events[-1]["type"] != until_type:
        if stop_after is not None and len(events) >= stop_after:
            return events
        message = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if message.get("method") == "subscription/event":
            events.append(message["params"]["event"])
    return events


def subscription(revision, execution, since=None):
    params = {"scope": "revision", "scope_id": str(revision.id), "target": "execution", "target_id": str(execution.id)}
    if since is not None:
        params["since"] = since
    return params


def stored(execution) -> list[int]:
    wait_for(lambda: Execution.objects.filter(id=execution.id, status="completed").exists(), timeout=60, what="the execution completing")
    return list(stream_events("execution", execution.id).order_by("sequence").values_list("sequence", flat=True))


def test_a_python_client_watches_an_execution_live_and_gets_the_whole_stream_in_order(asgi_server, celery_worker_process, running):
    key, revision, execution = running

    async def watch():
        async with websockets.connect(ws_url(asgi_server), additional_headers={"X-API-Key": key}) as ws:
            answer, events = await rpc(ws, "subscription/add", subscription(revision, execution, since=0), 1)
            assert answer["result"] == {}
            return await collect(ws, events)

    events = asyncio.run(watch())
    assert [event["sequence"] for event in events] == stored(execution)
    assert events[0]["type"] == "flow.entered"


def test_a_browser_client_reconnects_with_since_and_ends_with_exactly_the_full_stream(asgi_server, celery_worker_process, running):
    key, revision, execution = running
    encoded = base64.b64encode(key.encode()).decode().rstrip("=")

    async def watch():
        protocols = ["x-api-key.base64", encoded]
        async with websockets.connect(ws_url(asgi_server), subprotocols=protocols) as ws:
            assert ws.subprotocol == "x-api-key.base64"
            _, events = await rpc(ws, "subscription/add", subscription(revision, execution, since=0), 1)
            events = await collect(ws, events, stop_after=3)
        # Disconnected in the middle; the rest arrives after a reconnect with `since`.
        async with websockets.connect(ws_url(asgi_server), subprotocols=protocols) as ws:
            _, more = await rpc(ws, "subscription/add", subscription(revision, execution, since=events[-1]["sequence"]), 1)
            return events + await collect(ws, more)

    events = asyncio.run(watch())
    sequences = [event["sequence"] for event in events]
    assert sequences == stored(execution)
    assert len(sequences) == len(set(sequences))


def test_an_outsiders_subscription_is_refused_and_it_receives_nothing(asgi_server, celery_worker_process, running):
    _, revision, execution = running
    outsider = make_api_key(MembershipFactory().org, "write")[1]

    async def attempt():
        async with websockets.connect(ws_url(asgi_server), additional_headers={"X-API-Key": outsider}) as ws:
            answer, events = await rpc(ws, "subscription/add", subscription(revision, execution, since=0), 1)
            try:
                extra = await asyncio.wait_for(ws.recv(), 2)
            except asyncio.TimeoutError:
                extra = None
            return answer, events, extra

    answer, events, extra = asyncio.run(attempt())
    assert answer["error"]["code"] == 403
    assert events == [] and extra is None
