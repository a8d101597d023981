"""The reaper: finds jobs nobody is working on and sets them going again.

- A running stage whose lease expired (no heartbeat for GEDGE_LEASE_TTL_S: the worker was killed, lost
  its node or hangs) goes back to its ready status with ``iteration + 1`` and is dispatched again; past
  GEDGE_MAX_ITERATIONS the job fails with the reason.
- A job in a ready status (Enqueue, Preprocessing_complete, Inferencing_complete) whose message is no longer
  waiting in its queue GEDGE_REDISPATCH_AFTER_S after it was due — sent to a worker that died, or never sent
  because the broker was down — is dispatched again. A duplicate is harmless: the stage's compare-and-set
  start lets only one message run it.
- A job left in Postprocessing_complete (worker died between the two steps) is finalised.

Runs as `python manage.py run_reaper` (a Deployment in Kubernetes) and as a thread inside `make run`.
"""
from __future__ import annotations

import logging
from datetime import timedelta

import dramatiq
from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from jobs.models import Job, Status

from .services import finalize_job
from .transitions import STAGE_BY_READY, STAGE_BY_RUNNING, StaleTransition, dispatch_stage, transition

logger = logging.getLogger(__name__)


def waiting_message_ids(queue_name: str) -> set[str]:
    """Ids of the messages still in a queue (or its delay queue), i.e. not taken by any worker yet."""
    from dramatiq import Message
    from dramatiq.common import dq_name

    broker = dramatiq.get_broker()
    ids: set[str] = set()
    for q in (queue_name, dq_name(queue_name)):
        client = getattr(broker, "client", None)
        if client is not None:  # RedisBroker: the list holds Redis-side ids, the hash holds the messages
            keys = client.lrange(f"{broker.namespace}:{q}", 0, -1)
            payloads = client.hmget(f"{broker.namespace}:{q}.msgs", keys) if keys else []
        else:  # StubBroker (embedded): encoded messages in a queue.Queue
            payloads = list(getattr(broker.queues.get(q), "queue", ()))
        ids.update(Message.decode(p).message_id for p in payloads if p)
    return ids


def reap() -> dict[str, int]:
    now = timezone.now()
    counts = {"expired": 0, "redispatched": 0, "finalized": 0, "failed": 0, "skipped": 0}
    ttl = timedelta(seconds=settings.GEDGE_LEASE_TTL_S)
    for job in Job.objects.filter(status__in=list(STAGE_BY_RUNNING), heartbeat_at__lt=now - ttl):
        counts[_expire(job)] += 1
    stale = now - timedelta(seconds=settings.GEDGE_REDISPATCH_AFTER_S)
    ready = Job.objects.filter(status__in=list(STAGE_BY_READY)).filter(
        Q(dispatched_at__lt=stale) | Q(dispatched_at__isnull=True)
    )
    waiting: dict[str, set[str]] = {}
    for job in ready:
        stage = STAGE_BY_READY[job.status]
        if stage.name not in waiting:
            waiting[stage.name] = waiting_message_ids(stage.name)
        if job.message_id and job.message_id in waiting[stage.name]:
            continue
        if Job.objects.filter(pk=job.pk, status=job.status, message_id=job.message_id).exists():
            dispatch_stage(job, stage)
            counts["redispatched"] += 1
            logger.info("re-dispatched %s (message lost)", stage.name, extra={"job_id": job.pk})
    for job in Job.objects.filter(status=Status.POSTPROCESSING_COMPLETE, updated_at__lt=stale):
        try:
            finalize_job(job)
            counts["finalized"] += 1
        except StaleTransition:
            pass
    return counts


def _expire(job: Job) -> str:
    stage = STAGE_BY_RUNNING[job.status]
    iteration = job.iteration + 1
    lost = f"{stage.name} lease expired (worker {job.lease_owner or '?'} lost, attempt {job.attempt})"
    try:
        if iteration > settings.GEDGE_MAX_ITERATIONS:
            transition(job.pk, job.status, Status.FAILED, attempt=job.attempt,
                       fields={"iteration": iteration - 1, "error": f"{lost}; gave up after {iteration} attempts",
                               "failed_stage": stage.name},
                       message=f"{lost}; gave up")
            return "failed"
        transition(job.pk, job.status, stage.ready, attempt=job.attempt, fields={"iteration": iteration},
                   message=f"{lost}; re-dispatched", dispatch_front=True)
    except StaleTransition:  # the worker came back and finished, or someone cancelled: nothing to do
        return "skipped"
    logger.warning("%s", lost, extra={"job_id": job.pk})
    return "expired"
