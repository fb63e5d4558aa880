"""The WebSocket API (API.md §4): one connection, authorized subscriptions, replay with no gap.

Each subscription names a stream of the event table. The consumer joins the stream's
channel-layer group first, then replays the stored events after `since`, then passes
live ones on, dropping any whose sequence it has already sent: no gap, no duplicate.
Authorization uses the same selectors as REST, for every subscription, and is checked
again every few seconds, so a revoked key stops receiving and is disconnected.
"""

import asyncio
import base64
import binascii
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from blobhub.api.errors import ApplicationError
from blobs import events as event_store
from blobs.models import Event
from orgs.authentication import principal_from_api_key, principal_from_bearer
from orgs.principal import Principal

logger = logging.getLogger("blobhub.realtime")

SERVER_INFO = {"name": "blobhub", "version": "1.0.0"}
MAX_FRAME_BYTES = 64 * 1024
MAX_SUBSCRIPTIONS = 100
MAX_REPLAY = 10_000
RECHECK_SECONDS = 2.0
CLOSE_UNAUTHORIZED = 4401


# --- Subscription targets -----------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """How `(scope, target)` maps to a stream, who may read it, and how its events look.

    `authorize(principal, scope_id, target_id)` raises ApplicationError when the principal
    may not read it and returns the stream name; `render(event)` turns the stored form
    (blobs.events.render) into what the subscriber receives, the same for every subscriber.
    """

    authorize: Callable[[Principal, str, str], str]
    # Depends on the event only: its output is shared by every subscriber (see _notification).
    render: Callable[[dict], dict] = lambda event: event


_targets: dict[tuple[str, str], Target] = {}


def register_target(scope: str, target: str, spec: Target) -> None:
    _targets[(scope, target)] = spec


def _core_targets() -> None:
    from blobs import selectors
    from orgs import selectors as org_selectors

    def organization(principal, scope_id, target_id):
        org = org_selectors.organization_get(principal, target_id)
        return event_store.stream_name("org", org.id)

    def blob(principal, scope_id, target_id):
        from blobs.models import Blob

        found = Blob.objects.filter(id=target_id).values_list("org_id", flat=True).first() if _uuid(target_id) else None
        if found is None:
            raise _denied()
        item = selectors.blob_get(principal, str(found), target_id)
        return event_store.stream_name("blob", item.id)

    def revision(principal, scope_id, target_id):
        item = selectors.revision_get(principal, target_id)
        return event_store.stream_name("revision", item.id)

    register_target("core", "organization", Target(organization))
    register_target("core", "blob", Target(blob))
    register_target("core", "revision", Target(revision))


def _uuid(value: str) -> bool:
    from blobhub.api.serializers import is_uuid

    return is_uuid(value)


def _denied() -> ApplicationError:
    return ApplicationError("access_denied", "The target does not exist or you may not read it.", status=403)


# --- Authentication -------------------------------------------------------------------------


def _b64(text: str) -> str | None:
    """Decode base64 without `=` padding, in either alphabet."""
    padded = text + "=" * (-len(text) % 4)
    for decode in (base64.urlsafe_b64decode, base64.b64decode):
        try:
            return decode(padded.encode()).decode()
        except (binascii.Error, ValueError, UnicodeDecodeError):
            continue
    return None


def credentials_of(scope: dict) -> tuple[str | None, str | None, str | None]:
    """(api key, bearer token, subprotocol to echo) from headers or the subprotocol pair."""
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope.get("headers", [])}
    if headers.get("x-api-key"):
        return headers["x-api-key"].strip(), None, None
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return None, token.strip(), None
    protocols = list(scope.get("subprotocols") or [])
    for marker, kind in (("x-api-key.base64", "key"), ("authorization.bearer.base64", "bearer")):
        if marker in protocols:
            index = protocols.index(marker)
            if index + 1 < len(protocols):
                secret = _b64(protocols[index + 1])
                if secret:
                    return (secret, None, marker) if kind == "key" else (None, secret, marker)
    return None, None, None


def _same_origin(scope: dict) -> bool:
    from urllib.parse import urlsplit

    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope.get("headers", [])}
    origin, host = headers.get("origin"), headers.get("host")
    return bool(origin and host) and urlsplit(origin).netloc == host


def _authenticate(scope: dict) -> tuple[Principal | None, str | None]:
    key, token, subprotocol = credentials_of(scope)
    client = (scope.get("client") or [None])[0]
    if key:
        return principal_from_api_key(key, client), subprotocol
    if token:
        return principal_from_bearer(token, client), subprotocol
    user = scope.get("user")
    if user is not None and getattr(user, "is_authenticated", False) and _same_origin(scope):
        # A session cookie rides along with any page's WebSocket: only our own pages count.
        return Principal(user=user, client_ip=client), None
    return None, None


# Every connection rechecks its credentials, but one query per credential and process is
# enough: 200 connections on one key would otherwise make 100 queries a second, all queued on
# the one thread that runs the consumers' database work, ahead of their replays and gap fills.
_validity: dict[tuple, tuple[float, bool]] = {}  # credential -> (when checked, valid)
_checking: dict[tuple, float] = {}  # credential -> when a connection started checking it


async def _credentials_valid(principal: Principal) -> bool:
    """Whether the principal's credentials still hold, as checked at most RECHECK_SECONDS / 2
    ago by any connection of this process (a revocation is seen within 1.5 x RECHECK_SECONDS
    plus one query). While one connection checks, the others keep the last answer."""
    if principal.api_key is not None:
        key = ("api_key", principal.api_key.id)
    elif principal.user is not None:
        key = ("user", principal.user.id)
    else:
        return True
    now = time.monotonic()
    checked = _validity.get(key)
    if checked is not None and now - checked[0] < RECHECK_SECONDS / 2:
        return checked[1]
    started = _checking.get(key)
    if started is not None and now - started < 30:
        return checked[1] if checked is not None else True  # valid when it connected
    _checking[key] = now
    try:
        valid = await database_sync_to_async(_still_valid)(principal)
    finally:
        _checking.pop(key, None)
    if len(_validity) >= 10_000:
        _validity.clear()
    _validity[key] = (time.monotonic(), valid)
    return valid


def _still_valid(principal: Principal) -> bool:
    if principal.api_key is not None:
        from orgs.models import ApiKey

        key = ApiKey.objects.filter(id=principal.api_key.id).first()
        return key is not None and key.is_usable
    if principal.user is not None:
        from orgs.models import User

        return User.objects.filter(id=principal.user.id, is_active=True).exists()
    return True


# --- The consumer ------------------------------------------------------------------------------


class RpcError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Subscription:
    scope: str
    scope_id: str
    target: str
    target_id: str
    stream: str
    types: frozenset[str] | None
    render: Callable[[dict], dict]
    last_sequence: int = 0
    live: bool = False  # false while the replay runs: live events wait in `held`
    held: list = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.scope, self.scope_id, self.target, self.target_id)


class EventsConsumer(AsyncWebsocketConsumer):
    """`/v1/ws`: JSON-RPC 2.0 over one authenticated connection."""

    async def connect(self) -> None:
        principal, subprotocol = await database_sync_to_async(_authenticate)(self.scope)
        if principal is None:
            await self.close(code=CLOSE_UNAUTHORIZED)
            return
        self.principal = principal
        self.subscriptions: dict[tuple, Subscription] = {}
        self.streams: dict[str, set[tuple]] = {}
        self.lock = asyncio.Lock()
        await self.accept(subprotocol=subprotocol)
        self.watchdog = asyncio.ensure_future(self._recheck())

    async def dispatch(self, message: dict) -> None:
        # Channels closes stale database connections before every handler, a hop to the
        # database thread for each message: for every live event, once per subscriber. The
        # event path needs no database unless it fills a gap, and database_sync_to_async
        # closes stale connections itself then.
        if message["type"] == "stream.event":
            await self.stream_event(message)
        else:
            await super().dispatch(message)

    async def disconnect(self, code: int) -> None:
        watchdog = getattr(self, "watchdog", None)
        if watchdog is not None:
            watchdog.cancel()
        for stream in list(getattr(self, "streams", {})):
            await self.channel_layer.group_discard(event_store.group_name(stream), self.channel_name)

    async def _recheck(self) -> None:
        """Close the connection once its credentials stop being valid (revoked, expired)."""
        try:
            while True:
                await asyncio.sleep(RECHECK_SECONDS)
                if not await _credentials_valid(self.principal):
                    await self.close(code=CLOSE_UNAUTHORIZED)
                    return
        except asyncio.CancelledError:
            pass

    # --- Incoming messages --------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        raw = text_data if text_data is not None else (bytes_data or b"").decode("utf-8", "replace")
        if len(raw.encode()) > MAX_FRAME_BYTES:
            await self._error(None, 400, f"A message is at most {MAX_FRAME_BYTES} bytes.")
            return
        try:
            message = json.loads(raw)
        except ValueError:
            await self._error(None, 400, "The message is not valid JSON.")
            return
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0" or not isinstance(message.get("method"), str):
            await self._error(message.get("id") if isinstance(message, dict) else None, 400, "Not a JSON-RPC 2.0 request.")
            return
        request_id = message.get("id")
        params = message.get("params", {})
        if not isinstance(params, dict):
            await self._error(request_id, 400, "params must be an object.")
            return
        handler = {
            "status/initialize": self._initialize,
            "status/ping": self._ping,
            "subscription/add": self._add,
            "subscription/remove": self._remove,
        }.get(message["method"])
        try:
            if handler is None:
                raise RpcError(405, f"Unknown method {message['method']!r}.")
            result = await handler(params)
        except RpcError as exc:
            await self._error(request_id, exc.code, exc.message)
            return
        except Exception:
            logger.exception("WebSocket method %s failed", message["method"])
            await self._error(request_id, 500, "The server failed to handle the request.")
            return
        if request_id is not None:
            await self.send(text_data=json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result}))

    async def _error(self, request_id: Any, code: int, message: str) -> None:
        await self.send(text_data=json.dumps({"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}))

    async def _initialize(self, params: dict) -> dict:
        return {"server_info": SERVER_INFO}

    async def _ping(self, params: dict) -> dict:
        return {}

    # --- Subscriptions -----------------------------------------------------------------------

    @staticmethod
    def _parse(params: dict) -> tuple[str, str, str, str, frozenset | None, int | None]:
        allowed = {"scope", "scope_id", "target", "target_id", "types", "since"}
        unknown = set(params) - allowed
        if unknown:
            raise RpcError(400, f"Unknown parameter(s): {', '.join(sorted(unknown))}.")
        parts = []
        for name in ("scope", "scope_id", "target", "target_id"):
            value = params.get(name)
            if not isinstance(value, str) or not value or len(value) > 64:
                raise RpcError(400, f"{name} is a non-empty string.")
            parts.append(value)
        types = params.get("types")
        if types is not None and (
            not isinstance(types, list) or len(types) > 50 or not all(isinstance(t, str) and t for t in types)
        ):
            raise RpcError(400, "types is a list of event type names.")
        since = params.get("since")
        if since is not None and (isinstance(since, bool) or not isinstance(since, int) or since < 0):
            raise RpcError(400, "since is a sequence number (a non-negative integer).")
        return (*parts, frozenset(types) if types else None, since)

    async def _add(self, params: dict) -> dict:
        scope, scope_id, target, target_id, types, since = self._parse(params)
        spec = _targets.get((scope, target))
        if spec is None:
            raise RpcError(400, f"Unknown target {scope}/{target}.")
        key = (scope, scope_id, target, target_id)
        if key in self.subscriptions:
            return {}
        if len(self.subscriptions) >= MAX_SUBSCRIPTIONS:
            raise RpcError(400, f"A connection holds at most {MAX_SUBSCRIPTIONS} subscriptions.")
        try:
            stream = await database_sync_to_async(spec.authorize)(self.principal, scope_id, target_id)
        except ApplicationError:
            raise RpcError(403, "The target does not exist or you may not read it.") from None
        subscription = Subscription(scope, scope_id, target, target_id, stream, types, spec.render)
        async with self.lock:
            self.subscriptions[key] = subscription
            if stream not in self.streams:
                self.streams[stream] = set()
                # Join first: whatever is published from now on is held, not missed.
                await self.channel_layer.group_add(event_store.group_name(stream), self.channel_name)
            self.streams[stream].add(key)
        if since is None:
            subscription.last_sequence = await database_sync_to_async(_last_sequence)(stream)
        else:
            subscription.last_sequence = since
            for event in await database_sync_to_async(_stored_after)(stream, since):
                await self._deliver(subscription, event)
        async with self.lock:
            held, subscription.held, subscription.live = subscription.held, [], True
        for event in held:
            await self._deliver(subscription, event)
        return {}

    async def _remove(self, params: dict) -> dict:
        scope, scope_id, target, target_id, _, _ = self._parse({k: v for k, v in params.items() if k not in ("types", "since")})
        key = (scope, scope_id, target, target_id)
        async with self.lock:
            subscription = self.subscriptions.pop(key, None)
            if subscription is None:
                raise RpcError(400, "No such subscription.")
            keys = self.streams.get(subscription.stream, set())
            keys.discard(key)
            if not keys:
                self.streams.pop(subscription.stream, None)
                await self.channel_layer.group_discard(event_store.group_name(subscription.stream), self.channel_name)
        return {}

    # --- Outgoing events ------------------------------------------------------------------------

    async def stream_event(self, message: dict) -> None:
        """A live event from the channel layer (blobs.events.publish)."""
        event = message["event"]
        for key in list(self.streams.get(event["stream"], ())):
            subscription = self.subscriptions.get(key)
            if subscription is None:
                continue
            if not subscription.live:
                subscription.held.append(event)
                continue
            if event["sequence"] > subscription.last_sequence + 1:
                # A live event overtook an earlier one (or the layer dropped some):
                # fill the gap from storage, where every event is before it is sent.
                missing = await database_sync_to_async(_stored_between)(
                    subscription.stream, subscription.last_sequence, event["sequence"]
                )
                for earlier in missing:
                    await self._deliver(subscription, earlier)
            await self._deliver(subscription, event)

    async def _deliver(self, subscription: Subscription, event: dict) -> None:
        if event["sequence"] <= subscription.last_sequence:
            return  # already sent (replay and live overlap)
        subscription.last_sequence = event["sequence"]
        if subscription.types is not None and event["type"] not in subscription.types:
            return
        await self.send(text_data=_notification(subscription, event))


# The text of a notification, made once per event and target and shared by the consumers
# of this process: with many subscribers to one stream, rendering and encoding every event
# for each of them was most of the server's work. Entries live while the fan-out of their
# event runs; the oldest go first.
_notifications: OrderedDict[tuple, str] = OrderedDict()
NOTIFICATION_CACHE_SIZE = 2048


def _notification(subscription: Subscription, event: dict) -> str:
    key = (event["id"], event["stream"], event["sequence"], event["created_at"], subscription.key, subscription.render)
    text = _notifications.get(key)
    if text is None:
        text = json.dumps(
            {
                "jsonrpc": "2.0",
                "method": "subscription/event",
                "params": {
                    "scope": subscription.scope,
                    "scope_id": subscription.scope_id,
                    "target": subscription.target,
                    "target_id": subscription.target_id,
                    "event": subscription.render(event),
                },
            }
        )
        _notifications[key] = text
        if len(_notifications) > NOTIFICATION_CACHE_SIZE:
            _notifications.popitem(last=False)
    return text


def _stored_after(stream: str, since: int) -> list[dict]:
    rows = Event.objects.filter(stream=stream, sequence__gt=since).order_by("sequence")[:MAX_REPLAY]
    return [event_store.render(event) for event in rows]


def _stored_between(stream: str, after: int, before: int) -> list[dict]:
    rows = Event.objects.filter(stream=stream, sequence__gt=after, sequence__lt=before).order_by("sequence")[:MAX_REPLAY]
    return [event_store.render(event) for event in rows]


def _last_sequence(stream: str) -> int:
    from blobs.models import EventStream

    return EventStream.objects.filter(name=stream).values_list("last_sequence", flat=True).first() or 0


_core_targets()
