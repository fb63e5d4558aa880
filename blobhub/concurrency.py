"""Optimistic concurrency: writes that carry the etag they were based on."""

from django.db import models
from django.utils import timezone

from blobhub.api.errors import AccessDenied, PreconditionFailed
from blobhub.models import new_etag


def versioned_update(instance: models.Model, if_match: str | None, **changes) -> models.Model:
    """Apply `changes` in one conditional UPDATE; a stale `if_match` is a 412.

    The check and the write are one statement, so of two writers holding the same
    etag exactly one succeeds, on every database.
    """
    rows = type(instance)._default_manager.filter(pk=instance.pk)
    if if_match not in (None, "*"):
        rows = rows.filter(etag=if_match)
    changes = {**changes, "etag": new_etag(), "updated_at": timezone.now()}
    if rows.update(**changes) == 0:
        if if_match not in (None, "*"):
            raise PreconditionFailed()
        raise AccessDenied()
    for field, value in changes.items():
        setattr(instance, field, value)
    return instance


def check_if_match(instance: models.Model, if_match: str | None) -> None:
    """A delete's precondition: a stale `if_match` is a 412. The row is read locked, so a
    write racing the delete (which changes the etag) lands before or after, never between;
    call it inside the delete's transaction."""
    if if_match in (None, "*"):
        return
    rows = type(instance)._default_manager.select_for_update().filter(pk=instance.pk)
    current = rows.values_list("etag", flat=True).first()
    if current is None:
        raise AccessDenied()
    if current != if_match:
        raise PreconditionFailed()
