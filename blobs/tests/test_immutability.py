"""Committed content is immutable in the services, the model layer and the database itself."""

import pytest
from django.db import IntegrityError, connection, transaction

from blobs import store
from blobs.models import ImmutableContent, ManifestEntry, Revision
from blobs.services import content
from blobs.services.revisions import revision_commit_run, tree_hash
from blobs.tests.factories import BlobFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def committed():
    blob = BlobFactory()
    revision = blob.revisions.get()
    content.file_put(revision, "model.json", b'{"a": 1}')
    Revision.objects.filter(id=revision.id).update(phase="commit", tree_hash=tree_hash(revision))
    revision.refresh_from_db()
    return revision


def test_the_service_refuses_a_write_to_a_committed_revision(committed):
    with pytest.raises(Exception) as raised:
        content.file_put(committed, "model.json", b"changed")
    assert getattr(raised.value, "code", None) == "revision_not_writable"


def test_a_raw_orm_update_of_committed_content_fails(committed):
    other = store.put_bytes(b"other bytes")
    with pytest.raises((ImmutableContent, IntegrityError)):
        with transaction.atomic():
            ManifestEntry.objects.filter(revision=committed).update(object=other, size=other.size)
    assert store.read_bytes(ManifestEntry.objects.get(revision=committed).object) == b'{"a": 1}'


def test_the_database_itself_refuses_raw_sql_on_committed_content(committed):
    other = store.put_bytes(b"other bytes")
    table = ManifestEntry._meta.db_table
    for statement, params in [
        (f"UPDATE {table} SET object_id = %s WHERE revision_id = %s", [other.sha256, committed.id.hex]),
        (f"DELETE FROM {table} WHERE revision_id = %s", [committed.id.hex]),
    ]:
        if connection.vendor == "postgresql":
            params[-1] = str(committed.id)
        with pytest.raises(IntegrityError):
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(statement, params)
    entry = ManifestEntry(org_id=committed.org_id, revision=committed, path="new.json", object=other, size=other.size)
    with pytest.raises((ImmutableContent, IntegrityError)):
        with transaction.atomic():
            entry.save()
    assert ManifestEntry.objects.filter(revision=committed).count() == 1


def test_a_committed_revision_cannot_go_back_to_draft_or_change_its_tree_hash(committed):
    for change in ({"phase": "draft"}, {"tree_hash": "0" * 64}):
        with pytest.raises(IntegrityError):
            with transaction.atomic():
                Revision.objects.filter(id=committed.id).update(**change)


def test_drafts_stay_writable_at_every_layer():
    blob = BlobFactory()
    draft = blob.revisions.get()
    content.file_put(draft, "a.json", b"1")
    ManifestEntry.objects.filter(revision=draft).update(size=1)
    ManifestEntry.objects.filter(revision=draft).delete()
    assert not ManifestEntry.objects.exists()


def test_a_redelivered_commit_task_does_not_commit_twice():
    blob = BlobFactory()
    draft = blob.revisions.get()
    from blobs.models import Operation

    operation = Operation.objects.create(org=blob.org, blob=blob, revision=draft, type="commit")
    Revision.objects.filter(id=draft.id).update(status="committing")
    revision_commit_run(str(operation.id))
    revision_commit_run(str(operation.id))
    operation.refresh_from_db()
    assert operation.status == "completed"
    from blobs.models import Event

    assert Event.objects.filter(type="blob.default_changed").count() == 1
