"""Push job changes to browsers through the channel layer.

Group sends are at-most-once: the database is the truth, a push is a hint (pages re-read on reconnect).
Each user has a group; the staff group receives every job, and a socket listens to it instead of its user's
group while its user holds the permission jobs.view_job (jobs/web/consumers.py re-checks that at each push).
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from jobs.models import Job
from jobs.serializers import job_payload

logger = logging.getLogger(__name__)
STAFF_GROUP = "jobs.staff"
SEND_TIMEOUT_S = 5


def user_group(user_id: int) -> str:
    return f"jobs.user.{user_id}"


class _SenderLoop:
    """One event loop per process for channel-layer sends from synchronous code.

    ``async_to_sync`` runs each call in a fresh event loop, and channels_redis keeps its connections per loop,
    so every push paid for a new Redis connection (2.7 ms median here). A long-lived loop keeps them open.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def run(self, coro) -> None:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                self._loop = asyncio.new_event_loop()
                threading.Thread(target=self._loop.run_forever, name="channel-sender", daemon=True).start()
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=SEND_TIMEOUT_S)


_sender = _SenderLoop()


def push_job(job: Job) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    # committed_at: pushes run right after the transition's commit (on_commit); clients can measure delivery.
    message = {"type": "job.update", "job": job_payload(job), "committed_at": time.time()}
    groups = [user_group(job.user_id), STAFF_GROUP]
    try:
        if type(layer).__module__.startswith("channels_redis"):  # keep its connections on one loop
            _sender.run(_send(layer, groups, message))
        else:  # the in-memory layer of the embedded mode lives in the web's own loop
            async_to_sync(_send)(layer, groups, message)
    except Exception:  # a lost push must never fail the transition that caused it
        logger.warning("push failed", exc_info=True, extra={"job_id": job.pk})


async def _send(layer, groups: list[str], message: dict) -> None:
    for group in groups:
        await layer.group_send(group, message)
