"""channels_redis's pub/sub layer, with each shard's Redis subscription kept once it has been made.

channels_redis reads a shard's pub/sub connection in one receiver task per event loop: while the connection
has a subscription the task waits for the next message, and while it has none the task sleeps 100 ms between
looks. A web process whose sockets have all closed (an operator going from the jobs page to a job's page: the
old page's socket closes before the new one connects) therefore delivered the first pushes of its next
socket up to 100 ms late (docs/performance.md, "WebSocket push").

This layer subscribes each shard to one more channel, its own name made up per process so that nothing is
ever published to it, before the first consumer's channel, and never drops it: the receiver waits on the
connection from then on. Only a process's very first socket can still wait for the receiver's first look.
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
            await shard.subscribe(self.kept_channel)  # after the first time: a set lookup under the shard's lock
        return await layer.new_channel(prefix)
