"""Fault injection for the fault tests only; off unless GEDGE_FAULT_CRASH_MARKER is set.

A job whose original file name contains the marker makes the worker *process* die (os._exit) when the
named stage starts: a poison job, as an out-of-memory kill or a native crash in a decoder would be.
"""
from __future__ import annotations

import logging
import os

from django.conf import settings

logger = logging.getLogger(__name__)


def maybe_crash(original_name: str, stage: str, job_id: int) -> None:
    marker = settings.GEDGE_FAULT_CRASH_MARKER
    if marker and marker in original_name and stage == settings.GEDGE_FAULT_CRASH_STAGE:
        logger.error("fault injection: crashing this worker process", extra={"job_id": job_id, "stage": stage})
        os._exit(70)
