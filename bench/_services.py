"""The services the benchmarks run against: started, waited for, and stopped again at the end.

A throwaway PostgreSQL cluster and redis-server on free loopback ports (when DATABASE_URL and
REDIS_URL do not name servers to use), a fresh database on the PostgreSQL server, the
application's environment and Django set up on it, the application's own processes (`spawn`,
Celery workers, `ServeProcess` for `manage.py serve`), and waiting for each to answer.
Whatever is started is registered with a `Cleanup`, which undoes it all in reverse order,
whatever happens.

The scripts import it as `_services`: bench/ is on sys.path when one runs as
`.venv/bin/python bench/NAME.py`, and on the PYTHONPATH of the Celery workers that import
bench/workflow_overhead.py.
"""

import atexit
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent

# The test suite's helpers for real processes serve the benchmarks too.
sys.path.insert(0, str(ROOT))
from tests.processes import free_port, http_ok  # noqa: E402
from tests.processes import stop as stop_process  # noqa: E402


# --- Waiting and undoing ----------------------------------------------------------------------------


def tail(log: Path | None, lines: int = 30) -> str:
    if log is None or not log.exists():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def wait_until(condition, timeout: float, what: str, process: subprocess.Popen | None = None, log: Path | None = None):
    """Call `condition` until it returns something truthy (raising counts as not yet) and return
    that; fail after `timeout` seconds, or at once when `process` exits, with the tail of `log`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = condition()
        except Exception:
            result = None
        if result:
            return result
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {process.returncode}\n{tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout} s\n{tail(log)}")
        time.sleep(0.05)


class Cleanup:
    """Everything the bench started, undone in reverse order, each once (finally, atexit, signals)."""

    def __init__(self):
        self.actions: list[tuple[str, object]] = []

    def add(self, what: str, action) -> None:
        self.actions.append((what, action))

    def run(self) -> None:
        while self.actions:
            what, action = self.actions.pop()
            try:
                action()
            except Exception as exc:  # keep undoing the rest
                print(f"cleanup: {what}: {exc}", file=sys.stderr)


def work_directory(prefix: str, cleanup: Cleanup, keep: bool) -> Path:
    """A new temporary directory for the logs and data of a run, removed at the end unless `keep`."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    if not keep:
        cleanup.add("remove the work directory", lambda: shutil.rmtree(work, ignore_errors=True))
    return work


def run_with_cleanup(run, args, prefix: str) -> int:
    """`run(args, work, cleanup)` in a new work directory (kept with `args.keep_logs`), then all
    it started undone: when it returns or raises, on SIGTERM or SIGHUP (through sys.exit, so
    that `finally` blocks run), or at exit at the latest."""
    cleanup = Cleanup()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda number, frame: sys.exit(128 + number))
    atexit.register(cleanup.run)
    work = work_directory(prefix, cleanup, keep=args.keep_logs)
    try:
        return run(args, work, cleanup)
    finally:
        cleanup.run()


# --- PostgreSQL and Redis ---------------------------------------------------------------------------


@dataclass
class Service:
    """A server started here: its URL, and the pid of its main process (to count its CPU time)."""

    url: str
    pid: int


def given_servers() -> tuple[str | None, str | None]:
    """DATABASE_URL and REDIS_URL when set: servers to use instead of starting throwaway ones."""
    given_db, given_redis = os.environ.get("DATABASE_URL"), os.environ.get("REDIS_URL")
    if given_db and not given_db.startswith(("postgres://", "postgresql://")):
        raise SystemExit("DATABASE_URL must name PostgreSQL")
    return given_db, given_redis


def as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def postgres_directory(cleanup: Cleanup, inside: Path | None) -> Path:
    """Where a cluster lives, owned by postgres when run as root: `inside`/pg (left for the
    caller to remove with `inside`), or else a temporary directory removed at the end."""
    if inside is None:
        pgdir = Path(tempfile.mkdtemp(prefix="bench-pg-"))
        cleanup.add("remove the PostgreSQL directory", lambda: shutil.rmtree(pgdir, ignore_errors=True))
    else:
        pgdir = inside / "pg"
        pgdir.mkdir()
        if os.geteuid() == 0:
            shutil.chown(inside, "postgres", "postgres")  # postgres reaches the cluster through it
    if os.geteuid() == 0:
        shutil.chown(pgdir, "postgres", "postgres")
    return pgdir


def start_postgres(cleanup: Cleanup, inside: Path | None = None, settings: str = "-c max_connections=100") -> Service:
    """A throwaway cluster on a free loopback port (PostgreSQL refuses to run as root: it runs as
    postgres), with fsync off and the server options in `settings`; its URL names the database
    `postgres`. Its directory: see `postgres_directory`."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda initdb: [int(part) for part in initdb.parent.parent.name.split(".") if part.isdigit()],
    )
    if not versions:
        raise RuntimeError("no PostgreSQL here (apt-get install postgresql), and DATABASE_URL is not set")
    pgbin = versions[-1].parent
    pgdir = postgres_directory(cleanup, inside)
    port = free_port()
    subprocess.run(
        as_postgres([str(pgbin / "initdb"), "-D", str(pgdir / "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]),
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=pgdir,
    )  # fmt: skip
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {pgdir} -c fsync=off {settings}"
    subprocess.run(
        as_postgres([str(pgbin / "pg_ctl"), "-D", str(pgdir / "data"), "-l", str(pgdir / "pg.log"), "-w", "-o", options, "start"]),
        check=True, stdout=subprocess.DEVNULL, cwd=pgdir,
    )  # fmt: skip
    cleanup.add(
        "stop PostgreSQL",
        lambda: subprocess.run(
            as_postgres([str(pgbin / "pg_ctl"), "-D", str(pgdir / "data"), "-m", "immediate", "-w", "stop"]),
            check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30, cwd=pgdir,
        ),
    )  # fmt: skip
    pid = int((pgdir / "data" / "postmaster.pid").read_text().split()[0])
    return Service(f"postgres://postgres@127.0.0.1:{port}/postgres", pid)


def start_redis(work: Path, cleanup: Cleanup) -> Service:
    """A redis-server on a free loopback port, without persistence, its log in `work`."""
    if not shutil.which("redis-server"):
        raise RuntimeError("no redis-server here (apt-get install redis-server), and REDIS_URL is not set")
    port = free_port()
    log = work / "redis.log"
    process = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(work), "--logfile", str(log)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    cleanup.add("stop redis-server", lambda: stop_process(process))

    def pong() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")

    wait_until(pong, 20, "redis-server answering PING", process, log)
    return Service(f"redis://127.0.0.1:{port}/0", process.pid)


def fresh_database(server_url: str, cleanup: Cleanup, prefix: str) -> str:
    """A new database on the server of `server_url` (named `prefix`, this pid and a random
    suffix), dropped when the bench ends; returns its URL."""
    import psycopg

    url = urlsplit(server_url)
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    admin = url._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        from django.conf import settings

        if settings.configured:  # Django is set up: its connections go first
            from django.db import connections

            connections.close_all()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    cleanup.add(f"drop the database {name}", drop)
    return url._replace(path="/" + name).geturl()


# --- The application ----------------------------------------------------------------------------------


def app_environment(database_url: str, redis_url: str, data_dir: Path, queue: str) -> dict[str, str]:
    """This process's environment with the settings of an application on those servers, whose
    Celery tasks go to `queue`."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "blobhub.settings",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "BLOBHUB_DATA_DIR": str(data_dir),
        "SECRET_KEY": secrets.token_urlsafe(40),
        "CELERY_QUEUE": queue,
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }


def setup_django(env: dict[str, str]) -> None:
    """Make `env` (less CELERY_TASK_ALWAYS_EAGER: tasks go to the broker) this process's whole
    environment, set Django up on it, take CREDENTIAL_KEYS from its settings (into `env` too,
    for the processes started with it) and migrate the database."""
    env.pop("CELERY_TASK_ALWAYS_EAGER", None)
    os.environ.clear()
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))

    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    os.environ["CREDENTIAL_KEYS"] = env["CREDENTIAL_KEYS"] = ",".join(settings.CREDENTIAL_KEYS)
    call_command("migrate", verbosity=0)


def spawn(command: list[str], env: dict, log: Path, cleanup: Cleanup, what: str, pass_fds=()) -> subprocess.Popen:
    """`command` run in the project's directory, its output in `log`, stopped at the end."""
    with log.open("w") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, pass_fds=pass_fds
        )
    cleanup.add(f"stop {what}", lambda: stop_process(process))
    return process


@dataclass
class Worker:
    hostname: str
    process: subprocess.Popen
    log: Path


def start_workers(count: int, name: str, options: list[str], env: dict, work: Path, cleanup: Cleanup) -> list[Worker]:
    """`count` Celery workers of the project (`celery -A blobhub worker` with `options`) named
    `name`0, `name`1, ..., their logs in `work`; returns once each answers a ping."""
    from blobhub.celery import app

    workers = []
    for i in range(count):
        hostname = f"{name}{i}-{os.getpid()}@localhost"
        log = work / f"worker{i}.log"
        command = [
            str(Path(sys.executable).parent / "celery"), "-A", "blobhub", "worker", *options, "-n", hostname,
            "--without-mingle", "--without-gossip", "--without-heartbeat", "--loglevel", "WARNING",
        ]  # fmt: skip
        workers.append(Worker(hostname, spawn(command, env, log, cleanup, f"worker {hostname}"), log))
    for worker in workers:
        wait_until(
            lambda w=worker: app.control.ping(destination=[w.hostname], timeout=0.5),
            90, f"worker {worker.hostname} answering a ping", worker.process, worker.log,
        )  # fmt: skip
    return workers


class ServeProcess:
    """`manage.py serve` on a free loopback port, on its own: a BLOBHUB_DATA_DIR of its own and
    none of the environment's servers, storage or public URL. Its output is collected."""

    def __init__(self, data_dir: Path, log_level: str = "WARNING"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "BLOBHUB_DATA_DIR": str(data_dir),
            "DJANGO_SETTINGS_MODULE": "blobhub.settings",
            "PYTHONUNBUFFERED": "1",
            "LOG_LEVEL": log_level,
        }
        for name in ("DATABASE_URL", "REDIS_URL", "BLOB_STORAGE_URL", "S3_ENDPOINT_URL", "PUBLIC_BASE_URL"):
            env.pop(name, None)
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output: list[str] = []
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        for line in self.process.stdout:
            self.output.append(line)

    def wait_ready(self, timeout: float, patterns: list[re.Pattern]) -> list[re.Match]:
        """Wait for /healthz and a match of each of `patterns` in the output; return the matches."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{''.join(self.output)}")
            text = "".join(self.output)
            matches = [pattern.search(text) for pattern in patterns]
            if all(matches) and http_ok(f"{self.url}/healthz"):
                return matches
            time.sleep(0.1)
        raise RuntimeError(f"the server did not start within {timeout} s:\n{''.join(self.output)}")

    def peak_rss_kib(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE).group(1))

    def stop(self) -> None:
        # SIGTERM, not SIGINT: a benchmark run as a background job of a shell without job
        # control starts its children with SIGINT ignored.
        stop_process(self.process, timeout=30, sig=signal.SIGTERM)


def project_channel_layer():
    """A channel layer of its own, of the backend the project is configured with."""
    from channels.layers import channel_layers

    return channel_layers.make_backend("default")


async def close_channel_layer(layer) -> None:
    """Close the layer's Redis connections (channels_redis's two backends name it differently;
    the core backend's `flush` would delete every key of the layer instead)."""
    close = getattr(layer, "close_pools", None)
    await (close() if close is not None else layer.flush())
