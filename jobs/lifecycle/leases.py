"""Leases on running segment stages, and handing work back when a worker shuts down.

A stage attempt owns its segment while the segment's row carries its ``attempt`` number and a recent
``heartbeat_at``. A heartbeat thread renews the lease every GEDGE_LEASE_TTL_S / 3; progress writes renew it
too. If the row no longer carries the attempt (the reaper took the segment over, or its job was cancelled
or failed) the attempt is told at its next batch boundary and stops without writing anything.

On SIGTERM Dramatiq calls ``before_worker_shutdown``; running stages then stop at their next batch boundary
and hand the segment back to its ready status (no iteration counted), so another worker resumes it within
the Pod's grace period.
"""
from __future__ import annotations

import logging
import os
import socket
import threading

from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from jobs.models import Segment
from jobs.workers.shutdown import SHUTTING_DOWN

from .transitions import JobInterrupted

logger = logging.getLogger(__name__)


class HandBack(Exception):
    """The worker is shutting down: give the segment back to its ready status."""


def host_name() -> str:
    """The machine a worker runs on: the start of its lease owner names (fair sharing compares it)."""
    return socket.gethostname()


def owner_name() -> str:
    return f"{host_name()}:{os.getpid()}:{threading.get_ident()}"


class Lease:
    """Heartbeat for one stage attempt, as a context manager; ``lost`` is set when the row moved on."""

    def __init__(self, segment_id: int, running: str, attempt: int, job_id: int = 0) -> None:
        self.segment_id, self.running, self.attempt, self.job_id = segment_id, running, attempt, job_id
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{segment_id}", daemon=True)

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def check(self) -> None:
        """Called at batch boundaries by the stage's progress callback."""
        if self.lost.is_set():
            raise JobInterrupted(f"segment {self.segment_id} lease lost (attempt {self.attempt})")
        if SHUTTING_DOWN.is_set():
            raise HandBack()

    def _beat(self) -> None:
        interval = max(0.2, settings.GEDGE_LEASE_TTL_S / 3)
        try:
            while not self._stop.wait(interval):
                try:
                    close_old_connections()
                    renewed = Segment.objects.filter(pk=self.segment_id, status=self.running,
                                                     attempt=self.attempt).update(heartbeat_at=timezone.now())
                except Exception:  # database away for a moment: try again at the next beat
                    logger.warning("heartbeat failed", exc_info=True, extra={"job_id": self.job_id})
                    continue
                if not renewed:
                    self.lost.set()
                    return
        finally:
            connection.close()
