"""Benchmark: one execution's events fanned out to 200 WebSocket clients (issue 5).

Runs the real thing on loopback: PostgreSQL, Redis, the ASGI server (daphne) and a Celery
worker process. With DATABASE_URL (PostgreSQL) and REDIS_URL it uses those servers (a fresh
database is created on that PostgreSQL and dropped at the end; the Celery queue gets a name
of its own); without them it starts a throwaway PostgreSQL cluster (as the `postgres` user
when run as root) and a redis-server on free loopback ports, and stops them at exit.

Then:

1. a bare Redis pub/sub round trip (redis-py: publish a timestamp, a subscriber receives it),
   the baseline, measured in the same run on the same Redis;
2. an org, an API key, a workflow blob, a session, and 200 clients connected to /v1/ws with
   the `X-API-Key` header;
3. with the worker's queue paused (Celery remote control), an execution of a long chain of
   steps (`flow.delay`s of --pace seconds, about 2 / pace events a second; with --pace 0,
   `logic.transform`s back to back, as fast as the worker goes), to which every client
   subscribes with `since: 0`; then the queue is resumed, so that the whole stream flows
   while everyone listens;
4. every client reads until `flow.exited`, stamping each message on arrival.

It prints the latency from each event's creation in the worker (its `created_at`: the same
clock on one machine) to its receipt by each client (p50, p99 over all client x event pairs),
split by a probe that also listens on the channel layer into the worker's part (insert,
commit, publish) and the WebSocket server's part (receive, fan out, send); the events per
second delivered in total; the CPU time each process used meanwhile (the machine's load
average is printed too: on a shared machine it explains much); and whether any client missed
or got twice any event: each must end with exactly the stored sequence 1..N. Targets: p99
under 50 ms, nothing lost. Exits non-zero when an event is lost or duplicated or something
breaks; a missed latency target is reported, not an error.

    .venv/bin/python bench/ws_fanout.py
    .venv/bin/python bench/ws_fanout.py --clients 200 --steps 300 --pace 0   # as fast as the worker goes
    .venv/bin/python bench/ws_fanout.py --servers 2   # two daphne processes sharing the socket
    DATABASE_URL=postgres://... REDIS_URL=redis://... .venv/bin/python bench/ws_fanout.py
"""

import argparse
import asyncio
import gc
import json
import os
import secrets
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from _services import (
    Cleanup,
    app_environment,
    close_channel_layer,
    fresh_database,
    given_servers,
    http_ok,
    project_channel_layer,
    spawn,
    start_postgres,
    start_redis,
    wait_until,
    work_directory,
)

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))

LATENCY_TARGET_MS = 50.0
STARTUP_SECONDS = 60
RUN_SECONDS = 180  # the execution and every client must be done within this
CONNECT_CONCURRENCY = 50
# Server options of the throwaway PostgreSQL cluster (besides fsync=off).
POSTGRES_SETTINGS = "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"


# --- Small helpers ----------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of a non-empty list."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[index]


# --- Baseline: bare Redis pub/sub ---------------------------------------------------------------


def redis_pubsub_baseline(redis_url: str, count: int, interval: float) -> list[float]:
    """Round trips in ms: publish `time.time()`, a subscriber on another connection receives it."""
    import redis

    channel = f"bench.baseline.{secrets.token_hex(4)}"
    subscriber = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)
    subscriber.subscribe(channel)
    wait_until(lambda: subscriber.get_message(timeout=0.1) is None and subscriber.subscribed, timeout=5, what="subscribing")
    latencies: list[float] = []
    done = threading.Event()

    def listen() -> None:
        deadline = time.monotonic() + 60
        while len(latencies) < count and time.monotonic() < deadline:
            message = subscriber.get_message(timeout=1.0)
            if message is not None:
                latencies.append((time.time() - float(message["data"])) * 1000)
        done.set()

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    publisher = redis.Redis.from_url(redis_url)
    for _ in range(count):
        publisher.publish(channel, repr(time.time()))
        time.sleep(interval)
    done.wait(timeout=65)
    subscriber.close()
    publisher.close()
    return latencies


# --- The workflow ---------------------------------------------------------------------------------


def chain_definition(steps: int, pace: float) -> dict:
    """start → s1 → … → sN → end, each step emitting two events (entered, exited).

    With `pace` > 0 the steps are `flow.delay`s of that many seconds: a steady stream, a
    pair of events per step. With 0 they are `logic.transform`s run back to back: as fast as
    the worker goes.
    """

    def component(cid, type, config=None):
        ports = [{"category": "config", "route": k, "value": v} for k, v in (config or {}).items()]
        return {"id": cid, "category": type.split(".")[0], "type": type, "name": cid, "position": {"x": 0, "y": 0}, "ports": ports}

    components = [component("start", "flow.start")]
    for index in range(1, steps + 1):
        if pace > 0:
            components.append(component(f"s{index}", "flow.delay", {"seconds": {"type": "float", "float": pace}}))
        else:
            components.append(component(f"s{index}", "logic.transform", {"expression": {"type": "text", "text": f"`{index}`"}}))
    components.append(component("end", "flow.end"))
    order = [item["id"] for item in components]
    connections = [
        {"id": f"c{i}", "source_id": source, "target_id": target, "route": "success"}
        for i, (source, target) in enumerate(zip(order, order[1:]))
    ]
    return {"type": "workflow_definition", "version": "1.0.1", "components": components, "connections": connections}


@dataclass
class Fixture:
    key: str
    revision_id: str
    revision: object
    session: object
    principal: object


def create_fixture(definition: dict) -> Fixture:
    from blobs.models import BlobType
    from blobs.services import content
    from blobs.services.blobs import blob_create
    from orgs.models import User
    from orgs.principal import Principal
    from orgs.services import api_key_create, organization_create
    from workflows.services import sessions

    user = User.objects.create_user(username=f"bench-{secrets.token_hex(3)}", email="bench@example.org")
    principal = Principal(user=user)
    org = organization_create(principal=principal, alias=f"bench-{secrets.token_hex(3)}", name="Benchmark")
    _, key = api_key_create(principal=principal, org=org, role="read", description="ws_fanout")
    blob = blob_create(principal=principal, org=org, alias="fanout", type=BlobType.WORKFLOW, visibility="private", description="")
    revision = blob.revisions.get()
    content.file_put_json(revision, "definitions/workflow/chain.json", definition)
    session = sessions.session_create(principal=principal, revision=revision, alias="bench", description="")
    return Fixture(key=key, revision_id=str(revision.id), revision=revision, session=session, principal=principal)


def start_execution(fixture: Fixture) -> str:
    from workflows.services import executions

    execution = executions.execution_create(
        principal=fixture.principal, revision=fixture.revision, session=fixture.session, workflow={"definition": "chain"}
    )
    return str(execution.id)


def stored_stream(execution_id: str) -> tuple[str, list[int], dict[int, float]]:
    """(final status, stored sequences, created_at as epoch seconds by sequence)."""
    from blobs.events import stream_name
    from blobs.models import Event
    from workflows.models import Execution

    status = Execution.objects.values_list("status", flat=True).get(id=execution_id)
    rows = Event.objects.filter(stream=stream_name("execution", execution_id)).order_by("sequence")
    pairs = list(rows.values_list("sequence", "created_at"))
    return status, [s for s, _ in pairs], {s: c.timestamp() for s, c in pairs}


# --- Where the time goes: a probe on the channel layer, and CPU time per process -------------


class LayerProbe:
    """A channels_redis consumer of the execution's group in a thread of its own: when each
    event is available in Redis to the servers, to split latency into the worker's part
    (insert, commit, publish) and the WebSocket server's part (receive, fan out, send)."""

    def __init__(self, group: str, deadline: float):
        self.group, self.deadline = group, deadline
        self.arrivals: dict[int, float] = {}
        self.ready = threading.Event()
        self.error: str | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> None:
        self.thread.start()
        if not self.ready.wait(timeout=30):
            raise RuntimeError("the channel-layer probe did not join the group")

    async def _run(self) -> None:
        layer = project_channel_layer()

        async def listen(channel: str) -> None:
            while True:
                message = await layer.receive(channel)  # no timeout per receive: a cancelled one may drop a message
                now = time.time()
                event = message["event"]
                self.arrivals.setdefault(event["sequence"], now)
                if event["type"] == "flow.exited":
                    return

        try:
            channel = await layer.new_channel()
            await layer.group_add(self.group, channel)
            self.ready.set()
            await asyncio.wait_for(listen(channel), max(0.1, self.deadline - time.monotonic()))
        except asyncio.TimeoutError:
            self.error = "no flow.exited before the deadline"
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            self.ready.set()
        finally:
            await close_channel_layer(layer)

    def join(self) -> None:
        self.thread.join(timeout=max(1.0, self.deadline - time.monotonic() + 5))


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, with_children: bool = False) -> float:
    """User + system CPU time of a process from /proc; with its children: those it has reaped
    and those still running (PostgreSQL's backends)."""

    def times(each: int) -> list[int]:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return [0, 0, 0, 0]
        return [int(value) for value in fields[11:15]]  # utime stime cutime cstime

    own = times(pid)
    total = own[0] + own[1]
    if with_children:
        total += own[2] + own[3]
        try:
            children = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            children = []
        for child in children:
            utime, stime, cutime, cstime = times(child)
            total += utime + stime + cutime + cstime
    return total / TICKS


# --- The clients ------------------------------------------------------------------------------------


@dataclass
class Client:
    index: int
    ws: object = None
    subscribed_at: float = 0.0  # when subscription/add was answered
    received: list[tuple[float, str]] = field(default_factory=list)  # (arrival, raw frame)
    error: str | None = None


async def connect_all(url: str, key: str, count: int) -> list[Client]:
    import websockets

    clients = [Client(i) for i in range(count)]
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def connect(client: Client) -> None:
        async with gate:
            client.ws = await websockets.connect(
                url, additional_headers={"X-API-Key": key}, max_queue=None, open_timeout=30, max_size=2**20
            )
            await client.ws.send(json.dumps({"jsonrpc": "2.0", "id": 0, "method": "status/initialize", "params": {"client_info": {"name": "ws_fanout", "version": "1"}}}))
            answer = json.loads(await asyncio.wait_for(client.ws.recv(), 30))
            if "result" not in answer:
                raise RuntimeError(f"status/initialize failed: {answer}")

    await asyncio.gather(*(connect(client) for client in clients))
    return clients


async def subscribe(client: Client, params: dict, deadline: float) -> None:
    """subscription/add with since=0; events that come first are kept (none are expected)."""
    ws = client.ws
    try:
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "subscription/add", "params": params}))
        while not client.subscribed_at:
            raw = await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic()))
            now = time.time()
            if '"subscription/event"' in raw:
                client.received.append((now, raw))
                continue
            message = json.loads(raw)
            if message.get("id") == 1:
                if "result" not in message:
                    raise RuntimeError(f"subscription/add failed: {message}")
                client.subscribed_at = now
    except Exception as exc:
        client.error = f"subscribing: {type(exc).__name__}: {exc}"


async def watch(client: Client, deadline: float) -> None:
    """Read, stamping each frame on arrival, until flow.exited.

    One timeout for the whole read rather than one per frame: a `wait_for` per frame was
    most of this process's work per frame, and this process shares the CPUs with the server.
    """
    if client.error:
        return
    received = client.received
    if received and '"flow.exited"' in received[-1][1]:
        return
    try:
        async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
            async for raw in client.ws:
                now = time.time()
                if '"subscription/event"' in raw:
                    received.append((now, raw))
                    if '"flow.exited"' in raw:
                        return
        client.error = "the connection closed before flow.exited"
    except TimeoutError:
        client.error = "timed out before flow.exited"
    except Exception as exc:  # reported per client
        client.error = f"{type(exc).__name__}: {exc}"


@dataclass
class Run:
    clients: list[Client]
    execution_id: str
    connect_seconds: float
    subscribe_seconds: float
    probe: LayerProbe
    cpu: dict[str, float]  # CPU seconds used by each process while the events flowed
    wall: float


async def run_clients(url: str, fixture: Fixture, count: int, watched: dict, worker) -> Run:
    """Connect every client; with the worker's queue paused, start the execution and subscribe
    them all; then let the worker run it, and read."""
    from blobs.events import group_name, stream_name

    started = time.monotonic()
    clients = await connect_all(url, fixture.key, count)
    connect_seconds = time.monotonic() - started
    await asyncio.to_thread(worker.pause)
    execution_id = await asyncio.to_thread(start_execution, fixture)
    deadline = time.monotonic() + RUN_SECONDS
    probe = LayerProbe(group_name(stream_name("execution", execution_id)), deadline)
    await asyncio.to_thread(probe.start)
    params = {"scope": "revision", "scope_id": fixture.revision_id, "target": "execution", "target_id": execution_id, "since": 0}
    started = time.monotonic()
    await asyncio.gather(*(subscribe(client, params, deadline) for client in clients))
    subscribe_seconds = time.monotonic() - started
    before = {name: cpu_seconds(pid, children) for name, (pid, children) in watched.items()}
    before["bench clients"], wall = time.process_time(), time.monotonic()
    # The clients keep every frame they get: no garbage collection while they read, whose
    # full passes over that growing heap would stall them all, and count as latency.
    gc.freeze()
    gc.disable()
    try:
        await asyncio.to_thread(worker.resume)
        await asyncio.gather(*(watch(client, deadline) for client in clients))
    finally:
        gc.enable()
    cpu = {name: cpu_seconds(pid, children) - before[name] for name, (pid, children) in watched.items()}
    cpu["bench clients"], wall = time.process_time() - before["bench clients"], time.monotonic() - wall
    await asyncio.gather(*(client.ws.close() for client in clients), return_exceptions=True)
    await asyncio.to_thread(probe.join)
    return Run(clients, execution_id, connect_seconds, subscribe_seconds, probe, cpu, wall)


@dataclass
class WorkerQueue:
    """Pauses and resumes the worker's consumption of its queue (Celery remote control)."""

    app: object
    hostname: str
    queue: str

    def pause(self) -> None:
        if not self.app.control.cancel_consumer(self.queue, destination=[self.hostname], reply=True, timeout=10):
            raise RuntimeError("the worker did not stop consuming its queue")

    def resume(self) -> None:
        if not self.app.control.add_consumer(self.queue, destination=[self.hostname], reply=True, timeout=10):
            raise RuntimeError("the worker did not resume consuming its queue")


# --- Analysis -------------------------------------------------------------------------------------


def parse_time(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


@dataclass
class Result:
    latencies_ms: list[float] = field(default_factory=list)  # created -> client, live pairs
    worker_ms: list[float] = field(default_factory=list)  # created -> in Redis (the probe), per live event
    server_ms: list[float] = field(default_factory=list)  # in Redis -> client, live pairs
    replayed: int = 0
    problems: list[str] = field(default_factory=list)
    deliveries: int = 0
    live_events: int = 0
    live_first_created: float = 0.0
    live_last_created: float = 0.0
    last_arrival: float = 0.0


def analyse(run: Run, sequences: list[int], created: dict[int, float]) -> Result:
    result = Result()
    if sequences != list(range(1, len(sequences) + 1)):
        result.problems.append(f"the stored stream is not 1..N: {sequences[:10]}...")
    # Live events: created after every client's subscription was acknowledged.
    everyone = max((c.subscribed_at for c in run.clients), default=0.0)
    live = sorted(t for t in created.values() if everyone and t >= everyone)
    result.live_events = len(live)
    result.live_first_created, result.live_last_created = (live[0], live[-1]) if live else (0.0, 0.0)
    probe = run.probe.arrivals
    result.worker_ms = [(probe[s] - created[s]) * 1000 for s in sequences if s in probe and created[s] >= everyone]
    stamps: dict[str, float] = {}
    for client in run.clients:
        if client.error:
            result.problems.append(f"client {client.index}: {client.error}")
        got = []
        for arrival, raw in client.received:
            event = json.loads(raw)["params"]["event"]
            sequence = event["sequence"]
            got.append(sequence)
            result.deliveries += 1
            result.last_arrival = max(result.last_arrival, arrival)
            created_at = created.get(sequence)
            if created_at is None:
                continue
            sent = stamps.setdefault(event["created_at"], parse_time(event["created_at"]))
            if abs(sent - created_at) > 0.001:
                result.problems.append(f"client {client.index}: event {sequence} has another created_at than stored")
            if not client.subscribed_at or created_at < client.subscribed_at:
                result.replayed += 1  # stored before the subscription was acknowledged
                continue
            result.latencies_ms.append((arrival - created_at) * 1000)
            if sequence in probe:
                result.server_ms.append((arrival - probe[sequence]) * 1000)
        if got != sequences:
            seen = set(got)
            missing = [s for s in sequences if s not in seen]
            twice = sorted({s for s in got if got.count(s) > 1})
            result.problems.append(
                f"client {client.index}: {len(got)} events, missing {missing[:10]}, twice {twice[:10]}, in order {got == sorted(got)}"
            )
    return result


# --- Main -----------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--steps", type=int, default=150, help="steps in the chain, two events each")
    parser.add_argument(
        "--pace", type=float, default=0.1,
        help="seconds each step waits (flow.delay); 0: logic.transform steps back to back, as fast as the worker goes",
    )  # fmt: skip
    parser.add_argument("--servers", type=int, default=1, help="daphne processes sharing the listening socket")
    parser.add_argument("--baseline-messages", type=int, default=2000)
    parser.add_argument("--keep-logs", action="store_true", help="keep the work directory with the server logs")
    args = parser.parse_args()
    if not (1 <= args.clients <= 2000 and 1 <= args.steps <= 490 and 0 <= args.pace <= 1):
        parser.error("out of range: --clients 1..2000, --steps 1..490 (500 components per definition), --pace 0..1")
    if not 100 <= args.baseline_messages <= 100_000:
        parser.error("--baseline-messages is 100..100000")

    cleanup = Cleanup()
    work = work_directory("blobhub-ws-bench-", cleanup, keep=args.keep_logs)
    previous = {sig: signal.signal(sig, lambda *_: sys.exit(130)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return run(args, work, cleanup)
    finally:
        cleanup.run()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if args.keep_logs:
            print(f"logs kept in {work}")


def run(args, work: Path, cleanup: Cleanup) -> int:
    started = time.monotonic()
    watched: dict[str, tuple[int, bool]] = {}  # process name -> (pid, count its children)
    given_db, given_redis = given_servers()
    print("Services:", "given PostgreSQL" if given_db else "throwaway PostgreSQL", "+", "given Redis" if given_redis else "throwaway Redis")
    server, redis_url = given_db, given_redis
    if not given_db:
        postgres = start_postgres(cleanup, inside=work, settings=POSTGRES_SETTINGS)
        server = postgres.url
        watched["PostgreSQL"] = (postgres.pid, True)
    database_url = fresh_database(server, cleanup, "blobhub_bench")
    if not given_redis:
        redis_server = start_redis(work, cleanup)
        redis_url = redis_server.url
        watched["Redis"] = (redis_server.pid, False)
    data_dir = work / "data"
    data_dir.mkdir()
    queue = f"bench-{secrets.token_hex(4)}"
    forget: list[str] = [queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}"]  # our keys in Redis

    def forget_keys() -> None:
        import redis

        with redis.Redis.from_url(redis_url) as client:
            client.delete(*forget)

    if given_redis:
        cleanup.add("deleting the run's keys from Redis", forget_keys)
    env = app_environment(database_url, redis_url, data_dir, queue)
    env["CELERY_TASK_ALWAYS_EAGER"] = "0"
    from cryptography.fernet import Fernet

    env["CREDENTIAL_KEYS"] = Fernet.generate_key().decode()
    os.environ.update(env)

    import django

    django.setup()
    from django.core.management import call_command

    t = time.monotonic()
    call_command("migrate", verbosity=0)
    print(f"Migrated a fresh database in {time.monotonic() - t:.1f} s")

    # The servers share one listening socket, as behind a load balancer: the kernel hands each
    # new connection to one of them.
    listener = socket.create_server(("127.0.0.1", 0))
    cleanup.add("close the listening socket", listener.close)
    port = listener.getsockname()[1]
    worker_log = work / "worker.log"
    servers = []
    for i in range(args.servers):
        name = "daphne" if args.servers == 1 else f"daphne {i + 1}"
        log = work / f"daphne{i + 1}.log"
        command = [str(BIN / "daphne"), "--fd", str(listener.fileno()), "blobhub.asgi:application"]
        servers.append((name, spawn(command, env, log, cleanup, name, pass_fds=[listener.fileno()]), log))
    hostname = f"ws-bench-{os.getpid()}@localhost"
    worker = spawn(
        [str(BIN / "celery"), "-A", "blobhub", "worker", "--pool", "threads", "-c", "2", "-Q", queue, "-n", hostname,
         "--without-mingle", "--without-gossip", "--loglevel", "WARNING"],
        env, worker_log, cleanup, "celery worker",
    )  # fmt: skip
    watched["Celery worker"] = (worker.pid, True)
    for name, server, log in servers:
        watched[name] = (server.pid, False)
    from blobhub.celery import app as celery_app

    for name, server, log in servers:
        wait_until(lambda server=server: server.poll() is None and http_ok(f"http://127.0.0.1:{port}/healthz"), timeout=STARTUP_SECONDS, what=f"{name} /healthz", process=server, log=log)
    wait_until(lambda: celery_app.control.ping(destination=[hostname], timeout=0.5), timeout=STARTUP_SECONDS, what="the worker answering a ping", process=worker, log=worker_log)
    print(f"{args.servers} daphne on 127.0.0.1:{port} and a Celery worker are up ({time.monotonic() - started:.1f} s)")

    baseline = redis_pubsub_baseline(redis_url, args.baseline_messages, 0.001)
    if len(baseline) < args.baseline_messages:
        raise RuntimeError(f"Redis baseline: {len(baseline)} of {args.baseline_messages} messages arrived")

    fixture = create_fixture(chain_definition(args.steps, args.pace))
    url = f"ws://127.0.0.1:{port}/v1/ws"
    load_before = os.getloadavg()[0]
    outcome = asyncio.run(run_clients(url, fixture, args.clients, watched, WorkerQueue(celery_app, hostname, queue)))
    load_after = os.getloadavg()[0]
    print(f"{args.clients} clients connected in {outcome.connect_seconds:.1f} s, subscribed in {outcome.subscribe_seconds:.1f} s")

    status, sequences, created = wait_until(
        lambda: (lambda s: s if s[0] in ("completed", "failed", "stopped") else None)(stored_stream(outcome.execution_id)),
        timeout=30, what="the execution finishing",
    )  # fmt: skip
    result = analyse(outcome, sequences, created)
    if outcome.probe.error:
        result.problems.append(f"channel-layer probe: {outcome.probe.error}")
    report(args, status, sequences, result, baseline, outcome, (load_before, load_after))
    print(f"Total time {time.monotonic() - started:.0f} s")
    if status != "completed":
        print(f"the execution ended {status}; see {worker_log}")
    return 0 if not result.problems and status == "completed" else 1


def report(args, status, sequences, result: Result, baseline, outcome: Run, load) -> None:
    n = len(sequences)
    print()
    steps = f"{args.steps} flow.delay steps of {args.pace:g} s" if args.pace > 0 else f"{args.steps} logic.transform steps"
    print(f"WebSocket fan-out: {args.clients} clients on one execution of {steps} ({status}, {n} events stored),")
    print(f"  "
          f"{os.cpu_count()} CPUs, load average {load[0]:.1f} before the run, {load[1]:.1f} after")  # fmt: skip
    rows = [("latency", "p50 ms", "p99 ms", "max ms", "samples")]

    def row(name, values):
        if values:
            rows.append((name, f"{percentile(values, 50):.2f}", f"{percentile(values, 99):.2f}", f"{max(values):.2f}", str(len(values))))
        else:
            rows.append((name, "-", "-", "-", "0"))

    row("Redis pub/sub round trip (baseline)", baseline)
    row("event created -> WebSocket client", result.latencies_ms)
    row("  of which: created -> in Redis (worker)", result.worker_ms)
    row("  of which: in Redis -> client (server)", result.server_ms)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        print("  " + "  ".join(c.ljust(widths[0]) if j == 0 else c.rjust(widths[j]) for j, c in enumerate(r)))
        if i == 0:
            print("  " + "  ".join("-" * w for w in widths))
    print()
    live, clients = result.live_events, args.clients
    span = result.live_last_created - result.live_first_created
    window = result.last_arrival - result.live_first_created
    if live > 1 and span > 0 and window > 0:
        print(f"  events created by the worker     {live / span:9.0f} /s   ({live} live events in {span:.2f} s)")
        print(f"  events delivered, all clients    {live * clients / window:9.0f} /s   ({live} x {clients} in {window:.2f} s)")
    print(f"  deliveries {result.deliveries} of {n * clients} expected: {len(result.latencies_ms)} live, {result.replayed} by replay")
    print(f"  CPU while the events flowed ({outcome.wall:.1f} s):", ", ".join(f"{k} {v:.1f} s" for k, v in outcome.cpu.items()))
    if live:
        daphne = sum(seconds for name, seconds in outcome.cpu.items() if name.startswith("daphne"))
        worker = outcome.cpu.get("Celery worker", 0.0)
        print(f"    daphne {daphne / max(result.deliveries, 1) * 1e6:.0f} us per delivered message, "
              f"worker {worker / max(n, 1) * 1e3:.1f} ms per event")  # fmt: skip
    verdict = "yes" if not result.problems else "NO"
    print(f"  every client got exactly 1..{n}, in order, nothing twice: {verdict}")
    for problem in result.problems[:20]:
        print(f"    {problem}")
    if len(result.problems) > 20:
        print(f"    ... and {len(result.problems) - 20} more")
    if result.latencies_ms:
        p99 = percentile(result.latencies_ms, 99)
        print(f"  target p99 < {LATENCY_TARGET_MS:.0f} ms: {'met' if p99 < LATENCY_TARGET_MS else 'MISSED'} ({p99:.1f} ms)")


if __name__ == "__main__":
    sys.exit(main())
