"""Thin Celery tasks: ids in, services out; safe to run twice."""

from celery import shared_task
from celery.signals import worker_ready
from django.utils import timezone


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_step(step_id: int) -> None:
    from workflows.engine import run_step as run

    run(step_id)


@shared_task(ignore_result=True)
def recover_executions(follow: bool = False) -> int:
    """Re-dispatch steps whose worker died and fail executions past their deadline.

    The beat runs this every few seconds; a starting worker runs it with `follow`, which
    comes back when the earliest running lease would expire (a worker killed just
    before this one started leaves such a lease behind).
    """
    from workflows.engine import next_lease_expiry, recover

    count = recover()
    expiry = next_lease_expiry() if follow else None
    if expiry is not None:
        delay = max((expiry - timezone.now()).total_seconds(), 0) + 1
        if delay < 300:
            recover_executions.apply_async((True,), countdown=delay)
    return count


@worker_ready.connect
def _recover_on_start(sender=None, **kwargs) -> None:
    recover_executions.apply_async((True,))
