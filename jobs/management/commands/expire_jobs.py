"""Delete the uploads and results of jobs past the retention period (the reaper also does this every pass)."""
from django.conf import settings
from django.core.management.base import BaseCommand

from jobs.lifecycle.services import expire_jobs


class Command(BaseCommand):
    help = "Delete uploads and results of jobs that ended more than GEDGE_RETENTION_DAYS ago; rows are kept."

    def handle(self, **options):
        if not settings.GEDGE_RETENTION_DAYS:
            self.stdout.write("GEDGE_RETENTION_DAYS is 0: jobs are kept forever\n")
            return
        total = 0
        while expired := expire_jobs():
            total += expired
        self.stdout.write(f"{total} jobs expired (older than {settings.GEDGE_RETENTION_DAYS:g} days)\n")
