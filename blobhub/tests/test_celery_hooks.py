"""What the Celery processes do around tasks and at exit (blobhub.celery)."""

import threading

import pytest

from blobhub import celery as hooks
from blobs import events
from blobs.tests.support import GatedLayer, record
from orgs.tests.factories import OrganizationFactory

pytestmark = pytest.mark.django_db


def test_a_worker_process_sends_its_pending_live_events_before_it_exits(monkeypatch):
    org = OrganizationFactory()
    layer = GatedLayer()
    monkeypatch.setattr(events, "get_channel_layer", lambda: layer)
    events.publish_all([record(org, "s:a", "one"), record(org, "s:a", "two")])
    threading.Timer(0.2, layer.gate.set).start()  # the layer answers a little later

    hooks._send_pending_events()

    assert layer.sent == [("events.s.a", 1), ("events.s.a", 2)]


def test_an_eager_task_keeps_its_callers_transaction_connection():
    from django.db import connection, transaction

    class EagerTask:
        class request:
            is_eager = True

    with transaction.atomic():
        connection.ensure_connection()
        hooks._close_old_connections(sender=EagerTask)
        assert not connection.closed_in_transaction
        assert OrganizationFactory().pk  # the transaction goes on
