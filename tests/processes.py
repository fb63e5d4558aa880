"""Starting, watching and stopping real server processes from tests.

Everything waits on a condition with a deadline instead of sleeping a fixed time, and
a process that dies early fails the wait at once with the tail of its output.
"""

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

T = TypeVar("T")

POLL_INTERVAL = 0.05


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(
    condition: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    process: subprocess.Popen | None = None,
    output: Callable[[], str] | None = None,
) -> T:
    """Call `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{what}: the process exited with {process.returncode}\n{_tail(output)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s\n{_tail(output)}")
        time.sleep(POLL_INTERVAL)


def http_ok(url: str) -> bool:
    """Whether `url` answers 200 (connection errors count as not yet)."""
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def stop(process: subprocess.Popen, *, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
    """Ask the process to stop with `sig`; kill it if it is still there after `timeout`."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    return process.returncode


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def _tail(output: Callable[[], str] | None) -> str:
    return f"--- last output ---\n{output()}" if output is not None else ""


class LineReader:
    """Collects a process's stdout on a thread, so the pipe never fills and reads can time out."""

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.lines: list[str] = []
        self._ended = False
        self._position = 0  # the first line no read_until has returned yet
        self._changed = threading.Condition()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def read_until(self, predicate: Callable[[str], bool], *, timeout: float, what: str) -> list[str]:
        """The lines not read yet, up to and including the first one matching `predicate`."""
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        with self._changed:
            while True:
                while self._position < len(self.lines):
                    line = self.lines[self._position]
                    self._position += 1
                    seen.append(line)
                    if predicate(line):
                        return seen
                if self._ended:
                    raise AssertionError(f"{what}: the output ended (exit {self.process.poll()})\n{self._tail()}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{what}: not within {timeout} s\n{self._tail()}")
                self._changed.wait(remaining)

    def text(self) -> str:
        """The last lines of output, read or not."""
        with self._changed:
            return self._tail()

    def _tail(self) -> str:
        return "\n".join(self.lines[-40:])


def require(missing: list[str], what: str) -> None:
    """Skip `what` when something it needs is missing, or fail when CI requires it all
    (BLOBHUB_REQUIRE_INTEGRATION)."""
    if not missing:
        return
    reason = f"{what} need {' and '.join(missing)}"
    if os.environ.get("BLOBHUB_REQUIRE_INTEGRATION"):
        pytest.fail(reason)
    pytest.skip(reason)
