"""Helpers for the blobs API tests: a populated world, request shortcuts, envelope checks,
a database snapshot and a small engine that lets tests write content through the data channel."""

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from rest_framework.test import APIClient

from blobhub.models import IdempotencyRecord
from blobs import events, registry
from blobs.models import (
    Blob,
    BlobMember,
    BlobMetadata,
    BlobType,
    Event,
    ManifestEntry,
    ObjectRef,
    Operation,
    Revision,
    RevisionMetadata,
    StoredObject,
)
from blobs.registry import Engine, Handler
from blobs.services import content
from blobs.services.revisions import tree_hash
from blobs.tests.factories import BlobFactory
from orgs import tokens
from orgs.models import ApiKey, AuditEntry, Membership, Organization, Role, User
from orgs.tests.factories import UserFactory, make_api_key
from orgs.tests.support import build_world as org_world

NO_BODY = object()
WORKFLOW = BlobType.WORKFLOW.value


# --- Requests ----------------------------------------------------------------------------


def api(client: APIClient, method: str, path: str, body: Any = NO_BODY, **headers):
    """Send `method /v1/<path>`; `body` is JSON-encoded as is (so `None` sends `null`)."""
    send = getattr(client, method.lower())
    if body is NO_BODY:
        return send(f"/v1/{path}", **headers)
    return send(f"/v1/{path}", data=json.dumps(body), content_type="application/json", **headers)


_handler = None


def no_credentials() -> APIClient:
    """A client without credentials. All of them share one request handler: a fresh one loads
    the middleware again (WhiteNoise scans the static files), a quarter of a matrix test's time."""
    global _handler
    client = APIClient()
    if _handler is None:
        _handler = client.handler
    client.handler = _handler
    return client


def as_user(user: User) -> APIClient:
    return bearer(tokens.issue_pair(user=user)["access_token"])


def as_key(key: str) -> APIClient:
    client = no_credentials()
    client.credentials(HTTP_X_API_KEY=key)
    return client


def bearer(token: str) -> APIClient:
    client = no_credentials()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def as_anonymous() -> APIClient:
    """A holder of an anonymous token, minted the way a client mints one."""
    return bearer(assert_success(no_credentials().get("/v1/auth/core/anonymous"))["access_token"])


def assert_error(response, status: int, code: str) -> dict:
    """The failure envelope of API.md §1, as JSON, with the expected status and code."""
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert body["status"] == "error"
    assert body["error"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["details"], list)
    assert "Traceback" not in response.content.decode()
    return body


def assert_success(response, status: int = 200) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["status"] == "success"
    return body


# --- The database as the tests compare it ----------------------------------------------------


def _fields(model, exclude: set[str] = frozenset()) -> list[str]:
    return [field.attname for field in model._meta.concrete_fields if field.attname not in exclude]


def db_snapshot() -> dict:
    """Every row a blob route could change. `last_used_at` moves on any use of a key."""
    models = [
        Organization, Membership, Blob, Revision, ManifestEntry, BlobMetadata, RevisionMetadata,
        BlobMember, Operation, Event, StoredObject, ObjectRef, AuditEntry, IdempotencyRecord,
    ]
    snapshot = {model.__name__: list(model.objects.order_by("pk").values(*_fields(model))) for model in models}
    snapshot["ApiKey"] = list(ApiKey.objects.order_by("pk").values(*_fields(ApiKey, {"last_used_at"})))
    return snapshot


# --- Revisions in every phase, made without a worker ----------------------------------------


def freeze(revision: Revision, phase: str = Revision.Phase.COMMIT) -> Revision:
    """Make a draft a committed (or snapshot) revision, as a completed commit would."""
    digest = tree_hash(revision)
    Revision.objects.filter(id=revision.id).update(phase=phase, status=Revision.Status.READY, tree_hash=digest)
    revision.refresh_from_db()
    return revision


def next_draft(blob: Blob, parent: Revision, comment: str = "next") -> Revision:
    """A new draft whose manifest copies `parent`'s (as `revision_create` makes it)."""
    number = blob.revisions.count() + 1
    draft = Revision.objects.create(org=blob.org, blob=blob, number=number, comment=comment, parent=parent)
    for entry in ManifestEntry.objects.filter(revision=parent):
        ManifestEntry.objects.create(
            org=blob.org, revision=draft, path=entry.path, object=entry.object, size=entry.size
        )
    return draft


def set_default(blob: Blob, revision: Revision) -> None:
    Blob.objects.filter(id=blob.id).update(default_revision=revision)
    blob.refresh_from_db()


# --- A small engine, so that tests can write content through the data channel --------------


def _put_file(ctx, args: dict) -> dict:
    content.file_put(ctx.revision, args["path"], args["text"].encode())
    return {}


def _read_file(ctx, args: dict) -> dict:
    data = content.file_read(ctx.revision, args["path"])
    return {"text": None if data is None else data.decode()}


def _open_session(ctx, args: dict) -> dict:
    # A runtime command declared without `needs`: it writes nothing to the revision's content.
    return {"session": {"revision_id": str(ctx.revision.id)}}


def files_engine() -> Engine:
    return Engine(
        type=WORKFLOW,
        queries={"read_file": Handler(_read_file)},
        commands={
            "put_file": Handler(_put_file, writes_content=True, needs=Role.WRITE),
            "open_session": Handler(_open_session),
        },
    )


@contextmanager
def engine_registered(engine: Engine) -> Iterator[Engine]:
    saved = dict(registry._engines)
    registry._engines[engine.type] = engine
    try:
        yield engine
    finally:
        registry._engines.clear()
        registry._engines.update(saved)


# --- A populated world ---------------------------------------------------------------------


@dataclass
class World:
    """Org Acme with users and keys of each role (as orgs.tests.support builds them) and two
    private blobs; org Globex outside it, with a blob of its own.

    `blob` has revision 1 committed (the default, holding a.txt) and revision 2 a draft, metadata
    `owner` on the blob and on the draft, a pending operation, a blob member and a blob key.
    `other_blob` is a second private blob of Acme, with its own blob-scoped key and member.
    """

    org: Organization
    admin: User
    writer: User
    reader: User
    stranger: User
    write_key: str
    write_key_row: ApiKey
    read_key: str
    revoked_key: str
    expired_key: str
    blob: Blob
    committed: Revision
    draft: Revision
    operation: Operation
    member: User
    blob_key: str
    blob_key_row: ApiKey
    other_blob: Blob
    other_blob_key: str
    other_blob_member: User
    foreign_org: Organization
    foreign_admin: User
    foreign_key: str
    foreign_blob: Blob


def build_world() -> World:
    people = org_world()  # Acme's users and keys, Globex and its admin's key
    org, admin = people.org, people.admin

    blob = BlobFactory(org=org, alias="secret-model")
    committed = blob.revisions.get()
    content.file_put(committed, "a.txt", b"one")
    freeze(committed)
    set_default(blob, committed)
    draft = next_draft(blob, committed)
    BlobMetadata.objects.create(org=org, blob=blob, key="owner", value={"team": "ml"})
    RevisionMetadata.objects.create(org=org, revision=draft, key="owner", value="wip")
    operation = Operation.objects.create(org=org, blob=blob, revision=committed, type="export")
    member = UserFactory()
    BlobMember.objects.create(org=org, blob=blob, user=member, role=Role.READ)
    blob_key_row, blob_key = make_api_key(org, "write", created_by=admin, blob=blob)

    other_blob = BlobFactory(org=org, alias="other-blob")
    _, other_blob_key = make_api_key(org, "write", created_by=admin, blob=other_blob)
    other_blob_member = UserFactory()
    BlobMember.objects.create(org=org, blob=other_blob, user=other_blob_member, role=Role.ADMIN)

    foreign_blob = BlobFactory(org=people.other_org, alias="globex-model")
    return World(
        org=org,
        admin=admin,
        writer=people.writer,
        reader=people.reader,
        stranger=people.stranger,
        write_key=people.write_key,
        write_key_row=people.key_row,
        read_key=people.read_key,
        revoked_key=people.revoked_key,
        expired_key=people.expired_key,
        blob=blob,
        committed=committed,
        draft=draft,
        operation=operation,
        member=member,
        blob_key=blob_key,
        blob_key_row=blob_key_row,
        other_blob=other_blob,
        other_blob_key=other_blob_key,
        other_blob_member=other_blob_member,
        foreign_org=people.other_org,
        foreign_admin=people.other_admin,
        foreign_key=people.other_key,
        foreign_blob=foreign_blob,
    )


def record(org, stream: str, type: str):
    """An event recorded on `stream` (written now, or at the end of an enclosing batch)."""
    return events.record(org_id=org.id, stream=stream, type=type)


class GatedLayer:
    """A channel layer (third-party interface) whose sends wait for the test to open a gate."""

    def __init__(self, failing_groups=()):
        self.gate = threading.Event()
        self.sent: list[tuple[str, int]] = []
        self.failing_groups = set(failing_groups)

    async def group_send(self, group, message):
        await asyncio.to_thread(self.gate.wait, 30)
        if group in self.failing_groups:
            raise ConnectionError("the layer is down")
        self.sent.append((group, message["event"]["sequence"]))
