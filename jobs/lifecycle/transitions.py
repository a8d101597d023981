"""The job lifecycle and its segments' lifecycles: every allowed status change, applied as a compare-and-set.

A job's video is cut into segments (stages/segments.py); each segment goes through the three stages on its
own. Segment transitions (anything else raises IllegalTransition):

    Enqueue                 -> Preprocessing
    Preprocessing           -> Preprocessing_complete | Enqueue (retry, hand-back, expired lease)
    Preprocessing_complete  -> Inferencing
    Inferencing             -> Inferencing_complete | Preprocessing_complete (retry ...)
    Inferencing_complete    -> Postprocessing
    Postprocessing          -> Postprocessing_complete | Inferencing_complete (retry ...)
    any but Postprocessing_complete -> Failed | Cancelled (its job ended)

A segment entering a *ready* status (Enqueue when dispatched, Preprocessing_complete, Inferencing_complete)
sends its next stage's message after commit, with one exception: tracking runs over the video in frame order,
so a segment's postprocessing waits (no message yet) until the segment before it has been tracked, which is
the first step of that segment's postprocessing (:func:`record_tracked` then sends it). Every segment change
is a JobEvent with ``segment`` set.

The job's status is derived from its segments by one rule, applied in the same transaction as every segment
change (:func:`advance_job`): **the job is in the earliest stage that not all of its segments have
completed: in that stage's running status once any segment has started it, else in its ready status; when
every segment has completed postprocessing it is Postprocessing_complete**, and Exit once the parts are
joined. The job only moves forward, one status at a time, so it passes through the paper's eight statuses in
order, each a JobEvent (``segment`` empty) and a push to browsers:

    Enqueue -> Preprocessing -> Preprocessing_complete -> Inferencing -> Inferencing_complete
            -> Postprocessing -> Postprocessing_complete -> Exit
    any active status -> Failed | Cancelled;  Failed | Cancelled -> Enqueue (retry by a person: start over)

Entering Enqueue sends the job's planning message (on the preprocess queue): it cuts the video into segments
and dispatches the first ``window`` of them; each segment that finishes postprocessing makes room for the
next (:func:`fill_window`).
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import dramatiq
from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, OuterRef, Q, Subquery, Sum
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from jobs.models import ACTIVE, PIPELINE, TERMINAL, Job, JobEvent, Segment, Status

from .broadcast import push_job

logger = logging.getLogger(__name__)

_FAIL_OR_CANCEL = {Status.FAILED, Status.CANCELLED}
TRANSITIONS: dict[str, frozenset[str]] = {
    **{current: frozenset({following, *_FAIL_OR_CANCEL})
       for current, following in zip(PIPELINE, PIPELINE[1:], strict=False)},
    Status.EXIT: frozenset(),
    Status.FAILED: frozenset({Status.ENQUEUE}),
    Status.CANCELLED: frozenset({Status.ENQUEUE}),
}
POSITION = {status: i for i, status in enumerate(PIPELINE)}
PLAN_ACTOR = "plan_job"  # on the preprocess queue


class Stage:
    def __init__(self, name: str, actor: str, ready: Status, running: Status, complete: Status,
                 progress_field: str) -> None:
        self.name = name  # also the Dramatiq queue name
        self.actor = actor  # the Dramatiq actor that runs it (jobs/actors.py)
        self.ready, self.running, self.complete, self.progress_field = ready, running, complete, progress_field

    def __repr__(self) -> str:
        return f"Stage({self.name})"


STAGES: dict[str, Stage] = {
    "preprocess": Stage("preprocess", "preprocess_segment", Status.ENQUEUE, Status.PREPROCESSING,
                        Status.PREPROCESSING_COMPLETE, "preprocess_done"),
    "inference": Stage("inference", "infer_segment", Status.PREPROCESSING_COMPLETE, Status.INFERENCING,
                       Status.INFERENCING_COMPLETE, "inference_done"),
    "postprocess": Stage("postprocess", "postprocess_segment", Status.INFERENCING_COMPLETE,
                         Status.POSTPROCESSING, Status.POSTPROCESSING_COMPLETE, "postprocess_done"),
}
STAGE_BY_READY = {stage.ready: stage for stage in STAGES.values()}
STAGE_BY_RUNNING = {stage.running: stage for stage in STAGES.values()}
SEGMENT_TRANSITIONS: dict[str, frozenset[str]] = {
    **{stage.ready: frozenset({stage.running, *_FAIL_OR_CANCEL}) for stage in STAGES.values()},
    **{stage.running: frozenset({stage.complete, stage.ready, *_FAIL_OR_CANCEL}) for stage in STAGES.values()},
    Status.POSTPROCESSING_COMPLETE: frozenset(),
    Status.FAILED: frozenset(),
    Status.CANCELLED: frozenset(),
}
SEGMENT_DONE = Status.POSTPROCESSING_COMPLETE
_COMPLETE = frozenset(stage.complete for stage in STAGES.values())


class IllegalTransition(Exception):
    """The lifecycle table does not allow this change."""


class StaleTransition(Exception):
    """The row was no longer in the expected status: a duplicate, late or raced message."""


class JobInterrupted(Exception):
    """The segment left the running status under a stage (its job ended, or it was taken over): stop."""


# --- messages ---


def _send_after_commit(message: dramatiq.Message, delay_ms: int, front: bool, what: str) -> None:
    broker = dramatiq.get_broker()

    def send() -> None:
        try:
            sent = broker.enqueue(message, delay=delay_ms or None)
            if front and not delay_ms:
                _move_to_front(broker, sent)
        except Exception:  # broker down: the row is committed; the reaper sends the message again
            logger.warning("could not send %s", what, exc_info=True)

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


def dispatch_plan(job: Job) -> None:
    """Send the job's planning message after commit; its id is stored on the row now, in the same transaction.

    Messages are built from names, not actor objects: this module is below the actors (jobs/actors.py ->
    runner -> transitions), and the web process need not import stage code.
    """
    message = dramatiq.Message(queue_name="preprocess", actor_name=PLAN_ACTOR, args=(job.pk,), kwargs={},
                               options={})
    now = timezone.now()
    Job.objects.filter(pk=job.pk).update(message_id=message.message_id, dispatched_at=now)
    job.message_id, job.dispatched_at = message.message_id, now
    # At the head of the queue: planning takes milliseconds, and a new job should not wait for it behind the
    # segments of jobs already running (fair sharing, docs/segments.md).
    _send_after_commit(message, 0, True, f"plan of job {job.pk}")


def dispatch_segment(segment: Segment, stage: Stage, delay_ms: int = 0, front: bool = False) -> None:
    """Send a segment's stage message after commit, recording its id and when it is due on the row.

    ``dispatched_at`` is when the message is due (after any backoff), so the reaper can tell a lost message
    from one that is merely waiting. ``front`` puts it at the head of its queue: work taken back from a dead
    or stopping worker resumes before work that has not started yet.
    """
    message = dramatiq.Message(queue_name=stage.name, actor_name=stage.actor, args=(segment.pk,), kwargs={},
                               options={})
    due = timezone.now() + timedelta(milliseconds=delay_ms)
    Segment.objects.filter(pk=segment.pk).update(message_id=message.message_id, dispatched_at=due)
    segment.message_id, segment.dispatched_at = message.message_id, due
    _send_after_commit(message, delay_ms, front, f"{stage.name} of segment {segment.pk}")


# --- the job ---


def transition(job_id: int, from_status: str, to_status: str, *, message: str = "",
               fields: dict[str, Any] | None = None) -> Job:
    """Move a job from ``from_status`` to ``to_status`` or raise; returns the updated job.

    Entering Enqueue sends the planning message; entering Failed or Cancelled ends every segment that has not
    finished (which stops their running stages at their next batch: their lease is gone).
    """
    if to_status not in TRANSITIONS[from_status]:
        raise IllegalTransition(f"job {job_id}: {from_status} -> {to_status} is not allowed")
    now = timezone.now()
    updates: dict[str, Any] = {"status": to_status, "version": F("version") + 1, "updated_at": now, **(fields or {})}
    if to_status == Status.PREPROCESSING:
        updates["started_at"] = Coalesce(F("started_at"), now)
    if to_status in TERMINAL:
        updates["ended_at"] = now
    with transaction.atomic():
        if Job.objects.filter(pk=job_id, status=from_status).update(**updates) != 1:
            raise StaleTransition(f"job {job_id} is not {from_status}")
        job = Job.objects.get(pk=job_id)
        JobEvent.objects.create(job=job, from_status=from_status, to_status=to_status, iteration=job.iteration,
                                message=message[:2000])
        if to_status in _FAIL_OR_CANCEL:
            Segment.objects.filter(job_id=job_id).exclude(status=SEGMENT_DONE).update(
                status=to_status, heartbeat_at=None, lease_owner="", updated_at=now)
        elif to_status == Status.ENQUEUE:
            dispatch_plan(job)
        transaction.on_commit(lambda: push_job(job))
    logger.info("%s -> %s", from_status, to_status, extra={"job_id": job_id, "status": to_status})
    return job


def create_job(**fields: Any) -> Job:
    """Insert a job in Enqueue with its first event; its planning message is sent after commit."""
    with transaction.atomic():
        job = Job.objects.create(status=Status.ENQUEUE, **fields)
        JobEvent.objects.create(job=job, from_status="", to_status=Status.ENQUEUE, message="uploaded")
        dispatch_plan(job)
        transaction.on_commit(lambda: push_job(job))
    return job


def derived_status(segment_statuses: list[str], current: str) -> str:
    """The job status its segments give (see the module docstring), never behind ``current``."""
    target = Status.POSTPROCESSING_COMPLETE
    for stage in STAGES.values():
        if any(POSITION[s] < POSITION[stage.complete] for s in segment_statuses):
            started = POSITION[current] >= POSITION[stage.running] or any(
                POSITION[s] >= POSITION[stage.running] for s in segment_statuses)
            target = stage.running if started else stage.ready
            break
    return target if POSITION[target] > POSITION[current] else current


def advance_job(job_id: int) -> Job | None:
    """Step the job forward to the status its segments give, one status (and one JobEvent) at a time.

    Runs inside the segment change's transaction, with the job row locked, so two segments finishing at once
    cannot both step it. Returns the job (None where it has ended).
    """
    job = Job.objects.select_for_update().get(pk=job_id)
    if job.status in TERMINAL:
        return None
    statuses = list(Segment.objects.filter(job_id=job_id).values_list("status", flat=True))
    if not statuses or any(s not in POSITION for s in statuses):
        return job
    target = derived_status(statuses, job.status)
    while job.status != target:
        following = PIPELINE[POSITION[job.status] + 1]
        job = transition(job_id, job.status, following, message=_job_message(following, len(statuses)))
    return job


def _job_message(status: str, segments: int) -> str:
    of = f"all {segments} segments" if segments > 1 else "the video"
    for stage in STAGES.values():
        if status == stage.running:
            return f"{stage.name} started"
        if status == stage.complete:
            return f"{stage.name} done for {of}"
    return ""


def goes_first(job_id: int, stage: Stage) -> bool:
    """Fair sharing (docs/segments.md): a segment goes to the head of its stage's queue when its job has fewer
    segments left to pass that stage than every other job with a segment waiting in that queue (shortest
    remaining work first); otherwise to the back (first in, first out)."""
    waiting = set(Segment.objects.filter(status=stage.ready, job__status__in=list(ACTIVE)).exclude(message_id="")
                  .exclude(job_id=job_id).values_list("job_id", flat=True).distinct())
    if not waiting:
        return False
    before = PIPELINE[:POSITION[stage.complete]]
    left = dict(Segment.objects.filter(job_id__in=[*waiting, job_id], status__in=before).values("job_id")
                .annotate(n=Count("pk")).values_list("job_id", "n"))
    return left.get(job_id, 0) < min(left.get(other, 0) for other in waiting)


GO, PAUSE, GIVE_BACK = "go", "pause", "give back"


# A shorter job's message sent less than this long ago is a hand-off in progress, and stages of this host
# pause for it; one waiting longer has no free worker (all busy, or none running), and pausing would not help.
HAND_OFF_S = 5.0
GIVE_WAY_CLAIM_S = 2.0  # how long a worker thread's claim on one waiting message of a shorter job holds
_claims: dict[str, tuple[str, float]] = {}  # waiting message -> (claimant, until), this process's threads only
_claims_lock = threading.Lock()


def _claim(items: list[str], claimant: str) -> bool:
    """Whether this claimant holds, or now takes, the claim on one of ``items`` (waiting messages of shorter
    jobs). Claims are per process: its threads share its consumers' messages, so one thread giving way for a
    message is enough, and the others pause. Another process may hold that message in its prefetch (a worker
    taking two queues prefetches from the one it is not running), so every process gives way once."""
    now = time.monotonic()
    with _claims_lock:
        for item in [key for key, (_, until) in _claims.items() if until <= now]:
            del _claims[item]
        for item in items:
            holder, _ = _claims.get(item, (claimant, 0.0))
            if holder == claimant:
                _claims[item] = (claimant, now + GIVE_WAY_CLAIM_S)
                return True
    return False


def fair_turn(job_id: int, served: list[Stage], host: str, claimant: str | None = None) -> str:
    """Fair sharing while a stage runs (docs/segments.md), asked before a stage starts and at its batch
    boundaries. ``served``: the stages whose queues this worker takes (its thread could run the next message of
    any of them); ``claimant``: this worker thread (the lease owner name; by default ``host``). Against the jobs
    with fewer segments left than this one:

    - GIVE_BACK where one of them waits for a served stage (a segment in its ready status with a message, or a
      job's plan, on the preprocess queue) and no other thread of this process has claimed that message: the
      segment goes back to its queue, behind it, and this worker takes the shorter job's;
    - PAUSE where one of them has a segment running on the same host (``host`` starts the leases' owner names)
      or a message sent less than HAND_OFF_S ago (between two of its stages, for a stage another worker
      serves or whose message another thread of this process has claimed), so its stages have the cores and
      the pause does not lapse at each hand-off;
    - else GO. A job never waits for one that is not running or queued, so never for a worker it holds (the
      worker a waiting message needs gives its own segment back rather than pausing)."""
    claimant = claimant or host
    others = Segment.objects.filter(job__status__in=list(ACTIVE)).exclude(job_id=job_id)
    now = timezone.now()
    due = Q(dispatched_at__isnull=True) | Q(dispatched_at__lte=now)  # not in a retry's backoff
    waiting = list(others.filter(due, status__in=[stage.ready for stage in STAGES.values()])
                   .exclude(message_id="").values_list("job_id", "pk", "status", "dispatched_at"))
    running = set(others.filter(status__in=list(STAGE_BY_RUNNING), lease_owner__startswith=f"{host}:")
                  .values_list("job_id", flat=True))
    # A job not planned yet (its message on the preprocess queue): its segments, from its duration.
    target = max(0.1, settings.GEDGE_SEGMENT_S)
    planning = {pk: (max(1, math.ceil(duration / target)), sent) for pk, duration, sent in Job.objects.filter(
        status=Status.ENQUEUE, segments__isnull=True).exclude(message_id="")
        .values_list("pk", "duration_s", "dispatched_at")}
    if not waiting and not running and not planning:
        return GO
    left = dict(Segment.objects.filter(job_id__in=[*(row[0] for row in waiting), *running, job_id])
                .exclude(status=SEGMENT_DONE).values("job_id").annotate(n=Count("pk")).values_list("job_id", "n"))
    mine = left.get(job_id, 0)
    readies = {stage.ready for stage in served}
    shorter_waiting = [(pk, status, sent) for other, pk, status, sent in waiting if left.get(other, 0) < mine]
    shorter_planning = [(pk, sent) for pk, (n, sent) in planning.items() if n < mine]
    mine_to_take = ([f"segment:{pk}:{status}" for pk, status, _ in shorter_waiting if status in readies]
                    + ([f"plan:{pk}" for pk, _ in shorter_planning] if STAGES["preprocess"] in served else []))
    if mine_to_take and _claim(mine_to_take, claimant):
        return GIVE_BACK

    # Sent moments ago: a worker is about to take it (one waiting longer has no free worker to wait for).
    sent = [at for *_, at in shorter_waiting] + [at for _, at in shorter_planning]
    handing_off = any(at is not None and (now - at).total_seconds() < HAND_OFF_S for at in sent)
    if handing_off or any(left.get(other, 0) < mine for other in running):
        return PAUSE
    return GO


def can_give_way(job_id: int) -> bool:
    """Whether fair_turn can ever answer other than GO for this job, asked once as a stage starts: only a job
    with more than one segment left can meet a job with fewer (one waiting, running or still to be planned has
    at least one), and a job's segments left only go down. A one-segment job skips every give-way query."""
    return Segment.objects.filter(job_id=job_id).exclude(status=SEGMENT_DONE).count() > 1


def served_stages(queues: list[str]) -> list[Stage]:
    """The stages a worker process serves, from its queue names (GEDGE_WORKER_QUEUES; empty: all of them)."""
    return [stage for stage in STAGES.values() if not queues or stage.name in queues]


def fill_window(job_id: int) -> int:
    """Dispatch preprocessing for the job's next segments while fewer than ``window`` are in flight
    (dispatched and not yet postprocessed); returns how many were sent. Call inside a transaction."""
    job = Job.objects.select_for_update().get(pk=job_id)
    if job.status in TERMINAL:
        return 0
    segments = Segment.objects.filter(job_id=job_id)
    in_flight = segments.exclude(status=SEGMENT_DONE).exclude(status=Status.ENQUEUE, message_id="").count()
    free = job.window - in_flight
    if free <= 0:
        return 0
    waiting = list(segments.filter(status=Status.ENQUEUE, message_id="").order_by("index")[:free])
    stage = STAGES["preprocess"]
    for segment in waiting:
        dispatch_segment(segment, stage, front=goes_first(job_id, stage))
    return len(waiting)


# --- segments ---


def _job_of(segment_id: int) -> int:
    job_id = Segment.objects.filter(pk=segment_id).values_list("job_id", flat=True).first()
    if job_id is None:  # its job was retried from the start: the segment is gone
        raise StaleTransition(f"segment {segment_id} no longer exists")
    return job_id


def _lock_job(job_id: int) -> None:
    """Take the job row's lock first in every transaction that changes a segment, as the job's own
    transitions do (they update the job, then its segments), so the two can never deadlock."""
    list(Job.objects.select_for_update().filter(pk=job_id).values_list("pk", flat=True))

_SUMS = ("preprocess_done", "inference_done", "postprocess_done")


def _job_totals() -> dict[str, Any]:
    """Job columns recomputed from its segments: frames done per stage (progress over the whole video) and
    segments through all three stages."""
    mine = Segment.objects.filter(job_id=OuterRef("pk")).values("job_id")
    totals: dict[str, Any] = {name: Coalesce(Subquery(mine.annotate(total=Sum(name)).values("total")), 0)
                              for name in _SUMS}
    totals["segments_done"] = Coalesce(Subquery(mine.filter(status=SEGMENT_DONE).annotate(n=Count("pk"))
                                                .values("n")), 0)
    return totals


def segment_transition(
    segment_id: int,
    from_status: str,
    to_status: str,
    *,
    message: str = "",
    fields: dict[str, Any] | None = None,
    job_fields: dict[str, Any] | None = None,
    attempt: int | None = None,
    lease_owner: str = "",
    dispatch_delay_ms: int = 0,
    dispatch_front: bool = False,
) -> tuple[Segment, Job | None]:
    """Move a segment or raise; in the same transaction: its JobEvent, the job's totals and ``job_fields``,
    the next stage's message where it enters a ready status, and the job's derived status (advance_job).

    ``attempt`` fences a stage attempt's own moves: they apply only while the row still carries that number
    (a stale worker whose lease was taken over cannot move the segment). Entering a running status starts a
    new attempt: ``attempt + 1``, a fresh heartbeat and ``lease_owner``. Returns (segment, job or None where
    the job has ended).
    """
    if to_status not in SEGMENT_TRANSITIONS[from_status]:
        raise IllegalTransition(f"segment {segment_id}: {from_status} -> {to_status} is not allowed")
    now = timezone.now()
    updates: dict[str, Any] = {"status": to_status, "updated_at": now, **(fields or {})}
    if to_status in STAGE_BY_RUNNING:  # a new attempt: its own lease, its own frames done (from 0)
        updates.update(attempt=F("attempt") + 1, heartbeat_at=now, lease_owner=lease_owner[:200],
                       **{STAGE_BY_RUNNING[to_status].progress_field: 0})
    elif from_status in STAGE_BY_RUNNING:
        updates.update(heartbeat_at=None, lease_owner="")
    match: dict[str, Any] = {"pk": segment_id, "status": from_status}
    if attempt is not None:
        match["attempt"] = attempt
    job_id = _job_of(segment_id)
    with transaction.atomic():
        _lock_job(job_id)  # always the job row before its segments' (as a job-level transition does)
        if Segment.objects.filter(**match).update(**updates) != 1:
            raise StaleTransition(f"segment {segment_id} is not {from_status}"
                                  + (f" at attempt {attempt}" if attempt else ""))
        segment = Segment.objects.select_related("job").get(pk=segment_id)
        job_updates = {**_job_totals(), **(job_fields or {})}
        if to_status in _COMPLETE:  # busy time per stage, summed over the segments
            busy: Counter[str] = Counter()
            for stage_ms in Segment.objects.filter(job_id=job_id).values_list("stage_ms", flat=True):
                busy.update(stage_ms)
            job_updates["stage_ms"] = dict(busy)
        if "work_bytes" in (fields or {}):  # the frames a segment holds changed: the job's peak over its segments
            held = Segment.objects.filter(job_id=job_id).aggregate(total=Sum("work_bytes"))["total"] or 0
            job_updates["work_bytes_peak"] = Greatest(F("work_bytes_peak"), held)
        Job.objects.filter(pk=job_id).update(version=F("version") + 1, updated_at=now, **job_updates)
        JobEvent.objects.create(job_id=segment.job_id, segment=segment.index, from_status=from_status,
                                to_status=to_status, iteration=segment.iteration, message=message[:2000])
        job = advance_job(segment.job_id)
        if job is not None:
            stage = STAGE_BY_READY.get(to_status)
            if stage is not None and (to_status != Status.ENQUEUE or from_status in STAGE_BY_RUNNING):
                if stage.name == "postprocess" and not _previous_tracked(segment):
                    Segment.objects.filter(pk=segment.pk).update(message_id="", dispatched_at=None)
                else:
                    front = dispatch_front or goes_first(job_id, stage)
                    dispatch_segment(segment, stage, dispatch_delay_ms, front)
            if to_status == SEGMENT_DONE:
                fill_window(segment.job_id)
            # advance_job read the row after this transaction's writes to it: it is what browsers should see.
            transaction.on_commit(lambda: push_job(job))
    return segment, job


def _previous_tracked(segment: Segment) -> bool:
    """The segment before has stored its tracker state, or finished without one (a version without
    tracking, before an upgrade: the stage then fails the job with that reason instead of waiting forever)."""
    return segment.index == 0 or Segment.objects.filter(
        Q(tracker_state__isnull=False) | Q(status=SEGMENT_DONE), job_id=segment.job_id,
        index=segment.index - 1).exists()


def record_tracked(segment_id: int, attempt: int, state: dict) -> None:
    """Store the tracker state a segment's postprocessing left (fenced by its attempt, else JobInterrupted)
    and send the next segment's postprocessing where it was waiting for it. A retried attempt stores the same
    state again (tracking is deterministic) and sends nothing twice."""
    try:
        job_id = _job_of(segment_id)
    except StaleTransition as exc:
        raise JobInterrupted(str(exc)) from exc
    postprocess = STAGES["postprocess"]
    with transaction.atomic():
        _lock_job(job_id)
        changed = Segment.objects.filter(pk=segment_id, status=postprocess.running, attempt=attempt).update(
            tracker_state=state, heartbeat_at=timezone.now())
        if changed != 1:
            raise JobInterrupted(f"segment {segment_id} is no longer {postprocess.running} at attempt {attempt}")
        index = Segment.objects.filter(pk=segment_id).values_list("index", flat=True).get()
        waiting = Segment.objects.filter(job_id=job_id, index=index + 1, status=postprocess.ready, message_id="",
                                         job__status__in=list(ACTIVE)).first()
        if waiting is not None:
            dispatch_segment(waiting, postprocess, front=goes_first(job_id, postprocess))


def record_progress(segment_id: int, running: str, attempt: int, fields: dict[str, Any]) -> Job:
    """Store a segment's progress (and renew its lease) while ``running`` at ``attempt``; else raise
    JobInterrupted. Returns the job with its totals over all segments, for the push."""
    now = timezone.now()
    try:
        job_id = _job_of(segment_id)
    except StaleTransition as exc:
        raise JobInterrupted(str(exc)) from exc
    with transaction.atomic():
        _lock_job(job_id)
        changed = Segment.objects.filter(pk=segment_id, status=running, attempt=attempt).update(
            updated_at=now, heartbeat_at=now, **fields)
        if changed != 1:
            raise JobInterrupted(f"segment {segment_id} is no longer {running} at attempt {attempt}")
        Job.objects.filter(pk=job_id).update(version=F("version") + 1, updated_at=now, **_job_totals())
    return Job.objects.get(pk=job_id)
