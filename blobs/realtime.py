"""The WebSocket API (API.md §4): one connection, authorized subscriptions, replay with no gap.

Each subscription names a stream of the event table. The consumer joins the stream first,
then replays the stored events after `since`, then passes live ones on, dropping any whose
sequence it has already sent and filling any gap from storage: no gap, no duplicate.
Authorization uses the same selectors as REST, for every subscription, and is checked
again every few seconds (all of a connection's subscriptions in a few queries), as are the
credentials the connection opened with, so a revoked key, a logged-out session, a changed
password, an expired token, or a caller who may no longer read a target, stops receiving
and is disconnected.

Live events reach a process once per stream, however many of its connections subscribe:
one channel-layer channel per process joins the stream's group (`_Fanout`) and sends each
event at once to every local subscriber with nothing else to send (daphne's send never
waits: Twisted buffers what a socket does not take), and queues it for the others, whose
own task sends it in order after what they have queued. With 200
subscribers to one execution, Channels' way (a channel and a receive per consumer) cost
several tasks and a database-thread hop per subscriber and event. The channel layer is
lossy (a full or expired queue drops messages): a gap is filled when the next event shows
it, and a subscription that has gone quiet behind its stream's stored head catches up
from storage within a few seconds.
"""

import asyncio
import base64
import binascii
import functools
import hashlib
import json
import logging
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.contrib import auth
from django.db.models import Q
from django.http import HttpRequest, parse_cookie

from blobhub.api.errors import ApplicationError
from blobs import events as event_store
from blobs import policy
from blobs.models import Blob, Event, Revision
from orgs import policy as org_policy
from orgs.authentication import client_address, principal_from_api_key, principal_from_bearer
from orgs.principal import Principal

logger = logging.getLogger("blobhub.realtime")

SERVER_INFO = {"name": "blobhub", "version": "1.0.0"}
MAX_FRAME_BYTES = 64 * 1024
MAX_SUBSCRIPTIONS = 100
MAX_REPLAY = 10_000
RECHECK_SECONDS = 2.0
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403  # a subscription is no longer authorized
MAX_PENDING = 1000  # live events queued for one connection; past it the oldest are dropped (and refilled)


# --- Subscription targets -----------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """How `(scope, target)` maps to a stream, who may read it, and how its events look.

    `authorize(principal, scope_id, target_id)` raises ApplicationError when the principal
    may not read it and returns the stream name. `authorize_all(principal, refs)` gives the
    same answers for many `(scope_id, target_id)` at once, in a few queries however many: the
    streams of those it authorizes (the recheck's form). `render(event)` turns the stored form
    (blobs.events.render) into what the subscriber receives, the same for every subscriber.
    """

    authorize: Callable[[Principal, str, str], str]
    authorize_all: Callable[[Principal, list[tuple[str, str]]], dict[tuple[str, str], str]]
    # Depends on the event only: its output is shared by every subscriber (see _notification).
    render: Callable[[dict], dict] = lambda event: event


_targets: dict[tuple[str, str], Target] = {}


def register_target(scope: str, target: str, spec: Target) -> None:
    _targets[(scope, target)] = spec


def refuse_public_readers(principal: Principal, blob: Blob) -> None:
    """A blob's streams carry its owner's activity (drafts, operations, sessions), which a
    public blob does not publish: a caller who reads it only because it is public may not
    subscribe to them."""
    if policy.reads_as_public(principal, blob):
        raise _denied()


def _core_targets() -> None:
    from blobs import selectors
    from orgs import selectors as org_selectors

    def organization(principal, scope_id, target_id):
        org = org_selectors.organization_get(principal, target_id)
        return event_store.stream_name("org", org.id)

    def blob(principal, scope_id, target_id):
        found = Blob.objects.filter(id=target_id).values_list("org_id", flat=True).first() if _uuid(target_id) else None
        if found is None:
            raise _denied()
        item = selectors.blob_get(principal, str(found), target_id)
        refuse_public_readers(principal, item)
        return event_store.stream_name("blob", item.id)

    def revision(principal, scope_id, target_id):
        item = selectors.revision_get(principal, target_id)
        refuse_public_readers(principal, item.blob)
        return event_store.stream_name("revision", item.id)

    def organizations(principal, refs):
        names = {ref_name(target_id) for _, target_id in refs}
        ids = {name for name in names if isinstance(name, uuid.UUID)}
        rows = org_policy.visible_organizations(principal).filter(Q(id__in=ids) | Q(alias__in=names - ids - {None}))
        # Every role reads: a visible organization is one organization_get authorizes.
        streams = {}
        for org_id, alias in rows.values_list("id", "alias"):
            streams[org_id] = streams[alias] = event_store.stream_name("org", org_id)
        return {ref: streams[ref_name(ref[1])] for ref in refs if ref_name(ref[1]) in streams}

    def blobs(principal, refs):
        found = Blob.objects.filter(id__in={ref_id(target_id) for _, target_id in refs} - {None})
        readable = policy.blobs_with_a_role(principal, list(found.exclude(status=Blob.Status.DELETING)))
        return {ref: event_store.stream_name("blob", ref_id(ref[1])) for ref in refs if ref_id(ref[1]) in readable}

    def revisions(principal, refs):
        readable = subscribable_revisions(principal, [target_id for _, target_id in refs])
        return {ref: event_store.stream_name("revision", ref_id(ref[1])) for ref in refs if ref_id(ref[1]) in readable}

    register_target("core", "organization", Target(organization, organizations))
    register_target("core", "blob", Target(blob, blobs))
    register_target("core", "revision", Target(revision, revisions))


def _uuid(value: str) -> bool:
    from blobhub.api.serializers import is_uuid

    return is_uuid(value)


def ref_id(ref: str) -> uuid.UUID | None:
    return uuid.UUID(ref) if _uuid(ref) else None


def ref_name(ref: str) -> uuid.UUID | str | None:
    """What a path part names, as blobhub.api.serializers.ref_lookup reads it: an id, an
    alias, or nothing."""
    from blobhub.api.serializers import is_alias

    return ref_id(ref) or (ref if is_alias(ref) else None)


def subscribable_revisions(principal: Principal, refs: list[str]) -> dict[uuid.UUID, Revision]:
    """Those of the revisions named by `refs` whose streams the principal may subscribe to (as
    selectors.revision_get and refuse_public_readers decide), by id, in three queries."""
    revisions = list(
        Revision.objects.select_related("blob")
        .filter(id__in={ref_id(ref) for ref in refs} - {None})
        .exclude(blob__status=Blob.Status.DELETING)
    )
    readable = policy.blobs_with_a_role(principal, [revision.blob for revision in revisions])
    return {revision.id: revision for revision in revisions if revision.blob_id in readable}


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


def _headers(scope: dict) -> dict[str, str]:
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope.get("headers", [])}


def credentials_of(scope: dict) -> tuple[str | None, str | None, str | None]:
    """(api key, bearer token, subprotocol to echo) from headers or the subprotocol pair."""
    headers = _headers(scope)
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

    headers = _headers(scope)
    origin, host = headers.get("origin"), headers.get("host")
    return bool(origin and host) and urlsplit(origin).netloc == host


# What a connection authenticated with, kept to check it again: ("key", api key),
# ("bearer", access token) or ("session", session key).
Credential = tuple[str, str]


def _authenticate(scope: dict) -> tuple[Principal | None, Credential | None, str | None]:
    """(principal, the credential it holds, subprotocol to echo)."""
    key, token, subprotocol = credentials_of(scope)
    # Repeated headers are one list, as Django joins them for a request.
    forwarded_for = [value for name, value in scope.get("headers", []) if name.lower() == b"x-forwarded-for"]
    client = client_address((scope.get("client") or [None])[0], b",".join(forwarded_for).decode("latin-1") or None)
    if key:
        return principal_from_api_key(key, client), ("key", key), subprotocol
    if token:
        return principal_from_bearer(token, client), ("bearer", token), subprotocol
    session_key = parse_cookie(_headers(scope).get("cookie", "")).get(settings.SESSION_COOKIE_NAME)
    # A session cookie rides along with any page's WebSocket: only our own pages count.
    if session_key and _same_origin(scope):
        user = _session_user(session_key)
        if user.is_authenticated:
            return Principal(user=user, client_ip=client), ("session", session_key), None
    return None, None, None


def _session_user(session_key: str):
    """The user of the console session `session_key` (AnonymousUser once it is gone, or its
    user's password has changed), as Django's auth reads it for a request.

    Channels' session middleware would do the same, but it also wraps every message sent, to
    save a modified session; a connection that only streams events never modifies it, and that
    check was a tenth of the fan-out's cost.
    """
    request = HttpRequest()
    request.session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    return auth.get_user(request)


# Every connection rechecks its credentials and subscriptions, but one query per credential
# (and subscription) and process is enough: 200 connections on one key would otherwise make
# 100 queries a second, all queued on the one thread that runs the consumers' database work,
# ahead of their replays and gap fills.
_answers: dict[tuple, tuple[float, Any]] = {}  # question -> (when answered, answer)
_asking: dict[tuple, float] = {}  # question -> when a connection started answering it


async def _recent_answers(
    questions: dict[tuple, Any], answer: Callable[[list[tuple]], dict[tuple, Any]]
) -> dict[tuple, Any]:
    """The answers to `questions` (each mapped to what to assume meanwhile), as found at most
    RECHECK_SECONDS / 2 ago by any connection of this process: a change is seen within
    1.5 x RECHECK_SECONDS plus one query. Those with no recent answer are answered together,
    by one call of `answer` on the database thread; while a connection answers a question,
    the others keep its last answer (else what to assume meanwhile)."""
    now = time.monotonic()
    found, asked = {}, []
    for question, meanwhile in questions.items():
        answered = _answers.get(question)
        if answered is not None and now - answered[0] < RECHECK_SECONDS / 2:
            found[question] = answered[1]
        elif now - _asking.get(question, -60.0) < 30:
            found[question] = answered[1] if answered is not None else meanwhile
        else:
            asked.append(question)
    if not asked:
        return found
    for question in asked:
        _asking[question] = now
    try:
        answers = await database_sync_to_async(answer)(asked)
    finally:
        for question in asked:
            _asking.pop(question, None)
    if len(_answers) + len(asked) > 10_000:
        _answers.clear()
    answered_at = time.monotonic()
    for question in asked:
        _answers[question] = (answered_at, answers[question])
    return {**found, **answers}


async def _credentials_valid(principal: Principal, credential: Credential) -> bool:
    """Whether the credential the connection opened with still holds (it did then)."""
    kind, secret = credential
    # The process keeps answers for a while: keyed by a digest, never by the secret itself.
    question = ("valid", kind, hashlib.sha256(secret.encode()).hexdigest())
    answers = await _recent_answers({question: True}, lambda asked: {question: _still_valid(principal, credential)})
    return answers[question]


def _still_valid(principal: Principal, credential: Credential) -> bool:
    """Whether the credential would open the connection now, for the same caller: a key not
    revoked or expired, a token not expired whose user is active and has kept the password it
    was issued under, a session not logged out (nor ended by a password change)."""
    kind, secret = credential
    if kind == "key":
        from orgs.models import ApiKey

        key = ApiKey.objects.filter(id=principal.api_key.id).first()
        return key is not None and key.is_usable
    if kind == "bearer":
        again = principal_from_bearer(secret)
        return again is not None and again.caller_id == principal.caller_id
    user = _session_user(secret)
    return user.is_authenticated and user.id == principal.user.id


def _authorized_streams(principal: Principal, questions: list[tuple]) -> dict[tuple, str | None]:
    """For each question `(..., subscription key)`, the stream the key names for the principal
    now, or None if it may not read it: a few queries per kind of target, however many keys."""
    refs: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for *_, (scope, scope_id, target, target_id) in questions:
        refs.setdefault((scope, target), []).append((scope_id, target_id))
    streams = {kind: _targets[kind].authorize_all(principal, of_kind) for kind, of_kind in refs.items()}
    answers = {}
    for question in questions:
        scope, scope_id, target, target_id = question[-1]
        answers[question] = streams[(scope, target)].get((scope_id, target_id))
    return answers


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
    held: deque = field(default_factory=lambda: deque(maxlen=MAX_PENDING))
    checked_sequence: int = -1  # last_sequence at the previous tail check

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.scope, self.scope_id, self.target, self.target_id)


class EventsConsumer(AsyncWebsocketConsumer):
    """`/v1/ws`: JSON-RPC 2.0 over one authenticated connection."""

    async def connect(self) -> None:
        principal, credential, subprotocol = await database_sync_to_async(_authenticate)(self.scope)
        if principal is None:
            await self.close(code=CLOSE_UNAUTHORIZED)
            return
        self.principal = principal
        self.credential = credential
        self.subscriptions: dict[tuple, Subscription] = {}
        self.streams: dict[str, set[tuple]] = {}
        self.lock = asyncio.Lock()
        self.fanout = _fanout(self.channel_layer)
        self.pending: deque = deque(maxlen=MAX_PENDING)  # live events, worked by the sender
        self.jobs: deque = deque()  # replays and catch-ups, also worked by the sender
        self.wakeup = asyncio.Event()
        self.sending = False  # the sender (or the fan-out) is sending: anything else queues
        await self.accept(subprotocol=subprotocol)
        self.sender = asyncio.ensure_future(self._send_events())
        self.watchdog = asyncio.ensure_future(self._recheck())

    async def dispatch(self, message: dict) -> None:
        # Channels closes stale database connections before every handler, a hop to the
        # database thread; stream events need no database here (the sender fills gaps
        # through database_sync_to_async, which closes stale connections itself).
        if message["type"] == "stream.event":
            await self.stream_event(message)
        else:
            await super().dispatch(message)

    async def disconnect(self, code: int) -> None:
        for name in ("watchdog", "sender"):
            task = getattr(self, name, None)
            if task is not None:
                task.cancel()
        for stream in list(getattr(self, "streams", {})):
            await self.fanout.leave(stream, self)
        self.streams = {}

    async def _recheck(self) -> None:
        """Close the connection once its credentials stop being valid (revoked, expired, logged
        out, the password changed) or one of its subscriptions is no longer authorized (a member
        removed, a blob deleted); have quiet subscriptions that are behind their stream catch up
        from storage."""
        try:
            while True:
                await asyncio.sleep(RECHECK_SECONDS)
                try:
                    if not await _credentials_valid(self.principal, self.credential):
                        await self.close(code=CLOSE_UNAUTHORIZED)
                        return
                    if not await self._still_authorized():
                        await self.close(code=CLOSE_FORBIDDEN)
                        return
                except Exception:  # the database is away: close nobody, ask again next time
                    logger.warning("rechecking a connection's access failed", exc_info=True)
                    continue
                try:
                    await self._check_tails()
                except Exception:
                    logger.warning("checking the streams' heads failed", exc_info=True)
        except asyncio.CancelledError:
            pass

    async def _still_authorized(self) -> bool:
        """Whether each subscription's target still authorizes the principal, for the same stream
        (those of the caller's not recently answered, in one trip to the database)."""
        subscriptions = list(self.subscriptions.values())
        questions = {("authorized", self.principal.caller_id, s.key): s.stream for s in subscriptions}
        streams = await _recent_answers(questions, functools.partial(_authorized_streams, self.principal))
        return all(
            streams[question] == subscription.stream or self.subscriptions.get(subscription.key) is not subscription
            for question, subscription in zip(questions, subscriptions)
        )

    async def _check_tails(self) -> None:
        """The layer may drop a stream's last events (nothing comes after them to show the
        gap): a live subscription that made no progress since the previous check and is
        behind its stream's stored head reads the rest from storage."""
        quiet = []
        for subscription in self.subscriptions.values():
            if subscription.live and subscription.last_sequence == subscription.checked_sequence:
                quiet.append(subscription)
            subscription.checked_sequence = subscription.last_sequence
        if not quiet:
            return
        heads = await _stream_heads({subscription.stream for subscription in quiet})
        behind = [s for s in quiet if heads.get(s.stream, 0) > s.last_sequence]
        if behind:
            self._schedule(lambda: self._catch_up(behind))

    # --- Incoming messages --------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        raw = text_data if text_data is not None else (bytes_data or b"").decode("utf-8", "replace")
        if len(raw.encode()) > MAX_FRAME_BYTES:
            await self._error(None, 400, f"A message is at most {MAX_FRAME_BYTES} bytes.")
            return
        try:
            message = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
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
            if stream not in self.streams:
                # Join first: whatever is published from now on is held, not missed.
                await self.fanout.join(stream, self)
                self.streams[stream] = set()
            self.subscriptions[key] = subscription
            self.streams[stream].add(key)
        if since is None:
            subscription.last_sequence = await database_sync_to_async(_last_sequence)(stream)
            replay = []
        else:
            subscription.last_sequence = since
            replay = await database_sync_to_async(_stored_after)(stream, since)
        # The sender sends the replay, then what was held meanwhile, then goes live; the
        # answer comes after the replayed events.
        done = asyncio.get_running_loop().create_future()
        self._schedule(lambda: self._go_live(subscription, replay, done))
        await done
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
                await self.fanout.leave(subscription.stream, self)
        return {}

    # --- Outgoing events ------------------------------------------------------------------------

    def enqueue(self, event: dict) -> None:
        """A live event of one of this connection's streams (from the process's fan-out)."""
        self.pending.append(event)  # a full queue drops its oldest: gaps are filled from storage
        self.wakeup.set()

    async def send_now(self, event: dict) -> bool:
        """Send a live event straight from the fan-out, if nothing of this connection's is
        queued or being sent and every subscription to its stream is live and in step with
        it (no gap to fill first); whether it did. Else the sender takes it, in order."""
        if self.sending or self.pending or self.jobs:
            return False
        subscriptions = [self.subscriptions.get(key) for key in self.streams.get(event["stream"], ())]
        if not subscriptions or any(
            s is None or not s.live or event["sequence"] > s.last_sequence + 1 for s in subscriptions
        ):
            return False  # joining, leaving, replaying or behind: the sender sorts it out
        self.sending = True
        try:
            for subscription in subscriptions:
                await self._deliver(subscription, event)
        except Exception:
            logger.warning("sending events on a WebSocket failed", exc_info=True)
        finally:
            self.sending = False
        return True

    async def stream_event(self, message: dict) -> None:
        """A live event sent to this consumer's own channel (the fan-out uses its own)."""
        self.enqueue(message["event"])

    def _schedule(self, job: Callable) -> None:
        self.jobs.append(job)
        self.wakeup.set()

    async def _send_events(self) -> None:
        """The connection's sender: every event it sends, in order, goes through here (or
        through `send_now` while it has nothing to do)."""
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            self.sending = True
            try:
                while self.jobs or self.pending:
                    try:
                        if self.jobs:
                            await self.jobs.popleft()()
                        else:
                            await self._live(self.pending.popleft())
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        logger.warning("sending events on a WebSocket failed", exc_info=True)
            finally:
                self.sending = False

    async def _go_live(self, subscription: Subscription, replay: list[dict], done: asyncio.Future) -> None:
        try:
            if self.subscriptions.get(subscription.key) is not subscription:
                return  # removed meanwhile
            for event in replay:
                await self._deliver(subscription, event)
            while subscription.held:
                await self._in_order(subscription, subscription.held.popleft())
            subscription.live = True
        finally:
            if not done.done():
                done.set_result(None)

    async def _catch_up(self, subscriptions: list[Subscription]) -> None:
        for subscription in subscriptions:
            if self.subscriptions.get(subscription.key) is subscription and subscription.live:
                for event in await database_sync_to_async(_stored_after)(subscription.stream, subscription.last_sequence):
                    await self._deliver(subscription, event)

    async def _live(self, event: dict) -> None:
        for key in list(self.streams.get(event["stream"], ())):
            subscription = self.subscriptions.get(key)
            if subscription is None:
                continue
            if not subscription.live:
                subscription.held.append(event)
                continue
            await self._in_order(subscription, event)

    async def _in_order(self, subscription: Subscription, event: dict) -> None:
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


# --- One channel-layer subscription per process and stream ---------------------------------------


class _Fanout:
    """The live events of this process's connections: one channel of the channel layer joins
    each stream's group once, and each event goes onto the queue of every local subscriber.

    Joining and leaving take turns (the group's membership in the layer must match
    `members`). The receiving task runs while any stream has members.
    """

    def __init__(self, layer) -> None:
        self.layer = layer
        self.members: dict[str, set[EventsConsumer]] = {}
        self.lock = asyncio.Lock()
        self.channel: str | None = None
        self.task: asyncio.Task | None = None

    async def join(self, stream: str, consumer: EventsConsumer) -> None:
        """Returns once whatever is published to the stream from now on reaches the consumer."""
        async with self.lock:
            if self.channel is None:
                self.channel = await self.layer.new_channel()
                self.task = asyncio.ensure_future(self._receive(self.channel))
            if stream not in self.members:
                await self.layer.group_add(event_store.group_name(stream), self.channel)
                self.members[stream] = set()
            self.members[stream].add(consumer)

    async def leave(self, stream: str, consumer: EventsConsumer) -> None:
        async with self.lock:
            members = self.members.get(stream)
            if members is None or consumer not in members:
                return
            members.discard(consumer)
            if members:
                return
            del self.members[stream]
            channel = self.channel
            if not self.members:
                self.task.cancel()
                self.channel, self.task = None, None
            try:
                await self.layer.group_discard(event_store.group_name(stream), channel)
            except Exception:  # the layer forgets stale members on its own
                logger.warning("could not leave the group of %s", stream, exc_info=True)

    async def _receive(self, channel: str) -> None:
        while True:
            try:
                message = await self.layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Whatever was lost meanwhile, the subscribers fill in from storage.
                logger.warning("receiving live events failed; retrying", exc_info=True)
                await asyncio.sleep(1.0)
                continue
            event = message.get("event") if message.get("type") == "stream.event" else None
            if event is None:
                continue
            for consumer in list(self.members.get(event["stream"], ())):
                # At once for a connection with nothing else to send (one task, no wake-up
                # per connection); else on its queue, which its own sender works through.
                if not await consumer.send_now(event):
                    consumer.enqueue(event)


_fanouts: dict[tuple, _Fanout] = {}


def _fanout(layer) -> _Fanout:
    """The fan-out of this event loop and channel layer."""
    loop = asyncio.get_running_loop()
    fanout = _fanouts.get((loop, layer))
    if fanout is None:
        for old in [key for key in _fanouts if key[0].is_closed()]:
            del _fanouts[old]
        fanout = _fanouts[(loop, layer)] = _Fanout(layer)
    return fanout


# --- Stream heads, shared by the connections of a process -----------------------------------------

_heads: dict[str, tuple[float, int]] = {}  # stream -> (when read, last stored sequence)
_reading_heads: dict[str, float] = {}  # stream -> when a connection started reading it


async def _stream_heads(streams: set[str]) -> dict[str, int]:
    """The last stored sequence of each stream, read at most RECHECK_SECONDS / 2 ago by any
    connection of this process (streams another connection is reading keep their last value)."""
    now = time.monotonic()
    stale = [
        stream
        for stream in streams
        if (stream not in _heads or now - _heads[stream][0] >= RECHECK_SECONDS / 2)
        and now - _reading_heads.get(stream, -60.0) >= 30
    ]
    if stale:
        for stream in stale:
            _reading_heads[stream] = now
        try:
            found = await database_sync_to_async(_last_sequences)(stale)
        finally:
            for stream in stale:
                _reading_heads.pop(stream, None)
        if len(_heads) >= 10_000:
            _heads.clear()
        read_at = time.monotonic()
        for stream in stale:
            _heads[stream] = (read_at, found.get(stream, 0))
    return {stream: _heads[stream][1] for stream in streams if stream in _heads}


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


def _last_sequences(streams: list[str]) -> dict[str, int]:
    from blobs.models import EventStream

    return dict(EventStream.objects.filter(name__in=streams).values_list("name", "last_sequence"))


def _last_sequence(stream: str) -> int:
    from blobs.models import EventStream

    return EventStream.objects.filter(name=stream).values_list("last_sequence", flat=True).first() or 0


_core_targets()

