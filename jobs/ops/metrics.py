"""Prometheus metrics, from the two places that can see them.

Web and workers are separate processes (separate Pods), so each metric lives where it is true:

* Workers observe what only they see, when it happens (jobs/workers/stage_metrics.py): how long each stage
  run took (histogram), frames processed, stage retries and failures. A worker Pod exposes them on
  :9191/metrics next to Dramatiq's own worker metrics (``dramatiq.middleware.prometheus.Prometheus``). A
  worker runs several processes, so ``PROMETHEUS_MULTIPROC_DIR`` must be set in the worker's environment
  (to the same folder as ``dramatiq_prom_db``) before anything imports prometheus_client;
  k8s/base/worker-*.yaml does that.
  Histograms recorded at the moment a stage ends are exact and counted once, however many workers run;
  deriving them from ``Job.stage_ms`` at scrape would rescan every job on every scrape and go backwards
  when a job is retried from scratch or deleted.
* The web's ``/metrics`` computes at scrape time what PostgreSQL and Redis hold for the whole service: jobs
  by status and queue depths (:class:`ServiceCollector`). Every web replica reports the same numbers, so
  aggregate those with ``max``, not ``sum``.

In the embedded mode the workers are threads of the web process, so its ``/metrics`` carries both.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator

from django.conf import settings
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from jobs.lifecycle.transitions import STAGES
from jobs.models import Job, Status
from jobs.workers import stage_metrics  # noqa: F401 - registers the stage metrics (embedded: the workers' own)

logger = logging.getLogger(__name__)

class ServiceCollector(Collector):
    """Jobs by status from the database and queue depths from Redis, read at every scrape."""

    def collect(self) -> Iterator[Metric]:
        errors = GaugeMetricFamily("gedge_metrics_source_up", "1 where the source answered this scrape",
                                   labels=["source"])
        try:
            yield self._jobs_by_status()
            errors.add_metric(["database"], 1)
        except Exception:  # noqa: BLE001 - a scrape must answer even while the database is down
            logger.warning("metrics: database unavailable", exc_info=True)
            errors.add_metric(["database"], 0)
        if settings.REDIS_URL:
            try:
                yield from self._queue_depths()
                errors.add_metric(["redis"], 1)
            except Exception:  # noqa: BLE001
                logger.warning("metrics: redis unavailable", exc_info=True)
                errors.add_metric(["redis"], 0)
        yield errors

    @staticmethod
    def _jobs_by_status() -> GaugeMetricFamily:
        from django.db.models import Count

        counts = dict(Job.objects.order_by().values_list("status").annotate(n=Count("id")))
        family = GaugeMetricFamily("gedge_jobs", "Jobs by status", labels=["status"])
        for status in Status:  # every status, zeros too, so a series never vanishes
            family.add_metric([status.value], counts.get(status.value, 0))
        return family

    @staticmethod
    def _queue_depths() -> Iterator[GaugeMetricFamily]:
        import redis

        namespace = settings.DRAMATIQ_BROKER["OPTIONS"]["namespace"]
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2)
        waiting = GaugeMetricFamily("gedge_queue_depth", "Messages waiting in a stage's queue (what KEDA scales on)",
                                    labels=["queue"])
        delayed = GaugeMetricFamily("gedge_queue_delayed", "Messages waiting for their retry time", labels=["queue"])
        dead = GaugeMetricFamily("gedge_queue_dead_letters", "Messages Dramatiq gave up on", labels=["queue"])
        with client.pipeline(transaction=False) as pipe:
            for queue in STAGES:  # a stage's name is its queue's name
                pipe.llen(queue_key(namespace, queue))
                pipe.llen(queue_key(namespace, queue) + ".DQ")
                pipe.zcard(queue_key(namespace, queue) + ".XQ")
            replies = pipe.execute()
        for i, queue in enumerate(STAGES):
            waiting.add_metric([queue], replies[3 * i])
            delayed.add_metric([queue], replies[3 * i + 1])
            dead.add_metric([queue], replies[3 * i + 2])
        yield from (waiting, delayed, dead)


def queue_key(namespace: str, queue: str) -> str:
    """The Redis list Dramatiq's Redis broker keeps a queue's waiting message ids in."""
    return f"{namespace}:{queue}"


SERVICE_REGISTRY = CollectorRegistry(auto_describe=False)
SERVICE_REGISTRY.register(ServiceCollector())


def exposition() -> bytes:
    """This process's metrics (the worker metrics too in the embedded mode) plus the service-wide ones."""
    return generate_latest(REGISTRY) + generate_latest(SERVICE_REGISTRY)
