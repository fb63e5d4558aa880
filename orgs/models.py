import uuid

from django.contrib.auth.models import AbstractUser
from django.db import models
from django.utils import timezone

from blobhub.models import Record, VersionedRecord


class Role(models.TextChoices):
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return ROLE_RANK[self]

    def allows(self, needed: "Role") -> bool:
        return ROLE_RANK[self] >= ROLE_RANK[needed]


ROLE_RANK = {Role.READ: 1, Role.WRITE: 2, Role.ADMIN: 3}


class User(AbstractUser):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)

    @property
    def alias(self) -> str:
        return self.username

    @property
    def created_at(self):
        return self.date_joined


class Organization(VersionedRecord):
    alias = models.CharField(max_length=42, unique=True)
    name = models.CharField(max_length=128)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return self.alias


class Membership(VersionedRecord):
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=8, choices=Role.choices)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["org", "user"], name="membership_unique_org_user"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.org} ({self.role})"


class ApiKeyQuerySet(models.QuerySet):
    def usable(self) -> "ApiKeyQuerySet":
        now = timezone.now()
        return self.filter(revoked_at__isnull=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)
        )


class ApiKey(Record):
    """An org-scoped key. The secret is shown once; the row keeps a lookup id and a hash."""

    class KeyRole(models.TextChoices):
        READ = "read"
        WRITE = "write"

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="api_keys")
    # A blob-scoped key holds its role on that one blob and nothing in the org.
    blob = models.ForeignKey("blobs.Blob", null=True, blank=True, on_delete=models.CASCADE, related_name="api_keys")
    role = models.CharField(max_length=8, choices=KeyRole.choices)
    description = models.CharField(max_length=256, blank=True, default="")
    lookup = models.CharField(max_length=16, unique=True, editable=False)
    hashed_key = models.CharField(max_length=64, editable=False)
    created_by = models.ForeignKey(User, on_delete=models.PROTECT, related_name="+")
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.org} {self.role} key {self.lookup}"

    @property
    def is_usable(self) -> bool:
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > timezone.now()


class Credential(VersionedRecord):
    """A secret the org's components use by alias; stored encrypted, never returned."""

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="credentials")
    alias = models.CharField(max_length=42)
    provider = models.CharField(max_length=64)
    description = models.CharField(max_length=256, blank=True, default="")
    ciphertext = models.TextField(editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["org", "alias"], name="credential_unique_org_alias"),
        ]

    def __str__(self) -> str:
        return f"{self.org}/{self.alias}"


class AuditEntry(models.Model):
    """Who did what to which target, when and from where. Never holds a secret."""

    id = models.BigAutoField(primary_key=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    org = models.ForeignKey(Organization, null=True, on_delete=models.SET_NULL, related_name="+")
    actor_user = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")
    actor_api_key = models.ForeignKey(ApiKey, null=True, on_delete=models.SET_NULL, related_name="+")
    actor = models.CharField(max_length=200)
    action = models.CharField(max_length=64)
    target_type = models.CharField(max_length=64)
    target_id = models.CharField(max_length=64)
    changes = models.JSONField(default=dict)
    client_ip = models.GenericIPAddressField(null=True)

    class Meta:
        verbose_name_plural = "audit entries"
        indexes = [models.Index(fields=["org", "created_at"], name="audit_org_created")]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.target_type}:{self.target_id}"
