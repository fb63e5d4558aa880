"""The embedded default's worker: tasks sent by the web side run in the same process."""

import time
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from blobhub.celery import app
from blobhub.embedded import EmbeddedRuntime
from blobhub.models import IdempotencyRecord
from blobhub.tasks import purge_idempotency_records


def wait_for(condition, seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def embedded_worker(settings):
    # The worker's threads close their database connections after each task, as on the
    # embedded default's SQLite: on PostgreSQL they would keep them open (CONN_MAX_AGE), past
    # this test, whose worker stops while the process goes on.
    database = connections.settings["default"]
    kept = database["CONN_MAX_AGE"]
    database["CONN_MAX_AGE"] = 0
    app.conf.task_always_eager = False
    runtime = EmbeddedRuntime(concurrency=2, beat=False)
    runtime.start()
    yield runtime
    runtime.stop()
    app.conf.task_always_eager = True
    database["CONN_MAX_AGE"] = kept


@pytest.mark.django_db(transaction=True)
def test_a_task_sent_through_the_in_memory_broker_runs_in_the_embedded_worker(embedded_worker):
    stale = IdempotencyRecord.objects.create(caller="user:x", key="old", fingerprint="f")
    IdempotencyRecord.objects.filter(id=stale.id).update(created_at=timezone.now() - timedelta(hours=25))
    fresh = IdempotencyRecord.objects.create(caller="user:x", key="new", fingerprint="f")

    purge_idempotency_records.apply_async()

    assert wait_for(lambda: not IdempotencyRecord.objects.filter(id=stale.id).exists())
    assert IdempotencyRecord.objects.filter(id=fresh.id).exists()
