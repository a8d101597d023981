"""Worker shutdown flag. Kept free of Django model imports: Dramatiq loads this middleware early."""
from __future__ import annotations

import logging
import threading

import dramatiq

logger = logging.getLogger(__name__)
SHUTTING_DOWN = threading.Event()


class GracefulShutdown(dramatiq.Middleware):
    """Flags SHUTTING_DOWN as soon as the worker starts to stop (SIGTERM); see jobs/lifecycle/leases.py."""

    def after_worker_boot(self, broker, worker):
        SHUTTING_DOWN.clear()  # a new worker in the same process (tests, the embedded mode) starts fresh

    def before_worker_shutdown(self, broker, worker):
        logger.info("worker shutting down: running stages hand their jobs back at the next batch")
        SHUTTING_DOWN.set()

    def after_worker_shutdown(self, broker, worker):
        SHUTTING_DOWN.clear()  # nothing runs any more; code run later in this process is not being stopped
