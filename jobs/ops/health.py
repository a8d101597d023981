"""Worker readiness: a worker process is ready once the model its queues need is loaded.

``WorkerHealth`` (a Dramatiq middleware, listed in settings for the Redis broker) acts only in processes the
Dramatiq CLI started (``manage.py rundramatiq``), never in a test's or the embedded mode's in-process worker:

* before the worker consumes anything, it loads what its queues need: the detector for ``inference`` (so a
  GPU worker takes no message it cannot run, and the first job does not pay for the model load), the model's
  input size for ``preprocess``. Where the model cannot be loaded it logs why and tries again every heartbeat,
  consuming nothing: jobs wait in the queue instead of failing, and the Pod stays not ready;
* then it writes ``ready-<pid>.json`` in GEDGE_WORKER_STATE_DIR and touches it every GEDGE_WORKER_HEARTBEAT_S;
* on shutdown it removes the marker first, so the Pod reports not ready while it drains.

``manage.py worker_ready`` (the worker Pods' exec probes) reads these markers.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from dramatiq.middleware import Middleware

logger = logging.getLogger(__name__)
MODEL_QUEUES = {"inference"}  # the queues whose stage runs the detector
MARKER_GLOB = "ready-*.json"


def marker_path(pid: int) -> Path:
    return Path(settings.GEDGE_WORKER_STATE_DIR) / f"ready-{pid}.json"


def load_for_queues(queues: set[str] | None) -> dict[str, Any]:
    """Load what a worker on ``queues`` (None: all) needs; returns facts for the marker, raises on failure."""
    from jobs.workers.detector import get_detector, model_input_size

    facts: dict[str, Any] = {"input_size": list(model_input_size())}
    if queues is None or queues & MODEL_QUEUES:
        detector = get_detector()
        facts.update(model=detector.name, sha256=detector.sha256, providers=list(detector.providers))
    return facts


class WorkerHealth(Middleware):
    def __init__(self) -> None:
        self.in_worker_process = False
        self.stopping = threading.Event()
        self.marker: Path | None = None

    def after_process_boot(self, broker) -> None:
        # Emitted only by the Dramatiq CLI's worker processes.
        self.in_worker_process = True
        from prometheus_client import values

        if values.ValueClass is values.MutexValue:
            # prometheus_client chose per-process values at import: the exposition on :9191 (another
            # process) would show Dramatiq's metrics but never ours.
            logger.warning("PROMETHEUS_MULTIPROC_DIR is not set: gedge_* worker metrics will not be exported; "
                           "set it to the same folder as dramatiq_prom_db")

    def before_worker_boot(self, broker, worker) -> None:
        if not self.in_worker_process:
            return
        queues = set(worker.consumer_whitelist) if worker.consumer_whitelist else None
        while True:
            try:
                facts = load_for_queues(queues)
                break
            except Exception as exc:  # noqa: BLE001 - any load error: report it, keep the Pod unready, retry
                logger.error("model not loaded, not consuming; retrying in %g s: %s: %s",
                             settings.GEDGE_WORKER_HEARTBEAT_S, exc.__class__.__name__, exc)
                if self.stopping.wait(settings.GEDGE_WORKER_HEARTBEAT_S):
                    return
        self.marker = marker_path(os.getpid())
        self.marker.parent.mkdir(parents=True, exist_ok=True)
        doc = {"pid": os.getpid(), "queues": sorted(queues) if queues else None, **facts}
        tmp = self.marker.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(self.marker)  # atomic: a probe never reads half a marker
        threading.Thread(target=self._heartbeat, name="gedge-heartbeat", daemon=True).start()
        logger.info("worker ready: %s", json.dumps(doc))

    def _heartbeat(self) -> None:
        while not self.stopping.wait(settings.GEDGE_WORKER_HEARTBEAT_S):
            try:
                os.utime(self.marker)
            except OSError:
                logger.warning("heartbeat: cannot touch %s", self.marker, exc_info=True)

    def before_worker_shutdown(self, broker, worker) -> None:
        self.stopping.set()
        if self.marker is not None:
            self.marker.unlink(missing_ok=True)


def read_markers(state_dir: Path, max_age_s: float) -> tuple[list[dict[str, Any]], list[str]]:
    """Live markers (process alive, heartbeat fresh) and why the others do not count."""
    live: list[dict[str, Any]] = []
    problems: list[str] = []
    now = time.time()
    for path in sorted(state_dir.glob(MARKER_GLOB)):
        try:
            doc = json.loads(path.read_text())
            age = now - path.stat().st_mtime
        except (OSError, ValueError) as exc:
            problems.append(f"{path.name}: unreadable ({exc.__class__.__name__})")
            continue
        if not _alive(int(doc.get("pid", 0))):
            problems.append(f"{path.name}: process gone")
        elif age > max_age_s:
            problems.append(f"{path.name}: heartbeat {age:.0f} s old")
        else:
            live.append(doc)
    return live, problems


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dependency_checks() -> dict[str, str]:
    """Database and (in production) Redis: "ok" or "error: <exception class>" each."""
    from django.db import connection

    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - report, don't crash the probe
        checks["database"] = f"error: {exc.__class__.__name__}"
    if settings.REDIS_URL:
        try:
            import redis

            redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2).ping()
            checks["redis"] = "ok"
        except Exception as exc:  # noqa: BLE001
            checks["redis"] = f"error: {exc.__class__.__name__}"
    return checks
