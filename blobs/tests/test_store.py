"""The content store (DESIGN §3): dedup, inline vs backend, write-once, streaming,
verification on read, per-org access and retention."""

import hashlib
import os
import tracemalloc
from datetime import timedelta

import pytest
from django.utils import timezone

from blobs import store
from blobs.models import ManifestEntry, ObjectRef, StoredObject
from blobs.services import content
from blobs.store import INLINE_LIMIT, CorruptObject, ObjectTooLarge
from blobs.tests.factories import BlobFactory
from orgs.tests.factories import OrganizationFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("file_store")]

MIB = 1024 * 1024


def object_path(root, sha256: str):
    return root / sha256[:2] / sha256[2:4] / sha256


def flip_a_byte(path, offset: int = 0) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


def test_the_same_bytes_are_stored_once_however_often_they_are_put(org, file_store):
    other = OrganizationFactory()
    data = os.urandom(200_000)

    first = store.put_bytes(data, org=org)
    again = store.put_bytes(data, org=org)
    elsewhere = store.put_stream([data[:1000], data[1000:]], org=other)

    assert first.sha256 == again.sha256 == elsewhere.sha256 == hashlib.sha256(data).hexdigest()
    assert StoredObject.objects.count() == 1
    assert [path.name for path in file_store.rglob("*") if path.is_file()] == [first.sha256]


def test_objects_up_to_64_kib_live_inline_and_larger_ones_in_the_backend(file_store):
    small = store.put_bytes(b"s" * INLINE_LIMIT)
    large = store.put_bytes(b"l" * (INLINE_LIMIT + 1))

    assert bytes(StoredObject.objects.get(sha256=small.sha256).inline) == b"s" * INLINE_LIMIT
    assert not object_path(file_store, small.sha256).exists()
    assert StoredObject.objects.get(sha256=large.sha256).inline is None
    assert object_path(file_store, large.sha256).read_bytes() == b"l" * (INLINE_LIMIT + 1)


def test_an_object_already_stored_is_not_written_again(file_store):
    data = os.urandom(100_000)
    obj = store.put_bytes(data)
    path = object_path(file_store, obj.sha256)
    before = path.stat()

    store.put_bytes(data)

    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not any((file_store.parent / "data" / "tmp").iterdir()), "the second upload's spool is cleaned up"


def test_a_streamed_put_writes_to_disk_as_it_reads_and_holds_little_in_memory(settings, file_store):
    chunk, count = os.urandom(MIB), 48
    spool_dir = settings.DATA_DIR / "tmp"
    seen_on_disk = []

    def chunks():
        for index in range(count):
            if index and index % 8 == 0:
                # What has been yielded so far is already in the spool file on disk.
                spooled = [path.stat().st_size for path in spool_dir.iterdir()]
                seen_on_disk.append((index * MIB, spooled))
            yield chunk

    tracemalloc.start()
    try:
        obj = store.put_stream(chunks())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert all(spooled == [expected] for expected, spooled in seen_on_disk), seen_on_disk
    assert peak < 8 * MIB, f"peak traced memory {peak} bytes for a {count} MiB object"
    stored = object_path(file_store, obj.sha256)
    assert stored.stat().st_size == count * MIB
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == obj.sha256


def test_a_put_over_the_size_limit_is_refused_and_leaves_nothing_behind(settings, file_store):
    with pytest.raises(ObjectTooLarge):
        store.put_stream(iter([b"x" * 100_000] * 3), max_size=250_000)

    assert StoredObject.objects.count() == 0
    assert not any((settings.DATA_DIR / "tmp").iterdir())
    assert not any(path.is_file() for path in file_store.rglob("*"))


def test_reads_return_the_bytes_and_ranges_of_an_object():
    data = os.urandom(3 * MIB + 17)
    obj = store.put_bytes(data)

    assert store.read_bytes(obj) == data
    assert b"".join(store.open_object(obj)) == data
    assert store.read_range(obj, MIB - 5, 10) == data[MIB - 5 : MIB + 5]
    assert store.read_range(obj, len(data) - 3, 100) == data[-3:]
    with pytest.raises(ObjectTooLarge):
        store.read_bytes(obj, max_size=MIB)


def test_a_corrupted_inline_object_is_an_error_and_never_its_bytes():
    obj = store.put_bytes(b"small and precious")
    StoredObject.objects.filter(sha256=obj.sha256).update(inline=b"small and tampered")
    obj.refresh_from_db()

    with pytest.raises(CorruptObject):
        store.read_bytes(obj)
    received = []
    with pytest.raises(CorruptObject):
        for chunk in store.open_object(obj):
            received.append(chunk)
    assert received == []


def test_a_corrupted_file_object_fails_before_its_last_chunk(file_store):
    data = os.urandom(3 * MIB + 5)
    obj = store.put_bytes(data)
    flip_a_byte(object_path(file_store, obj.sha256), offset=2 * MIB + 1)

    received = bytearray()
    with pytest.raises(CorruptObject):
        for chunk in store.open_object(obj):
            received.extend(chunk)
    assert len(received) < len(data), "a complete copy of wrong bytes was handed out"
    with pytest.raises(CorruptObject):
        store.read_bytes(obj)


def test_a_truncated_file_object_is_detected_too(file_store):
    obj = store.put_bytes(os.urandom(200_000))
    with open(object_path(file_store, obj.sha256), "r+b") as handle:
        handle.truncate(100_000)

    with pytest.raises(CorruptObject):
        store.read_bytes(obj)


def test_an_org_reaches_only_objects_it_holds(org):
    outsider = OrganizationFactory()
    obj = store.put_bytes(b"org data", org=org, kind="text", filename="a.txt")

    assert store.object_for_org(org, obj.sha256) == obj
    assert store.object_for_org(outsider, obj.sha256) is None

    store.put_bytes(b"org data", org=outsider)
    assert store.object_for_org(outsider, obj.sha256) == obj
    assert ObjectRef.objects.get(org=org).filename == "a.txt"


def test_a_manifest_entry_lets_its_org_read_the_object(org):
    blob = BlobFactory(org=org)
    obj = store.put_bytes(b"definition bytes")
    ManifestEntry.objects.create(org=org, revision=blob.revisions.get(), path="a.json", object=obj, size=obj.size)

    assert store.object_for_org(org, obj.sha256) == obj
    assert store.object_for_org(OrganizationFactory(), obj.sha256) is None


# --- Retention -----------------------------------------------------------------------------


def later(hours: float):
    return timezone.now() + timedelta(hours=hours)


def test_garbage_collection_removes_unreferenced_objects_after_the_retention_period(settings, org, file_store):
    settings.BLOB_RETENTION_HOURS = 24
    small = store.put_bytes(b"forgotten", org=org)
    large = store.put_bytes(os.urandom(100_000), org=org)

    assert store.collect_garbage(now=later(23)) == 0
    assert StoredObject.objects.count() == 2

    assert store.collect_garbage(now=later(25)) == 2
    assert not StoredObject.objects.exists()
    assert not ObjectRef.objects.exists()
    assert not object_path(file_store, large.sha256).exists()
    assert store.object_for_org(org, small.sha256) is None


def test_a_new_put_keeps_an_object_for_another_retention_period(settings, org):
    settings.BLOB_RETENTION_HOURS = 24
    obj = store.put_bytes(b"still wanted", org=org)
    ObjectRef.objects.update(last_put_at=timezone.now() - timedelta(hours=30))
    StoredObject.objects.update(created_at=timezone.now() - timedelta(hours=30))

    store.put_bytes(b"still wanted", org=org)

    assert store.collect_garbage() == 0
    assert store.object_for_org(org, obj.sha256) == obj
    assert store.collect_garbage(now=later(25)) == 1


def test_the_collector_running_between_a_file_put_and_its_manifest_entry_spares_the_object(settings, monkeypatch):
    settings.BLOB_RETENTION_HOURS = 24
    draft = BlobFactory().revisions.get()
    data = b'{"stored": "long ago"}'
    store.put_bytes(data)  # unreferenced since, and past the retention period
    StoredObject.objects.update(created_at=timezone.now() - timedelta(hours=48))
    put = store.put_bytes

    def put_then_collect(payload: bytes, **hold_for):
        obj = put(payload, **hold_for)
        store.collect_garbage()  # the hourly task, before the entry is written
        return obj

    monkeypatch.setattr(store, "put_bytes", put_then_collect)

    content.file_put(draft, "a.json", data)

    assert content.file_read(draft, "a.json") == data


def test_garbage_collection_keeps_objects_that_revisions_or_engines_reference(settings, org, monkeypatch):
    settings.BLOB_RETENTION_HOURS = 24
    in_manifest = store.put_bytes(b"in a revision", org=org)
    in_session = store.put_bytes(b"in a session", org=org)
    unreferenced = store.put_bytes(b"nobody's", org=org)
    blob = BlobFactory(org=org)
    ManifestEntry.objects.create(
        org=org, revision=blob.revisions.get(), path="a", object=in_manifest, size=in_manifest.size
    )
    monkeypatch.setattr(
        store, "_reference_sources", [lambda: StoredObject.objects.filter(sha256=in_session.sha256).values("sha256")]
    )

    assert store.collect_garbage(now=later(25)) == 1

    assert set(StoredObject.objects.values_list("sha256", flat=True)) == {in_manifest.sha256, in_session.sha256}
    assert not StoredObject.objects.filter(sha256=unreferenced.sha256).exists()


def test_the_hourly_beat_runs_the_garbage_collection_task(settings, org):
    from blobs.tasks import collect_garbage

    entry = next(item for item in settings.CELERY_BEAT_SCHEDULE.values() if item["task"] == collect_garbage.name)
    assert entry["schedule"] == 3600.0
    store.put_bytes(b"old", org=org)
    ObjectRef.objects.update(last_put_at=timezone.now() - timedelta(hours=settings.BLOB_RETENTION_HOURS + 1))
    StoredObject.objects.update(created_at=timezone.now() - timedelta(hours=settings.BLOB_RETENTION_HOURS + 1))

    assert collect_garbage.delay().get() == 1
    assert not StoredObject.objects.exists()


def test_the_health_check_is_the_configured_backends_own(settings, file_store):
    from blobhub import health
    from blobs.storage import _backend_for

    health.CHECKS["storage"]()
    assert file_store.is_dir()

    settings.BLOB_STORAGE_URL = "ftp://nowhere/objects"
    _backend_for.cache_clear()
    with pytest.raises(ValueError):
        health.CHECKS["storage"]()
