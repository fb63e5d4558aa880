"""The event table's batches (sequences handed out together, blocks that raise) and publishing."""

import logging

import pytest
from django.db import transaction

from blobs import events
from blobs.models import Event
from blobs.tests.support import GatedLayer, record
from orgs.tests.factories import OrganizationFactory

pytestmark = pytest.mark.django_db


def test_a_batch_writes_its_events_together_in_order_with_each_streams_next_sequences():
    org = OrganizationFactory()
    record(org, "s:a", "before")
    with transaction.atomic(), events.batched():
        queued = [record(org, "s:a", "one"), record(org, "s:b", "two"), record(org, "s:a", "three")]
        assert not Event.objects.exclude(type="before").exists()  # nothing written until the block ends
    assert [(event.stream, event.sequence) for event in queued] == [("s:a", 2), ("s:b", 1), ("s:a", 3)]
    stored = Event.objects.order_by("id").values_list("stream", "sequence", "type")
    assert list(stored) == [("s:a", 1, "before"), ("s:a", 2, "one"), ("s:b", 1, "two"), ("s:a", 3, "three")]


def test_a_nested_block_that_raises_takes_only_its_own_events_out_of_the_batch():
    org = OrganizationFactory()
    with transaction.atomic(), events.batched():
        record(org, "s:a", "kept")
        with pytest.raises(ValueError), transaction.atomic(), events.batched():
            record(org, "s:a", "dropped")
            record(org, "s:b", "dropped")
            raise ValueError("rolled back")
        with events.batched():
            record(org, "s:b", "kept too")
    stored = Event.objects.order_by("id").values_list("stream", "sequence", "type")
    assert list(stored) == [("s:a", 1, "kept"), ("s:b", 1, "kept too")]


def test_a_batch_that_raises_writes_nothing():
    org = OrganizationFactory()
    with pytest.raises(ValueError), transaction.atomic(), events.batched():
        record(org, "s:a", "lost")
        raise ValueError("rolled back")
    assert not Event.objects.exists()
    record(org, "s:a", "after")
    assert Event.objects.get().sequence == 1


def test_publishing_leaves_the_caller_at_once_and_sends_the_batches_in_order(monkeypatch, caplog):
    org = OrganizationFactory()
    layer = GatedLayer()
    monkeypatch.setattr(events, "get_channel_layer", lambda: layer)
    with transaction.atomic(), events.batched():
        first = [record(org, "s:a", "one"), record(org, "s:b", "two")]
    second = [record(org, "s:a", "three")]
    events.publish_all(first)  # would wait on the closed gate, and give up, if it waited
    events.publish_all(second)
    assert layer.sent == []
    layer.gate.set()
    events.flush()
    assert layer.sent == [("events.s.a", 1), ("events.s.b", 1), ("events.s.a", 2)]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_send_that_fails_is_logged_and_the_next_ones_still_go(monkeypatch, caplog):
    org = OrganizationFactory()
    layer = GatedLayer(failing_groups={"events.s.down"})
    layer.gate.set()
    monkeypatch.setattr(events, "get_channel_layer", lambda: layer)
    events.publish_all([record(org, "s:down", "lost"), record(org, "s:up", "sent")])
    events.publish_all([record(org, "s:up", "sent too")])
    events.flush()
    assert layer.sent == [("events.s.up", 1), ("events.s.up", 2)]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == ["could not publish event 1 of s:down"]
