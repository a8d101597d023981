"""The real model on the real video, end to end."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import av
import pytest
import requests

from jobs.models import PIPELINE, Job, Status

from .conftest import MODEL, PASSWORD, ROOT, STREET, free_port, service_env, wait_for_port, wait_for_status

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def assert_results(result_dir, frames=84, size=(1280, 720)):
    with av.open(str(result_dir / "annotated.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        decoded = sum(1 for _ in container.decode(stream))
        assert (stream.width, stream.height) == size
    assert decoded == frames
    doc = json.loads((result_dir / "detections.json").read_text())
    assert doc["video"]["frame_count"] == frames and doc["video"]["width"] == size[0]
    assert doc["model"]["name"] == "yolox_nano" and len(doc["model"]["sha256"]) == 64
    assert doc["model"]["class_names"][0] == "person"
    assert doc["parameters"]["score_threshold"] == 0.3
    assert [f["index"] for f in doc["frames"]] == list(range(frames))
    for frame in doc["frames"]:
        people = [b for b in frame["boxes"] if b["class"] == "person"]
        assert people, f"no person in frame {frame['index']}"
        x1, y1, x2, y2 = people[0]["box"]
        assert 0 <= x1 < x2 <= size[0] + 1 and 0 <= y1 < y2 <= size[1] + 1
    return doc


def test_street_through_separate_worker_processes(api, media_root, processes, redis_clean):
    env = service_env(media_root)
    workers = [processes.worker([queue], env) for queue in ("preprocess", "inference", "postprocess")]
    started = time.monotonic()
    with open(STREET, "rb") as fh:
        response = api.post("/api/jobs/", {"video": fh}, format="multipart")
    assert response.status_code == 201, response.content
    job_id = response.json()["id"]
    job = wait_for_status(job_id, {Status.EXIT, Status.FAILED}, timeout=180, logs=processes.logs)
    elapsed = time.monotonic() - started
    assert job.status == Status.EXIT, job.error
    print(f"\nend to end through worker processes: {elapsed:.2f} s for {job.frame_count} frames "
          f"({job.frame_count / elapsed:.1f} frames/s), stage ms {job.stage_ms}")
    assert list(job.events.filter(segment__isnull=True).values_list("to_status", flat=True)) == list(PIPELINE)
    assert job.iteration == 0 and job.frame_count == 84
    assert job.preprocess_done == job.inference_done == job.postprocess_done == 84
    assert job.model_sha256 and job.summary["per_class"]["person"] > 500
    assert job.started_at and job.ended_at and job.ended_at > job.started_at
    doc = assert_results(job.result_dir)
    assert doc["summary"]["detections"] == job.summary["detections"]
    # Objects, not boxes: far fewer person tracks than person boxes, most of them seen for more than a few
    # frames; every box carries its track id (-1: a faint box that continues no object).
    people = job.tracks.filter(class_name="person")
    boxes = job.summary["per_class"]["person"]
    print(f"person tracks {people.count()} for {boxes} person boxes; {people.filter(frames__gte=5).count()} "
          f"seen in 5 frames or more; objects {job.summary['objects']}")
    assert 0 < people.count() * 20 < boxes and people.filter(frames__gte=5).count() > 0.75 * people.count()
    assert job.summary["objects"]["person"] == people.count() == len(
        [t for t in doc["tracks"] if t["class"] == "person"])
    assert all(isinstance(b["track_id"], int) for f in doc["frames"] for b in f["boxes"])
    assert not job.work_dir.exists(), "intermediate files must be deleted"
    events = api.get(f"/api/jobs/{job_id}/events/").json()
    assert [e["to_status"] for e in events] == list(PIPELINE)
    assert api.get(f"/api/jobs/{job_id}/").json()["status"] == "Exit"
    # Workers yield the CPU to the web (GEDGE_WORKER_NICE): the worker processes run at niceness 10.
    for worker in workers:
        assert os.getpriority(os.PRIO_PROCESS, worker.pid) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 10)
        group = f"/proc/{worker.pid}/autogroup"  # a session of its own: its scheduling group yields too
        if os.path.exists(group):
            assert open(group).read().split()[-1] == "10"
        # ... and under SCHED_IDLE (GEDGE_WORKER_SCHED_IDLE), the Dramatiq process and the worker processes it
        # forked, every thread of them: a waking web request takes the core at once.
        children = open(f"/proc/{worker.pid}/task/{worker.pid}/children").read().split()
        assert children, "the Dramatiq process has forked its worker processes"
        for pid in [worker.pid, *map(int, children)]:
            for tid in os.listdir(f"/proc/{pid}/task"):
                try:
                    policy = os.sched_getscheduler(int(tid))
                except ProcessLookupError:  # a thread that ended meanwhile
                    continue
                assert policy == os.SCHED_IDLE, (pid, tid)


def test_embedded_make_run_mode(tmp_path):
    """`make run`'s mode: SQLite, in-process broker and worker threads, in-memory channel layer."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SECRET_KEY")}
    env.update(GEDGE_VAR_DIR=str(tmp_path / "var"), GEDGE_MODEL_PATH=str(MODEL), GEDGE_ADMIN_PASSWORD=PASSWORD,
               PYTHONUNBUFFERED="1")
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    created = subprocess.run([*manage, "ensure_admin"], cwd=ROOT, env=env, check=True, capture_output=True,
                             text=True)
    assert "admin account created" in created.stdout and PASSWORD not in created.stdout  # given: never echoed
    token = subprocess.run([*manage, "drf_create_token", "admin"], cwd=ROOT, env=env, check=True,
                           capture_output=True, text=True).stdout.split()[2]
    port = free_port()
    log = open(tmp_path / "embedded.log", "wb")
    server = subprocess.Popen([*manage, "run_embedded", "--port", str(port)], cwd=ROOT, env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port)
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Token {token}"}
        # A browser's view: log in, open the socket, upload, and see every status pushed by the worker
        # threads through the in-memory channel layer.
        session = requests.Session()
        session.get(f"{base}/login/", timeout=10)
        session.post(f"{base}/login/", data={"username": "admin", "password": PASSWORD,
                                             "csrfmiddlewaretoken": session.cookies["csrftoken"]},
                     headers={"Referer": f"{base}/login/"}, timeout=10)
        pushed = asyncio.run(_upload_and_watch(base, session, headers))
        job_id = pushed["job"]["id"]
        assert pushed["statuses"] == list(PIPELINE), pushed["statuses"]
        job = requests.get(f"{base}/api/jobs/{job_id}/", headers=headers, timeout=10).json()
        assert job["status"] == "Exit", (job, (tmp_path / "embedded.log").read_text()[-3000:])
        events = requests.get(f"{base}/api/jobs/{job_id}/events/", headers=headers, timeout=10).json()
        assert [e["to_status"] for e in events] == list(PIPELINE)
        video = requests.get(f"{base}/api/jobs/{job_id}/video/", headers=headers, timeout=30)
        assert video.status_code == 200 and video.headers["Content-Type"] == "video/mp4"
        job_dir = tmp_path / "var" / "media" / "jobs" / str(job_id) / "result"
        assert_results(job_dir)
        assert Job.objects.filter(pk=job_id).count() == 0, "the embedded mode must not touch PostgreSQL"
    finally:
        server.terminate()
        server.wait(timeout=20)


async def _upload_and_watch(base: str, session: requests.Session, headers: dict) -> dict:
    import websockets

    cookie = "; ".join(f"{k}={v}" for k, v in session.cookies.items())
    ws_url = base.replace("http", "ws") + "/ws/jobs/"
    async with websockets.connect(ws_url, additional_headers={"Cookie": cookie, "Origin": base}) as socket:
        assert json.loads(await socket.recv())["type"] == "snapshot"

        def upload():
            with open(STREET, "rb") as fh:
                return requests.post(f"{base}/api/jobs/", files={"video": fh}, headers=headers, timeout=60)

        response = await asyncio.get_running_loop().run_in_executor(None, upload)
        assert response.status_code == 201, response.text
        job_id, statuses, last = response.json()["id"], [], None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            message = json.loads(await asyncio.wait_for(socket.recv(), timeout=60))
            if message["type"] != "job.update" or message["job"]["id"] != job_id:
                continue
            last = message["job"]
            if not statuses or statuses[-1] != last["status"]:
                statuses.append(last["status"])
            if last["status"] in ("Exit", "Failed"):
                break
        return {"job": last, "statuses": statuses}
