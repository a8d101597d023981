"""Push job changes to browsers through the channel layer.

Group sends are at-most-once: the database is the truth, a push is a hint (pages re-read on reconnect).
Each user has a group; staff also listen to the staff group, which receives every job.
"""
from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from .models import Job

logger = logging.getLogger(__name__)
STAFF_GROUP = "jobs.staff"


def user_group(user_id: int) -> str:
    return f"jobs.user.{user_id}"


def push_job(job: Job) -> None:
    from .serializers import job_payload

    layer = get_channel_layer()
    if layer is None:
        return
    message = {"type": "job.update", "job": job_payload(job)}
    try:
        async_to_sync(_send)(layer, [user_group(job.user_id), STAFF_GROUP], message)
    except Exception:  # a lost push must never fail the transition that caused it
        logger.warning("push failed", exc_info=True, extra={"job_id": job.pk})


async def _send(layer, groups: list[str], message: dict) -> None:
    for group in groups:
        await layer.group_send(group, message)
