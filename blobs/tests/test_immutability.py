"""Committed content is immutable in the services, the model layer and the database itself."""

import pytest
from django.db import IntegrityError, connection, models, transaction
from django.test import Client
from django.urls import reverse

from blobs import store
from blobs.models import Blob, ImmutableContent, ManifestEntry, Revision
from blobs.services import content
from blobs.services.revisions import revision_commit_run, tree_hash
from blobs.tests.factories import BlobFactory
from orgs.models import AuditEntry, Organization
from orgs.tests.factories import OrganizationFactory, UserFactory

pytestmark = pytest.mark.django_db


def blob_with_committed_content(**fields) -> Blob:
    blob = BlobFactory(**fields)
    revision = blob.revisions.get()
    content.file_put(revision, "model.json", b'{"a": 1}')
    Revision.objects.filter(id=revision.id).update(phase="commit", tree_hash=tree_hash(revision))
    return blob


@pytest.fixture
def committed():
    return blob_with_committed_content().revisions.get()


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


# --- Deletes by an operator in Django admin ----------------------------------------------------------


@pytest.fixture
def operator() -> Client:
    client = Client()
    client.force_login(UserFactory(username="operator", is_staff=True, is_superuser=True))
    return client


def admin_delete(client: Client, objects: list[models.Model], bulk: bool):
    """Delete through the admin's delete page, or its "delete selected" action with `bulk`."""
    meta = objects[0]._meta
    prefix = f"admin:{meta.app_label}_{meta.model_name}"
    if bulk:
        selected = [str(obj.pk) for obj in objects]
        body = {"action": "delete_selected", "_selected_action": selected, "post": "yes"}
        return client.post(reverse(f"{prefix}_changelist"), body)
    [obj] = objects
    return client.post(reverse(f"{prefix}_delete", args=[obj.pk]), {"post": "yes"})


@pytest.mark.parametrize("bulk", [False, True], ids=["single", "bulk"])
def test_an_operator_deletes_blobs_with_committed_content_in_the_admin(operator, bulk):
    blobs = [blob_with_committed_content() for _ in range(2 if bulk else 1)]
    assert admin_delete(operator, blobs, bulk).status_code == 302
    assert not Blob.objects.exists() and not ManifestEntry.objects.exists()
    deleted = AuditEntry.objects.filter(action="blob.delete", actor="user operator")
    assert sorted(deleted.values_list("target_id", flat=True)) == sorted(str(blob.id) for blob in blobs)


@pytest.mark.parametrize("bulk", [False, True], ids=["single", "bulk"])
def test_an_operator_deletes_orgs_holding_committed_content_in_the_admin(operator, bulk):
    orgs = [OrganizationFactory() for _ in range(2 if bulk else 1)]
    for org in orgs:
        blob_with_committed_content(org=org)
    kept = blob_with_committed_content()
    assert admin_delete(operator, orgs, bulk).status_code == 302
    assert list(Organization.objects.all()) == [kept.org]
    assert list(Blob.objects.all()) == [kept] and ManifestEntry.objects.get().revision.blob == kept
    deleted = AuditEntry.objects.filter(action="organization.delete", actor="user operator")
    assert sorted(deleted.values_list("target_id", flat=True)) == sorted(str(org.id) for org in orgs)
