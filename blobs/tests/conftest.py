"""Fixtures for the content store's tests: a private file store, and a real S3 server.

The S3 server is moto's standalone server, started here on a free loopback port as a
subprocess (the same HTTP API a production S3-compatible store speaks: multipart
uploads, ranges, path-style addressing), once per test session.
"""

import importlib.util
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from blobs.storage import _backend_for

MOTO_STARTUP_SECONDS = 60
S3_REGION = "us-east-1"


@pytest.fixture
def file_store(settings, tmp_path) -> Iterator[Path]:
    """A file store of this test's own, so that files on disk are this test's alone."""
    root = tmp_path / "objects"
    settings.DATA_DIR = tmp_path / "data"
    settings.DATA_DIR.mkdir()
    settings.BLOB_STORAGE_URL = root.as_uri()
    _backend_for.cache_clear()
    yield root
    _backend_for.cache_clear()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory) -> Iterator[str]:
    """The URL of a moto S3 server running for this test session."""
    if importlib.util.find_spec("moto") is None:
        pytest.skip("moto is not installed: pip install -r requirements.txt (it pins moto[server])")
    port = _free_port()
    script = Path(sys.executable).with_name("moto_server")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "moto.server"]
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*command, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + MOTO_STARTUP_SECONDS
        while not _listening(port):
            if process.poll() is not None or time.monotonic() > deadline:
                output = log_path.read_text(errors="replace")[-4000:]
                pytest.fail(f"moto_server did not start (exit {process.poll()}):\n{output}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@dataclass
class S3Store:
    client: object
    bucket: str
    prefix: str

    def key(self, sha256: str) -> str:
        return f"{self.prefix}/{sha256}"

    def keys(self) -> list[str]:
        listing = self.client.list_objects_v2(Bucket=self.bucket)
        return sorted(item["Key"] for item in listing.get("Contents", []))


@pytest.fixture
def s3_store(moto_endpoint, settings, monkeypatch, tmp_path) -> Iterator[S3Store]:
    """Point the content store at a fresh bucket of the moto server."""
    import boto3
    from botocore.config import Config

    for name, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": S3_REGION,
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    client = boto3.client(
        "s3", endpoint_url=moto_endpoint, region_name=S3_REGION, config=Config(s3={"addressing_style": "path"})
    )
    bucket = f"blobhub-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    settings.DATA_DIR = tmp_path / "data"
    settings.DATA_DIR.mkdir()
    settings.BLOB_STORAGE_URL = f"s3://{bucket}/prefix"
    settings.S3_ENDPOINT_URL = moto_endpoint
    _backend_for.cache_clear()
    yield S3Store(client=client, bucket=bucket, prefix="prefix")
    _backend_for.cache_clear()
