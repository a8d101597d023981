"""Run the reaper in a loop (a Deployment in Kubernetes; `make run` runs it as a thread)."""
import logging
import time

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import close_old_connections

from jobs.lifecycle.reaper import reap

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Re-dispatch jobs whose worker died or whose message was lost; fail them past the limit."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="one pass, then exit")
        parser.add_argument("--interval", type=float, default=None, help="seconds between passes")

    def handle(self, once, interval, **options):
        import jobs.actors  # noqa: F401 - the broker must know the actors to re-dispatch

        interval = interval or settings.GEDGE_REAPER_INTERVAL_S
        while True:
            reap_safely()
            if once:
                return
            time.sleep(interval)


def reap_safely() -> None:
    """One pass; a database or broker outage is logged and the next pass tries again."""
    try:
        close_old_connections()
        counts = reap()
        if any(counts.values()):
            logger.info("reaper: %s", counts)
    except Exception:  # noqa: BLE001 - the loop must outlive outages
        logger.warning("reaper pass failed", exc_info=True)
