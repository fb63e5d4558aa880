"""Benchmark: the workflow engine's per-step overhead and throughput on real Celery workers.

Run it as `.venv/bin/python bench/workflow_overhead.py`. With DATABASE_URL (PostgreSQL) and
REDIS_URL in the environment it makes a fresh database on that server (dropped at the end)
and uses that Redis under a queue of its own; without them it starts a throwaway PostgreSQL
cluster (as the postgres user) and a redis-server on free loopback ports, and stops them when
it ends. It migrates the database, makes a user, an org, a workflow blob, its draft revision,
definitions and sessions through the services, starts real worker processes
(`celery -A blobhub worker`), and measures in the same run:

  (a) the bare Celery round trip on the same broker and workers: a no-op task's
      `apply_async().get()` (the task lives in this module, which the bench workers import
      with `-I`; only it has a result backend, the same Redis);
  (b) the end-to-end overhead per step of a 10-step linear workflow of no-op components
      (`logic.transform` with expression `@`): wall time from the `execution_create` call to
      the client receiving the execution's `completed` status event on the channel layer,
      divided by 10, over sequential executions; the ratio to (a) (target: at most 2);
  (b') for comparison, the same over 10 `flow.delay` steps of 0 s: components that are not
      pure run in a thread under a lease, each with a transaction to claim it and one to
      record it, where a line of pure ones (the transforms of (b)) runs in one transaction;
  (c) throughput: 500 executions of 3 such steps created in one transaction (so that all
      are enqueued at once, at commit) on 2 worker processes, steps per second from the
      commit to the last `finished_at` (target: at least 100).

Workers: two `celery -A blobhub worker --pool prefork -c 1` processes (each a consumer parent
and one pool child that runs the tasks). Prefork because it is Celery's default and what
production runs: each task runs in a process of its own (its own GIL, its own database
connection), the two workers use both cores, and the engine's `acks_late` with
`reject_on_worker_lost` (DESIGN §5) means something only there: a child that dies gives its
message back. In a back-to-back comparison on the 2-core machine, `--pool threads -c 1` gave the
same throughput and a slower step (its task thread shares the GIL with the consumer's event
loop); `--pool threads` is kept to compare.

Besides the table it prints the SQL statements per step (the path run inline in this process)
and the CPU time per step of the workers, PostgreSQL, Redis and this client (from /proc), which
says what the per-step cost is made of. Not a pass/fail test: it exits 0 unless something breaks.
"""

import argparse
import asyncio
import logging
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from _services import (
    Cleanup,
    app_environment,
    close_channel_layer,
    fresh_database,
    given_servers,
    project_channel_layer,
    run_with_cleanup,
    setup_django,
    start_postgres,
    start_redis,
    start_workers,
)

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
NOOP_TASK = "bench.workflow_overhead.noop"
WORKER_FLAG = "BENCH_WORKFLOW_OVERHEAD_WORKER"
TARGET_RATIO, TARGET_STEPS_PER_S = 2.0, 100.0


def register_noop():
    """The baseline task, on the project's Celery app, with the only result backend in play."""
    from celery.backends.redis import RedisBackend

    from blobhub.celery import app

    backend = RedisBackend(app=app, url=os.environ["REDIS_URL"])

    @app.task(name=NOOP_TASK, ignore_result=False, backend=backend)
    def noop():
        return None

    return noop


if os.environ.get(WORKER_FLAG) and __name__ != "__main__":
    # Imported by a bench worker (`celery ... -I workflow_overhead`).
    register_noop()


# --- Definitions and fixtures ---------------------------------------------------------------------


def linear(steps: int, pure: bool = True) -> dict:
    """flow.start and a flow.input feeding `steps` no-op transforms in a line (no flow.end);
    not `pure`: no-op `flow.delay` steps of 0 s instead, which the engine runs as it runs
    components with I/O (in a thread, under a lease, a transaction to claim and one to record)."""
    from workflows.tests.support import component, connect, document, number, text

    components = [component("start", "flow.start"), component("in", "flow.input", alias="x")]
    components += [
        component(f"t{i}", "logic.transform", config={"expression": text("@")})
        if pure
        else component(f"t{i}", "flow.delay", config={"seconds": number(0)})
        for i in range(1, steps + 1)
    ]
    connections = [connect("c0", "start", "t1"), connect("cin", "in", "t1", source_port="value", target_port="input")]
    connections += [
        connect(f"c{i}", f"t{i}", f"t{i + 1}", source_port="output", target_port="input") for i in range(1, steps)
    ]
    return document(components, connections)


INPUT = [{"alias": "x", "value": {"type": "json", "json": {"n": 1, "note": "bench"}}}]


@dataclass
class Fixture:
    principal: object
    revision: object
    session: object  # for the sequential runs (watched on the channel layer)
    bulk_session: object  # for the throughput run


def make_fixture() -> Fixture:
    from blobs.models import BlobType
    from blobs.services import blobs, content
    from orgs.models import User
    from orgs.principal import Principal
    from orgs.services import organization_create
    from workflows.definitions import validate
    from workflows.services.sessions import session_create

    user = User.objects.create_user(username="bench", email="bench@example.org", password=None)
    principal = Principal(user=user)
    org = organization_create(principal=principal, alias="bench-org", name="Bench")
    blob = blobs.blob_create(
        principal=principal, org=org, alias="bench-flows", type=BlobType.WORKFLOW, visibility="private", description=""
    )
    revision = blob.revisions.get()
    for name, doc in [(f"linear{steps}", linear(steps)) for steps in (1, 3, 10)] + [("delays10", linear(10, pure=False))]:
        problems = validate(doc)
        if problems:
            raise RuntimeError(f"{name}: {problems[0].path}: {problems[0].message}")
        content.file_put_json(revision, f"definitions/workflow/{name}.json", doc)
    session = session_create(principal=principal, revision=revision, alias="sequential", description="")
    bulk = session_create(principal=principal, revision=revision, alias="bulk", description="")
    return Fixture(principal, revision, session, bulk)


def create(fixture: Fixture, definition: str, session=None):
    from workflows.services.executions import execution_create

    return execution_create(
        principal=fixture.principal,
        revision=fixture.revision,
        session=session or fixture.session,
        workflow={"definition": definition},
        input_data=INPUT,
    )


# --- Watching for completion ------------------------------------------------------------------------


class Watcher:
    """Receives a session's events on the channel layer (its own layer and event loop, on a
    thread) and notes when each execution's final status arrived, by the bench's clock."""

    FINAL = ("completed", "failed", "stopped")

    def __init__(self, session_id):
        from blobs import events

        self.group = events.group_name(events.stream_name("session", session_id))
        self.arrived: dict[str, tuple[float, str]] = {}
        self.changed = threading.Condition()
        self.ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task | None = None
        self.thread = threading.Thread(target=self._run, name="watcher", daemon=True)
        self.thread.start()
        if not self.ready.wait(15):
            raise RuntimeError("the channel-layer watcher did not start")

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.task = self.loop.create_task(self._receive())
        try:
            self.loop.run_until_complete(self.task)
        except asyncio.CancelledError:
            pass

    async def _receive(self) -> None:
        layer = project_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(self.group, channel)
        self.ready.set()
        try:
            while True:
                try:
                    message = await layer.receive(channel)
                except asyncio.CancelledError:
                    raise
                except Exception:  # a slow Redis read times out: keep listening (the group stays)
                    await asyncio.sleep(0.01)
                    continue
                event = message.get("event") or {}
                body = event.get("data") or {}
                status = (body.get("data") or {}).get("status")
                if event.get("type") == "execution_status_changed" and status in self.FINAL:
                    with self.changed:
                        self.arrived[body.get("execution_id")] = (time.perf_counter(), status)
                        self.changed.notify_all()
        finally:
            await close_channel_layer(layer)

    def wait(self, execution_id, timeout: float = 60) -> tuple[float, str]:
        """When the final status of `execution_id` arrived; falls back on the database if lost."""
        from workflows.models import Execution

        key = str(execution_id)
        deadline = time.monotonic() + timeout
        with self.changed:
            while key not in self.arrived:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"execution {key} did not finish within {timeout} s")
                self.changed.wait(1.0)
                if key not in self.arrived:
                    row = Execution.objects.filter(id=execution_id, status__in=Execution.FINAL).first()
                    if row is not None:  # the live event was lost; the stored row says done
                        self.arrived[key] = (time.perf_counter(), row.status)
                        print(f"  (status event of {key} not received; used the database)", file=sys.stderr)
            return self.arrived.pop(key)

    def stop(self) -> None:
        if self.loop is not None and self.task is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(5)


# --- Measurements ---------------------------------------------------------------------------------------


def cpu_seconds(pids: dict[str, set[int]]) -> dict[str, float]:
    """User + system CPU seconds so far of each group of processes and their descendants (from
    /proc), and of this process (the client: creating executions, waiting, receiving)."""
    tick = os.sysconf("SC_CLK_TCK")
    parent, used = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        parent[int(entry)], used[int(entry)] = int(fields[1]), (int(fields[11]) + int(fields[12])) / tick
    totals = {group: 0.0 for group in pids}
    for pid, seconds in used.items():
        ancestor = pid
        while ancestor > 1:
            group = next((name for name, roots in pids.items() if ancestor in roots), None)
            if group is not None:
                totals[group] += seconds
                break
            ancestor = parent.get(ancestor, 0)
    own = os.times()
    totals["client"] = own.user + own.system
    return totals


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {group: after[group] - before[group] for group in after}


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(int(round(q * (len(ordered) - 1))), len(ordered) - 1)]


@dataclass
class Stats:
    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p90(self) -> float:
        return pct(self.samples, 0.9)


def measure_baseline(noop, calls: int, warmup: int) -> Stats:
    for _ in range(warmup):
        noop.apply_async().get(timeout=30)
    stats = Stats()
    for _ in range(calls):
        t0 = time.perf_counter()
        noop.apply_async().get(timeout=30)
        stats.samples.append(time.perf_counter() - t0)
    return stats


@dataclass
class Sequential:
    wall: Stats  # create call to final status received
    create: Stats  # the execution_create call alone
    stored: Stats  # finished_at - created_at, as the database recorded them
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds of the measured runs, by process group


def measure_sequential(
    fixture: Fixture, watcher: Watcher, definition: str, runs: int, warmup: int, pids: dict
) -> Sequential:
    from workflows.models import Execution

    result = Sequential(Stats(), Stats(), Stats())
    ids = []
    for i in range(warmup + runs):
        if i == warmup:
            cpu_before = cpu_seconds(pids)
        t0 = time.perf_counter()
        execution = create(fixture, definition)
        t1 = time.perf_counter()
        arrived, status = watcher.wait(execution.id)
        if status != "completed":
            raise RuntimeError(f"execution {execution.id} ended {status}")
        if i >= warmup:
            result.wall.samples.append(arrived - t0)
            result.create.samples.append(t1 - t0)
            ids.append(execution.id)
    result.cpu = cpu_delta(cpu_before, cpu_seconds(pids))
    for created, finished in Execution.objects.filter(id__in=ids).values_list("created_at", "finished_at"):
        result.stored.samples.append((finished - created).total_seconds())
    return result


@dataclass
class Throughput:
    executions: int
    steps: int
    create_seconds: float
    seconds: float
    failed: int
    cpu: dict[str, float]  # CPU seconds from the commit to the last completion, by process group


def measure_throughput(fixture: Fixture, count: int, timeout: float, pids: dict) -> Throughput:
    from django.db import transaction
    from django.db.models import Max
    from django.utils import timezone

    from workflows.models import Execution, StepRun

    t0 = time.perf_counter()
    with transaction.atomic():  # everything is enqueued at once, when this commits
        ids = [create(fixture, "linear3", fixture.bulk_session).id for _ in range(count)]
        created = time.perf_counter()
        start = time.time()
        cpu_before = cpu_seconds(pids)
    executions = Execution.objects.filter(id__in=ids)
    deadline = time.monotonic() + timeout
    while executions.filter(status__in=Execution.FINAL).count() < count and time.monotonic() < deadline:
        time.sleep(0.1)
    cpu = cpu_delta(cpu_before, cpu_seconds(pids))
    # Whatever did not finish in time counts as not completed; the steps done so far still count.
    last = (executions.aggregate(last=Max("finished_at"))["last"] or timezone.now()).timestamp()
    if executions.exclude(status__in=Execution.FINAL).exists():
        last = time.time()
    steps = StepRun.objects.filter(execution_id__in=ids, component_type="logic.transform", status="completed").count()
    failed = executions.exclude(status="completed").count()
    return Throughput(count, steps, created - t0, last - start, failed, cpu)


def queries_per_step(fixture: Fixture) -> tuple[int, int] | None:
    """SQL statements of one 10-step and one 1-step execution run in this process (eagerly)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from blobhub.celery import app

    counts = []
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    logging.getLogger("celery.app.trace").setLevel(logging.WARNING)  # no "task succeeded" lines here
    try:
        for definition in ("linear10", "linear1"):
            with CaptureQueriesContext(connection) as captured:
                create(fixture, definition)
            counts.append(len(captured.captured_queries))
    finally:
        app.conf.task_always_eager = previous
    return counts[0], counts[1]


# --- Main ----------------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", choices=("prefork", "threads"), default="prefork")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--baseline-calls", type=int, default=300)
    parser.add_argument("--runs", type=int, default=50, help="sequential executions of each linear workflow")
    parser.add_argument("--concurrent", type=int, default=500, help="executions in the throughput run")
    parser.add_argument("--keep-logs", action="store_true", help="keep the worker logs (their path is printed)")
    args = parser.parse_args()

    return run_with_cleanup(run, args, "bench-workflow-")


def run(args, work: Path, cleanup: Cleanup) -> int:
    began = time.monotonic()
    server, redis_url = given_servers()
    pids: dict[str, set[int]] = {}  # what CPU is counted for: workers, postgres, redis (when started here)
    if not server:
        postgres = start_postgres(cleanup)
        server = postgres.url
        pids["postgres"] = {postgres.pid}
    if not redis_url:
        redis_server = start_redis(work, cleanup)
        redis_url = redis_server.url
        pids["redis"] = {redis_server.pid}
    database_url = fresh_database(server, cleanup, "bench_workflow")
    queue = f"bench-workflow-{os.getpid()}"
    setup_django(app_environment(database_url, redis_url, work / "data", queue))
    fixture = make_fixture()
    q10, q1 = queries_per_step(fixture)
    noop = register_noop()
    worker_env = {**os.environ, WORKER_FLAG: "1", "PYTHONPATH": os.pathsep.join([str(ROOT), str(BENCH_DIR)])}
    options = ["--pool", args.pool, "-c", "1", "-Q", queue, "-I", "workflow_overhead"]
    pids["workers"] = {worker.process.pid for worker in start_workers(args.workers, "bench", options, worker_env, work, cleanup)}
    set_up = time.monotonic() - began

    load_before = os.getloadavg()[0]
    watcher = Watcher(fixture.session.id)
    cleanup.add("stop the watcher", watcher.stop)
    baseline = measure_baseline(noop, args.baseline_calls, warmup=30)
    ten = measure_sequential(fixture, watcher, "linear10", args.runs, warmup=5, pids=pids)
    one = measure_sequential(fixture, watcher, "linear1", args.runs, warmup=2, pids=pids)
    delays = measure_sequential(fixture, watcher, "delays10", args.runs, warmup=2, pids=pids)
    throughput = measure_throughput(fixture, args.concurrent, timeout=240, pids=pids)

    per_step = ten.wall.median / 10
    per_step_p90 = ten.wall.p90 / 10
    marginal = (ten.wall.median - one.wall.median) / 9
    rows = [
        ("(a) bare Celery round trip, apply_async().get()", baseline.median, baseline.p90),
        ("(b) 10-step execution, create -> completed event", ten.wall.median, ten.wall.p90),
        ("    of which the execution_create call", ten.create.median, ten.create.p90),
        ("    as stored (finished_at - created_at)", ten.stored.median, ten.stored.p90),
        ("    per step (wall / 10)", per_step, per_step_p90),
        ("    1-step execution, create -> completed event", one.wall.median, one.wall.p90),
        ("    marginal step ((10-step - 1-step) / 9)", marginal, None),
        ("(b') 10 flow.delay 0 s steps (not pure), per step", delays.wall.median / 10, delays.wall.p90 / 10),
    ]
    print()
    print(f"workflow overhead: {args.workers} x `celery worker --pool {args.pool} -c 1`, PostgreSQL + Redis, "
          f"{os.cpu_count()} CPUs; set-up {set_up:.1f} s; load average {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after")  # fmt: skip
    print(f"{'':52} {'median ms':>10} {'p90 ms':>9}")
    for label, median, p90 in rows:
        print(f"{label:52} {ms(median):>10} {ms(p90) if p90 is not None else '':>9}")
    print(f"{'(a) samples / (b) executions':52} {len(baseline.samples):>10} {len(ten.wall.samples):>9}")
    print()
    ratio = per_step / baseline.median
    print(f"per-step overhead / bare round trip      {ratio:6.2f} x   (target <= {TARGET_RATIO:g} x: "
          f"{'met' if ratio <= TARGET_RATIO else 'NOT met'})")  # fmt: skip
    print(f"marginal step / bare round trip          {marginal / baseline.median:6.2f} x")
    print(f"(b') not-pure step / bare round trip     {delays.wall.median / 10 / baseline.median:6.2f} x   (for comparison: "
          "pure steps run in one transaction, these one each)")  # fmt: skip
    steps_per_s = throughput.steps / throughput.seconds
    print(f"(c) {throughput.executions} concurrent 3-step executions on {args.workers} workers: "
          f"{throughput.steps} steps in {throughput.seconds:.2f} s (creating them took {throughput.create_seconds:.2f} s, "
          f"before the commit that enqueued them)")  # fmt: skip
    print(f"    throughput {steps_per_s:8.1f} steps/s, {throughput.executions / throughput.seconds:6.1f} executions/s "
          f"(target >= {TARGET_STEPS_PER_S:g} steps/s: {'met' if steps_per_s >= TARGET_STEPS_PER_S else 'NOT met'})"
          + (f"; {throughput.failed} did not complete" if throughput.failed else ""))  # fmt: skip
    print(f"SQL statements, run inline in this process: 10-step execution {q10}, 1-step {q1}, "
          f"{(q10 - q1) / 9:.1f} per step")  # fmt: skip
    groups = [group for group in ("workers", "postgres", "redis", "client") if group in ten.cpu]
    print()
    given = [name for name in ("postgres", "redis") if name not in pids]
    print("CPU ms per step (user + system, /proc), by process group"
          + (f" ({' and '.join(given)} given, not started here: not counted)" if given else ""))  # fmt: skip
    print(f"{'':52} " + " ".join(f"{group:>9}" for group in groups) + f" {'total':>9}")
    for label, cpu, steps in (
        ("(b) 10-step executions (10 steps each)", ten.cpu, 10 * len(ten.wall.samples)),
        ("(b) 1-step executions", one.cpu, len(one.wall.samples)),
        (f"(c) {throughput.executions} concurrent 3-step executions", throughput.cpu, throughput.steps),
    ):
        print(f"{label:52} " + " ".join(f"{cpu[group] * 1000 / steps:9.2f}" for group in groups)
              + f" {sum(cpu[group] for group in groups) * 1000 / steps:9.2f}")  # fmt: skip
    print(f"total {time.monotonic() - began:.1f} s" + (f"; logs in {work}" if args.keep_logs else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
