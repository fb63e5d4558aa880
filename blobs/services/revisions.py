"""The revision lifecycle (API.md §2): draft → commit (an operation) → snapshot."""

import hashlib
import logging

from django.db import transaction
from django.db.models import Max

from blobhub.api.errors import Conflict
from blobs import events, limits
from blobs.models import Blob, ManifestEntry, Operation, Revision
from blobs.registry import Problem, engine_for
from blobs.services.blobs import default_changed
from orgs.audit import audit
from orgs.principal import Principal

logger = logging.getLogger("blobhub.revisions")


def not_writable() -> Conflict:
    return Conflict("revision_not_writable", "Only a draft revision's content can change.")


def not_ready(revision: Revision) -> Conflict:
    return Conflict("revision_not_ready", f"The revision is {revision.status}; retry when it is ready.")


def revision_event(revision: Revision, type: str = "revision.updated") -> None:
    """Announce a revision's phase or status on its blob's stream."""
    events.record(
        org_id=revision.org_id,
        stream=events.stream_name("blob", revision.blob_id),
        type=type,
        data={
            "revision_id": str(revision.id),
            "number": revision.number,
            "phase": revision.phase,
            "status": revision.status,
        },
    )


@transaction.atomic
def revision_create(*, principal: Principal, blob: Blob, comment: str) -> Revision:
    """A new draft whose content is a copy of the default revision's manifest (entries, not bytes)."""
    blob = Blob.objects.select_for_update().get(id=blob.id)  # serializes numbering
    parent = blob.default_revision
    if parent is None:
        raise Conflict("no_default_revision", "The blob has no committed default revision to start a draft from.")
    limits.check("core.revisions_per_blob", Revision.objects.filter(blob=blob).count())
    number = (Revision.objects.filter(blob=blob).aggregate(top=Max("number"))["top"] or 0) + 1
    revision = Revision.objects.create(org_id=blob.org_id, blob=blob, number=number, comment=comment, parent=parent)
    ManifestEntry.objects.bulk_create(
        ManifestEntry(
            org_id=blob.org_id,
            revision=revision,
            path=entry.path,
            object_id=entry.object_id,
            size=entry.size,
            updated_at=entry.updated_at,
        )
        for entry in ManifestEntry.objects.filter(revision=parent).only("path", "object_id", "size", "updated_at")
    )
    audit(principal, "revision.create", revision, org=blob.org, changes={"number": number, "parent": str(parent.id)})
    revision_event(revision, "revision.created")
    return revision


@transaction.atomic
def revision_commit_start(*, principal: Principal, revision: Revision, comment: str | None) -> Operation:
    """Move a draft to `committing` and queue the commit operation."""
    from blobs.tasks import run_commit

    revision = Revision.objects.select_for_update().get(id=revision.id)
    if revision.phase != Revision.Phase.DRAFT:
        raise not_writable()
    if revision.status not in (Revision.Status.READY, Revision.Status.FAILED):
        raise not_ready(revision)
    changes = {"status": Revision.Status.COMMITTING, "failed_operation": None, "failure": ""}
    if comment:
        changes["comment"] = comment
    Revision.objects.filter(id=revision.id).update(**changes)
    for field, value in changes.items():
        setattr(revision, field, value)
    operation = Operation.objects.create(
        org_id=revision.org_id, blob_id=revision.blob_id, revision=revision, type="commit"
    )
    audit(principal, "revision.commit", revision, org=revision.blob.org, changes={"operation_id": str(operation.id)})
    revision_event(revision)
    transaction.on_commit(lambda: run_commit.delay(str(operation.id)))
    return operation


def tree_hash(revision: Revision) -> str:
    """SHA-256 over the sorted `(path, object)` entries: equal content, equal hash."""
    digest = hashlib.sha256()
    for path, sha256 in ManifestEntry.objects.filter(revision=revision).order_by("path").values_list("path", "object_id"):
        digest.update(f"{path}\0{sha256}\n".encode())
    return digest.hexdigest()


def revision_commit_run(operation_id: str) -> None:
    """The commit operation (in the worker): validate with the engine, then freeze or fail."""
    from blobs.services.operations import operation_claim, operation_lock_running

    operation = operation_claim(operation_id)
    if operation is None:
        return
    revision = operation.revision
    validate = engine_for(revision.blob.type).validate
    try:
        problems = validate(revision) if validate else []
    except Exception:
        logger.exception("commit validation of revision %s crashed", revision.id)
        problems = [Problem(path="", message="The content could not be validated (internal error).")]
    errors = [problem for problem in problems if problem.level == "error"]
    try:
        with transaction.atomic():
            if not operation_lock_running(operation):
                return
            if Operation.objects.filter(id=operation.id, cancel_requested=True).exists():
                _cancel_commit(operation, revision)
            elif errors:
                _fail_commit(operation, revision, _invalid(errors))
            else:
                _freeze(operation, revision)
    except Exception:
        # A database error, or the engine's hook refusing the new default: the draft is not
        # left `committing` for good, it fails and can be written and committed again.
        logger.exception("commit %s of revision %s crashed in its final stage", operation.id, revision.id)
        with transaction.atomic():
            if operation_lock_running(operation):
                error = {"code": "internal_error", "message": "The commit could not be completed (internal error)."}
                _fail_commit(operation, Revision.objects.get(id=revision.id), error)
        raise


def _invalid(errors: list[Problem]) -> dict:
    message = f"The content is not valid: {errors[0].path or 'content'}: {errors[0].message}"
    return {"code": "validation_failed", "message": message, "details": [p.render() for p in errors[:100]]}


def _cancel_commit(operation: Operation, revision: Revision) -> None:
    from blobs.services.operations import operation_finish

    operation_finish(operation, Operation.Status.CANCELLED)
    Revision.objects.filter(id=revision.id).update(status=Revision.Status.READY)
    revision.status = Revision.Status.READY
    revision_event(revision)


def _fail_commit(operation: Operation, revision: Revision, error: dict) -> None:
    from blobs.services.operations import operation_finish

    operation_finish(operation, Operation.Status.FAILED, error=error)
    Revision.objects.filter(id=revision.id).update(
        status=Revision.Status.FAILED, failed_operation=operation, failure=error["message"]
    )
    revision.status, revision.failed_operation, revision.failure = Revision.Status.FAILED, operation, error["message"]
    revision_event(revision)


def _freeze(operation: Operation, revision: Revision) -> None:
    from blobs.services.operations import operation_finish

    digest = tree_hash(revision)
    Revision.objects.filter(id=revision.id).update(
        phase=Revision.Phase.COMMIT, status=Revision.Status.READY, tree_hash=digest
    )
    revision.phase, revision.status, revision.tree_hash = Revision.Phase.COMMIT, Revision.Status.READY, digest
    blob = Blob.objects.select_for_update().get(id=revision.blob_id)
    Blob.objects.filter(id=blob.id).update(default_revision=revision)
    operation_finish(operation, Operation.Status.COMPLETED, result={"revision_id": str(revision.id), "tree_hash": digest})
    revision_event(revision)
    default_changed(blob, revision)


@transaction.atomic
def revision_snapshot(*, principal: Principal, revision: Revision, comment: str | None) -> Revision:
    revision = Revision.objects.select_for_update().get(id=revision.id)
    if revision.phase != Revision.Phase.COMMIT:
        raise Conflict("revision_not_committed", "Only a committed revision can become a snapshot.")
    if revision.status != Revision.Status.READY:
        raise not_ready(revision)
    changes = {"phase": Revision.Phase.SNAPSHOT}
    if comment:
        changes["comment"] = comment
    Revision.objects.filter(id=revision.id).update(**changes)
    for field, value in changes.items():
        setattr(revision, field, value)
    audit(principal, "revision.snapshot", revision, org=revision.blob.org)
    revision_event(revision)
    return revision


@transaction.atomic
def revision_delete(*, principal: Principal, revision: Revision) -> None:
    revision = Revision.objects.select_for_update().get(id=revision.id)
    if revision.phase != Revision.Phase.DRAFT:
        raise Conflict("revision_not_deletable", "Committed and snapshot revisions are never deleted.")
    if revision.status == Revision.Status.COMMITTING:
        raise not_ready(revision)
    blob = revision.blob
    if blob.default_revision_id is None and not blob.revisions.exclude(id=revision.id).exists():
        # A new draft starts from the default: without one, the blob could never hold a revision again.
        raise Conflict(
            "revision_not_deletable",
            "The blob's only revision cannot be deleted: new drafts start from a committed default, "
            "and the blob has none. Commit this draft, or delete the blob.",
        )
    audit(principal, "revision.delete", revision, org=blob.org, changes={"number": revision.number})
    revision.status = Revision.Status.DELETING
    revision_event(revision, "revision.deleted")
    revision.delete()
