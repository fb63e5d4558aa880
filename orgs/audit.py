"""The audit log: every mutating action, with who, what, target, when and from where."""

from django.db import models

from orgs.models import AuditEntry, Organization
from orgs.principal import Principal


def audit(
    principal: Principal,
    action: str,
    target: models.Model,
    *,
    org: Organization | None = None,
    changes: dict | None = None,
) -> AuditEntry:
    """Record an action in the caller's transaction. `changes` must never hold a secret."""
    return AuditEntry.objects.create(
        org=org,
        actor_user=principal.user,
        actor_api_key=principal.api_key,
        actor=principal.label,
        action=action,
        target_type=target._meta.label_lower,
        target_id=str(target.pk),
        changes=changes or {},
        client_ip=principal.client_ip,
    )
