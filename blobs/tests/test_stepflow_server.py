"""The Stepflow routes through the real server (`manage.py serve`, daphne): large bodies
stream both ways without the server holding them, and a corrupted download is cut off."""

import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
KEY_PATTERN = re.compile(r"bh_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")
STARTUP_SECONDS = 90
MIB = 1024 * 1024
BODY_SIZE = 96 * MIB
# Daphne alone would queue the whole body in memory: at least BODY_SIZE more.
RSS_GROWTH_LIMIT = 40 * MIB

PRODUCTION_VARIABLES = ("DATABASE_URL", "REDIS_URL", "BLOB_STORAGE_URL", "S3_ENDPOINT_URL", "SECRET_KEY", "CREDENTIAL_KEYS")


class ServeProcess:
    def __init__(self, data_dir: Path, port: int):
        env = {name: value for name, value in os.environ.items() if name not in PRODUCTION_VARIABLES}
        env.update(BLOBHUB_DATA_DIR=str(data_dir), DJANGO_SETTINGS_MODULE="blobhub.settings", PYTHONUNBUFFERED="1")
        self.data_dir = data_dir
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True).start()

    def wait_for_key(self) -> str:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"serve exited with {self.process.returncode}:\n{self.output()}"
            key = next((found.group(0) for line in list(self.lines) if (found := KEY_PATTERN.search(line))), None)
            if key and self._healthy():
                return key
            time.sleep(0.05)
        raise AssertionError(f"serve did not answer within {STARTUP_SECONDS} s:\n{self.output()}")

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def peak_rss(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE).group(1)) * 1024

    def output(self) -> str:
        return "".join(self.lines)[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[ServeProcess, httpx.Client]]:
    if not Path("/proc/self/status").exists():
        pytest.skip("peak memory is read from /proc, which this system does not have")
    from blobs.tests.conftest import _free_port

    serve = ServeProcess(tmp_path_factory.mktemp("serve") / "data", _free_port())
    try:
        key = serve.wait_for_key()
        with httpx.Client(base_url=serve.url, headers={"X-API-Key": key}, timeout=60) as client:
            yield serve, client
    finally:
        serve.stop()


def chunks_of(data: bytes, size: int = MIB) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_a_large_upload_and_download_stream_through_the_server_without_growing_its_memory(server):
    serve, client = server
    data = os.urandom(BODY_SIZE)
    before = serve.peak_rss()

    stored = client.post(
        "/api/v1/blobs",
        content=chunks_of(data),
        headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(data))},
    )
    received = hashlib.sha256()
    with client.stream("GET", f"/api/v1/blobs/{stored.json()['blobId']}", headers={"Accept": "application/octet-stream"}) as answer:
        assert answer.status_code == 200
        for chunk in answer.iter_raw():
            received.update(chunk)

    assert stored.status_code == 200, stored.text
    assert stored.json()["blobId"] == hashlib.sha256(data).hexdigest() == received.hexdigest()
    growth = serve.peak_rss() - before
    assert growth < RSS_GROWTH_LIMIT, f"the server's peak memory grew by {growth / MIB:.0f} MiB for a 96 MiB body"


def test_a_corrupted_download_is_cut_off_instead_of_completed(server):
    serve, client = server
    data = os.urandom(8 * MIB)
    blob_id = client.post("/api/v1/blobs", content=data, headers={"Content-Type": "application/octet-stream"}).json()[
        "blobId"
    ]
    with open(serve.data_dir / "objects" / blob_id[:2] / blob_id[2:4] / blob_id, "r+b") as handle:
        handle.seek(5 * MIB)
        handle.write(b"\x00corrupt\x00")

    received = 0
    started = time.monotonic()
    with pytest.raises(httpx.TransportError):
        with client.stream("GET", f"/api/v1/blobs/{blob_id}", headers={"Accept": "application/octet-stream"}) as answer:
            assert answer.headers["Content-Length"] == str(len(data))
            for chunk in answer.iter_raw():
                received += len(chunk)

    assert received < len(data)
    assert time.monotonic() - started < 30, "the client waited for the rest instead of being told"
    assert client.get(f"/api/v1/blobs/{blob_id}").status_code == 500
