"""Running a job's work in a worker: the actors call :func:`plan_job` and :func:`run_segment_stage`.

Planning cuts the video into segments (rows of their own) and dispatches the first of them. A segment stage
moves its segment from the stage's ready status to its running status (a compare-and-set: a duplicate or
late message changes nothing), runs the plain stage code from ``stages/`` under a lease, and on success moves
the segment to the stage's complete status, which dispatches its next stage; the job's status follows from
its segments (jobs/lifecycle/transitions.py). A crash retries that segment's stage with a backoff, counted in
the segment's and the job's ``iteration``; an input or model error fails the job; a stopping worker hands
the segment back.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F

from jobs.models import TERMINAL, Job, Segment, Status
from jobs.workers import stage_metrics
from jobs.workers.detector import get_detector, model_input_size
from jobs.workers.faults import maybe_crash, maybe_slow
from stages.errors import ModelError, UnprocessableInput
from stages.inference import run_inference
from stages.postprocess import EncoderSettings, postprocess_detections
from stages.preprocess import letterbox_geometry, preprocess_video
from stages.segments import SegmentPlan, plan_segments
from stages.tracking import TrackerSettings
from stages.video import probe_video

from .broadcast import push_job
from .leases import HandBack, Lease, host_name, owner_name
from .services import MODEL_FACTS, cleanup_work, end_job, finalize_job, tracker_settings, video_facts
from .transitions import (
    GIVE_BACK,
    GO,
    STAGES,
    JobInterrupted,
    Stage,
    StaleTransition,
    can_give_way,
    dispatch_plan,
    dispatch_segment,
    fair_turn,
    fill_window,
    record_progress,
    record_tracked,
    segment_transition,
    served_stages,
)
from .uploads import video_limits

logger = logging.getLogger(__name__)


# --- planning ---


def work_budget(width: int, height: int, plans: list[SegmentPlan]) -> tuple[int, int]:
    """(bytes of frames one segment stores at most, how many segments fit in GEDGE_WORK_BUDGET_BYTES)."""
    input_h, input_w = model_input_size()
    _, new_w, new_h = letterbox_geometry(width, height, input_h, input_w)
    largest = max(plan.frame_count for plan in plans) * new_w * new_h * 3
    return largest, settings.GEDGE_WORK_BUDGET_BYTES // max(1, largest)


def plan_job(job_id: int) -> None:
    """Cut the job's video into segments and dispatch the first ``window``; a duplicate message does nothing."""
    job = Job.objects.filter(pk=job_id).first()
    if job is None or job.status != Status.ENQUEUE or job.segments.exists():
        return
    limits = video_limits()
    try:
        info = probe_video(job.source_path, limits)
        plans = plan_segments(job.source_path, settings.GEDGE_SEGMENT_S, limits)
        largest, fits = work_budget(info.width, info.height, plans)
    except UnprocessableInput as exc:
        end_job(job, Status.FAILED, str(exc), fields={"error": str(exc), "failed_stage": "preprocess"})
        return
    except Exception as exc:  # noqa: BLE001 - a crash while planning is retried like a stage's
        logger.exception("planning crashed", extra={"job_id": job_id})
        _retry_plan_or_fail(job, f"{exc.__class__.__name__}: {exc}")
        return
    if fits < 1:
        mb = 1_000_000
        reason = (f"a segment of this video needs {largest / mb:,.0f} MB of frames on shared storage, more than "
                  f"the work-storage budget of {settings.GEDGE_WORK_BUDGET_BYTES / mb:,.0f} MB "
                  f"(GEDGE_WORK_BUDGET_BYTES); its keyframes are too far apart to cut it shorter. Re-encode it "
                  f"with a keyframe every few seconds, or raise the budget")
        end_job(job, Status.FAILED, reason, fields={"error": reason, "failed_stage": "preprocess"})
        return
    window = min(max(1, settings.GEDGE_SEGMENTS_IN_FLIGHT), fits)
    with transaction.atomic():
        locked = Job.objects.select_for_update().get(pk=job_id)
        if locked.status != Status.ENQUEUE or locked.segments.exists():
            return
        Segment.objects.bulk_create([
            Segment(job_id=job_id, index=p.index, first_frame=p.first_frame, frame_count=p.frame_count,
                    start_pts=p.start_pts, end_pts=p.end_pts, start_s=p.start_s, time_base=str(p.time_base))
            for p in plans
        ])
        Job.objects.filter(pk=job_id).update(
            window=window, segment_count=len(plans), frame_count=plans[-1].end_frame, width=info.width,
            height=info.height, fps=info.fps, duration_s=info.duration_s, version=F("version") + 1)
        fill_window(job_id)
        transaction.on_commit(lambda: push_job(Job.objects.get(pk=job_id)))
    logger.info("planned %d segments, %d in flight at most", len(plans), window, extra={"job_id": job_id})


def _retry_plan_or_fail(job: Job, reason: str) -> None:
    iteration = job.iteration + 1
    if iteration > settings.GEDGE_MAX_ITERATIONS:
        end_job(job, Status.FAILED, f"planning failed {iteration} times; last error: {reason}",
                fields={"error": reason, "failed_stage": "preprocess"})
        return
    time.sleep(min(5.0, settings.GEDGE_RETRY_BACKOFF_MS / 1000))
    with transaction.atomic():
        if Job.objects.filter(pk=job.pk, status=Status.ENQUEUE).update(iteration=iteration, error=reason):
            dispatch_plan(job)


# --- segment stage bodies: (job, segment) in, stage function called, (segment fields, job fields) out ---


def plan_of(segment: Segment) -> SegmentPlan:
    return SegmentPlan(index=segment.index, first_frame=segment.first_frame, frame_count=segment.frame_count,
                       start_pts=segment.start_pts, end_pts=segment.end_pts, start_s=segment.start_s,
                       time_base=Fraction(segment.time_base))


Fields = tuple[dict[str, Any], dict[str, Any]]


def _preprocess(job: Job, segment: Segment, progress: Callable[[int, int], None]) -> Fields:
    out = attempt_dir(job, segment, "preprocess")
    plan = plan_of(segment)
    result = preprocess_video(job.source_path, out, model_input_size(), enhance=bool(job.params.get("enhance")),
                              limits=video_limits(), progress=progress, segment=plan)
    fields = {"preprocess_done": result.frame_count, "work_bytes": result.bytes_written,
              "artifacts": {"frames": _rel(job, out)}}
    job_fields: dict[str, Any] = {"fps": result.fps}
    if plan.is_whole_video:  # a straight decode: what it yields is the video's frame count
        fields["frame_count"] = job_fields["frame_count"] = result.frame_count
    return fields, job_fields


def _inference(job: Job, segment: Segment, progress: Callable[[int, int], None]) -> Fields:
    detector = get_detector()
    frames, out = job.job_dir / segment.artifacts["frames"], attempt_dir(job, segment, "inference")
    result = run_inference(frames, detector, progress=progress, out_dir=out)
    (out / MODEL_FACTS).write_text(json.dumps(detector.facts))
    # work_bytes 0: the frames are deleted once this completion has won (_after_complete)
    return ({"inference_done": result.frame_count, "work_bytes": 0,
             "artifacts": {**segment.artifacts, "detections": _rel(job, out)}},
            {"model_name": detector.name, "model_sha256": detector.sha256,
             "params": {**job.params, **detector.parameters}})


def _postprocess(job: Job, segment: Segment, progress: Callable[[int, int], None]) -> Fields:
    previous = None
    if segment.index > 0:  # sent only once the segment before was tracked (transitions.record_tracked)
        previous, status = Segment.objects.values_list("tracker_state", "status").get(job_id=job.pk,
                                                                                      index=segment.index - 1)
        if previous is None and status == Status.POSTPROCESSING_COMPLETE:  # done by a version without tracking
            raise UnprocessableInput(f"segment {segment.index - 1} was postprocessed without tracking (before an "
                                     f"upgrade): retry the job to process it again from the start")
        if previous is None:
            raise RuntimeError(f"segment {segment.index - 1} has not been tracked yet")
    detections, out = job.job_dir / segment.artifacts["detections"], attempt_dir(job, segment, "postprocess")
    model = json.loads((detections / MODEL_FACTS).read_text())
    result = postprocess_detections(
        job.source_path, detections, out, video=video_facts(job), model=model, parameters=job.params,
        encoder=EncoderSettings(preset=settings.GEDGE_X264_PRESET, crf=settings.GEDGE_X264_CRF),
        progress=progress, segment=plan_of(segment),
        tracking=TrackerSettings.from_dict(job.params.get("tracker")) if "tracker" in job.params
        else tracker_settings(),
        tracker_state=previous,
        on_tracked=lambda state: record_tracked(segment.pk, segment.attempt, state),
    )
    return ({"postprocess_done": result.frame_count, "artifacts": {**segment.artifacts, "part": _rel(job, out)}},
            {})


def attempt_dir(job: Job, segment: Segment, stage: str) -> Path:
    """Each stage attempt writes under its own name, so a stale attempt never touches a newer one's files;
    earlier attempts' folders of the same stage are removed first (a stale one stops at its next write)."""
    folder = job.work_dir / f"s{segment.index}"
    for old in folder.glob(f"a*-{stage}"):
        shutil.rmtree(old, ignore_errors=True)
    path = folder / f"a{segment.attempt}-{stage}"
    path.mkdir(parents=True)
    return path


def _rel(job: Job, path: Path) -> str:
    return str(path.relative_to(job.job_dir))


STAGE_BODIES: dict[str, Callable[[Job, Segment, Callable[[int, int], None]], Fields]] = {
    "preprocess": _preprocess,
    "inference": _inference,
    "postprocess": _postprocess,
}


WAY_CHECK_S = 0.2  # how often a running stage asks whether it should give way (two or three small queries)


class _Progress:
    """Stores a segment's frames done at most every GEDGE_PROGRESS_INTERVAL_S and pushes the job.

    Called after every frame (a detector batch in inference), so a cancel, a lost lease, a stopping worker
    (JobInterrupted, HandBack) or a job to give way to (GiveWay) is acted on within a frame's time; what costs
    a query is paced by the clock (GEDGE_PROGRESS_INTERVAL_S, WAY_CHECK_S), not by the frame count.
    """

    def __init__(self, segment: Segment, stage: Stage, lease: Lease) -> None:
        self.segment, self.stage, self.lease = segment, stage, lease
        self.last = 0.0
        self.next_way_check = 0.0
        self.done = 0
        self.host, self.claimant = host_name(), owner_name()
        self.may_give_way = settings.GEDGE_GIVE_WAY_MAX_S > 0 and can_give_way(segment.job_id)

    def __call__(self, done: int, total: int) -> None:
        maybe_slow(self.stage.name, self.done, done)
        self.done = done
        self.lease.check()
        self._give_way()
        now = time.monotonic()
        if done < total and now - self.last < settings.GEDGE_PROGRESS_INTERVAL_S:
            return
        self.last = now
        job = record_progress(self.segment.pk, self.stage.running, self.segment.attempt,
                              {self.stage.progress_field: done})
        push_job(job)

    def wait_turn(self) -> None:
        """The give-way check once before the stage's first frame (later ones come at batch boundaries)."""
        self.lease.check()
        self._give_way()

    def _give_way(self) -> None:
        """Fair sharing (transitions.fair_turn): hand the segment back where a job with less left waits for
        this stage; pause (at most GEDGE_GIVE_WAY_MAX_S at a time, the lease's heartbeat going on) while one
        runs on this host."""
        now = time.monotonic()
        if not self.may_give_way or now < self.next_way_check:
            return
        self.next_way_check = now + WAY_CHECK_S
        deadline = now + settings.GEDGE_GIVE_WAY_MAX_S
        served = served_stages(settings.GEDGE_WORKER_QUEUES)
        while (turn := fair_turn(self.segment.job_id, served, self.host, self.claimant)) != GO:
            if turn == GIVE_BACK:
                raise GiveWay()
            if time.monotonic() > deadline:
                return
            time.sleep(0.2)
            self.lease.check()


def run_segment_stage(stage_name: str, segment_id: int) -> None:
    """Run one stage of one segment; safe to call twice with the same message (the second is ignored)."""
    stage = STAGES[stage_name]
    if _behind_a_shorter_job(stage, segment_id):
        return
    try:
        owner = owner_name()
        segment, job = segment_transition(segment_id, stage.ready, stage.running, lease_owner=owner,
                                          message=f"{stage.name} started by {owner}")
    except (StaleTransition, Segment.DoesNotExist):
        logger.info("duplicate or late %s message ignored", stage.name, extra={"segment_id": segment_id})
        return
    if job is None:
        return
    maybe_crash(job.original_name, stage.name, job.pk)
    started = time.perf_counter()
    try:
        with Lease(segment.pk, stage.running, segment.attempt, job.pk) as lease:
            progress = _Progress(segment, stage, lease)
            progress.wait_turn()
            fields, job_fields = STAGE_BODIES[stage.name](job, segment, progress)
            lease.check()
    except JobInterrupted:
        logger.info("%s of segment %d stopped", stage.name, segment.index, extra={"job_id": job.pk})
        _clean_if_ended(job)
        return
    except HandBack:
        _hand_back(segment, stage)
        return
    except GiveWay:
        _hand_back(segment, stage, why="gave way to a job with less left", front=False)
        return
    except (UnprocessableInput, ModelError) as exc:
        reason = str(exc) if isinstance(exc, UnprocessableInput) else f"model: {exc}"
        _fail(job, segment, stage, reason)
        return
    except Exception as exc:  # noqa: BLE001 - any crash of stage code is retried, then fails the job
        logger.exception("%s crashed", stage.name, extra={"job_id": job.pk})
        _retry_or_fail(job, segment, stage, f"{exc.__class__.__name__}: {exc}")
        _clean_if_ended(job)
        return
    seconds = time.perf_counter() - started
    fields["stage_ms"] = {**segment.stage_ms, stage.name: round(seconds * 1000)}
    try:
        segment, job = segment_transition(segment.pk, stage.running, stage.complete, fields=fields,
                                          job_fields=job_fields, message=f"{stage.name} done",
                                          attempt=segment.attempt)
    except StaleTransition:
        logger.info("%s finished but the segment moved on (job ended?)", stage.name, extra={"job_id": job.pk})
        _clean_if_ended(job)
        return
    stage_metrics.observe_stage(stage.name, seconds, fields.get(stage.progress_field, 0))
    _after_complete(job, segment, stage)


def _behind_a_shorter_job(stage: Stage, segment_id: int) -> bool:
    """Fair sharing before a stage starts: where a job with fewer segments left waits for this worker
    (transitions.fair_turn), send this segment's message to the back of its queue instead of starting it, so
    the worker takes the shorter job's next. True where it was sent back."""
    if settings.GEDGE_GIVE_WAY_MAX_S <= 0:
        return False
    segment = Segment.objects.filter(pk=segment_id, status=stage.ready).exclude(message_id="").first()
    if segment is None:  # not waiting for this stage: the start below tells a duplicate apart
        return False
    if not can_give_way(segment.job_id):
        return False
    if fair_turn(segment.job_id, served_stages(settings.GEDGE_WORKER_QUEUES), host_name(),
                 owner_name()) != GIVE_BACK:
        return False
    with transaction.atomic():
        if not Segment.objects.select_for_update().filter(pk=segment_id, status=stage.ready,
                                                          message_id=segment.message_id).exists():
            return False
        dispatch_segment(segment, stage)
    logger.info("%s of segment %d sent back behind a job with less left", stage.name, segment.index,
                extra={"job_id": segment.job_id})
    return True


def _after_complete(job: Job | None, segment: Segment, stage: Stage) -> None:
    """Once the completing transition won: drop frames once inferred, publish results once all are done."""
    if stage.name == "inference":
        shutil.rmtree(segment.job.job_dir / segment.artifacts["frames"], ignore_errors=True)
    elif job is not None and job.status == Status.POSTPROCESSING_COMPLETE:
        try:
            finalize_job(job)
        except StaleTransition:  # another path finished it first, or it was cancelled meanwhile
            pass


def _clean_if_ended(job: Job) -> None:
    job.refresh_from_db(fields=["status"])
    if job.status in TERMINAL:
        cleanup_work(job)


class GiveWay(Exception):
    """A job with fewer segments left waits for this stage: give the segment back to its queue (fair sharing)."""


def _hand_back(segment: Segment, stage: Stage, why: str = "worker shutting down", front: bool = True) -> None:
    """Return the segment to its ready status for another worker (or this one, later); not an error. A worker
    shutting down puts it at the head of its queue; one that gives way lets the queue's order decide."""
    try:
        segment_transition(segment.pk, stage.running, stage.ready, attempt=segment.attempt, dispatch_front=front,
                           message=f"{stage.name} handed back: {why}")
    except StaleTransition:
        pass


def _retry_or_fail(job: Job, segment: Segment, stage: Stage, reason: str) -> None:
    iteration = segment.iteration + 1
    if iteration > settings.GEDGE_MAX_ITERATIONS:
        _fail(job, segment, stage, f"{stage.name} of segment {segment.index} failed {iteration} times; "
                                   f"last error: {reason}")
        return
    delay = settings.GEDGE_RETRY_BACKOFF_MS * 2 ** (iteration - 1)
    try:
        segment_transition(segment.pk, stage.running, stage.ready, fields={"iteration": iteration},
                           job_fields={"iteration": F("iteration") + 1, "error": reason},
                           message=f"{stage.name} failed ({reason}); retry {iteration} in {delay / 1000:g} s",
                           dispatch_delay_ms=delay, attempt=segment.attempt)
    except StaleTransition:  # the lease was taken over meanwhile: the newer attempt owns the segment
        return
    stage_metrics.count_retry(stage.name)


def _fail(job: Job, segment: Segment, stage: Stage, reason: str) -> None:
    where = f"segment {segment.index} (frames {segment.first_frame}-{segment.end_frame - 1})"
    if end_job(job, Status.FAILED, f"{where}: {reason}", fields={"error": reason, "failed_stage": stage.name},
               only_if_segment=(segment.pk, stage.running, segment.attempt)):
        stage_metrics.count_failure(stage.name)
