"""Exit 0 when the database and Redis answer, 1 otherwise, with one JSON line: the probe of Pods that serve
no HTTP and run no Dramatiq worker (the reaper)."""
import json

from django.core.management.base import BaseCommand, CommandError

from jobs.ops.health import dependency_checks


class Command(BaseCommand):
    help = "Check that the database and Redis answer (exec probe)."

    def handle(self, **options):
        checks = dependency_checks()
        ok = all(value == "ok" for value in checks.values())
        self.stdout.write(json.dumps({"status": "ok" if ok else "unavailable", "checks": checks}))
        if not ok:
            raise CommandError("dependencies unavailable", returncode=1)
