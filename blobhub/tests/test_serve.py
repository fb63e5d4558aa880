"""`manage.py serve`, started the way a newcomer starts it: a real process on a fresh data dir.

These need no external service, so they run in the fast suite as well as in CI's full run.
"""

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
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


@pytest.fixture
def start_serve(tmp_path: Path) -> Iterator:
    """Starts `manage.py serve` on one fresh data dir; whatever is still running is killed at the end."""
    data_dir = tmp_path / "data"
    started: list[Serve] = []

    def start() -> Serve:
        serve = Serve(data_dir)
        started.append(serve)
        return serve

    yield start
    for serve in started:
        stop(serve.process, sig=signal.SIGKILL, timeout=10)


def printed_key(lines: list[str]) -> str | None:
    for line in lines:
        if KEY_LINE in line:
            return line.split(KEY_LINE, 1)[1].strip()
    return None


def test_first_start_prints_a_write_key_that_answers_users_me_as_admin(start_serve):
    serve = start_serve()
    key = printed_key(serve.lines_until_serving())
    assert key, f"no '{KEY_LINE}' line before the server started:\n{serve.output.text()}"
    serve.wait_until_ready()

    response = serve.users_me(key)

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "success"
    assert body["user"]["alias"] == "admin"


def test_ctrl_c_stops_serve_with_exit_status_zero(start_serve):
    serve = start_serve()
    serve.lines_until_serving()
    serve.wait_until_ready()

    assert serve.interrupt() == 0, serve.output.text()


def test_a_restart_on_the_same_data_prints_no_new_key_and_the_old_key_still_works(start_serve):
    first = start_serve()
    key = printed_key(first.lines_until_serving())
    assert key
    first.wait_until_ready()
    assert first.interrupt() == 0, first.output.text()

    second = start_serve()
    lines = second.lines_until_serving()
    second.wait_until_ready()

    assert printed_key(lines) is None, "\n".join(lines)
    response = second.users_me(key)
    assert response.status_code == 200
    assert response.json()["user"]["alias"] == "admin"
    assert second.interrupt() == 0, second.output.text()
