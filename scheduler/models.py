"""The active schedules of each scheduler blob's default revision, and their firing history."""

import uuid

from django.db import models

from blobs.models import Blob, Revision
from orgs.models import Organization


class ActiveSchedule(models.Model):
    """A schedule of a blob's default revision, with when it fires next.

    Rebuilt from the revision's `schedules/<id>.json` files whenever the default moves;
    `next_fire_at` is NULL for a schedule that will not fire (disabled, completed, past
    its window), so the tick's index holds only schedules that can fire.
    """

    class State(models.TextChoices):
        ACTIVE = "active"
        COMPLETED = "completed"

    id = models.BigAutoField(primary_key=True)
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    blob = models.ForeignKey(Blob, on_delete=models.CASCADE, related_name="+")
    revision = models.ForeignKey(Revision, on_delete=models.CASCADE, related_name="+")
    schedule_id = models.UUIDField()
    document = models.JSONField()
    state = models.CharField(max_length=16, choices=State.choices, default=State.ACTIVE)
    next_fire_at = models.DateTimeField(null=True, blank=True)
    last_execution_id = models.UUIDField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["blob", "schedule_id"], name="activeschedule_unique_blob_schedule")]
        indexes = [models.Index(fields=["next_fire_at"], name="activeschedule_next_fire")]


class Firing(models.Model):
    """One firing (or recorded miss) of a schedule: unique per (schedule, scheduled_for)."""

    class Status(models.TextChoices):
        SUCCESS = "success"
        ACCESS_ERROR = "access_error"
        INVOCATION_ERROR = "invocation_error"
        SKIPPED = "skipped"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    blob = models.ForeignKey(Blob, on_delete=models.CASCADE, related_name="+")
    schedule_id = models.UUIDField()
    scheduled_for = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    invocation_target_type = models.CharField(max_length=16, default="workflow")
    invocation_target = models.JSONField()
    status = models.CharField(max_length=20, choices=Status.choices)
    result = models.JSONField(default=dict)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["schedule_id", "scheduled_for"], name="firing_unique_schedule_time"),
        ]
        indexes = [models.Index(fields=["schedule_id", "created_at"], name="firing_schedule_created")]
