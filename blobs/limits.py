"""Limits on what clients control, per blob type, and the `limit_exceeded` error."""

from django.conf import settings

from blobhub.api.errors import ApplicationError

CORE_LIMITS = {
    "core.blobs_per_organization": 10_000,
    "core.revisions_per_blob": 10_000,
    "core.files_per_revision": 10_000,
    "core.metadata_per_blob": 256,
    "core.metadata_per_revision": 256,
    # Counted when one is added: orgs the user administers, members, live (unrevoked) keys.
    "core.organizations_per_user": 100,
    "core.members_per_organization": 1_000,
    "core.members_per_blob": 1_000,
    "core.api_keys_per_organization": 100,
    "core.api_keys_per_blob": 100,
    "core.credentials_per_organization": 500,
}


class LimitExceeded(ApplicationError):
    def __init__(self, limit_id: str, value: int, held: int):
        super().__init__(
            "limit_exceeded",
            f"The limit {limit_id} of {value} is reached.",
            status=400,
            extra={"limit": {"id": limit_id, "value": value, "held": held}},
        )


def value(limit_id: str) -> int:
    """A limit's value: the settings' LIMITS override the defaults."""
    from blobs.registry import all_limits

    overrides = getattr(settings, "LIMITS", {})
    return overrides.get(limit_id, all_limits().get(limit_id, CORE_LIMITS.get(limit_id, 0)))


def check(limit_id: str, held: int, adding: int = 1) -> None:
    """Refuse when holding `held` and adding `adding` would pass the limit."""
    limit = value(limit_id)
    if held + adding > limit:
        raise LimitExceeded(limit_id, limit, held)
