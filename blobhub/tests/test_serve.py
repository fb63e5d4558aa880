"""`manage.py serve`, started the way a newcomer starts it: a real process on a fresh data dir.

These need no external service, so they run in the fast suite as well as in CI's full run.
"""

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from tests.processes import LineReader, free_port, http_ok, stop, wait_for

STARTUP_TIMEOUT = 60
STOP_TIMEOUT = 30
KEY_LINE = "write API key:"
SERVING_LINE = "BlobHub is serving on"

# The embedded default is what you get with none of the production variables set.
PRODUCTION_VARIABLES = (
    "DATABASE_URL", "REDIS_URL", "BLOB_STORAGE_URL", "S3_ENDPOINT_URL", "SECRET_KEY", "CREDENTIAL_KEYS",
)  # fmt: skip


def _as_at_a_terminal() -> None:
    """SIGINT as a foreground program gets it: a shell without job control (a CI script's
    background job) starts its children with SIGINT ignored, and so would this test's run."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Serve:
    def __init__(self, data_dir: Path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {name: value for name, value in os.environ.items() if name not in PRODUCTION_VARIABLES}
        env.update(
            BLOBHUB_DATA_DIR=str(data_dir),
            # The real settings, not the test ones (which run tasks eagerly).
            DJANGO_SETTINGS_MODULE="blobhub.settings",
            PYTHONUNBUFFERED="1",
        )
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--port", str(self.port)],
            cwd=settings.BASE_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=_as_at_a_terminal,
        )
        self.output = LineReader(self.process)

    def lines_until_serving(self) -> list[str]:
        return self.output.read_until(
            lambda line: SERVING_LINE in line, timeout=STARTUP_TIMEOUT, what="serve announcing its address"
        )

    def wait_until_ready(self) -> None:
        wait_for(
            lambda: http_ok(f"{self.base}/healthz"),
            timeout=STARTUP_TIMEOUT,
            what="serve answering /healthz",
            process=self.process,
            output=self.output.text,
        )

    def users_me(self, key: str) -> httpx.Response:
        return httpx.get(f"{self.base}/v1/users/me", headers={"X-API-Key": key}, timeout=10)

    def interrupt(self) -> int:
        """Ctrl-C, as a user at the terminal would; the exit status."""
        return stop(self.process, sig=signal.SIGINT, timeout=STOP_TIMEOUT)


@dataclass
class FirstRun:
    """What a newcomer sees on the first start and the first Ctrl-C."""

    data_dir: Path
    lines: list[str]
    key: str | None
    users_me: httpx.Response | None
    exit_status: int
    output: str


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> Iterator[FirstRun]:
    """One first start on an empty data dir, stopped with Ctrl-C (starting costs seconds)."""
    data_dir = tmp_path_factory.mktemp("serve") / "data"
    serve = Serve(data_dir)
    try:
        lines = serve.lines_until_serving()
        serve.wait_until_ready()
        key = printed_key(lines)
        users_me = serve.users_me(key) if key else None
        exit_status = serve.interrupt()
        yield FirstRun(data_dir, lines, key, users_me, exit_status, serve.output.text())
    finally:
        stop(serve.process, sig=signal.SIGKILL, timeout=10)


@pytest.fixture
def restart(first_run) -> Iterator[Serve]:
    serve = Serve(first_run.data_dir)
    yield serve
    stop(serve.process, sig=signal.SIGKILL, timeout=10)


def printed_key(lines: list[str]) -> str | None:
    for line in lines:
        if KEY_LINE in line:
            return line.split(KEY_LINE, 1)[1].strip()
    return None


def test_first_start_prints_a_write_key_that_answers_users_me_as_admin(first_run):
    assert first_run.key, f"no '{KEY_LINE}' line before the server started:\n{first_run.output}"
    assert first_run.users_me.status_code == 200
    body = first_run.users_me.json()
    assert body["status"] == "success"
    assert body["user"]["alias"] == "admin"


def test_ctrl_c_stops_serve_with_exit_status_zero(first_run):
    assert first_run.exit_status == 0, first_run.output


def test_a_restart_on_the_same_data_prints_no_new_key_and_the_old_key_still_works(first_run, restart):
    assert first_run.key
    lines = restart.lines_until_serving()
    restart.wait_until_ready()

    assert printed_key(lines) is None, "\n".join(lines)
    response = restart.users_me(first_run.key)
    assert response.status_code == 200
    assert response.json()["user"]["alias"] == "admin"
    assert restart.interrupt() == 0, restart.output.text()
