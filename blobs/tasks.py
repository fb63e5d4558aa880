"""Thin Celery tasks: take ids, call a service, safe to run twice."""

from celery import shared_task


@shared_task(acks_late=True)
def run_commit(operation_id: str) -> None:
    """The commit operation of a draft (claimed once, so a redelivery does nothing)."""
    from blobs.services.revisions import revision_commit_run

    revision_commit_run(operation_id)


@shared_task
def collect_garbage() -> int:
    """Remove stored objects that nothing has referenced for BLOB_RETENTION_HOURS."""
    from blobs.store import collect_garbage as collect

    return collect()
