"""Keeping the pub/sub channel layer's Redis subscription alive between WebSockets, through its public API.

channels_redis's pub/sub layer reads Redis in one receiver task per event loop. While the loop has a
subscription the task waits for the next message; while it has none it sleeps 100 ms between looks. So a web
process whose sockets had all closed (a person going from one page to the next: the old page's socket closes
before the new one connects) delivered the next socket's first pushes up to 100 ms late.

The first consumer on each event loop therefore asks the layer for one more channel (``new_channel``, the
layer's own API), which nothing ever sends to and nobody ever releases: the loop stays subscribed, and the
receiver waits on Redis from then on. What this cannot change, and upstream should (docs/upstream.md): the
layer starts its receiver before its first SUBSCRIBE is on the wire, so a fresh process's very first pushes
can still wait one 100 ms nap.
"""
from __future__ import annotations

import asyncio
import weakref

from channels_redis.pubsub import RedisPubSubChannelLayer

_kept: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


async def keep_subscribed(layer) -> None:
    """Hold one never-used channel on this event loop (once per loop; a no-op for other layers)."""
    if not isinstance(layer, RedisPubSubChannelLayer):
        return
    loop = asyncio.get_running_loop()
    if loop in _kept:
        return
    _kept.add(loop)  # before the await: two sockets connecting at once keep one channel, not two
    await layer.new_channel("kept.")
