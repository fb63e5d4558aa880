from celery import shared_task
from django.conf import settings

# When many schedules are due at once (a whole fleet at the top of the hour), the beat's tick
# asks idle worker slots to help: each helper runs the same tick, and SKIP LOCKED gives every
# tick disjoint schedules, so the firings are spread without any coordination.
FIRINGS_PER_HELPER = 50
MAX_HELPERS = 4


@shared_task(ignore_result=True)
def tick(helper: bool = False) -> int:
    """Fire the due schedules (the beat sends this every SCHEDULER_TICK_SECONDS)."""
    from scheduler import services

    if not helper:
        due = services.due_count(limit=FIRINGS_PER_HELPER * (MAX_HELPERS + 1))
        helpers = min(MAX_HELPERS, due // FIRINGS_PER_HELPER)
        for _ in range(helpers):
            tick.apply_async(kwargs={"helper": True}, expires=float(settings.SCHEDULER_TICK_SECONDS))
    return services.tick()
