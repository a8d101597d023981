"""The cluster's topology on one machine: the Pods' exact commands (from the rendered edge overlay) as separate
OS processes against the real PostgreSQL and Redis: the web, two CPU workers and one inference worker. Several
jobs go in at once through the HTTP API and are watched over the WebSocket until all reach Exit; then the
web's /metrics shows the jobs and each worker's /metrics (:9191 in a Pod) the stage timings.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from websockets.sync.client import connect

from jobs.models import PIPELINE, Job, Status

from .conftest import PASSWORD, ROOT, free_port, make_video, service_env, token_for, wait_for_port
from .test_k8s_manifests import EDGE, find
from .test_metrics import samples

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
JOBS = 3
FRAMES = (6, 8, 10)


def pod_container(name: str) -> dict:
    return find(EDGE, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]


def local_argv(command: list[str]) -> list[str]:
    """A container's command for this machine: our interpreter, the virtualenv's console scripts."""
    if command[0] == "python":
        return [sys.executable, *command[1:]]
    return [str(Path(sys.executable).parent / command[0]), *command[1:]]


def pod_env(name: str, base: dict[str, str], run_dir: Path) -> tuple[dict[str, str], int]:
    """The Pod's literal env entries (paths under its emptyDir moved to run_dir) over the test's env."""
    env = dict(base)
    for item in pod_container(name).get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"].replace("/run/gedge", str(run_dir))
    port = free_port()  # every worker Pod has its own :9191; here they share one host
    env.update(GEDGE_WORKER_STATE_DIR=str(run_dir), GEDGE_WORKER_HEARTBEAT_S="1",
               dramatiq_prom_port=str(port), dramatiq_prom_host="127.0.0.1",
               GEDGE_PROVIDERS="CPUExecutionProvider")  # no GPU here: the inference worker runs on the CPU
    return env, port


def wait_until_ready(name: str, env: dict[str, str], logs, timeout: float = 120) -> dict:
    """Run the Pod's readiness probe command until it passes."""
    probe = local_argv(pod_container(name)["readinessProbe"]["exec"]["command"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = subprocess.run(probe, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        if result.returncode == 0:
            return json.loads(result.stdout)
        time.sleep(0.5)
    raise AssertionError(f"{name} never became ready: {result.stdout} {result.stderr}\n{logs()}")


def login(base: str) -> requests.Session:
    session = requests.Session()
    session.get(f"{base}/login/", timeout=10)
    response = session.post(f"{base}/login/", data={
        "username": "owner", "password": PASSWORD, "csrfmiddlewaretoken": session.cookies["csrftoken"],
    }, timeout=10, allow_redirects=False)
    assert response.status_code == 302, response.text[:500]
    return session


def test_pods_as_processes_run_several_jobs_and_report_metrics(owner, media_root, processes, redis_clean, tmp_path):
    base_env = service_env(media_root)
    web_port = free_port()
    web_command = local_argv(pod_container("web")["command"])
    web_command[web_command.index("-b") + 1] = "127.0.0.1"
    web_command[web_command.index("-p") + 1] = str(web_port)
    processes.start("web", web_command, base_env)
    workers = {}
    for name, pod in (("cpu-1", "cpu-worker"), ("cpu-2", "cpu-worker"), ("gpu", "gpu-worker")):
        env, metrics_port = pod_env(pod, base_env, tmp_path / name)
        processes.start(name, local_argv(pod_container(pod)["command"]), env)
        workers[name] = (pod, env, metrics_port)
    wait_for_port(web_port)
    base = f"http://127.0.0.1:{web_port}"

    for pod, env, _ in workers.values():
        ready = wait_until_ready(pod, env, processes.logs)
        assert ready["checks"] == {"workers": "1/1 ready", "database": "ok", "redis": "ok"}
        assert ready["models"] == (["yolox_nano"] if pod == "gpu-worker" else [])
    assert requests.get(f"{base}/readyz", timeout=10).json()["status"] == "ok"

    session = login(base)
    headers = {"Origin": base, "Cookie": f"sessionid={session.cookies['sessionid']}"}
    token = token_for(owner)
    videos = [make_video(tmp_path / f"clip{i}.mp4", frames=FRAMES[i], width=160, height=120) for i in range(JOBS)]
    with connect(f"ws://127.0.0.1:{web_port}/ws/jobs/", additional_headers=headers, open_timeout=10) as socket:
        assert json.loads(socket.recv(timeout=10)) == {"type": "snapshot", "jobs": []}

        def submit(path: Path) -> int:
            with open(path, "rb") as fh:
                response = requests.post(f"{base}/api/jobs/", files={"video": fh},
                                         headers={"Authorization": f"Token {token}"}, timeout=60)
            assert response.status_code == 201, response.text
            return response.json()["id"]

        with ThreadPoolExecutor(JOBS) as pool:  # all at once: the workers see a queue, not a trickle
            ids = set(pool.map(submit, videos))
        seen: dict[int, list[tuple[int, str]]] = {job_id: [] for job_id in ids}
        deadline = time.monotonic() + 240
        while not all(updates and updates[-1][1] == Status.EXIT for updates in seen.values()):
            assert time.monotonic() < deadline, f"not all jobs reached Exit: {seen}\n{processes.logs()}"
            message = json.loads(socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            assert message["type"] == "job.update"
            job = message["job"]
            assert job["status"] not in (Status.FAILED, Status.CANCELLED), (job, processes.logs())
            seen[job["id"]].append((job["version"], job["status"]))

    for job_id, updates in seen.items():
        versions = [version for version, _ in updates]
        assert versions == sorted(versions), f"job {job_id}: versions went backwards"
        statuses = [status for _, status in updates]
        assert set(statuses) <= set(PIPELINE) and statuses[-1] == Status.EXIT
        order = [PIPELINE.index(status) for status in statuses]
        assert order == sorted(order), f"job {job_id}: statuses out of pipeline order: {statuses}"
    jobs = {job.pk: job for job in Job.objects.filter(pk__in=ids)}
    assert {job.status for job in jobs.values()} == {Status.EXIT}
    assert sorted(job.frame_count for job in jobs.values()) == sorted(FRAMES)
    for job in jobs.values():
        assert (job.result_dir / "annotated.mp4").exists() and (job.result_dir / "detections.json").exists()

    web_metrics = samples(requests.get(f"{base}/metrics", timeout=10).text)
    assert web_metrics[("gedge_jobs", (("status", "Exit"),))] == JOBS
    for status in PIPELINE[:-1]:
        assert web_metrics[("gedge_jobs", (("status", status.value),))] == 0
    for queue in ("preprocess", "inference", "postprocess"):
        assert web_metrics[("gedge_queue_depth", (("queue", queue),))] == 0

    totals: dict[tuple[str, tuple], float] = {}
    for name, (_, _, metrics_port) in workers.items():
        text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        for sample_key, value in samples(text).items():
            totals[sample_key] = totals.get(sample_key, 0) + value
        if name == "gpu":  # the inference worker ran inference only
            assert not any(k[0] == "gedge_stage_duration_seconds_count" and ("stage", "preprocess") in k[1]
                           for k in samples(text))
    for stage in ("preprocess", "inference", "postprocess"):
        assert totals[("gedge_stage_duration_seconds_count", (("stage", stage),))] == JOBS
        timed = totals[("gedge_stage_duration_seconds_sum", (("stage", stage),))]
        recorded = sum(job.stage_ms[stage] for job in jobs.values()) / 1000
        assert abs(timed - recorded) < 0.01 * JOBS, (stage, timed, recorded)
        assert totals[("gedge_frames_processed_total", (("stage", stage),))] == sum(FRAMES)
    dramatiq_done = {k[1]: v for k, v in totals.items() if k[0] == "dramatiq_messages_total"}
    assert sum(v for labels, v in dramatiq_done.items() if ("queue_name", "inference") in labels) == JOBS

    # Worker logs: one JSON object per line from the worker processes, job lines carrying the job id. Only the
    # supervisor around them writes plain text: rundramatiq's banner and Dramatiq's main and fork processes.
    supervisor = re.compile(r"^( \* |\[[^]]+\] \[PID \d+\] \[\w+\] \[dramatiq\.(MainProcess|ForkProcess\(\d+\))\] |$)")
    logged: dict[str, int] = {}
    for name in workers:
        lines = (processes.log_dir / f"{name}.log").read_text().splitlines()
        records = [json.loads(line) for line in lines if line.startswith("{")]
        assert [line for line in lines if not line.startswith("{") and not supervisor.match(line)] == []
        transitions = [r for r in records if r["logger"] == "jobs.lifecycle.transitions"]
        assert all(r["job_id"] in ids for r in transitions), name
        logged[name] = len(transitions)
    # Which CPU worker takes which message is up to Dramatiq's polling, so one of the two may have had none.
    assert logged["gpu"] and sum(n for name, n in logged.items() if name != "gpu"), logged


def segmented_upload(owner, tmp_path, frames: int, every: int):
    """A job whose video has a keyframe every ``every`` frames (25 fps): cut at 0.5 s, a segment per keyframe."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from jobs.lifecycle.services import submit_job

    path = make_video(tmp_path / "segmented.mp4", frames=frames, options={"g": str(every), "x264-params": "scenecut=0"})
    job, _ = submit_job(owner, SimpleUploadedFile(path.name, path.read_bytes(), "video/mp4"))
    return job


def wait_for_workers(processes, names: list[str], timeout: float = 120) -> None:
    """Until each worker's log says its worker process is ready (model loaded, consuming)."""
    deadline = time.monotonic() + timeout
    for name in names:
        log = processes.log_dir / f"{name}.log"
        while "Worker process is ready for action" not in log.read_text():
            assert time.monotonic() < deadline, f"{name} never became ready\n{processes.logs()}"
            time.sleep(0.2)


def running_intervals(job, running: str) -> dict[int, tuple[float, float]]:
    """Per segment: when it entered ``running`` and when it left it, from its segment events (one attempt)."""
    intervals = {}
    for index in range(job.segment_count):
        events = list(job.events.filter(segment=index).order_by("id"))
        starts = [e for e in events if e.to_status == running]
        ends = [e for e in events if e.from_status == running]
        assert len(starts) == len(ends) == 1, [(e.from_status, e.to_status) for e in events]
        intervals[index] = (starts[0].at.timestamp(), ends[0].at.timestamp())
    return intervals


def test_two_inference_workers_take_segments_of_one_job_at_once(owner, media_root, processes, redis_clean,
                                                                tmp_path):
    from jobs.models import Segment

    # Inference sleeps 1 s for each 32 frames it begins: a segment of 33 frames holds its worker for two
    # seconds or more, so the next segment goes to the other worker, which is free.
    env = service_env(media_root, GEDGE_SEGMENT_S="0.5", GEDGE_PROGRESS_INTERVAL_S="0",
                      GEDGE_FAULT_SLOW_STAGE="inference:1", dramatiq_queue_prefetch="1")
    processes.worker(["preprocess", "postprocess"], env, name="cpu")
    processes.worker(["inference"], env, name="inference-1")
    processes.worker(["inference"], env, name="inference-2")
    wait_for_workers(processes, ["cpu", "inference-1", "inference-2"])
    job = segmented_upload(owner, tmp_path, frames=132, every=33)  # four segments of 33 frames
    owners: dict[int, str] = {}  # who held each segment's inference lease, seen while it ran
    deadline = time.monotonic() + 240
    while True:
        job.refresh_from_db()
        if job.status in (Status.EXIT, Status.FAILED):
            break
        assert time.monotonic() < deadline, f"job stuck in {job.status}\n{processes.logs()}"
        owners.update(Segment.objects.filter(job=job, status=Status.INFERENCING).values_list("index", "lease_owner"))
        time.sleep(0.05)
    assert job.status == Status.EXIT, (job.error, processes.logs())
    assert job.segment_count == 4 and job.iteration == 0
    assert sorted(owners) == [0, 1, 2, 3], owners
    pids = {index: owner.split(":")[1] for index, owner in owners.items()}
    assert len(set(pids.values())) == 2, "both inference workers took segments of the job"
    intervals = running_intervals(job, Status.INFERENCING)
    at_once = [(a, b) for a in intervals for b in intervals if a < b and pids[a] != pids[b]
               and intervals[a][0] < intervals[b][1] and intervals[b][0] < intervals[a][1]]
    assert at_once, f"no two segments were inferred at once by different workers: {intervals} {pids}"
    doc = json.loads((job.result_dir / "detections.json").read_text())
    assert [f["index"] for f in doc["frames"]] == list(range(132))


def test_a_multi_segment_job_through_a_worker_per_queue_passes_the_eight_statuses(owner, media_root, processes,
                                                                                 redis_clean, tmp_path):
    import av

    env = service_env(media_root, GEDGE_SEGMENT_S="0.5", GEDGE_SEGMENTS_IN_FLIGHT="2")
    for queue in ("preprocess", "inference", "postprocess"):
        processes.worker([queue], env)
    job = segmented_upload(owner, tmp_path, frames=45, every=15)  # three segments of 15 frames, two at once
    deadline = time.monotonic() + 240
    while job.status not in (Status.EXIT, Status.FAILED):
        assert time.monotonic() < deadline, f"job stuck in {job.status}\n{processes.logs()}"
        time.sleep(0.1)
        job.refresh_from_db()
    assert job.status == Status.EXIT, (job.error, processes.logs())
    assert job.segment_count == 3 and job.window == 2 and job.segments_done == 3
    assert list(job.events.filter(segment__isnull=True).values_list("to_status", flat=True)) == list(PIPELINE)
    for index in range(3):
        steps = list(job.events.filter(segment=index).values_list("to_status", flat=True))
        assert steps == list(PIPELINE[1:7]), (index, steps)
    assert job.preprocess_done == job.inference_done == job.postprocess_done == job.frame_count == 45
    with av.open(str(job.result_dir / "annotated.mp4")) as video:
        assert sum(1 for _ in video.decode(video=0)) == 45
    doc = json.loads((job.result_dir / "detections.json").read_text())
    assert [f["index"] for f in doc["frames"]] == list(range(45))
    assert not job.work_dir.exists()
