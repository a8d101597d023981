"""The worker Pods' probes: exit 0 when ready (or, with --live, alive), 1 otherwise, with one JSON line.

Ready: every worker process of this Pod (DRAMATIQ_NPROCS of them) has loaded its model and its heartbeat is
fresh, and the database and Redis answer. Alive (--live): at least one worker process has a fresh heartbeat;
it does not look at the database or Redis, so an outage of either does not get workers restarted.
A process still loading its model has no marker yet: the startup probe covers that time.
"""
from __future__ import annotations

import json
import os

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from jobs.ops.health import dependency_checks, read_markers


class Command(BaseCommand):
    help = "Probe this Pod's Dramatiq worker processes (exec readiness/liveness probe)."

    def add_arguments(self, parser):
        parser.add_argument("--live", action="store_true", help="liveness only: a worker heartbeat is fresh")
        parser.add_argument("--processes", type=int, default=None,
                            help="worker processes expected (default: DRAMATIQ_NPROCS, else 1)")

    def handle(self, live: bool, processes: int | None, **options):
        expected = 1 if live else (processes or int(os.environ.get("DRAMATIQ_NPROCS") or 1))
        # Three missed heartbeats: a busy process still touches its marker (the heartbeat is its own thread).
        markers, problems = read_markers(settings.GEDGE_WORKER_STATE_DIR, 3 * settings.GEDGE_WORKER_HEARTBEAT_S)
        checks: dict[str, str] = {
            "workers": f"{len(markers)}/{expected} ready" if len(markers) >= expected
            else f"error: {len(markers)}/{expected} ready" + (f" ({'; '.join(problems)})" if problems else ""),
        }
        if not live:
            checks.update(dependency_checks())
        ok = all(not value.startswith("error") for value in checks.values())
        doc = {"status": "ok" if ok else "unavailable", "checks": checks,
               "models": sorted({m["model"] for m in markers if m.get("model")})}
        self.stdout.write(json.dumps(doc))
        if not ok:
            raise CommandError("not ready" if not live else "not alive", returncode=1)
