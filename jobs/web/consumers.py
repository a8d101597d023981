"""WebSocket /ws/jobs/: a snapshot of the user's jobs on connect, then job.update pushes.

Per-user groups (staff also join the staff group); anonymous connections are refused.
"""
from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from jobs.lifecycle.broadcast import STAFF_GROUP, user_group
from jobs.models import Job
from jobs.serializers import job_payload

from .channel_layer import keep_subscribed

SNAPSHOT_LIMIT = 200


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

    async def receive_json(self, content, **kwargs):
        if content.get("type") == "snapshot":  # a page that suspects it missed pushes asks again
            await self.send_json({"type": "snapshot", "jobs": await self._snapshot(self.scope["user"])})

    async def job_update(self, event):
        await self.send_json({"type": "job.update", "job": event["job"], "committed_at": event.get("committed_at")})

    @database_sync_to_async
    def _snapshot(self, user):
        return [job_payload(job) for job in Job.objects.visible_to(user).order_by("-id")[:SNAPSHOT_LIMIT]]
