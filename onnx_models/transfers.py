"""Multipart transfers (DESIGN §8): part plans and presigned part URLs.

On S3 the parts are boto3-presigned `UploadPart` / ranged `GetObject` URLs. On the file
store they are signed, expiring URLs to this server's own part endpoints, which take no
API key: the signature (HMAC over what the URL names, part, range and expiry) is the
credential. An upload URL names its operation; a download URL names a revision and an
object, so that handing out download URLs writes nothing.
"""

import fcntl
import hashlib
import math
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlencode

from django.conf import settings
from django.utils.crypto import constant_time_compare, salted_hmac

from blobs.storage import S3Backend, backend

CHUNK = 1024 * 1024
MIN_PART = 5 * 1024 * 1024
MAX_PARTS = 10_000
SALT = "blobhub.onnx.transfer"


@dataclass(frozen=True)
class Part:
    index: int
    offset: int
    size: int


def plan(size: int, part_size: int | None = None) -> list[Part]:
    """Parts that tile [0, size) in order: each at least 5 MiB but the last, at most 10,000."""
    part_size = max(part_size or settings.ONNX_PART_BYTES, MIN_PART, math.ceil(size / MAX_PARTS))
    parts, offset, index = [], 0, 1
    while offset < size or not parts:
        length = min(part_size, size - offset)
        parts.append(Part(index, offset, length))
        offset += length
        index += 1
    return parts


# --- Signed URLs to our own endpoints (the file store) --------------------------------------


def _signature(kind: str, subject: str, part: Part, expires: int) -> str:
    message = f"{kind}:{subject}:{part.index}:{part.offset}:{part.size}:{expires}"
    return salted_hmac(SALT, message, algorithm="sha256").hexdigest()


def signed_url(base_url: str, kind: str, subject: str, part: Part) -> str:
    """`subject`: an upload's operation id, or `<revision id>/<sha256>` of a download."""
    expires = int(time.time()) + settings.ONNX_TRANSFER_URL_TTL_SECONDS
    query = urlencode(
        {"offset": part.offset, "size": part.size, "expires": expires, "signature": _signature(kind, subject, part, expires)}
    )
    return f"{base_url.rstrip('/')}/v1/transfers/{kind}s/{subject}/{part.index}?{query}"


def verify(kind: str, subject: str, index: int, query) -> Part | None:
    """The part a signed URL names, or None if the URL is tampered with or expired."""
    try:
        part = Part(index, int(query["offset"]), int(query["size"]))
        expires = int(query["expires"])
        signature = query["signature"]
    except (KeyError, ValueError, TypeError):
        return None
    if not constant_time_compare(signature, _signature(kind, subject, part, expires)):
        return None
    if expires < time.time():
        return None
    return part


# --- Where parts go on the file store ------------------------------------------------------
#
# Every part is written in place, at its offset, into one file per upload: once all parts
# are there, that file is the archive, and completing moves it instead of copying parts.


ARCHIVE = "archive"


DIRECT_PREFIX = "onnx-upload-"  # bodies of `upload`, in the data dir's tmp/ until processed


def uploads_root() -> Path:
    return settings.DATA_DIR / "uploads"


def parts_dir(operation_id: str) -> Path:
    return uploads_root() / str(operation_id)


def store_part(operation_id: str, part: Part, stream) -> str:
    """Write one part from a stream at its offset; returns its ETag (MD5, as S3 does).

    A body of another size is refused, and its part counts as missing until it is sent
    again. Two uploads of the same part take turns (a lock per part), so the bytes in
    place are always those of the ETag recorded.
    """
    directory = parts_dir(operation_id)
    directory.mkdir(parents=True, exist_ok=True)
    etag_path = directory / f"{part.index}.etag"
    with open(directory / f"{part.index}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        etag_path.unlink(missing_ok=True)
        digest, written = hashlib.md5(usedforsecurity=False), 0
        fd = os.open(directory / ARCHIVE, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while chunk := stream.read(CHUNK):
                if written + len(chunk) > part.size:
                    raise ValueError(f"The part is larger than its {part.size} bytes.")
                digest.update(chunk)
                view = memoryview(chunk)
                while view:
                    done = os.pwrite(fd, view, part.offset + written)
                    written += done
                    view = view[done:]
        finally:
            os.close(fd)
        if written != part.size:
            raise ValueError(f"The part has {written} bytes; it must have {part.size}.")
        temp = directory / f".{part.index}.etag.tmp"
        temp.write_text(digest.hexdigest())
        os.replace(temp, etag_path)
    return digest.hexdigest()


def stored_etags(operation_id: str, parts: list[Part]) -> list[str | None]:
    directory = parts_dir(operation_id)
    etags = []
    for part in parts:
        path = directory / f"{part.index}.etag"
        etags.append(path.read_text() if path.exists() else None)
    return etags


def assemble(operation_id: str, target: Path) -> None:
    """Move the upload's file, whose parts are all in place, to `target` (no copy)."""
    source = parts_dir(operation_id) / ARCHIVE
    try:
        os.replace(source, target)
    except OSError:
        shutil.move(source, target)


def discard(operation_id: str) -> None:
    shutil.rmtree(parts_dir(operation_id), ignore_errors=True)


def parts_dirs() -> list[str]:
    """The operation ids that have parts on the file store."""
    root = uploads_root()
    return [path.name for path in root.iterdir()] if root.is_dir() else []


# --- S3 ----------------------------------------------------------------------------------------


def s3() -> S3Backend | None:
    store = backend()
    return store if isinstance(store, S3Backend) else None


def s3_key(operation_id: str) -> str:
    store = s3()
    return f"{store.prefix}/uploads/{operation_id}" if store.prefix else f"uploads/{operation_id}"


def s3_start(operation_id: str) -> str:
    store = s3()
    return store.client.create_multipart_upload(Bucket=store.bucket, Key=s3_key(operation_id))["UploadId"]


def s3_part_url(operation_id: str, upload_id: str, part: Part) -> str:
    store = s3()
    return store.client.generate_presigned_url(
        "upload_part",
        Params={"Bucket": store.bucket, "Key": s3_key(operation_id), "UploadId": upload_id, "PartNumber": part.index},
        ExpiresIn=settings.ONNX_TRANSFER_URL_TTL_SECONDS,
    )


def s3_complete(operation_id: str, upload_id: str, etags: list[str]) -> None:
    store = s3()
    store.client.complete_multipart_upload(
        Bucket=store.bucket,
        Key=s3_key(operation_id),
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"ETag": etag, "PartNumber": index} for index, etag in enumerate(etags, start=1)]},
    )


def s3_download(operation_id: str, target: Path) -> None:
    store = s3()
    store.client.download_file(store.bucket, s3_key(operation_id), str(target))


def s3_abort(operation_id: str, upload_id: str | None) -> None:
    from botocore.exceptions import ClientError

    store = s3()
    if upload_id:
        try:
            store.client.abort_multipart_upload(Bucket=store.bucket, Key=s3_key(operation_id), UploadId=upload_id)
        except ClientError:
            pass  # completed already: the assembled object is deleted below
    store.client.delete_object(Bucket=store.bucket, Key=s3_key(operation_id))


def s3_uploads() -> Iterator[tuple[str, str, datetime]]:
    """(operation id, upload id, when it began) of each multipart upload open in the bucket."""
    store = s3()
    pages = store.client.get_paginator("list_multipart_uploads").paginate(Bucket=store.bucket, Prefix=s3_key(""))
    for page in pages:
        for upload in page.get("Uploads", []):
            yield upload["Key"].rsplit("/", 1)[-1], upload["UploadId"], upload["Initiated"]


def s3_download_url(sha256: str, part: Part) -> tuple[str, dict]:
    store = s3()
    url = store.client.generate_presigned_url(
        "get_object",
        Params={"Bucket": store.bucket, "Key": store._key(sha256), "Range": f"bytes={part.offset}-{part.offset + part.size - 1}"},
        ExpiresIn=settings.ONNX_TRANSFER_URL_TTL_SECONDS,
    )
    return url, {"Range": f"bytes={part.offset}-{part.offset + part.size - 1}"}
