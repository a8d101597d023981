"""WebSocket /ws/jobs/: a snapshot of the user's jobs on connect, then job.update pushes.

Per-user groups; a user with the permission jobs.view_job listens to the staff group (every job) instead.
Anonymous connections are refused. Who the socket belongs to is checked again before pushes, at most once a
second (RECHECK_EVERY_S): a user who logged out, was deactivated or changed password (the session is no longer
valid) gets the socket closed (4401); one who lost jobs.view_job goes back to their own group and is pushed
only their own jobs from then on (and one who gained it, every job).
"""
from __future__ import annotations

import json
import time
from importlib import import_module
from types import SimpleNamespace

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.contrib.auth import get_user

from jobs.access import sees_every_job
from jobs.lifecycle.broadcast import STAFF_GROUP, user_group
from jobs.models import Job
from jobs.serializers import job_payload

from .channel_layer import keep_subscribed

SNAPSHOT_LIMIT = 200
# A page asks for a snapshot again when it suspects it missed pushes; more often than this is refused (each
# snapshot reads up to SNAPSHOT_LIMIT jobs).
SNAPSHOT_EVERY_S = 1.0
# How often a socket re-reads its session and its user's permissions (one query or two), at the next push.
RECHECK_EVERY_S = 1.0


class JobsConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        await keep_subscribed(self.channel_layer)
        self.checked_at = time.monotonic()
        await self._join(await database_sync_to_async(sees_every_job)(user))
        await self.accept()
        await self.send_json({"type": "snapshot", "jobs": await self._snapshot(user)})

    async def disconnect(self, code):
        await self._leave()

    async def _join(self, sees_all: bool) -> None:
        self.sees_all = sees_all
        self.groups_joined = [STAFF_GROUP] if sees_all else [user_group(self.scope["user"].pk)]
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)

    async def _leave(self) -> None:
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)
        self.groups_joined = []

    async def _may_receive(self, job: dict) -> bool:
        """Whether this push may go out: the session and the permission, re-read at most once a second."""
        if time.monotonic() - self.checked_at >= RECHECK_EVERY_S:
            self.checked_at = time.monotonic()
            user = await self._current_user()
            if user is None:
                await self._leave()
                await self.close(code=4401)
                return False
            sees_all = await database_sync_to_async(sees_every_job)(user)
            if sees_all != self.sees_all:
                await self._leave()
                await self._join(sees_all)
        return self.sees_all or job.get("user") == self.scope["user"].username  # the owner's name

    @database_sync_to_async
    def _current_user(self):
        """The session's user as it is now (logged out, inactive or a changed password: None), read afresh."""
        session = self.scope.get("session")
        if session is None or session.session_key is None:
            return None
        fresh = import_module(settings.SESSION_ENGINE).SessionStore(session.session_key)
        user = get_user(SimpleNamespace(session=fresh))
        return user if user.is_authenticated and user.pk == self.scope["user"].pk else None

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
        if not await self._may_receive(event["job"]):
            return
        await self.send_json({"type": "job.update", "job": event["job"], "committed_at": event.get("committed_at")})

    @database_sync_to_async
    def _snapshot(self, user):
        return [job_payload(job) for job in Job.objects.visible_to(user).order_by("-id")[:SNAPSHOT_LIMIT]]
