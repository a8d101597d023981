"""The job lifecycle: every allowed status change, applied as a compare-and-set update.

Allowed transitions (anything else raises IllegalTransition):

    Enqueue                 -> Preprocessing | Failed | Cancelled
    Preprocessing           -> Preprocessing_complete | Enqueue (retry after an error) | Failed | Cancelled
    Preprocessing_complete  -> Inferencing | Failed | Cancelled
    Inferencing             -> Inferencing_complete | Preprocessing_complete (retry) | Failed | Cancelled
    Inferencing_complete    -> Postprocessing | Failed | Cancelled
    Postprocessing          -> Postprocessing_complete | Inferencing_complete (retry) | Failed | Cancelled
    Postprocessing_complete -> Exit | Failed | Cancelled
    Failed                  -> Enqueue | Preprocessing_complete | Inferencing_complete (retry by a person)
    Cancelled               -> Enqueue (retry by a person)
    Exit                    -> (final)

A stage runs between its *ready* status and its *running* status; entering a ready status dispatches the
stage's actor after commit, so the row is committed before any worker can see the message. Every change
writes a JobEvent, bumps ``version`` and is pushed to browsers after commit.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import dramatiq
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone

from jobs.models import TERMINAL, Job, JobEvent, Status

from .broadcast import push_job

logger = logging.getLogger(__name__)

_FAIL_OR_CANCEL = {Status.FAILED, Status.CANCELLED}
TRANSITIONS: dict[str, frozenset[str]] = {
    Status.ENQUEUE: frozenset({Status.PREPROCESSING, *_FAIL_OR_CANCEL}),
    Status.PREPROCESSING: frozenset({Status.PREPROCESSING_COMPLETE, Status.ENQUEUE, *_FAIL_OR_CANCEL}),
    Status.PREPROCESSING_COMPLETE: frozenset({Status.INFERENCING, *_FAIL_OR_CANCEL}),
    Status.INFERENCING: frozenset({Status.INFERENCING_COMPLETE, Status.PREPROCESSING_COMPLETE, *_FAIL_OR_CANCEL}),
    Status.INFERENCING_COMPLETE: frozenset({Status.POSTPROCESSING, *_FAIL_OR_CANCEL}),
    Status.POSTPROCESSING: frozenset({Status.POSTPROCESSING_COMPLETE, Status.INFERENCING_COMPLETE,
                                      *_FAIL_OR_CANCEL}),
    Status.POSTPROCESSING_COMPLETE: frozenset({Status.EXIT, *_FAIL_OR_CANCEL}),
    Status.EXIT: frozenset(),
    Status.FAILED: frozenset({Status.ENQUEUE, Status.PREPROCESSING_COMPLETE, Status.INFERENCING_COMPLETE}),
    Status.CANCELLED: frozenset({Status.ENQUEUE}),
}


@dataclass(frozen=True)
class Stage:
    name: str  # also the Dramatiq queue name
    actor: str  # the Dramatiq actor that runs it (jobs/actors.py)
    ready: Status
    running: Status
    complete: Status
    progress_field: str


STAGES: dict[str, Stage] = {
    "preprocess": Stage("preprocess", "preprocess_job", Status.ENQUEUE, Status.PREPROCESSING,
                        Status.PREPROCESSING_COMPLETE, "preprocess_done"),
    "inference": Stage("inference", "infer_job", Status.PREPROCESSING_COMPLETE, Status.INFERENCING,
                       Status.INFERENCING_COMPLETE, "inference_done"),
    "postprocess": Stage("postprocess", "postprocess_job", Status.INFERENCING_COMPLETE, Status.POSTPROCESSING,
                         Status.POSTPROCESSING_COMPLETE, "postprocess_done"),
}
STAGE_BY_READY = {stage.ready: stage for stage in STAGES.values()}
STAGE_BY_RUNNING = {stage.running: stage for stage in STAGES.values()}


class IllegalTransition(Exception):
    """The lifecycle table does not allow this change."""


class StaleTransition(Exception):
    """The job was no longer in the expected status: a duplicate, late or raced message."""


def dispatch_stage(job: Job, stage: Stage, delay_ms: int = 0, front: bool = False) -> None:
    """Send the stage's message after commit; its id is stored on the row now, in the same transaction.

    ``dispatched_at`` is when the message is due (after any backoff), so the reaper can tell a lost message
    from one that is merely waiting (jobs/lifecycle/reaper.py). ``front`` puts the message at the head of its queue:
    work taken back from a dead or stopping worker resumes before jobs that have not started yet.
    """
    # The message is built from the stage's names, not from the actor object: this module is below the
    # actors (jobs/actors.py -> runner -> transitions), and the web process need not import stage code.
    broker = dramatiq.get_broker()
    message = dramatiq.Message(queue_name=stage.name, actor_name=stage.actor, args=(job.pk,), kwargs={},
                               options={})
    due = timezone.now() + timedelta(milliseconds=delay_ms)
    Job.objects.filter(pk=job.pk).update(message_id=message.message_id, dispatched_at=due)
    job.message_id, job.dispatched_at = message.message_id, due

    def send() -> None:
        try:
            sent = broker.enqueue(message, delay=delay_ms or None)
            if front and not delay_ms:
                _move_to_front(broker, sent)
        except Exception:  # broker down: the row is committed; the reaper sends the stage again
            logger.warning("could not send %s", stage.name, exc_info=True, extra={"job_id": job.pk})

    transaction.on_commit(send)


def _move_to_front(broker, message) -> None:
    """Redis broker: workers LPOP the queue's head and enqueue RPUSHes, so move the id to the head."""
    client = getattr(broker, "client", None)
    if client is None:  # the embedded StubBroker: one process, no backlog worth reordering
        return
    key, redis_id = f"{broker.namespace}:{message.queue_name}", message.options["redis_message_id"]
    with client.pipeline(transaction=True) as pipe:
        pipe.lrem(key, 1, redis_id)
        pipe.lpush(key, redis_id)
        pipe.execute()


def transition(
    job_id: int,
    from_status: str,
    to_status: str,
    *,
    message: str = "",
    fields: dict[str, Any] | None = None,
    dispatch_delay_ms: int = 0,
    attempt: int | None = None,
    lease_owner: str = "",
    dispatch_front: bool = False,
) -> Job:
    """Move a job from ``from_status`` to ``to_status`` or raise; returns the updated job.

    ``attempt`` fences a stage attempt's own moves: they apply only while the row still carries that attempt
    number (a stale worker whose lease was taken over cannot move the job). Entering a running status starts a
    new attempt: ``attempt + 1``, a fresh heartbeat and ``lease_owner``.
    """
    if to_status not in TRANSITIONS[from_status]:
        raise IllegalTransition(f"job {job_id}: {from_status} -> {to_status} is not allowed")
    now = timezone.now()
    updates: dict[str, Any] = {"status": to_status, "version": F("version") + 1, "updated_at": now, **(fields or {})}
    if to_status in STAGE_BY_RUNNING:
        updates.update(started_at=Coalesce(F("started_at"), now), attempt=F("attempt") + 1, heartbeat_at=now,
                       lease_owner=lease_owner[:200])
    elif from_status in STAGE_BY_RUNNING:
        updates.update(heartbeat_at=None, lease_owner="")
    if to_status in TERMINAL:
        updates["ended_at"] = now
    match = {"pk": job_id, "status": from_status}
    if attempt is not None:
        match["attempt"] = attempt
    with transaction.atomic():
        changed = Job.objects.filter(**match).update(**updates)
        if changed != 1:
            raise StaleTransition(f"job {job_id} is not {from_status}" + (f" at attempt {attempt}" if attempt else ""))
        job = Job.objects.get(pk=job_id)
        JobEvent.objects.create(job=job, from_status=from_status, to_status=to_status,
                                iteration=job.iteration, message=message[:2000])
        _after_commit(job, dispatch_delay_ms, dispatch_front)
    logger.info("%s -> %s", from_status, to_status, extra={"job_id": job_id, "status": to_status})
    return job


def create_job(**fields: Any) -> Job:
    """Insert a job in Enqueue with its first event; preprocessing is dispatched after commit."""
    with transaction.atomic():
        job = Job.objects.create(status=Status.ENQUEUE, **fields)
        JobEvent.objects.create(job=job, from_status="", to_status=Status.ENQUEUE, message="uploaded")
        _after_commit(job, 0)
    return job


def _after_commit(job: Job, dispatch_delay_ms: int, front: bool = False) -> None:
    # After commit, browsers first (a push is what a person waits for), then the next stage's message.
    transaction.on_commit(lambda: push_job(job))
    stage = STAGE_BY_READY.get(job.status)
    if stage is not None:
        dispatch_stage(job, stage, dispatch_delay_ms, front)


class JobInterrupted(Exception):
    """The job left the running status under a stage (cancelled, or taken over): stop at this boundary."""


def record_progress(job_id: int, running: str, attempt: int, fields: dict[str, Any]) -> Job:
    """Store progress (and renew the lease) while ``running`` at ``attempt``; else raise JobInterrupted."""
    now = timezone.now()
    changed = Job.objects.filter(pk=job_id, status=running, attempt=attempt).update(
        version=F("version") + 1, updated_at=now, heartbeat_at=now, **fields
    )
    if changed != 1:
        raise JobInterrupted(f"job {job_id} is no longer {running} at attempt {attempt}")
    return Job.objects.get(pk=job_id)


