"""/metrics, /readyz, worker readiness markers and JSON logs."""
from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from types import SimpleNamespace

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.test import Client
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from gedge_site.logjson import JsonFormatter
from jobs.lifecycle import runner
from jobs.lifecycle.runner import plan_job, run_segment_stage
from jobs.lifecycle.services import submit_job
from jobs.models import Status
from jobs.ops.health import WorkerHealth, marker_path
from jobs.ops.metrics import queue_key
from stages.errors import UnprocessableInput

from .conftest import make_video


def scrape(client: Client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    return samples(response.content.decode())


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def upload(owner, tmp_path, frames=4):
    path = make_video(tmp_path / "clip.mp4", frames=frames, width=64, height=48)
    job, _ = submit_job(owner, SimpleUploadedFile("clip.mp4", path.read_bytes(), "video/mp4"))
    return job


@pytest.mark.django_db(transaction=True)
def test_metrics_count_jobs_by_status_and_queue_depth(owner, tmp_path, redis_clean):
    from django.conf import settings

    client = Client()
    before = scrape(client)
    assert before[("gedge_jobs", (("status", "Enqueue"),))] == 0
    assert before[("gedge_metrics_source_up", (("source", "redis"),))] == 1
    jobs = [upload(owner, tmp_path) for _ in range(2)]  # committed: each sends one preprocess message
    jobs[1].status = Status.FAILED
    jobs[1].save(update_fields=["status"])
    after = scrape(client)
    assert after[("gedge_jobs", (("status", "Enqueue"),))] == 1
    assert after[("gedge_jobs", (("status", "Failed"),))] == 1
    assert after[("gedge_jobs", (("status", "Exit"),))] == 0
    namespace = settings.DRAMATIQ_BROKER["OPTIONS"]["namespace"]
    assert redis_clean.llen(queue_key(namespace, "preprocess")) == 2  # the key KEDA's scaler reads
    assert after[("gedge_queue_depth", (("queue", "preprocess"),))] == 2
    assert after[("gedge_queue_depth", (("queue", "inference"),))] == 0
    assert ("gedge_queue_delayed", (("queue", "postprocess"),)) in after


@pytest.mark.django_db
def test_metrics_still_answer_when_redis_is_down(settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    found = scrape(Client())
    assert found[("gedge_metrics_source_up", (("source", "redis"),))] == 0
    assert found[("gedge_metrics_source_up", (("source", "database"),))] == 1
    ready = Client().get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["redis"].startswith("error")


@pytest.mark.django_db
def test_healthz_and_readyz(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "redis": "ok"}


def first_segment(job):
    plan_job(job.pk)
    return job.segments.order_by("index").first()


@pytest.mark.django_db(transaction=True)
def test_stage_runs_record_durations_frames_retries_and_failures(owner, tmp_path, redis_clean, monkeypatch,
                                                                  settings):
    settings.GEDGE_SEGMENT_S = 0.5
    path = make_video(tmp_path / "two.mp4", frames=30, width=64, height=48, options={"g": "15"})
    job, _ = submit_job(owner, SimpleUploadedFile("two.mp4", path.read_bytes(), "video/mp4"))
    counts = {stage: sample("gedge_stage_duration_seconds_count", stage=stage) for stage in runner.STAGES}
    frames = sample("gedge_frames_processed_total", stage="inference")
    plan_job(job.pk)
    segments = list(job.segments.order_by("index"))
    assert len(segments) == 2
    for segment in segments:
        for stage in ("preprocess", "inference", "postprocess"):
            run_segment_stage(stage, segment.pk)
    job.refresh_from_db()
    assert job.status == Status.EXIT
    for stage in runner.STAGES:  # one observation per segment and stage
        assert sample("gedge_stage_duration_seconds_count", stage=stage) == counts[stage] + 2
    assert sample("gedge_frames_processed_total", stage="inference") == frames + 30
    total_ms = sum(job.stage_ms.values())
    observed = sum(sample("gedge_stage_duration_seconds_sum", stage=s) for s in runner.STAGES)
    assert observed >= total_ms / 1000 * 0.99  # the histogram holds at least this job's stage times

    retries = sample("gedge_stage_retries_total", stage="preprocess")
    failures = sample("gedge_stage_failures_total", stage="preprocess")
    crash = first_segment(upload(owner, tmp_path))
    monkeypatch.setitem(runner.STAGE_BODIES, "preprocess", lambda job, segment, progress: 1 / 0)
    run_segment_stage("preprocess", crash.pk)
    assert sample("gedge_stage_retries_total", stage="preprocess") == retries + 1

    def unusable(job, segment, progress):
        raise UnprocessableInput("not a video")

    bad = first_segment(upload(owner, tmp_path))
    monkeypatch.setitem(runner.STAGE_BODIES, "preprocess", unusable)
    run_segment_stage("preprocess", bad.pk)
    assert sample("gedge_stage_failures_total", stage="preprocess") == failures + 1
    assert sample("gedge_stage_duration_seconds_count", stage="preprocess") == counts["preprocess"] + 2


def fake_worker(queues):
    return SimpleNamespace(consumer_whitelist=set(queues) if queues else None)


@pytest.mark.django_db
def test_worker_marker_lifecycle_and_probe(settings, tmp_path, capsys):
    settings.GEDGE_WORKER_STATE_DIR = tmp_path / "state"
    settings.GEDGE_WORKER_HEARTBEAT_S = 0.5  # a marker is fresh for three of these: room for a slow machine
    with pytest.raises(CommandError):  # nothing booted yet
        call_command("worker_ready")
    assert json.loads(capsys.readouterr().out)["checks"]["workers"].startswith("error: 0/1")

    middleware = WorkerHealth()
    middleware.before_worker_boot(None, fake_worker(["inference"]))
    assert not marker_path(os.getpid()).exists(), "in-process workers (tests, embedded mode) write no marker"

    middleware.after_process_boot(None)
    middleware.before_worker_boot(None, fake_worker(["inference"]))
    try:
        marker = json.loads(marker_path(os.getpid()).read_text())
        assert marker["model"] == "yolox_nano" and len(marker["sha256"]) == 64
        assert marker["queues"] == ["inference"] and marker["input_size"] == [416, 416]
        call_command("worker_ready")
        ready = json.loads(capsys.readouterr().out)
        assert ready == {"status": "ok", "checks": {"workers": "1/1 ready", "database": "ok", "redis": "ok"},
                         "models": ["yolox_nano"]}
        with pytest.raises(CommandError):  # two processes expected, one ready
            call_command("worker_ready", processes=2)
        capsys.readouterr()
        mtime = marker_path(os.getpid()).stat().st_mtime
        deadline = time.monotonic() + 5
        while marker_path(os.getpid()).stat().st_mtime == mtime and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker_path(os.getpid()).stat().st_mtime > mtime, "the heartbeat touches the marker"
    finally:
        middleware.before_worker_shutdown(None, None)
    assert not marker_path(os.getpid()).exists(), "a draining worker is not ready"
    with pytest.raises(CommandError):
        call_command("worker_ready", live=True)


@pytest.mark.django_db
def test_probe_ignores_dead_and_silent_workers(settings, tmp_path, capsys):
    settings.GEDGE_WORKER_STATE_DIR = tmp_path
    settings.GEDGE_WORKER_HEARTBEAT_S = 1
    (tmp_path / "ready-999999999.json").write_text(json.dumps({"pid": 999999999}))
    stale = marker_path(os.getpid())
    stale.write_text(json.dumps({"pid": os.getpid()}))
    os.utime(stale, (time.time() - 600, time.time() - 600))
    with pytest.raises(CommandError):
        call_command("worker_ready", live=True)
    workers = json.loads(capsys.readouterr().out)["checks"]["workers"]
    assert "process gone" in workers and re.search(r"heartbeat 60\d s old", workers), workers
    os.utime(stale)
    call_command("worker_ready", live=True)


def test_worker_without_its_model_consumes_nothing_until_it_loads(settings, tmp_path, caplog, monkeypatch):
    from jobs.workers import detector

    monkeypatch.setattr(detector, "_detector", None)  # a fresh worker process has loaded nothing
    detector.model_input_size.cache_clear()
    settings.GEDGE_WORKER_STATE_DIR = tmp_path
    settings.GEDGE_WORKER_HEARTBEAT_S = 0.05
    settings.GEDGE_MODEL_PATH = str(tmp_path / "missing.onnx")
    middleware = WorkerHealth()
    middleware.after_process_boot(None)
    booted = threading.Event()

    def boot():
        middleware.before_worker_boot(None, fake_worker(["preprocess", "postprocess"]))
        booted.set()

    thread = threading.Thread(target=boot)
    thread.start()
    deadline = time.monotonic() + 10  # the first load attempt may take a while on a busy machine
    while not any("model not loaded" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any("model not loaded" in r.getMessage() for r in caplog.records)
    time.sleep(0.3)
    assert not booted.is_set(), "boot must wait for the model instead of taking messages"
    assert not list(tmp_path.glob("ready-*.json"))
    middleware.before_worker_shutdown(None, None)  # SIGTERM while waiting: give up cleanly
    thread.join(timeout=5)
    assert booted.is_set() and not list(tmp_path.glob("ready-*.json"))


def test_json_log_line_carries_the_job_id():
    record = logging.LogRecord("jobs.lifecycle.services", logging.INFO, __file__, 1, "%s started", ("inference",), None)
    record.job_id = 42
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert json.loads(line) | {"ts": None} == {"ts": None, "level": "INFO", "logger": "jobs.lifecycle.services",
                                               "msg": "inference started", "job_id": 42}
