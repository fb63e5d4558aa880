"""Operations: long work tracked as a record with status, progress, result and error."""

from django.db import transaction
from django.utils import timezone

from blobhub.api.errors import Conflict
from blobs import events
from blobs.models import Operation, Revision
from orgs.audit import audit
from orgs.principal import Principal


def render_operation_event(operation: Operation) -> dict:
    return {
        "operation_id": str(operation.id),
        "type": operation.type,
        "status": operation.status,
        "progress": operation.progress,
    }


def _announce(operation: Operation) -> None:
    if operation.revision_id is None:
        return
    events.record(
        org_id=operation.org_id,
        stream=events.stream_name("revision", operation.revision_id),
        type="operation.updated",
        data=render_operation_event(operation),
    )


def operation_claim(operation_id: str) -> Operation | None:
    """pending → running; None if it has ended (or was cancelled) already.

    A running operation is handed out again: that is a task redelivered after its
    worker died, and the work resumes. Finishing checks the status under a row lock,
    so an operation ends exactly once.
    """
    with transaction.atomic():
        operation = (
            # Lock the operation row only: revision and blob are nullable joins, and
            # PostgreSQL refuses FOR UPDATE on the nullable side of an outer join.
            Operation.objects.select_for_update(of=("self",))
            .select_related("revision", "revision__blob", "blob")
            .filter(id=operation_id, status__in=[Operation.Status.PENDING, Operation.Status.RUNNING])
            .first()
        )
        if operation is None:
            return None
        if operation.status == Operation.Status.PENDING:
            Operation.objects.filter(id=operation.id).update(status=Operation.Status.RUNNING, updated_at=timezone.now())
            operation.status = Operation.Status.RUNNING
            _announce(operation)
    return operation


def operation_lock_running(operation: Operation) -> bool:
    """Lock the row for the final write; False if it ended meanwhile (cancelled, finished)."""
    return Operation.objects.select_for_update().filter(id=operation.id, status=Operation.Status.RUNNING).exists()


def operation_progress(operation: Operation, progress: float) -> bool:
    """Record progress; returns False when a cancel was asked for (the work should stop)."""
    progress = min(max(progress, 0.0), 1.0)
    Operation.objects.filter(id=operation.id, status=Operation.Status.RUNNING).update(
        progress=progress, updated_at=timezone.now()
    )
    operation.progress = progress
    return not Operation.objects.filter(id=operation.id, cancel_requested=True).exists()


def operation_finish(operation: Operation, status: str, *, result=None, error=None) -> None:
    """Record a final status (in the caller's transaction)."""
    changes = {"status": status, "result": result, "error": error, "updated_at": timezone.now()}
    if status == Operation.Status.COMPLETED:
        changes["progress"] = 1.0
    Operation.objects.filter(id=operation.id).update(**changes)
    for field, value in changes.items():
        setattr(operation, field, value)
    _announce(operation)


@transaction.atomic
def operation_cancel(*, principal: Principal, operation: Operation) -> Operation:
    """A pending operation is cancelled at once; a running one is asked to stop."""
    operation = Operation.objects.select_for_update().get(id=operation.id)
    if operation.status in Operation.FINAL:
        raise Conflict("operation_finished", f"The operation is already {operation.status}.")
    if operation.status == Operation.Status.PENDING:
        operation_finish(operation, Operation.Status.CANCELLED)
        if operation.type == "commit" and operation.revision_id:
            # The draft goes back to being a writable, ready draft.
            Revision.objects.filter(id=operation.revision_id, status=Revision.Status.COMMITTING).update(
                status=Revision.Status.READY
            )
    else:
        Operation.objects.filter(id=operation.id).update(cancel_requested=True, updated_at=timezone.now())
        operation.cancel_requested = True
    audit(principal, "operation.cancel", operation, org=operation.blob.org)
    return operation
