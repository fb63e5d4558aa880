"""The real Celery worker process runs tasks that the web side sends through Redis."""

from datetime import timedelta

import pytest
from celery.result import EagerResult
from django.utils import timezone

from blobhub.models import IdempotencyRecord
from blobhub.tasks import purge_idempotency_records
from tests.processes import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _record(key: str) -> IdempotencyRecord:
    return IdempotencyRecord.objects.create(caller="user:integration", key=key, fingerprint="0" * 64)


def test_the_worker_process_purges_idempotency_records_past_the_replay_window(tasks_go_through_the_broker):
    expired, fresh = _record("expired"), _record("fresh")
    # created_at is auto_now_add, so only an UPDATE can move it into the past.
    IdempotencyRecord.objects.filter(id=expired.id).update(created_at=timezone.now() - timedelta(hours=25))

    result = purge_idempotency_records.apply_async()

    assert not isinstance(result, EagerResult), "the task ran in the test process, not in the worker"
    wait_for(
        lambda: not IdempotencyRecord.objects.filter(id=expired.id).exists(),
        timeout=30,
        what="the worker deleting the expired record",
    )
    assert IdempotencyRecord.objects.filter(id=fresh.id).exists()
