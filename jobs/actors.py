"""Dramatiq actors: thin wrappers, one per stage, each on its own queue (the names are in jobs.lifecycle.transitions).

Retries are counted on the job row (iteration), not by Dramatiq, so max_retries is 0 here: run_stage
catches stage errors and re-dispatches the stage itself after a backoff.
"""
import dramatiq
from django.conf import settings

from .lifecycle.runner import run_stage
from .lifecycle.transitions import STAGES

_OPTIONS = {"max_retries": 0, "time_limit": settings.GEDGE_STAGE_TIME_LIMIT_S * 1000, "throws": ()}


@dramatiq.actor(actor_name=STAGES["preprocess"].actor, queue_name="preprocess", **_OPTIONS)
def preprocess_job(job_id: int) -> None:
    run_stage("preprocess", job_id)


@dramatiq.actor(actor_name=STAGES["inference"].actor, queue_name="inference", **_OPTIONS)
def infer_job(job_id: int) -> None:
    run_stage("inference", job_id)


@dramatiq.actor(actor_name=STAGES["postprocess"].actor, queue_name="postprocess", **_OPTIONS)
def postprocess_job(job_id: int) -> None:
    run_stage("postprocess", job_id)


ACTOR_BY_STAGE = {"preprocess": preprocess_job, "inference": infer_job, "postprocess": postprocess_job}
