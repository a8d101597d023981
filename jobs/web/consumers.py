"""WebSocket /ws/jobs/: a snapshot of the user's jobs on connect, then job.update pushes.

Per-user groups (staff also join the staff group); anonymous connections are refused.
"""
from __future__ import annotations

import json
import time

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from jobs.lifecycle.broadcast import STAFF_GROUP, user_group
from jobs.models import Job
from jobs.serializers import job_payload

from .channel_layer import keep_subscribed

SNAPSHOT_LIMIT = 200
# A page asks for a snapshot again when it suspects it missed pushes; more often than this is refused (each
# snapshot reads up to SNAPSHOT_LIMIT jobs).
SNAPSHOT_EVERY_S = 1.0


class JobsConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        await keep_subscribed(self.channel_layer)
        self.groups_joined = [STAFF_GROUP] if user.is_staff else [user_group(user.pk)]
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        await self.send_json({"type": "snapshot", "jobs": await self._snapshot(user)})

    async def disconnect(self, code):
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        if text_data is None:  # a binary frame: the stock consumer raises and drops the connection
            await self.send_error("bad_message", "send text frames holding a JSON object")
            return
        await super().receive(text_data=text_data, **kwargs)

    @classmethod
    async def decode_json(cls, text_data):
        """The documented hook for parsing: anything but a JSON object becomes None (answered, not a crash)."""
        try:
            content = json.loads(text_data)
        except ValueError:
            return None
        return content if isinstance(content, dict) else None

    async def receive_json(self, content, **kwargs):
        if content is None:
            await self.send_error("bad_message", 'send a JSON object, such as {"type": "snapshot"}')
        elif content.get("type") != "snapshot":
            await self.send_error("unknown_type", 'the only message a page sends is {"type": "snapshot"}')
        elif (wait := getattr(self, "last_snapshot", -SNAPSHOT_EVERY_S) + SNAPSHOT_EVERY_S - time.monotonic()) > 0:
            await self.send_error("too_many_snapshots", f"one snapshot a second; ask again in {wait:.1f} s")
        else:  # a page that suspects it missed pushes asks again
            self.last_snapshot = time.monotonic()
            await self.send_json({"type": "snapshot", "jobs": await self._snapshot(self.scope["user"])})

    async def send_error(self, code: str, message: str) -> None:
        await self.send_json({"type": "error", "error": {"code": code, "message": message}})

    async def job_update(self, event):
        await self.send_json({"type": "job.update", "job": event["job"], "committed_at": event.get("committed_at")})

    @database_sync_to_async
    def _snapshot(self, user):
        return [job_payload(job) for job in Job.objects.visible_to(user).order_by("-id")[:SNAPSHOT_LIMIT]]
