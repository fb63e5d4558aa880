"""The S3 backend against a real S3-compatible server (moto's, started by the fixture)."""

import hashlib
import json
import os
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from blobs import store
from blobs.models import StoredObject
from blobs.store import CorruptObject

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("s3_store")]

MIB = 1024 * 1024
# Over boto3's 8 MiB multipart threshold, so the upload goes in parts.
MULTIPART_SIZE = 9 * MIB + 123


@pytest.fixture
def writer(write_key) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=write_key)
    return client


def test_a_large_object_is_uploaded_in_parts_once_and_read_back(org, s3_store):
    data = os.urandom(MULTIPART_SIZE)

    obj = store.put_bytes(data, org=org)
    again = store.put_stream(iter([data[:MIB], data[MIB:]]), org=org)

    assert obj.sha256 == again.sha256 == hashlib.sha256(data).hexdigest()
    assert s3_store.keys() == [s3_store.key(obj.sha256)]
    head = s3_store.client.head_object(Bucket=s3_store.bucket, Key=s3_store.key(obj.sha256))
    assert head["ContentLength"] == len(data)
    assert "-" in head["ETag"], "a multipart upload's ETag names its part count"
    assert store.read_bytes(obj) == data
    assert store.read_range(obj, 8 * MIB - 2, 4) == data[8 * MIB - 2 : 8 * MIB + 2]


def test_small_objects_stay_inline_and_never_reach_the_bucket(s3_store):
    obj = store.put_bytes(b"tiny")

    assert s3_store.keys() == []
    assert store.read_bytes(obj) == b"tiny"


def test_an_object_changed_in_the_bucket_is_detected_on_read(s3_store):
    data = os.urandom(200_000)
    obj = store.put_bytes(data)
    tampered = bytearray(data)
    tampered[100_000] ^= 0xFF
    s3_store.client.put_object(Bucket=s3_store.bucket, Key=s3_store.key(obj.sha256), Body=bytes(tampered))

    received = bytearray()
    with pytest.raises(CorruptObject):
        for chunk in store.open_object(obj):
            received.extend(chunk)
    assert len(received) < len(data)


def test_garbage_collection_deletes_the_bucket_object(settings, org, s3_store):
    obj = store.put_bytes(os.urandom(100_000), org=org)

    removed = store.collect_garbage(now=timezone.now() + timedelta(hours=settings.BLOB_RETENTION_HOURS + 1))

    assert removed == 1
    assert s3_store.keys() == []
    assert not StoredObject.objects.filter(sha256=obj.sha256).exists()


def test_stepflow_round_trips_work_against_s3(writer, s3_store):
    data = os.urandom(MULTIPART_SIZE)

    binary = writer.post("/api/v1/blobs", data=data, content_type="application/octet-stream", HTTP_X_BLOB_FILENAME="big.bin")
    document = writer.post("/api/v1/blobs", data=json.dumps({"data": {"k": list(range(20000))}}), content_type="application/json")

    blob_id = binary.json()["blobId"]
    assert blob_id == hashlib.sha256(data).hexdigest()
    raw = writer.get(f"/api/v1/blobs/{blob_id}", HTTP_ACCEPT="application/octet-stream")
    assert raw.status_code == 200 and raw["x-blob-type"] == "binary"
    assert b"".join(raw.streaming_content) == data
    answer = writer.get(f"/api/v1/blobs/{document.json()['blobId']}").json()
    assert answer["data"] == {"k": list(range(20000))} and answer["blobType"] == "data"
    assert sorted(s3_store.keys()) == sorted(s3_store.key(sha) for sha in (blob_id, document.json()["blobId"]))


def test_the_health_check_asks_the_bucket(settings, client):
    from blobs.storage import _backend_for

    assert client.get("/healthz").json()["checks"]["storage"] == "ok"

    settings.BLOB_STORAGE_URL = "s3://no-such-bucket/prefix"
    _backend_for.cache_clear()
    assert client.get("/healthz").json()["checks"]["storage"] == "failed"
