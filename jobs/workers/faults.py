"""Fault injection for the fault tests only; off unless GEDGE_FAULT_CRASH_MARKER is set.

A job whose original file name contains the marker makes the worker *process* die (os._exit) when the
named stage starts: a poison job, as an out-of-memory kill or a native crash in a decoder would be.
Each crash is first recorded as one line in GEDGE_FAULT_CRASH_LOG, where that is set: the worker's own log
line goes through Dramatiq's logging pipe to its parent process, which may die before it forwards it.

GEDGE_FAULT_SLOW_STAGE (``stage:seconds``) makes that stage sleep once for each SLOW_EVERY frames it begins
(after its 1st, 33rd, 65th ... frame: a segment of 33 frames sleeps twice): a stage that runs for a known
while whatever the CPU, for tests that act on a worker in the middle of one.
"""
from __future__ import annotations

import logging
import os
import time

from django.conf import settings

logger = logging.getLogger(__name__)


def maybe_crash(original_name: str, stage: str, job_id: int) -> None:
    marker = settings.GEDGE_FAULT_CRASH_MARKER
    if marker and marker in original_name and stage == settings.GEDGE_FAULT_CRASH_STAGE:
        logger.error("fault injection: crashing this worker process", extra={"job_id": job_id, "stage": stage})
        record = settings.GEDGE_FAULT_CRASH_LOG
        if record:
            fd = os.open(record, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.write(fd, f"{job_id} {stage} {os.getpid()}\n".encode())  # in the kernel before the exit
            os.close(fd)
        os._exit(70)


SLOW_EVERY = 32


def maybe_slow(stage: str, frames_before: int, frames_done: int) -> None:
    """Sleep where ``stage`` is the slowed one, once per block of SLOW_EVERY frames begun since the last report."""
    name, _, seconds = settings.GEDGE_FAULT_SLOW_STAGE.partition(":")
    if name == stage:
        blocks = -(-frames_done // SLOW_EVERY) - -(-frames_before // SLOW_EVERY)
        if blocks > 0:
            time.sleep(float(seconds) * blocks)
