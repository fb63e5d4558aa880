"""The event table's batches: sequences handed out together, and blocks that raise."""

import pytest
from django.db import transaction

from blobs import events
from blobs.models import Event
from orgs.tests.factories import OrganizationFactory

pytestmark = pytest.mark.django_db


def record(org, stream, type):
    return events.record(org_id=org.id, stream=stream, type=type)


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
