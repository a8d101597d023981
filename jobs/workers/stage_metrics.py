"""What a worker records when a stage run ends: its wall time, the frames it completed, retries and failures.

Recorded where it happens, once per run, in this process's Prometheus registry (jobs/ops/metrics.py says
how worker Pods expose them).
"""
from __future__ import annotations

from prometheus_client import Counter, Histogram

# A stage handles one whole video: from a fraction of a second (a short clip) to the stage time limit.
STAGE_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, float("inf"))

STAGE_SECONDS = Histogram("gedge_stage_duration_seconds", "Wall time of one successful stage run, per stage",
                          ["stage"], buckets=STAGE_BUCKETS)
FRAMES = Counter("gedge_frames_processed_total", "Frames a stage completed", ["stage"])
RETRIES = Counter("gedge_stage_retries_total", "Stage runs that crashed and were sent back for a retry",
                  ["stage"])
FAILURES = Counter("gedge_stage_failures_total", "Stage runs that failed their job", ["stage"])


def observe_stage(stage: str, seconds: float, frames: int) -> None:
    STAGE_SECONDS.labels(stage).observe(seconds)
    FRAMES.labels(stage).inc(frames)


def count_retry(stage: str) -> None:
    RETRIES.labels(stage).inc()


def count_failure(stage: str) -> None:
    FAILURES.labels(stage).inc()
