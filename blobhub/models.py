import uuid

from django.db import models


def new_etag() -> str:
    return uuid.uuid4().hex


class Record(models.Model):
    """Base of every API-visible row: a UUID id and its creation and change times."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class VersionedRecord(Record):
    """A mutable record with an `etag` that changes on every write (for If-Match)."""

    etag = models.CharField(max_length=32, default=new_etag, editable=False)

    class Meta:
        abstract = True


class IdempotencyRecord(models.Model):
    """The first outcome of a POST sent with an `Idempotency-Key`, per caller, for 24 h."""

    class State(models.TextChoices):
        IN_PROGRESS = "in_progress"
        DONE = "done"

    id = models.BigAutoField(primary_key=True)
    caller = models.CharField(max_length=80)
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)
    state = models.CharField(max_length=16, choices=State.choices, default=State.IN_PROGRESS)
    response_status = models.PositiveSmallIntegerField(null=True)
    response_body = models.JSONField(null=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["caller", "key"], name="idempotency_unique_caller_key"),
        ]

    def __str__(self) -> str:
        return f"{self.caller} {self.key}"
