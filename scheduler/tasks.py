import time
from datetime import datetime, timedelta

from celery import shared_task
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

# When many schedules are due at once (a whole fleet at the top of the hour), the tick asks
# idle worker slots to help: each helper runs the same tick, and SKIP LOCKED gives every tick
# disjoint schedules, so the firings are spread without any coordination.
FIRINGS_PER_HELPER = 50
MAX_HELPERS = 4
# How close to a due time a wake-up tick may run early (a broker's ETA is not exact); it
# waits out the rest rather than finding nothing due.
WAKE_EARLY_SECONDS = 1.0


@shared_task(ignore_result=True)
def tick(helper: bool = False, wake_at: str | None = None) -> int:
    """Fire the due schedules (the beat sends this every SCHEDULER_TICK_SECONDS).

    A tick that sees the next due time come before the beat's next tick sends one more tick
    (a wake-up) for that moment, so that schedules fire when they are due rather than up to
    a tick interval later. One wake-up per due time: a cache key is the token.
    """
    from scheduler import services

    if wake_at is not None:
        early = (datetime.fromisoformat(wake_at) - timezone.now()).total_seconds()
        if 0 < early <= WAKE_EARLY_SECONDS:
            time.sleep(early)
    if not helper:
        due = services.due_count(limit=FIRINGS_PER_HELPER * (MAX_HELPERS + 1))
        helpers = min(MAX_HELPERS, due // FIRINGS_PER_HELPER)
        for _ in range(helpers):
            tick.apply_async(kwargs={"helper": True}, expires=float(settings.SCHEDULER_TICK_SECONDS))
    handled = services.tick()
    if not helper:
        _wake_for_next_due()
    return handled


def _wake_for_next_due() -> None:
    from scheduler import services

    interval = float(settings.SCHEDULER_TICK_SECONDS)
    now = timezone.now()
    upcoming = services.next_due_at(after=now)
    if upcoming is None or (upcoming - now).total_seconds() >= interval:
        return  # nothing coming, or the beat's next tick is soon enough
    if cache.add(f"scheduler:wake:{upcoming.isoformat()}", 1, timeout=int(interval) * 4 + 1):
        tick.apply_async(kwargs={"wake_at": upcoming.isoformat()}, eta=upcoming, expires=upcoming + timedelta(seconds=interval))
