"""channels_redis's pub/sub layer, with each shard's Redis subscription kept once it has been made.

channels_redis reads a shard's pub/sub connection in one receiver task per event loop: while the connection
has a subscription the task waits for the next message, and while it has none the task sleeps 100 ms between
looks. A web process whose sockets have all closed (an operator going from the jobs page to a job's page: the
old page's socket closes before the new one connects) therefore delivered the first pushes of its next
socket up to 100 ms late (docs/performance.md, "WebSocket push").

This layer subscribes each shard to one more channel, its own name made up per process so that nothing is
ever published to it, before the first consumer's channel, and never drops it: the receiver waits on the
connection from then on.

And the kept channel is subscribed before the shard's receiver task is started. channels_redis starts the
receiver first and then subscribes; the receiver's first look comes while the SUBSCRIBE is still on its way
(a new Redis connection), finds no subscription and sleeps 100 ms, so a process's first socket had its first
pushes up to 100 ms late (the benchmark's "first 10 pushes after the socket connected to the fresh web
process": 69, 47, 24 ms, then 1.5-3.8). Subscribed first, the receiver's first look waits on Redis.
"""
from __future__ import annotations

import uuid

from channels_redis.pubsub import RedisPubSubChannelLayer


class KeptSubscriptionLayer(RedisPubSubChannelLayer):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.kept_channel = f"{kwargs.get('prefix', 'asgi')}__kept__{uuid.uuid4().hex}"

    async def new_channel(self, prefix: str = "specific.") -> str:
        layer = self._get_layer()  # this event loop's layer
        for shard in layer._shards:
            await self._keep(shard)
        return await layer.new_channel(prefix)

    async def _keep(self, shard) -> None:
        """``shard.subscribe(self.kept_channel)``, but with the subscription made before the receiver task is
        started (channels_redis's own order is the other way round). After the first time: a set lookup under
        the shard's lock."""
        async with shard._lock:
            if self.kept_channel not in shard._subscribed_to:
                shard._ensure_redis()
                await shard._pubsub.subscribe(self.kept_channel)
                shard._subscribed_to.add(self.kept_channel)
            shard._ensure_receiver()
