"""`python manage.py fault_test`: the fault test of README "Nothing lost"; prints figures as JSON."""
import json
import tempfile
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from faultlab.run import FaultConfig, FaultRun


class Command(BaseCommand):
    help = "Run many jobs through real workers while killing workers and restarting Redis and PostgreSQL."

    def add_arguments(self, parser):
        parser.add_argument("--jobs", type=int, default=50)
        parser.add_argument("--frames", type=int, default=45)
        parser.add_argument("--kill-every", type=float, default=4.0,
                            help="seconds from every worker being up (booted) to the next SIGKILL of one")
        parser.add_argument("--restart-redis-at", type=float, default=20.0, help="seconds; negative: never")
        parser.add_argument("--restart-postgres-at", type=float, default=40.0, help="seconds; negative: never")
        parser.add_argument("--no-poison", action="store_true")
        parser.add_argument("--segment-s", type=float, default=0.5,
                            help="the workers' GEDGE_SEGMENT_S (seconds of video per segment)")
        parser.add_argument("--keyframe-every", type=int, default=15,
                            help="frames between keyframes in two videos of three (0: every job one segment)")
        parser.add_argument("--timeout", type=float, default=900.0)
        parser.add_argument("--seed", type=int, default=7)
        parser.add_argument("--logs", default="", help="folder for worker logs (default: a temporary one)")
        parser.add_argument("--redis-restart-cmd", default="", help="shell command that restarts Redis")
        parser.add_argument("--postgres-restart-cmd", default="", help="shell command that restarts PostgreSQL")

    def handle(self, **o):
        from django.conf import settings

        if settings.EMBEDDED:
            raise CommandError("the fault test needs PostgreSQL and Redis: set DATABASE_URL and REDIS_URL")
        config = FaultConfig(
            jobs=o["jobs"], frames=o["frames"], kill_every_s=o["kill_every"],
            restart_redis_at_s=o["restart_redis_at"] if o["restart_redis_at"] >= 0 else None,
            restart_postgres_at_s=o["restart_postgres_at"] if o["restart_postgres_at"] >= 0 else None,
            poison=not o["no_poison"], segment_s=o["segment_s"], keyframe_every=o["keyframe_every"],
            timeout_s=o["timeout"], seed=o["seed"],
            redis_restart_cmd=o["redis_restart_cmd"], postgres_restart_cmd=o["postgres_restart_cmd"],
        )
        log_dir = Path(o["logs"] or tempfile.mkdtemp(prefix="gedge-faults-"))
        log_dir.mkdir(parents=True, exist_ok=True)
        report = FaultRun(config, log_dir).run().as_dict()
        self.stdout.write(json.dumps(report, indent=2) + "\n")
        self.stdout.write(f"worker logs: {log_dir}\n")
        if (report["stuck"] or report["duplicate_stage_completions"] or report["outputs_that_fail_to_decode"]
                or report["lost_frames"] or report["doubled_frames"]):
            raise CommandError("faults lost or duplicated work: see the figures above")
