"""Real processes for the integration suite: the ASGI server (daphne) and a Celery worker.

They run only against PostgreSQL and Redis (DATABASE_URL, REDIS_URL); otherwise every
test here is skipped, or fails when BLOBHUB_REQUIRE_INTEGRATION is set (as `make
integration` and `.ci/run` do), so that CI cannot pass by skipping them. The processes
read and write pytest-django's test database, so the tests use `transactional_db`:
their rows are committed and visible to the servers.
"""

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.db import connection

from blobhub.celery import app as celery_app
from tests.processes import free_port, http_ok, log_tail, require, stop, wait_for

STARTUP_TIMEOUT = 60
STOP_TIMEOUT = 20
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def integration_services() -> None:
    """Skip (or fail, when CI requires them) unless PostgreSQL and Redis are configured."""
    missing = []
    if connection.vendor != "postgresql":
        missing.append("DATABASE_URL naming PostgreSQL")
    if not settings.REDIS_URL:
        missing.append("REDIS_URL")
    require(missing, "integration tests")


@pytest.fixture(scope="session")
def server_env(integration_services, django_db_setup) -> dict[str, str]:
    """The environment of the server processes: the test database, the same Redis and secrets."""
    url = urlsplit(settings.DATABASE_URL)
    test_db_url = url._replace(path="/" + connection.settings_dict["NAME"]).geturl()
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "blobhub.settings",
        "DATABASE_URL": test_db_url,
        "REDIS_URL": settings.REDIS_URL,
        "BLOBHUB_DATA_DIR": str(settings.DATA_DIR),
        # Tokens and credentials made in the test process must be valid in the servers.
        "SECRET_KEY": settings.SECRET_KEY,
        "CREDENTIAL_KEYS": ",".join(settings.CREDENTIAL_KEYS),
        "PYTHONUNBUFFERED": "1",
    }


@dataclass(frozen=True)
class AsgiServer:
    url: str
    log: Path


@pytest.fixture(scope="session")
def asgi_server(server_env, tmp_path_factory) -> Iterator[AsgiServer]:
    """`daphne blobhub.asgi:application` on a free loopback port, ready when /healthz says ok."""
    port = free_port()
    log = tmp_path_factory.mktemp("daphne") / "daphne.log"
    with log.open("w") as out:
        process = _spawn(
            [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port), "blobhub.asgi:application"], server_env, out
        )
    server = AsgiServer(url=f"http://127.0.0.1:{port}", log=log)
    try:
        wait_for(
            lambda: http_ok(f"{server.url}/healthz"),
            timeout=STARTUP_TIMEOUT,
            what="daphne answering /healthz with 200",
            process=process,
            output=lambda: log_tail(log),
        )
        yield server
    finally:
        stop(process, timeout=STOP_TIMEOUT)


@dataclass(frozen=True)
class Worker:
    hostname: str
    log: Path


@pytest.fixture(scope="session")
def celery_worker_process(server_env, tmp_path_factory) -> Iterator[Worker]:
    """`celery -A blobhub worker` in its own process, ready when it answers a ping."""
    hostname = f"integration-{os.getpid()}@localhost"
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    command = [
        str(BIN / "celery"), "-A", "blobhub", "worker", "--pool", "threads", "-c", "2",
        "-n", hostname, "--without-mingle", "--without-gossip", "--loglevel", "INFO",
    ]  # fmt: skip
    with log.open("w") as out:
        process = _spawn(command, server_env, out)
    try:
        wait_for(
            lambda: celery_app.control.ping(destination=[hostname], timeout=0.5),
            timeout=STARTUP_TIMEOUT,
            what="the Celery worker answering a ping",
            process=process,
            output=lambda: log_tail(log),
        )
        yield Worker(hostname=hostname, log=log)
    finally:
        # SIGTERM is Celery's warm shutdown: running tasks finish, nothing new starts.
        stop(process, timeout=STOP_TIMEOUT)


@pytest.fixture
def tasks_go_through_the_broker(celery_worker_process) -> Iterator[None]:
    """The fast suite runs tasks eagerly; here the test process really sends them to Redis."""
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = False
    try:
        yield
    finally:
        celery_app.conf.task_always_eager = previous


def _spawn(command: list[str], env: dict[str, str], out) -> subprocess.Popen:
    return subprocess.Popen(
        command, cwd=settings.BASE_DIR, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
    )

