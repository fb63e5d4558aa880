"""The Stepflow routes through the real server (`manage.py serve`, daphne): large bodies
stream both ways without the server holding them, a body over its route's limit is refused
before the server takes it in, and a corrupted download is cut off."""

import hashlib
import json
import os
import re
import signal
import socket
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
ANSWER_SECONDS = 10

PRODUCTION_VARIABLES = ("DATABASE_URL", "REDIS_URL", "BLOB_STORAGE_URL", "S3_ENDPOINT_URL", "SECRET_KEY", "CREDENTIAL_KEYS")


class ServeProcess:
    def __init__(self, data_dir: Path, port: int):
        env = {name: value for name, value in os.environ.items() if name not in PRODUCTION_VARIABLES}
        env.update(BLOBHUB_DATA_DIR=str(data_dir), DJANGO_SETTINGS_MODULE="blobhub.settings", PYTHONUNBUFFERED="1")
        self.data_dir = data_dir
        self.port = port
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

    def spooled_bytes(self) -> int:
        """What the server holds in deleted temp files (where Twisted spools request bodies)."""
        total = 0
        for fd in Path(f"/proc/{self.process.pid}/fd").iterdir():
            try:
                if os.readlink(fd).endswith("(deleted)"):
                    total += fd.stat().st_size
            except OSError:
                pass  # closed meanwhile
        return total

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


def test_a_form_body_is_not_read_into_the_servers_memory(server):
    # Twisted parses form POSTs in memory unless told not to; the body is refused (not a
    # Stepflow content type) without the server's memory growing with it.
    serve, client = server
    before = serve.peak_rss()

    answer = client.post(
        "/api/v1/blobs",
        content=chunks_of(b"-" * BODY_SIZE),
        headers={"Content-Type": "multipart/form-data; boundary=x", "Content-Length": str(BODY_SIZE)},
    )

    assert answer.status_code in (400, 413, 415), answer.text  # refused by the view, after the spool
    growth = serve.peak_rss() - before
    assert growth < RSS_GROWTH_LIMIT, f"the server's peak memory grew by {growth / MIB:.0f} MiB for a 96 MiB form body"


def test_a_chunked_upload_under_the_limit_is_stored(server):
    _, client = server
    data = os.urandom(3 * MIB)

    stored = client.post("/api/v1/blobs", content=chunks_of(data), headers={"Content-Type": "application/octet-stream"})

    assert stored.status_code == 200, stored.text
    assert stored.json()["blobId"] == hashlib.sha256(data).hexdigest()


def post_head(serve: ServeProcess, path: str, framing: str) -> socket.socket:
    """A connection that has sent the head of a POST without credentials, framed by `framing`."""
    sock = socket.create_connection(("127.0.0.1", serve.port), timeout=ANSWER_SECONDS)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{framing}\r\n\r\n".encode())
    return sock


def read_answer(sock: socket.socket) -> tuple[str, dict]:
    """The status line and JSON body of the server's answer (the server closes after it)."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        raise AssertionError(f"no answer within {ANSWER_SECONDS} s; received {received[:200]!r}") from None
    head, _, body = received.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(), json.loads(body)


@pytest.mark.parametrize(
    ("path", "declared"),
    [("/v1/orgs", 400 * MIB), ("/api/v1/blobs", 6 * 1024 * MIB)],
    ids=["general limit", "blob upload limit"],
)
def test_a_declared_body_over_the_limit_is_refused_before_the_client_sends_it(server, path, declared):
    serve, _ = server
    before = serve.spooled_bytes()
    sock = post_head(serve, path, f"Content-Length: {declared}")
    with sock:
        try:
            sock.sendall(b"x" * MIB)  # the client goes on, with most of the body still to come
        except OSError:
            pass  # the server has answered and closed the connection

        status, body = read_answer(sock)

    assert status.startswith("HTTP/1.1 413 ")
    assert body["error"] == "payload_too_large"
    assert serve.spooled_bytes() - before < MIB


def test_a_chunked_body_is_cut_off_once_it_passes_the_limit(server):
    serve, _ = server
    sock = post_head(serve, "/v1/orgs", "Transfer-Encoding: chunked")
    sent = 0
    with sock:
        try:
            while sent < 64 * MIB:  # a server that took it all would answer only after the end
                sock.sendall(b"%x\r\n%s\r\n" % (MIB, b"x" * MIB))
                sent += MIB
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server has answered and closed the connection

        status, body = read_answer(sock)

    assert status.startswith("HTTP/1.1 413 ")
    assert body["error"] == "payload_too_large"
    assert sent < 16 * MIB, f"{sent / MIB:.0f} MiB went in before the server refused a body over 5 MiB"


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
