"""Sessions, their objects, executions and the durable record of every component run."""

from django.db import models

from blobhub.models import Record, VersionedRecord
from blobs.models import Blob, Revision, StoredObject
from orgs.models import Organization, User


class Session(VersionedRecord):
    class Status(models.TextChoices):
        OPEN = "open"
        CLOSED = "closed"

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    blob = models.ForeignKey(Blob, on_delete=models.CASCADE, related_name="+")
    revision = models.ForeignKey(Revision, on_delete=models.CASCADE, related_name="sessions")
    alias = models.CharField(max_length=42, null=True, blank=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN)
    description = models.CharField(max_length=1024, blank=True, default="")
    state = models.JSONField(default=dict)
    created_by = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["revision", "alias"], condition=models.Q(alias__isnull=False), name="session_unique_revision_alias"
            )
        ]

    def __str__(self) -> str:
        return f"session {self.alias or self.id}"


class SessionObject(Record):
    """A named value or file of a session, stored in the content store."""

    class Kind(models.TextChoices):
        VALUE = "value"
        FILE = "file"

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="session_objects")
    alias = models.CharField(max_length=1024)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    object = models.ForeignKey(StoredObject, on_delete=models.PROTECT, related_name="+")
    size = models.BigIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["session", "alias"], name="sessionobject_unique_alias")]


class Execution(Record):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        STOPPING = "stopping"
        COMPLETED = "completed"
        FAILED = "failed"
        STOPPED = "stopped"

    FINAL = (Status.COMPLETED, Status.FAILED, Status.STOPPED)

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="executions")
    revision = models.ForeignKey(Revision, on_delete=models.CASCADE, related_name="+")
    # Where the definition came from, pinned at creation: a later draft edit or a moved
    # default does not change what an execution runs.
    definition_revision = models.ForeignKey(Revision, on_delete=models.CASCADE, related_name="+")
    definition_alias = models.CharField(max_length=64)
    definition_object = models.ForeignKey(StoredObject, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    input_data = models.JSONField(default=list)
    output = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    deadline = models.DateTimeField()
    depth = models.PositiveSmallIntegerField(default=0)
    parent_step = models.ForeignKey("StepRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_by = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")
    api_key_id = models.UUIDField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["session", "created_at"], name="execution_session_created")]

    def __str__(self) -> str:
        return f"execution {self.id} ({self.status})"


class ExecutionObject(models.Model):
    """An object a step of the execution put: the execution holds it while it exists,
    since its outputs and records may name it long after the org's put hold lapses."""

    id = models.BigAutoField(primary_key=True)
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="+")
    object = models.ForeignKey(StoredObject, on_delete=models.PROTECT, related_name="+")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["execution", "object"], name="executionobject_unique_object")]

    def __str__(self) -> str:
        return f"{self.object_id[:12]} held by execution {self.execution_id}"


class StepRun(models.Model):
    """One component of one execution: recorded before anything after it starts."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        WAITING = "waiting"  # for a child execution (workflow.call)
        COMPLETED = "completed"
        FAILED = "failed"
        SKIPPED = "skipped"
        CANCELLED = "cancelled"

    DONE = (Status.COMPLETED, Status.FAILED, Status.SKIPPED, Status.CANCELLED)

    id = models.BigAutoField(primary_key=True)
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="steps")
    component_id = models.CharField(max_length=128)
    component_type = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    attempt = models.PositiveSmallIntegerField(default=0)
    inputs = models.JSONField(default=dict)
    outputs = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    not_before = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["execution", "component_id"], name="steprun_unique_component"),
        ]

    def __str__(self) -> str:
        return f"{self.component_id} ({self.status}, attempt {self.attempt})"
