"""The reaper: finds work nobody is doing and sets it going again.

- A running segment stage whose lease expired (no heartbeat for GEDGE_LEASE_TTL_S: the worker was killed,
  lost its node or hangs) goes back to its ready status with ``iteration + 1`` (the segment's and the job's)
  and is dispatched again at the head of its queue; past GEDGE_MAX_ITERATIONS for that segment the job fails
  with the reason.
- A segment in a ready status whose message is no longer waiting in its queue GEDGE_REDISPATCH_AFTER_S after
  it was due (sent to a worker that died, or never sent because the broker was down) is dispatched again,
  and so is a job's lost planning message. A duplicate is harmless: the compare-and-set start lets only one
  message run it. Segments waiting for room in their job's window have no message and are not touched.
- A job left in Postprocessing_complete (worker died before the parts were joined) is finalised.
- Jobs that ended more than GEDGE_RETENTION_DAYS ago lose their upload and results (services.expire_jobs), and
  resumable uploads nobody added to for GEDGE_UPLOAD_EXPIRY_S are dropped.

Runs as `python manage.py run_reaper` (a Deployment in Kubernetes) and as a thread inside `make run`.
"""
from __future__ import annotations

import logging
from datetime import timedelta

import dramatiq
from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from jobs.models import ACTIVE, Job, Segment, Status

from .services import drop_stale_uploads, end_job, expire_jobs, finalize_job
from .transitions import (
    PLAN_ACTOR,
    STAGE_BY_READY,
    STAGE_BY_RUNNING,
    StaleTransition,
    dispatch_plan,
    dispatch_segment,
    segment_transition,
)

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
    counts = {"expired": 0, "redispatched": 0, "finalized": 0, "failed": 0, "skipped": 0, "retention": 0,
              "stale_uploads": 0}
    ttl = timedelta(seconds=settings.GEDGE_LEASE_TTL_S)
    active = Segment.objects.filter(job__status__in=list(ACTIVE))
    for segment in active.filter(status__in=list(STAGE_BY_RUNNING), heartbeat_at__lt=now - ttl).select_related("job"):
        counts[_expire(segment)] += 1
    stale = now - timedelta(seconds=settings.GEDGE_REDISPATCH_AFTER_S)
    waiting: dict[str, set[str]] = {}

    def is_waiting(queue: str, message_id: str) -> bool:
        if queue not in waiting:
            waiting[queue] = waiting_message_ids(queue)
        return bool(message_id) and message_id in waiting[queue]

    ready = active.filter(status__in=list(STAGE_BY_READY), dispatched_at__lt=stale).exclude(message_id="")
    for segment in ready:
        stage = STAGE_BY_READY[segment.status]
        if is_waiting(stage.name, segment.message_id):
            continue
        if Segment.objects.filter(pk=segment.pk, status=segment.status, message_id=segment.message_id).exists():
            dispatch_segment(segment, stage)
            counts["redispatched"] += 1
            logger.info("re-dispatched %s of segment %d (message lost)", stage.name, segment.index,
                        extra={"job_id": segment.job_id})
    unplanned = Job.objects.filter(status=Status.ENQUEUE, segments__isnull=True).filter(
        Q(dispatched_at__lt=stale) | Q(dispatched_at__isnull=True))
    for job in unplanned:
        if not is_waiting("preprocess", job.message_id):
            dispatch_plan(job)
            counts["redispatched"] += 1
            logger.info("re-dispatched %s (message lost)", PLAN_ACTOR, extra={"job_id": job.pk})
    for job in Job.objects.filter(status=Status.POSTPROCESSING_COMPLETE, updated_at__lt=stale):
        try:
            finalize_job(job)
            counts["finalized"] += 1
        except StaleTransition:
            pass
        except Exception:  # noqa: BLE001 - one job that cannot be finished must not stop the rest of the pass
            logger.exception("could not finalise the job", extra={"job_id": job.pk})
            counts["skipped"] += 1
    counts["retention"] = expire_jobs(now)
    counts["stale_uploads"] = drop_stale_uploads(now)
    return counts


def _expire(segment: Segment) -> str:
    stage = STAGE_BY_RUNNING[segment.status]
    iteration = segment.iteration + 1
    lost = (f"{stage.name} of segment {segment.index}: lease expired (worker {segment.lease_owner or '?'} lost, "
            f"attempt {segment.attempt})")
    if iteration > settings.GEDGE_MAX_ITERATIONS:
        reason = f"{lost}; gave up after {iteration} attempts"
        ended = end_job(segment.job, Status.FAILED, reason, fields={"error": reason, "failed_stage": stage.name},
                        only_if_segment=(segment.pk, segment.status, segment.attempt))
        return "failed" if ended else "skipped"
    try:
        segment_transition(segment.pk, segment.status, stage.ready, attempt=segment.attempt,
                           fields={"iteration": iteration}, job_fields={"iteration": F("iteration") + 1},
                           message=f"{lost}; re-dispatched", dispatch_front=True)
    except StaleTransition:  # the worker came back and finished, or the job ended: nothing to do
        return "skipped"
    logger.warning("%s", lost, extra={"job_id": segment.job_id})
    return "expired"
