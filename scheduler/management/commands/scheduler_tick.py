"""`manage.py scheduler_tick [--now ISO]`: one tick of the scheduler, as the beat's task runs it.

For operations (fire what is due now, e.g. from cron when no beat runs) and for tests that
run ticks in separate processes against a fixed clock.
"""

from datetime import datetime

from django.core.management.base import BaseCommand, CommandError

from scheduler.services import tick


class Command(BaseCommand):
    help = "Fire the due schedules once (DESIGN §7); prints how many firings were handled."

    def add_arguments(self, parser):
        parser.add_argument("--now", help="The tick's clock, an ISO 8601 time with an offset (default: now).")

    def handle(self, *args, now=None, **options):
        moment = None
        if now is not None:
            try:
                moment = datetime.fromisoformat(now.replace("Z", "+00:00"))
            except ValueError:
                raise CommandError(f"--now {now!r} is not an ISO 8601 time.") from None
            if moment.tzinfo is None:
                raise CommandError("--now needs an offset, e.g. 2026-03-08T07:00:00Z.")
        self.stdout.write(str(tick(now=moment)))
