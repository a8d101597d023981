"""The embedded service on one machine: Daphne plus in-process Dramatiq worker threads for all queues.

Uses the settings' StubBroker and in-memory channel layer, so workers and web share one process (and the
channel layer reaches the browsers). Refuses to run with REDIS_URL set: production runs web and workers
as separate processes.
"""
import logging

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from .rundramatiq import IDLE_POLL_MS

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Serve G-Edge with in-process workers (the embedded default)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--worker-threads", type=int, default=3)

    def handle(self, host, port, worker_threads, **options):
        if not settings.EMBEDDED:
            raise CommandError("run_embedded is for the embedded mode; unset REDIS_URL or run daphne + rundramatiq")
        from daphne.endpoints import build_endpoint_description_strings
        from daphne.server import Server

        from gedge_site.asgi import application

        worker = start_embedded_worker(worker_threads)
        start_reaper_thread()
        self.stdout.write(f"G-Edge on http://{host}:{port}/ (embedded: SQLite, in-process broker, "
                          f"{worker_threads} worker threads)\n")
        try:
            Server(application, endpoints=build_endpoint_description_strings(host=host, port=port),
                   signal_handlers=True, verbosity=0).run()
        finally:
            worker.stop()


def start_embedded_worker(threads: int):
    import dramatiq
    from dramatiq import Worker

    import jobs.actors  # noqa: F401 - declares the queues on the broker

    broker = dramatiq.get_broker()
    worker = Worker(broker, worker_threads=threads, worker_timeout=IDLE_POLL_MS)
    worker.start()
    return worker


def start_reaper_thread() -> None:
    import threading
    import time

    from .run_reaper import reap_safely

    def loop() -> None:
        while True:
            reap_safely()
            time.sleep(settings.GEDGE_REAPER_INTERVAL_S)

    threading.Thread(target=loop, name="reaper", daemon=True).start()
