"""The embedded default's channel layer: in-memory, but safe to publish from any thread.

Channels' InMemoryChannelLayer keeps asyncio queues that belong to the event loop of
the ASGI server. The embedded worker publishes from its own threads (each
`async_to_sync` call runs on another loop), and touching those queues from there is
unsafe. This layer remembers the loop its consumers live on and hands every send
from elsewhere over to that loop.
"""

import asyncio

from channels.layers import InMemoryChannelLayer


class EmbeddedChannelLayer(InMemoryChannelLayer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._home_loop: asyncio.AbstractEventLoop | None = None

    def _claim_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._home_loop is None or self._home_loop.is_closed():
            self._home_loop = loop

    def _foreign(self) -> bool:
        home = self._home_loop
        return home is not None and not home.is_closed() and home is not asyncio.get_running_loop()

    async def _on_home_loop(self, coroutine):
        future = asyncio.run_coroutine_threadsafe(coroutine, self._home_loop)
        return await asyncio.wrap_future(future)

    async def new_channel(self, prefix="specific."):
        self._claim_loop()
        return await super().new_channel(prefix)

    async def receive(self, channel):
        self._claim_loop()
        return await super().receive(channel)

    async def group_add(self, group, channel):
        self._claim_loop()
        return await super().group_add(group, channel)

    async def group_discard(self, group, channel):
        if self._foreign():
            return await self._on_home_loop(super().group_discard(group, channel))
        return await super().group_discard(group, channel)

    async def send(self, channel, message):
        if self._foreign():
            return await self._on_home_loop(super().send(channel, message))
        return await super().send(channel, message)

    async def group_send(self, group, message):
        if self._foreign():
            return await self._on_home_loop(super().group_send(group, message))
        return await super().group_send(group, message)
