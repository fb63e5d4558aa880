"""The embedded channel layer delivers what worker threads publish to consumers on the server's loop.

A Celery worker thread publishes with `async_to_sync(layer.group_send)`, which runs the send on
an event loop of its own; the consumer waits in `receive` on the ASGI server's loop.
"""

import asyncio
import threading

from asgiref.sync import async_to_sync

from blobhub.channel_layer import EmbeddedChannelLayer

DEADLINE_SECONDS = 30
GROUP = "revision.0f0e"


def publish_from_a_thread(layer: EmbeddedChannelLayer, messages: list[dict], group: str = GROUP) -> tuple:
    """Start a plain thread that publishes `messages` the way a worker task does."""
    failures: list[BaseException] = []

    def work() -> None:
        try:
            for message in messages:
                async_to_sync(layer.group_send)(group, message)
        except BaseException as exc:  # reported by the test, not lost in the thread
            failures.append(exc)

    thread = threading.Thread(target=work, name="worker-thread", daemon=True)
    thread.start()
    return thread, failures


async def receive_n(layer: EmbeddedChannelLayer, channel: str, count: int) -> list[dict]:
    received = []
    async with asyncio.timeout(DEADLINE_SECONDS):
        while len(received) < count:
            received.append(await layer.receive(channel))
    return received


async def finish(thread: threading.Thread, failures: list) -> None:
    await asyncio.to_thread(thread.join, DEADLINE_SECONDS)
    assert not thread.is_alive(), "the publishing thread is stuck"
    assert not failures, failures


async def test_group_sends_from_a_worker_thread_reach_a_receiver_on_its_own_loop_in_order():
    layer = EmbeddedChannelLayer()
    channel = await layer.new_channel()
    await layer.group_add(GROUP, channel)
    messages = [{"type": "revision.event", "sequence": n} for n in range(500)]

    thread, failures = publish_from_a_thread(layer, messages)
    received = await receive_n(layer, channel, len(messages))

    await finish(thread, failures)
    assert [message["sequence"] for message in received] == list(range(500))


async def test_every_subscriber_of_a_group_gets_every_message():
    layer = EmbeddedChannelLayer()
    channels = [await layer.new_channel() for _ in range(3)]
    for channel in channels:
        await layer.group_add(GROUP, channel)
    messages = [{"type": "revision.event", "sequence": n} for n in range(50)]

    thread, failures = publish_from_a_thread(layer, messages)
    received = await asyncio.gather(*(receive_n(layer, channel, len(messages)) for channel in channels))

    await finish(thread, failures)
    for per_channel in received:
        assert [message["sequence"] for message in per_channel] == list(range(50))


async def test_several_worker_threads_each_keep_their_own_order():
    layer = EmbeddedChannelLayer()
    channel = await layer.new_channel()
    await layer.group_add(GROUP, channel)
    workers = [
        publish_from_a_thread(layer, [{"type": "e", "worker": w, "sequence": n} for n in range(60)]) for w in range(4)
    ]

    received = await receive_n(layer, channel, 4 * 60)

    for thread, failures in workers:
        await finish(thread, failures)
    for worker in range(4):
        assert [m["sequence"] for m in received if m["worker"] == worker] == list(range(60))


async def test_a_group_send_from_the_receivers_own_loop_is_delivered_too():
    layer = EmbeddedChannelLayer()
    channel = await layer.new_channel()
    await layer.group_add(GROUP, channel)
    await layer.group_send(GROUP, {"type": "e", "sequence": 1})
    assert await receive_n(layer, channel, 1) == [{"type": "e", "sequence": 1}]


async def test_a_channel_discarded_from_another_thread_gets_nothing_more():
    layer = EmbeddedChannelLayer()
    kept, dropped = await layer.new_channel(), await layer.new_channel()
    await layer.group_add(GROUP, kept)
    await layer.group_add(GROUP, dropped)

    def discard_then_publish() -> None:
        async_to_sync(layer.group_discard)(GROUP, dropped)
        async_to_sync(layer.group_send)(GROUP, {"type": "e", "sequence": 7})

    await asyncio.to_thread(discard_then_publish)

    assert await receive_n(layer, kept, 1) == [{"type": "e", "sequence": 7}]
    assert dropped not in layer.groups.get(GROUP, {})
