"""Django's Redis cache with one client, and so one connection pool, per process.

Django keeps a cache object per thread and per async context (``django.core.cache.caches``), and its
``RedisCache`` builds a ``RedisCacheClient`` with pools of its own for each of them, with no ``close()``. Under
ASGI every request that touches the cache (here: the upload throttle) gets a new object, a new pool and a new
Redis connection, which stays open until the garbage collector finds it: a web process held 58 Redis
connections after 80 uploads. The client is thread-safe (redis-py's pool), so one per process serves them all.
Known upstream: django/django pull request 18459.
"""
from __future__ import annotations

import threading

from django.core.cache.backends.redis import RedisCache
from django.utils.functional import cached_property

_clients: dict[tuple, object] = {}
_lock = threading.Lock()


class SharedRedisCache(RedisCache):
    @cached_property
    def _cache(self):  # RedisCache's own builds a client per cache object; this one finds the process's
        key = (tuple(self._servers), repr(sorted(self._options.items())))
        client = _clients.get(key)
        if client is None:
            with _lock:
                client = _clients.get(key)
                if client is None:
                    client = _clients[key] = self._class(self._servers, **self._options)
        return client
