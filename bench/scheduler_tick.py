"""Benchmark: the scheduler tick's cost against the number of schedules, and firing lateness.

Run it as `.venv/bin/python bench/scheduler_tick.py`. With DATABASE_URL (PostgreSQL) in the
environment it makes a fresh database on that server (dropped at the end); without it, it
starts a throwaway PostgreSQL cluster (as the postgres user) on a free loopback port. Part (b)
needs Redis: REDIS_URL, or a redis-server it starts on a free port. Everything it started is
stopped when it ends, whatever happens.

  (a) tick duration: 10 due schedules among 1,000, 10,000 and 100,000 active schedules.
      The rows are inserted in bulk into `ActiveSchedule` (one scheduler blob; all targeting
      one workflow definition of one owner); the non-due ones have `next_fire_at` in the
      next 30 days or NULL (completed, disabled, past their window), as a live system has.
      Each figure is the median of several `tick(now=...)` calls in this process, the due
      rows reset between calls; the executions' first steps go to a queue no worker reads
      (purged at the end), so the figure is the tick alone. Target: the tick over 100,000
      within 2x the tick over 1,000. Then one tick over 20 due schedules is split into where
      a firing's time and SQL statements go: the workflow engine's session and execution
      creation, publishing events to the channel layer, and the scheduler's own work.
  (b) lateness: 1,000 cron schedules all due at the same minute boundary, fired by a real
      `celery -A blobhub beat` (SCHEDULER_TICK_SECONDS, a temporary schedule file) and real
      `celery -A blobhub worker` processes. Lateness of a firing is the moment its firing row
      (and so its execution) became visible to another connection (a count polled every 20 ms), minus
      its scheduled time; `created_at - scheduled_for` is printed too. Target: p99 at most
      the tick interval + 1 s. Real processes rather than a tick loop in this process: the
      lateness then includes what production adds (beat's phase against the due time, the
      broker hop, the worker, helper ticks sharing the work, the executions' first steps
      competing for the same worker slots).

Not a pass/fail test: it prints a table and exits 0 unless something breaks.
"""

import argparse
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _services import (
    Cleanup,
    app_environment,
    fresh_database,
    given_servers,
    run_with_cleanup,
    setup_django,
    spawn,
    start_postgres,
    start_redis,
    start_workers,
    stop_process,
    tail,
    wait_until,
)

SIZES = (1_000, 10_000, 100_000)
DUE = 10
LATENESS_SCHEDULES = 1_000
TICK_TARGET_RATIO = 2.0


# --- Fixture --------------------------------------------------------------------------------------


class Fixture:
    """One owner, a workflow blob with the `approve` definition, a scheduler blob."""

    def __init__(self):
        from blobs.models import BlobType
        from blobs.services import blobs, content
        from orgs.models import User
        from orgs.principal import Principal
        from orgs.services import organization_create
        from workflows.tests.support import approval_flow

        self.user = User.objects.create_user(username="bench", email="bench@example.org", password=None)
        principal = Principal(user=self.user)
        self.org = organization_create(principal=principal, alias="bench-org", name="Bench")
        flows = blobs.blob_create(
            principal=principal, org=self.org, alias="bench-flows", type=BlobType.WORKFLOW, visibility="private", description=""
        )
        self.flows_revision = flows.revisions.get()
        content.file_put_json(self.flows_revision, "definitions/workflow/approve.json", approval_flow())
        self.blob = blobs.blob_create(
            principal=principal, org=self.org, alias="bench-schedules", type=BlobType.SCHEDULER, visibility="private", description=""
        )
        self.revision = self.blob.revisions.get()

    def document(self, cron: str, timezone: str = "UTC") -> dict:
        return {
            "id": str(uuid.uuid4()),
            "description": "bench",
            "repeat": "recurring_cron",
            "cron_expression": cron,
            "timezone": timezone,
            "enabled": True,
            "overlap": "allow",
            "invocation_target_type": "workflow",
            "invocation_target": {
                "target": {"org": self.org.alias, "blob": "bench-flows", "revision": str(self.flows_revision.id)},
                "workflow": {"definition": "approve"},
                "input_data": [{"alias": "order", "value": {"type": "json", "json": {"items": [{"price": 5}]}}}],
            },
            "_owner": {"user_id": str(self.user.id), "api_key_id": None},
        }

    def rows(self, documents_and_times):
        from scheduler.models import ActiveSchedule

        return [
            ActiveSchedule(
                org_id=self.org.id,
                blob_id=self.blob.id,
                revision_id=self.revision.id,
                schedule_id=document["id"],
                document=document,
                state=ActiveSchedule.State.ACTIVE if when is not None else ActiveSchedule.State.COMPLETED,
                next_fire_at=when,
            )
            for document, when in documents_and_times
        ]


def reset_schedules() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE scheduler_activeschedule, scheduler_firing")


def analyze() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE scheduler_activeschedule")


# --- (a) Tick duration ------------------------------------------------------------------------------


class TickResult:
    def __init__(self, total: int, samples: list[float], queries: int, plan: str, fired: int):
        self.total, self.samples, self.queries, self.plan, self.fired = total, samples, queries, plan, fired

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


def measure_tick(fixture: Fixture, total: int, repeats: int) -> TickResult:
    """`repeats` ticks over `total` schedules of which DUE are due; the median is the figure."""
    import random

    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from scheduler import services
    from scheduler.models import ActiveSchedule, Firing

    reset_schedules()
    rng = random.Random(total)
    # Due on their cron's own minute ("0 12 * * *"), two seconds before the tick: one firing
    # each, with no missed occurrence to record as well.
    due_at = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
    now = due_at + timedelta(seconds=2)
    due_docs = [fixture.document("0 12 * * *") for _ in range(DUE)]
    batch: list = [(doc, due_at) for doc in due_docs]
    for i in range(total - DUE):
        # Half fire later (spread over 30 days), half will not fire (NULL): a live mix.
        when = now + timedelta(seconds=rng.randint(60, 30 * 86400)) if i % 2 == 0 else None
        batch.append((fixture.document(f"{rng.randint(0, 59)} {rng.randint(0, 23)} * * *"), when))
        if len(batch) >= 5000:
            ActiveSchedule.objects.bulk_create(fixture.rows(batch), batch_size=5000)
            batch = []
    if batch:
        ActiveSchedule.objects.bulk_create(fixture.rows(batch), batch_size=5000)
    analyze()
    due_ids = [doc["id"] for doc in due_docs]
    with connection.cursor() as cursor:
        cursor.execute(
            "EXPLAIN SELECT * FROM scheduler_activeschedule WHERE next_fire_at <= %s ORDER BY next_fire_at LIMIT 500 FOR UPDATE SKIP LOCKED",
            [now],
        )
        plan = " / ".join(row[0].strip() for row in cursor.fetchall() if "Scan" in row[0])
    samples, queries, fired = [], 0, 0
    for attempt in range(repeats + 1):  # the first is a warm-up
        with transaction.atomic():
            Firing.objects.filter(schedule_id__in=due_ids).delete()
            ActiveSchedule.objects.filter(schedule_id__in=due_ids).update(next_fire_at=due_at, last_execution_id=None)
        with CaptureQueriesContext(connection) as captured:
            t0 = time.perf_counter()
            fired = services.tick(now=now)
            elapsed = time.perf_counter() - t0
        if fired != DUE:
            raise RuntimeError(f"the tick over {total} handled {fired} firings, not {DUE}")
        if Firing.objects.filter(schedule_id__in=due_ids, status="success").count() != DUE:
            raise RuntimeError(f"the tick over {total} did not fire the {DUE} due schedules successfully")
        if attempt:
            samples.append(elapsed)
            queries = len(captured.captured_queries)
    return TickResult(total, samples, queries, plan, fired)


# --- Where a firing's time goes ---------------------------------------------------------------------


def measure_breakdown(fixture: Fixture, count: int = 20) -> dict[str, tuple[float, float]]:
    """One tick over `count` due schedules in this process: seconds and SQL statements per firing
    in the workflow engine's session and execution creation, in publishing events to the
    channel layer (after each commit), and in the rest (the scheduler's own work)."""
    from contextlib import ExitStack
    from unittest import mock

    from django.db import connection

    import blobs.events
    import workflows.services.executions
    import workflows.services.sessions
    from scheduler import services
    from scheduler.models import ActiveSchedule

    reset_schedules()
    now = datetime(2031, 6, 1, 12, 0, tzinfo=UTC)
    ActiveSchedule.objects.bulk_create(fixture.rows([(fixture.document("0 12 * * *"), now) for _ in range(count)]))
    spent: dict[str, list[float]] = {}  # part -> [seconds, statements]
    current = ["scheduler"]

    def timed(part, function):
        def wrapper(*args, **kwargs):
            outer = current[0]
            current[0] = part
            t0 = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent.setdefault(part, [0.0, 0])[0] += time.perf_counter() - t0
                current[0] = outer
        return wrapper

    def count_statement(execute, sql, params, many, context):
        spent.setdefault(current[0], [0.0, 0])[1] += 1
        return execute(sql, params, many, context)

    with ExitStack() as stack:
        for module, name, part in (
            (workflows.services.executions, "execution_create", "execution_create (engine)"),
            (workflows.services.sessions, "session_create", "session_create (engine)"),
            # `publish_all` where events are published in batches, else `publish`.
            (blobs.events, "publish_all" if hasattr(blobs.events, "publish_all") else "publish",
             "event publish (channel layer)"),
        ):
            stack.enter_context(mock.patch.object(module, name, timed(part, getattr(module, name))))
        stack.enter_context(connection.execute_wrapper(count_statement))
        t0 = time.perf_counter()
        fired = services.tick(now=now)
        total = time.perf_counter() - t0
    if fired != count:
        raise RuntimeError(f"the breakdown tick fired {fired}, not {count}")
    others = sum(seconds for part, (seconds, _) in spent.items() if part != "scheduler")
    spent.setdefault("scheduler", [0.0, 0])[0] = total - others
    return {part: (seconds / count, statements / count) for part, (seconds, statements) in spent.items()}


# --- (b) Lateness -----------------------------------------------------------------------------------


class Lateness:
    def __init__(self, scheduled_for, visible: list[float], created: list[float], fired: int, statuses: dict, executions: int):
        self.scheduled_for, self.visible, self.created = scheduled_for, visible, created
        self.fired, self.statuses, self.executions = fired, statuses, executions


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(int(round(q * (len(ordered) - 1))), len(ordered) - 1)]


def measure_lateness(fixture: Fixture, env: dict, work: Path, cleanup: Cleanup, args) -> Lateness:
    from django.db.models import Count

    from scheduler import services
    from scheduler.models import ActiveSchedule, Firing
    from workflows.models import Execution

    reset_schedules()
    Execution.objects.all().delete()  # (a)'s, never run: the beat's recovery would re-enqueue them

    options = ["--pool", args.pool, "-c", str(args.concurrency)]
    workers = start_workers(args.workers, "bench-sched", options, env, work, cleanup)
    bin_dir = Path(sys.executable).parent
    beat_log = work / "beat.log"
    beat = spawn(
        [str(bin_dir / "celery"), "-A", "blobhub", "beat", "-s", str(work / "celerybeat-schedule"), "--loglevel", "INFO"],
        env, beat_log, cleanup, "beat",
    )  # fmt: skip
    wait_until(lambda: "Sending due task scheduler-tick" in beat_log.read_text(errors="replace"), 60, "beat ticking", beat, beat_log)

    # All due at the next minute boundary at least `lead` seconds away (time for the insert).
    now = datetime.now(UTC)
    due = (now + timedelta(seconds=args.lead)).replace(second=0, microsecond=0) + timedelta(minutes=1)
    cron = f"{due.minute} {due.hour} * * *"
    documents = [fixture.document(cron) for _ in range(LATENESS_SCHEDULES)]
    rows = [(document, services.first_fire(document, now)) for document in documents]
    assert all(when == due for _, when in rows), "every schedule is due at the same minute boundary"
    ActiveSchedule.objects.bulk_create(fixture.rows(rows), batch_size=1000)
    analyze()
    if datetime.now(UTC) >= due:
        raise RuntimeError("inserting the schedules took longer than the lead time; raise --lead")
    print(f"  {LATENESS_SCHEDULES} schedules due at {due:%H:%M:%S} UTC; beat and {len(workers)} worker(s) up", file=sys.stderr)

    # When each firing became visible: a count per poll (a cheap index-free count over this
    # minute's firings), each new one noted at the poll that first counted it. (Asking for the
    # ids not seen yet sent up to 1,000 UUIDs every 20 ms, and took CPU from what is measured.)
    seen: list[float] = []
    deadline = time.monotonic() + (due - datetime.now(UTC)).total_seconds() + args.timeout
    scheduled = due.timestamp()
    visible = Firing.objects.filter(scheduled_for=due)
    while len(seen) < LATENESS_SCHEDULES:
        if time.monotonic() > deadline:
            print(f"  only {len(seen)} of {LATENESS_SCHEDULES} fired within {args.timeout} s of their time", file=sys.stderr)
            break
        if beat.poll() is not None:
            raise RuntimeError(f"beat exited with {beat.returncode}\n{tail(beat_log)}")
        count = visible.count()
        moment = time.time()
        seen += [moment] * (count - len(seen))
        time.sleep(0.02)
    stop_process(beat)
    for worker in workers:
        stop_process(worker.process)
    firings = Firing.objects.filter(scheduled_for=due)
    created = [(created_at - due).total_seconds() for created_at in firings.values_list("created_at", flat=True)]
    statuses = dict(firings.values_list("status").annotate(n=Count("id")))
    per_schedule = firings.values("schedule_id").annotate(n=Count("id")).filter(n__gt=1).count()
    if per_schedule:
        raise RuntimeError(f"{per_schedule} schedules fired more than once")
    execution_ids = [f["execution_id"] for f in firings.values_list("result", flat=True) if "execution_id" in f]
    executions = Execution.objects.filter(id__in=execution_ids).count()
    return Lateness(due, [t - scheduled for t in seen], created, firings.count(), statuses, executions)


# --- Main ---------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="ticks measured per size (after one warm-up)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated totals for (a)")
    parser.add_argument("--tick-seconds", type=int, default=5, help="SCHEDULER_TICK_SECONDS of the beat in (b)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes in (b)")
    parser.add_argument("--pool", choices=("prefork", "threads"), default="prefork")
    parser.add_argument("--concurrency", type=int, default=2, help="-c of each worker in (b)")
    parser.add_argument("--lead", type=int, default=10, help="seconds (at least) between setting up (b) and the due time")
    parser.add_argument("--timeout", type=int, default=180, help="seconds after the due time to wait for (b)")
    parser.add_argument("--skip-lateness", action="store_true", help="only (a)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the process logs (their path is printed)")
    args = parser.parse_args()

    return run_with_cleanup(run, args, "bench-scheduler-")


def run(args, work: Path, cleanup: Cleanup) -> int:
    began = time.monotonic()
    given_db, given_redis = given_servers()
    database_url = fresh_database(given_db or start_postgres(cleanup).url, cleanup, "bench_scheduler")
    redis_url = given_redis or start_redis(work, cleanup).url
    queue = f"bench-scheduler-{os.getpid()}"
    env = app_environment(database_url, redis_url, work / "data", queue)
    env["SCHEDULER_TICK_SECONDS"] = str(args.tick_seconds)
    setup_django(env)
    from blobhub.celery import app

    fixture = Fixture()
    set_up = time.monotonic() - began

    ticks = [measure_tick(fixture, int(size), args.repeats) for size in args.sizes.split(",")]
    with app.connection_for_write() as conn:  # the first steps of (a)'s executions: nobody runs them
        purged = conn.default_channel.queue_purge(queue)

    print()
    print(f"scheduler tick: PostgreSQL + Redis, {os.cpu_count()} CPUs; set-up {set_up:.1f} s")
    print(f"(a) one tick firing {DUE} due schedules (median of {args.repeats}, after a warm-up)")
    print(f"    {'schedules':>10} {'median ms':>10} {'min ms':>8} {'max ms':>8} {'SQL':>5}  due-row scan")
    for result in ticks:
        print(f"    {result.total:>10,} {result.median * 1000:>10.1f} {min(result.samples) * 1000:>8.1f} "
              f"{max(result.samples) * 1000:>8.1f} {result.queries:>5}  {result.plan}")  # fmt: skip
    base, top = ticks[0], ticks[-1]
    ratio = top.median / base.median
    print(f"    {top.total:,} / {base.total:,}: {ratio:.2f} x (target <= {TICK_TARGET_RATIO:g} x: "
          f"{'met' if ratio <= TICK_TARGET_RATIO else 'NOT met'}); {purged or 0} queued first steps purged")  # fmt: skip
    breakdown = measure_breakdown(fixture)
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(queue)
    total = sum(seconds for seconds, _ in breakdown.values())
    print(f"    one firing, in this process: {total * 1000:.1f} ms, "
          f"{sum(statements for _, statements in breakdown.values()):.0f} SQL statements; of which")  # fmt: skip
    for part, (seconds, statements) in sorted(breakdown.items(), key=lambda item: -item[1][0]):
        print(f"      {part:36} {seconds * 1000:7.1f} ms {100 * seconds / total:4.0f} % {statements:5.1f} SQL")
    sys.stdout.flush()

    if not args.skip_lateness:
        lateness = measure_lateness(fixture, env, work, cleanup, args)
        interval = args.tick_seconds
        # Firings that never came within the timeout count as infinitely late.
        visible = lateness.visible + [float("inf")] * (LATENESS_SCHEDULES - len(lateness.visible))
        p50, p99 = pct(visible, 0.5), pct(visible, 0.99)
        print(f"(b) {LATENESS_SCHEDULES} schedules due at the same minute, beat every {interval} s, "
              f"{args.workers} x `celery worker --pool {args.pool} -c {args.concurrency}`")  # fmt: skip
        print(f"    {'':38} {'p50 s':>7} {'p99 s':>7} {'max s':>7}")
        print(f"    {'visible to another connection':38} {p50:>7.2f} {p99:>7.2f} {max(visible):>7.2f}")
        print(f"    {'created_at - scheduled_for':38} {pct(lateness.created, 0.5):>7.2f} "
              f"{pct(lateness.created, 0.99):>7.2f} {max(lateness.created):>7.2f}")  # fmt: skip
        spread = max(lateness.visible) - min(lateness.visible)
        print(f"    first to last firing: {spread:.2f} s; firings {lateness.fired} {lateness.statuses}, "
              f"executions {lateness.executions}")  # fmt: skip
        print(f"    p99 {p99:.2f} s (target <= tick interval + 1 s = {interval + 1} s: {'met' if p99 <= interval + 1 else 'NOT met'})")
    print(f"total {time.monotonic() - began:.1f} s" + (f"; logs in {work}" if args.keep_logs else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
