from celery import shared_task

from blobhub.api import idempotency


@shared_task
def purge_idempotency_records() -> int:
    """Drop stored POST outcomes older than the 24 h replay window."""
    return idempotency.purge_expired()
