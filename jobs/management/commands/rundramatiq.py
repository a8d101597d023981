"""django_dramatiq's rundramatiq, with G-Edge's default for how long an idle worker waits between polls.

Dramatiq's Redis consumer backs off up to ``dramatiq_worker_timeout`` (1000 ms by default) while its queue is
empty, so each hand-off between two stages of a job could wait up to a second. With 100 ms, one street.mp4
job through the three workers went from 21.3 to 30.0 frames/s in the benchmark (docs/performance.md); the
cost is a few Redis round trips per second per idle queue. An operator's own setting wins.
"""
import os

from django_dramatiq.management.commands.rundramatiq import Command as DjangoDramatiqCommand

IDLE_POLL_MS = "100"


class Command(DjangoDramatiqCommand):
    def handle(self, *args, **options):
        os.environ.setdefault("dramatiq_worker_timeout", IDLE_POLL_MS)  # read by the dramatiq CLI it execs
        return super().handle(*args, **options)
