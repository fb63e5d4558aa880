from celery import shared_task


@shared_task(ignore_result=True)
def tick() -> int:
    """Fire the due schedules (the beat sends this every SCHEDULER_TICK_SECONDS)."""
    from scheduler.services import tick as run

    return run()
