"""The typed data channel (API.md §3): `data/query` and `data/command` on a revision."""

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from blobhub.api.errors import AccessDenied, ApplicationError
from blobs import policy
from blobs.models import Blob, Revision
from blobs.registry import Engine, Handler, engine_for
from blobs.services.revisions import not_ready, not_writable
from orgs.models import Role
from orgs.principal import Principal


@dataclass
class DataContext:
    """What a handler gets: who calls, on which revision, with which role, and any binary body."""

    principal: Principal
    revision: Revision
    blob: Blob
    role: Role
    body: Any = None  # a readable stream for application/octet-stream requests
    base_url: str = ""  # how the client reached this server, for URLs handed back to it


@dataclass
class BinaryAnswer:
    """A handler's binary result: the bytes (an iterable of chunks) and the envelope to send with them."""

    chunks: Iterable[bytes]
    envelope: dict = field(default_factory=dict)
    size: int | None = None
    filename: str | None = None


def _diff(ctx: DataContext, args: dict) -> dict:
    from blobhub.api.serializers import StrictSerializer, StrictUUIDField, parse
    from blobs.selectors import revision_list
    from blobs.services.content import diff

    class DiffIn(StrictSerializer):
        against = StrictUUIDField()

    against_id = parse(DiffIn, args)["against"]
    against = revision_list(ctx.principal, ctx.blob).filter(id=against_id).first()
    if against is None:
        raise ApplicationError("revision_not_found", "The blob has no such revision to compare with.", status=404)
    return {"diff": diff(ctx.revision, against)}


CORE_QUERIES = {"diff": Handler(_diff)}


def unknown_command(command: str) -> ApplicationError:
    return ApplicationError("unknown_command", f"The blob type has no command {command!r}.", status=400)


def dispatch(*, principal: Principal, revision: Revision, mode: str, command: str, args: dict, body=None, base_url=""):
    blob = revision.blob
    engine: Engine = engine_for(blob.type)
    queries = {**CORE_QUERIES, **engine.queries}
    if mode == "query":
        if command in engine.commands and command not in queries:
            raise ApplicationError(
                "mutating_command_in_query_mode", f"{command!r} changes data: send it to data/command.", status=400
            )
        handler = queries.get(command)
    else:
        handler = engine.commands.get(command) or queries.get(command)
    if handler is None:
        raise unknown_command(command)
    role = policy.authorize_blob(principal, handler.needs, blob)
    if (handler is engine.commands.get(command) or not handler.public) and policy.reads_as_public(principal, blob):
        # A public blob is only read by callers without a role on it, whatever a command declares.
        raise AccessDenied()
    if handler.writes_content:
        if revision.phase != Revision.Phase.DRAFT:
            raise not_writable()
        if revision.status not in (Revision.Status.READY, Revision.Status.FAILED):
            raise not_ready(revision)
    elif mode == "command" and command in engine.commands:
        # Runtime commands (sessions, executions) run on any ready revision.
        if revision.status != Revision.Status.READY:
            raise not_ready(revision)
    elif revision.status in (Revision.Status.CREATING, Revision.Status.DELETING):
        raise not_ready(revision)
    context = DataContext(principal=principal, revision=revision, blob=blob, role=role, body=body, base_url=base_url)
    return handler.run(context, args)
