"""Dramatiq actors: thin wrappers, one per stage on its own queue, plus the job's planning message on the
preprocess queue (the names are in jobs.lifecycle.transitions). Messages carry a segment's id (a job's for
planning).

Retries are counted on the rows (iteration), not by Dramatiq, so max_retries is 0 here: run_segment_stage
catches stage errors and re-dispatches the segment's stage itself after a backoff.
"""
import dramatiq
from django.conf import settings

from .lifecycle.runner import plan_job, run_segment_stage
from .lifecycle.transitions import PLAN_ACTOR, STAGES

_OPTIONS = {"max_retries": 0, "time_limit": settings.GEDGE_STAGE_TIME_LIMIT_S * 1000, "throws": ()}


@dramatiq.actor(actor_name=PLAN_ACTOR, queue_name="preprocess", **_OPTIONS)
def plan(job_id: int) -> None:
    plan_job(job_id)


@dramatiq.actor(actor_name=STAGES["preprocess"].actor, queue_name="preprocess", **_OPTIONS)
def preprocess_segment(segment_id: int) -> None:
    run_segment_stage("preprocess", segment_id)


@dramatiq.actor(actor_name=STAGES["inference"].actor, queue_name="inference", **_OPTIONS)
def infer_segment(segment_id: int) -> None:
    run_segment_stage("inference", segment_id)


@dramatiq.actor(actor_name=STAGES["postprocess"].actor, queue_name="postprocess", **_OPTIONS)
def postprocess_segment(segment_id: int) -> None:
    run_segment_stage("postprocess", segment_id)


ACTOR_BY_STAGE = {"preprocess": preprocess_segment, "inference": infer_segment, "postprocess": postprocess_segment}
