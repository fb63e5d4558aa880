"""`Idempotency-Key` on POST: the first outcome is stored per caller for 24 h and replayed."""

import hashlib
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from blobhub.api.errors import Conflict, InvalidRequest
from blobhub.models import IdempotencyRecord

HEADER = "HTTP_IDEMPOTENCY_KEY"
MAX_KEY_LENGTH = 255


class Replay(Exception):
    """Raised to answer with a stored outcome instead of running the view again."""

    def __init__(self, status: int, body: dict):
        self.status = status
        self.body = body


def requested_key(request) -> str | None:
    """The `Idempotency-Key` of a POST, not yet checked: `begin` checks it."""
    return request.META.get(HEADER) if request.method == "POST" else None


def fingerprint(request) -> str:
    digest = hashlib.sha256()
    digest.update(f"{request.method} {request.path}\n".encode())
    digest.update(request.body)
    return digest.hexdigest()


def begin(caller: str, key: str, request_fingerprint: str) -> IdempotencyRecord:
    """Claim the key for this request, or raise Replay / a 409 (a 400 for a malformed key)."""
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidRequest(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters.",
            [{"path": "Idempotency-Key", "message": "Bad length."}],
        )
    expired_before = timezone.now() - timedelta(hours=settings.IDEMPOTENCY_TTL_HOURS)
    IdempotencyRecord.objects.filter(caller=caller, key=key, created_at__lt=expired_before).delete()
    try:
        # A savepoint, so that losing the race leaves an enclosing transaction usable.
        with transaction.atomic():
            return IdempotencyRecord.objects.create(caller=caller, key=key, fingerprint=request_fingerprint)
    except IntegrityError:
        pass
    existing = IdempotencyRecord.objects.filter(caller=caller, key=key).first()
    if existing is None:  # finished and released between our insert and this read
        return begin(caller, key, request_fingerprint)
    if existing.fingerprint != request_fingerprint:
        raise Conflict("idempotency_key_reused", "This Idempotency-Key was used with a different request.")
    if existing.state == IdempotencyRecord.State.IN_PROGRESS:
        raise Conflict("idempotency_key_in_progress", "A request with this Idempotency-Key is still running.")
    raise Replay(existing.response_status, existing.response_body)


def finish(record: IdempotencyRecord, status: int, body) -> None:
    """Keep a definite outcome; release the key after a server fault so a retry can run."""
    if status >= 500 or not isinstance(body, dict):
        IdempotencyRecord.objects.filter(id=record.id).delete()
        return
    IdempotencyRecord.objects.filter(id=record.id).update(
        state=IdempotencyRecord.State.DONE, response_status=status, response_body=body
    )


def purge_expired() -> int:
    expired_before = timezone.now() - timedelta(hours=settings.IDEMPOTENCY_TTL_HOURS)
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=expired_before).delete()
    return deleted

