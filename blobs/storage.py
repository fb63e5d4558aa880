"""Where object bytes live: a directory (`file://`) or an S3 bucket (`s3://bucket/prefix`).

Backends know nothing of hashes or databases: they store a finished temp file under a
name exactly once, stream it back in chunks, and delete it.
"""

import os
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

from django.conf import settings

CHUNK = 1024 * 1024


class FileBackend:
    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        return self.root / name[:2] / name[2:4] / name

    def exists(self, name: str) -> bool:
        return self._path(name).exists()

    def write(self, name: str, source: Path) -> None:
        """Link the finished file into place: atomic, and never over an existing object."""
        target = self._path(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except FileExistsError:
            return
        except OSError:
            # Another filesystem: copy beside the target, then link that into place.
            staging = target.with_name(f".{name}.{os.getpid()}.tmp")
            with open(source, "rb") as src, open(staging, "wb") as dst:
                while chunk := src.read(CHUNK):
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            try:
                os.link(staging, target)
            except FileExistsError:
                pass
            finally:
                staging.unlink()

    def open(self, name: str) -> Iterator[bytes]:
        with open(self._path(name), "rb") as handle:
            while chunk := handle.read(CHUNK):
                yield chunk

    def open_range(self, name: str, offset: int, size: int) -> Iterator[bytes]:
        """Bytes [offset, offset + size) of a stored object, in chunks."""
        with open(self._path(name), "rb") as handle:
            handle.seek(offset)
            left = size
            while left > 0 and (chunk := handle.read(min(CHUNK, left))):
                left -= len(chunk)
                yield chunk

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)

    def check(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not os.access(self.root, os.W_OK):
            raise OSError("the storage directory is not writable")


class S3Backend:
    def __init__(self, bucket: str, prefix: str):
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = boto3.client(
            "s3",
            endpoint_url=settings.S3_ENDPOINT_URL,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"}),
        )

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def exists(self, name: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(name))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def write(self, name: str, source: Path) -> None:
        """Upload once: an object already there is left alone (its name is its hash)."""
        if self.exists(name):
            return
        # upload_file streams from disk and switches to multipart for large files.
        self.client.upload_file(str(source), self.bucket, self._key(name))

    def open(self, name: str) -> Iterator[bytes]:
        body = self.client.get_object(Bucket=self.bucket, Key=self._key(name))["Body"]
        try:
            yield from body.iter_chunks(CHUNK)
        finally:
            body.close()

    def delete(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(name))

    def check(self) -> None:
        self.client.head_bucket(Bucket=self.bucket)


@lru_cache(maxsize=4)
def _backend_for(url: str) -> FileBackend | S3Backend:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return FileBackend(Path(parsed.path))
    if parsed.scheme == "s3":
        return S3Backend(parsed.netloc, parsed.path)
    raise ValueError(f"BLOB_STORAGE_URL has an unknown scheme: {parsed.scheme!r}")


def backend() -> FileBackend | S3Backend:
    return _backend_for(settings.BLOB_STORAGE_URL)
