"""Blobs, revisions as manifests over a content-addressed store, metadata, operations, events."""

from django.db import models
from django.utils import timezone

from blobhub.models import VersionedRecord
from orgs.models import Organization, Role, User


class BlobType(models.TextChoices):
    WORKFLOW = "blobhub.compute.workflow"
    SCHEDULER = "blobhub.compute.scheduler"
    ONNX = "blobhub.model.onnx"


class Blob(VersionedRecord):
    class Visibility(models.TextChoices):
        PRIVATE = "private"
        PUBLIC = "public"

    class Status(models.TextChoices):
        ACTIVE = "active"
        DELETING = "deleting"

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="blobs")
    alias = models.CharField(max_length=42)
    type = models.CharField(max_length=64, choices=BlobType.choices)
    visibility = models.CharField(max_length=8, choices=Visibility.choices, default=Visibility.PRIVATE)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    description = models.CharField(max_length=1024, blank=True, default="")
    default_revision = models.ForeignKey(
        "Revision", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["org", "alias"], name="blob_unique_org_alias")]
        indexes = [models.Index(fields=["org", "type", "created_at"], name="blob_org_type_created")]

    def __str__(self) -> str:
        return f"{self.org_id}/{self.alias}"


class BlobMember(VersionedRecord):
    """A user's role on one blob (in addition to any org role)."""

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    blob = models.ForeignKey(Blob, on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="blob_memberships")
    role = models.CharField(max_length=8, choices=Role.choices)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["blob", "user"], name="blobmember_unique_blob_user")]


class StoredObject(models.Model):
    """One content-addressed object: its SHA-256, its size, and its bytes if small."""

    sha256 = models.CharField(max_length=64, primary_key=True)
    size = models.BigIntegerField()
    inline = models.BinaryField(null=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "stored object"

    def __str__(self) -> str:
        return f"{self.sha256[:12]} ({self.size} bytes)"


class ObjectRef(models.Model):
    """An organization's hold on an object through a put; it keeps the object alive for
    the retention period after the last put, and it is what lets the org read it."""

    id = models.BigAutoField(primary_key=True)
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    object = models.ForeignKey(StoredObject, on_delete=models.PROTECT, related_name="refs")
    kind = models.CharField(max_length=16, default="binary")
    filename = models.CharField(max_length=255, blank=True, default="")
    content_type = models.CharField(max_length=127, blank=True, default="")
    last_put_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["org", "object"], name="objectref_unique_org_object")]


class Revision(VersionedRecord):
    class Phase(models.TextChoices):
        DRAFT = "draft"
        COMMIT = "commit"
        SNAPSHOT = "snapshot"

    class Status(models.TextChoices):
        CREATING = "creating"
        READY = "ready"
        COMMITTING = "committing"
        DELETING = "deleting"
        FAILED = "failed"

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    blob = models.ForeignKey(Blob, on_delete=models.CASCADE, related_name="revisions")
    number = models.PositiveIntegerField()
    phase = models.CharField(max_length=8, choices=Phase.choices, default=Phase.DRAFT)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.READY)
    comment = models.CharField(max_length=200)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    tree_hash = models.CharField(max_length=64, blank=True, default="")
    failed_operation = models.ForeignKey(
        "Operation", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    failure = models.TextField(blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["blob", "number"], name="revision_unique_blob_number"),
        ]

    def __str__(self) -> str:
        return f"{self.blob_id} r{self.number} ({self.phase}/{self.status})"

    @property
    def is_frozen(self) -> bool:
        return self.phase != self.Phase.DRAFT


class ManifestEntryQuerySet(models.QuerySet):
    """Bulk writes refuse frozen revisions here too; the database trigger is the last word."""

    def _refuse_frozen(self) -> None:
        frozen = Revision.objects.filter(id__in=self.values("revision_id")).exclude(phase=Revision.Phase.DRAFT)
        if frozen.exists():
            raise ImmutableContent()

    def update(self, **kwargs):
        self._refuse_frozen()
        return super().update(**kwargs)

    def delete(self):
        self._refuse_frozen()
        return super().delete()


class ImmutableContent(Exception):
    """Committed and snapshot content never changes."""


class ManifestEntry(models.Model):
    """One file of a revision's content: a path and the object holding its bytes."""

    id = models.BigAutoField(primary_key=True)
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    revision = models.ForeignKey(Revision, on_delete=models.CASCADE, related_name="entries")
    path = models.CharField(max_length=1024)
    object = models.ForeignKey(StoredObject, on_delete=models.PROTECT, related_name="+")
    size = models.BigIntegerField()
    updated_at = models.DateTimeField(default=timezone.now)

    objects = ManifestEntryQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["revision", "path"], name="manifest_unique_revision_path")]
        verbose_name_plural = "manifest entries"

    def save(self, *args, **kwargs):
        # Model-layer guard of DESIGN §3; services never reach it for frozen revisions.
        if Revision.objects.filter(id=self.revision_id).exclude(phase=Revision.Phase.DRAFT).exists():
            raise ImmutableContent()
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        if Revision.objects.filter(id=self.revision_id).exclude(phase=Revision.Phase.DRAFT).exists():
            raise ImmutableContent()
        return super().delete(*args, **kwargs)


class Metadata(VersionedRecord):
    key = models.CharField(max_length=128)
    value = models.JSONField()

    class Meta:
        abstract = True


class BlobMetadata(Metadata):
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    blob = models.ForeignKey(Blob, on_delete=models.CASCADE, related_name="metadata")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["blob", "key"], name="blobmetadata_unique_blob_key")]


class RevisionMetadata(Metadata):
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    revision = models.ForeignKey(Revision, on_delete=models.CASCADE, related_name="metadata")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["revision", "key"], name="revisionmetadata_unique_revision_key")
        ]


class Operation(VersionedRecord):
    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        COMPLETED = "completed"
        FAILED = "failed"
        CANCELLED = "cancelled"

    FINAL = (Status.COMPLETED, Status.FAILED, Status.CANCELLED)

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    blob = models.ForeignKey(Blob, on_delete=models.CASCADE, related_name="operations")
    revision = models.ForeignKey(Revision, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    type = models.CharField(max_length=32)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    progress = models.FloatField(default=0.0)
    arguments = models.JSONField(default=dict)
    result = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    parts = models.JSONField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"{self.type} {self.id} ({self.status})"


class EventStream(models.Model):
    """The last sequence number handed out on one stream (a revision, an execution, ...)."""

    name = models.CharField(max_length=80, primary_key=True)
    last_sequence = models.BigIntegerField(default=0)


class Event(models.Model):
    """An event, stored before it is published (DESIGN §6); `sequence` counts per stream."""

    id = models.BigAutoField(primary_key=True)
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    stream = models.CharField(max_length=80)
    sequence = models.BigIntegerField()
    type = models.CharField(max_length=64)
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["stream", "sequence"], name="event_unique_stream_sequence")]
        indexes = [models.Index(fields=["stream", "created_at"], name="event_stream_created")]
