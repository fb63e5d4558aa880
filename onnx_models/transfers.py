"""Multipart transfers (DESIGN §8): part plans and presigned part URLs.

On S3 the parts are boto3-presigned `UploadPart` / ranged `GetObject` URLs. On the file
store they are signed, expiring URLs to this server's own part endpoints, which take no
API key: the signature (HMAC over operation, part, range and expiry) is the credential.
"""

import hashlib
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from django.conf import settings
from django.utils.crypto import constant_time_compare, salted_hmac

from blobs.storage import S3Backend, backend

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


def _signature(kind: str, operation_id: str, part: Part, expires: int) -> str:
    message = f"{kind}:{operation_id}:{part.index}:{part.offset}:{part.size}:{expires}"
    return salted_hmac(SALT, message, algorithm="sha256").hexdigest()


def signed_url(base_url: str, kind: str, operation_id: str, part: Part) -> str:
    expires = int(time.time()) + settings.ONNX_TRANSFER_URL_TTL_SECONDS
    query = urlencode(
        {"offset": part.offset, "size": part.size, "expires": expires, "signature": _signature(kind, operation_id, part, expires)}
    )
    return f"{base_url.rstrip('/')}/v1/transfers/{kind}s/{operation_id}/{part.index}?{query}"


def verify(kind: str, operation_id: str, index: int, query) -> Part | None:
    """The part a signed URL names, or None if the URL is tampered with or expired."""
    try:
        part = Part(index, int(query["offset"]), int(query["size"]))
        expires = int(query["expires"])
        signature = query["signature"]
    except (KeyError, ValueError, TypeError):
        return None
    if not constant_time_compare(signature, _signature(kind, operation_id, part, expires)):
        return None
    if expires < time.time():
        return None
    return part


# --- Where parts go on the file store ------------------------------------------------------


def parts_dir(operation_id: str) -> Path:
    return settings.DATA_DIR / "uploads" / str(operation_id)


def store_part(operation_id: str, part: Part, stream) -> str:
    """Write one part from a stream; returns its ETag (MD5, as S3 does). Refuses a wrong size."""
    directory = parts_dir(operation_id)
    directory.mkdir(parents=True, exist_ok=True)
    temp = directory / f".{part.index}.{os.getpid()}.tmp"
    digest, written = hashlib.md5(usedforsecurity=False), 0
    try:
        with open(temp, "wb") as out:
            while chunk := stream.read(1024 * 1024):
                written += len(chunk)
                if written > part.size:
                    raise ValueError(f"The part is larger than its {part.size} bytes.")
                digest.update(chunk)
                out.write(chunk)
        if written != part.size:
            raise ValueError(f"The part has {written} bytes; it must have {part.size}.")
        os.replace(temp, directory / f"{part.index}.part")
        (directory / f"{part.index}.etag").write_text(digest.hexdigest())
    finally:
        temp.unlink(missing_ok=True)
    return digest.hexdigest()


def stored_etags(operation_id: str, parts: list[Part]) -> list[str | None]:
    directory = parts_dir(operation_id)
    etags = []
    for part in parts:
        path = directory / f"{part.index}.etag"
        etags.append(path.read_text() if path.exists() else None)
    return etags


def assemble(operation_id: str, parts: list[Part], target: Path) -> None:
    directory = parts_dir(operation_id)
    with open(target, "wb") as out:
        for part in parts:
            with open(directory / f"{part.index}.part", "rb") as source:
                shutil.copyfileobj(source, out, 1024 * 1024)


def discard(operation_id: str) -> None:
    shutil.rmtree(parts_dir(operation_id), ignore_errors=True)


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


def s3_download_url(sha256: str, part: Part) -> tuple[str, dict]:
    store = s3()
    url = store.client.generate_presigned_url(
        "get_object",
        Params={"Bucket": store.bucket, "Key": store._key(sha256), "Range": f"bytes={part.offset}-{part.offset + part.size - 1}"},
        ExpiresIn=settings.ONNX_TRANSFER_URL_TTL_SECONDS,
    )
    return url, {"Range": f"bytes={part.offset}-{part.offset + part.size - 1}"}
