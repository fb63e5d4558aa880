"""Sessions, their state and their objects."""

from typing import Any

from django.db import IntegrityError, transaction

from blobhub.api.errors import AccessDenied, ApplicationError, Conflict
from blobhub.api.serializers import ref_lookup
from blobs import store
from blobs.models import Revision
from orgs.principal import Principal
from workflows.events import session_event
from workflows.models import Session, SessionObject

MAX_STATE_BYTES = 1024 * 1024


def session_get(revision: Revision, ref: Any) -> Session:
    """A session of the revision by id or alias; an absent one is a 403 like a forbidden one."""
    if not isinstance(ref, str) or not ref:
        raise AccessDenied()
    session = Session.objects.filter(revision=revision, **ref_lookup(ref)).first()
    if session is None:
        raise AccessDenied()
    return session


def session_create(*, principal: Principal, revision: Revision, alias: str | None, description: str) -> Session:
    def create() -> Session:
        return Session.objects.create(
            org_id=revision.org_id,
            blob_id=revision.blob_id,
            revision=revision,
            alias=alias,
            description=description,
            created_by=principal.user,
        )

    if not alias:
        return create()  # one statement: no transaction of its own (the scheduler makes many)
    if Session.objects.filter(revision=revision, alias=alias).exists():
        raise ApplicationError("alias_in_use", f"The session alias '{alias}' is already taken.", status=400)
    try:
        with transaction.atomic():
            return create()
    except IntegrityError:  # taken meanwhile
        raise ApplicationError("alias_in_use", f"The session alias '{alias}' is already taken.", status=400) from None


@transaction.atomic
def session_close(*, session: Session) -> Session:
    Session.objects.filter(id=session.id).update(status=Session.Status.CLOSED)
    session.status = Session.Status.CLOSED
    return session


def require_open(session: Session) -> None:
    if session.status != Session.Status.OPEN:
        raise Conflict("session_not_open", "The session is closed.")


@transaction.atomic
def session_state_set(*, session_id, key: str, value: Any, execution_id=None) -> None:
    session = Session.objects.select_for_update().get(id=session_id)
    state = dict(session.state)
    state[key] = value
    if len(store.canonical_json(state)) > MAX_STATE_BYTES:
        raise ApplicationError("state_too_large", f"A session's state is at most {MAX_STATE_BYTES} bytes.", status=400)
    Session.objects.filter(id=session.id).update(state=state)
    session_event(session, "session_state_changed", execution_id=execution_id, data={"key": key})


@transaction.atomic
def session_object_put(
    *, session: Session, alias: str, value: Any = None, data: bytes | None = None, stream=None, execution_id=None
) -> SessionObject:
    """Store a JSON value, or a file's bytes (`data` or a readable `stream`), under `alias`."""
    if data is not None:
        obj, kind = store.put_bytes(data), SessionObject.Kind.FILE
    elif stream is not None:
        obj, kind = store.put_stream(iter(lambda: stream.read(1024 * 1024), b"")), SessionObject.Kind.FILE
    else:
        obj, kind = store.put_json(value), SessionObject.Kind.VALUE
    item, _ = SessionObject.objects.update_or_create(
        session=session, alias=alias, defaults={"org_id": session.org_id, "kind": kind, "object": obj, "size": obj.size}
    )
    session_event(session, "session_object_modified", execution_id=execution_id, data={"alias": alias, "size": obj.size})
    return item


@transaction.atomic
def session_object_delete(*, session: Session, alias: str) -> None:
    deleted, _ = SessionObject.objects.filter(session=session, alias=alias).delete()
    if not deleted:
        raise AccessDenied(f"The session has no object {alias!r}.")
    session_event(session, "session_object_deleted", data={"alias": alias})
