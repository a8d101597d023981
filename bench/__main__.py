"""G-Edge benchmark: the one-file script vs `process_video` vs the full service, on this machine, in one go.

    python -m bench            the full run (10-25 minutes on 2 quiet cores, plus the segments section:
                               ~70 minutes for its 20-minute video, and ~15 to make that video once)
    python -m bench --quick    the same sections, shorter (a few minutes): checks the harness
    python -m bench --only levers throughput ...   some sections only
    python -m bench --only segments --long-minutes 3   the segments section on a shorter long video
    python -m bench --json out.json                also write every figure as JSON

It prints figures, the API goals as met or missed among them; it asserts nothing about time (see
docs/performance.md for the goals and the last run).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .handlers import handler_cost
from .media import STREET, frame_count, looped_clip
from .service import BENCH_USER, ROOT, Bench, Service, SocketClient, default_model, push_delay_s
from .stats import WRK_SCRIPT, cpu_count, parse_wrk, ratio, summary_ms

SECTIONS = ("throughput", "latency", "memory", "levers", "segments", "tracking")


def out(line: str = "") -> None:
    print(line, flush=True)


def machine() -> dict:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()
    return {"cpu": cpu, "cores": cpu_count(), "python": platform.python_version(),
            "load_at_start": [round(v, 2) for v in load]}


def run_script(video: Path, model: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([sys.executable, str(ROOT / "bench" / "script.py"), str(video), model,
                               f"{tmp}/out.mp4"], check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_process_video(video: Path, env: dict[str, str], extra: list[str] = ()) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([sys.executable, "manage.py", "process_video", str(video), "--out", tmp, *extra],
                              cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def service_jobs(service: Service, videos: list[Path], timeout: float = 900) -> dict:
    """Submit every video at once; frames/s from the first POST to the last Exit the socket reports."""
    started = time.time()
    with ThreadPoolExecutor(max_workers=len(videos)) as pool:
        submitted = list(pool.map(service.submit, videos))
    ids = [job_id for job_id, _, _ in submitted]
    jobs = service.wait_done(ids, timeout)
    ends, first_push, exit_delay = [], [], []
    for job_id, _, accepted in submitted:
        pushes = service.socket.for_job(job_id)
        exit_push = next((p for p in pushes if p.job["status"] == "Exit"), None)
        ends.append(exit_push.received if exit_push else time.time())
        if exit_push:
            exit_delay.append(push_delay_s(exit_push))
        # The Enqueue push is sent on commit, before the 201 leaves: the user waits for a worker's first word.
        started_push = next((p for p in pushes if p.job["status"] != "Enqueue"), None)
        if started_push:
            first_push.append(started_push.received - accepted)
    elapsed = max(ends) - started
    frames = sum(job["frame_count"] for job in jobs.values())
    stage_ms = {}
    for stage in ("preprocess", "inference", "postprocess"):
        stage_ms[stage] = round(sum(j["stage_ms"].get(stage, 0) for j in jobs.values()) / frames, 2)
    return {"jobs": len(ids), "frames": frames, "seconds": round(elapsed, 2), "fps": round(frames / elapsed, 2),
            "stage_ms_per_frame": stage_ms, "accepted_to_first_push_s": first_push,
            "exit_to_browser_s": exit_delay}


# The API loads: (connections, mean think time in ms, or None for a closed loop). The goals are judged on
# GOAL_LOAD (pollers: each client asks again about a second after its answer); the closed loops saturate the
# web process and are reported as its throughput (req/s per web process), their tails not a goal.
GOAL_LOAD = "32 clients, ~1 req/s each"
LOADS = {
    GOAL_LOAD: (32, 1000),
    "1 client, closed loop": (1, None),
    "32 clients, closed loop": (32, None),
}
BUSY_LOADS = {k: LOADS[k] for k in (GOAL_LOAD, "32 clients, closed loop")}
# The goal load again, each request sending If-None-Match with the endpoint's current ETag: every answer a 304.
CONDITIONAL = f"{GOAL_LOAD}, If-None-Match (304)"
GOALS_MS = {"idle": 10, "busy": 50}  # p99 of GOAL_LOAD on both endpoints; printed, never asserted
PATHS = {"detail": "/api/jobs/{id}/", "list": "/api/jobs/"}


def http_load(url: str, token: str | None, seconds: int, connections: int = 32, think_ms: int | None = None,
              headers: dict[str, str] | None = None) -> dict:
    """One load on one URL: wrk for clients with think time, hey for closed loops.

    wrk corrects its latencies for coordinated omission before it reports them: each request slower than twice
    the mean interval between one connection's requests adds made-up samples. In a closed loop that interval
    is a few milliseconds, and every 20 ms stall becomes a dozen requests nobody sent: for Daphne answering a
    constant, wrk reported p99 107 ms where hey, recording every request as it was, measured 53 ms. With think
    time the interval is about 1 s, and only stalls over ~2 s would be corrected.

    One client runs half as long (at least 2 s): it is there for the cost of one request, not for a tail."""
    if connections == 1:
        seconds = max(2, seconds // 2)
    if think_ms is None:
        return hey(url, token, seconds, connections)
    return wrk(url, token, seconds, connections, think_ms, headers)


def wrk_command(url: str, token: str | None, seconds: int, connections: int, script: str,
                headers: dict[str, str] | None = None) -> list[str]:
    """wrk's command line: the API token and any other ``headers`` each as one -H, the Lua hooks in ``script``."""
    sent = {**({"Authorization": f"Token {token}"} if token else {}), **(headers or {})}
    return ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
            *(arg for name, value in sent.items() for arg in ("-H", f"{name}: {value}")), "-s", script, url]


def wrk(url: str, token: str | None, seconds: int, connections: int, think_ms: int,
        headers: dict[str, str] | None = None) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(WRK_SCRIPT)
    env = {**os.environ, "GEDGE_WRK_THINK_MS": str(think_ms)}
    try:
        done = subprocess.run(wrk_command(url, token, seconds, connections, fh.name, headers),
                              check=True, capture_output=True, text=True, env=env)
    finally:
        os.unlink(fh.name)
    return parse_wrk(done.stdout)


def hey(url: str, token: str | None, seconds: int, clients: int) -> dict:
    """hey's clients for ``seconds``, each in a closed loop; every request recorded as it was (CSV out)."""
    auth = ["-H", f"Authorization: Token {token}"] if token else []
    done = subprocess.run(["hey", "-z", f"{seconds}s", "-c", str(clients), "-t", "10", "-o", "csv", *auth, url],
                          check=True, capture_output=True, text=True)
    return hey_figures(list(csv.DictReader(io.StringIO(done.stdout))), seconds)


def hey_figures(rows: list[dict], seconds: int) -> dict:
    """Percentiles, rate and errors of hey's CSV rows (one per request)."""
    figures = summary_ms([float(r["response-time"]) for r in rows])
    figures.update(rps=round(len(rows) / seconds, 1), errors=sum(r["status-code"] != "200" for r in rows))
    return figures


def endpoints(base: str, job_id: int) -> tuple[tuple[str, str], ...]:
    """("detail", URL of the job's read) and ("list", URL of the first page)."""
    return ("detail", f"{base}/api/jobs/{job_id}/"), ("list", f"{base}/api/jobs/")


def missing_tools(loads: dict) -> list[str]:
    """The load tools ``loads`` need that are not installed: wrk for think time, hey for closed loops."""
    needed = {"hey" if think is None else "wrk" for _, think in loads.values()}
    return sorted(tool for tool in needed if shutil.which(tool) is None)


def current_etag(url: str, token: str | None) -> tuple[str | None, int]:
    """The ETag ``url`` answers now (one plain GET), and the status of one GET sending it back (304 expected)."""
    import requests

    headers = {"Authorization": f"Token {token}"} if token else {}
    answer = requests.get(url, headers=headers, timeout=10)
    answer.raise_for_status()
    etag = answer.headers.get("ETag")
    if etag is None:
        return None, answer.status_code
    return etag, requests.get(url, headers={**headers, "If-None-Match": etag}, timeout=10).status_code


def api_latency(base: str, token: str | None, job_id: int, seconds: int, loads: dict = LOADS,
                conditional: bool = False) -> dict:
    """GET /api/jobs/{id}/ and GET /api/jobs/ under each of ``loads``; with ``conditional``, the goal load again
    sending If-None-Match with the ETag each endpoint has just answered (CONDITIONAL). A load whose tool is
    not installed is skipped, and said so."""
    missing = missing_tools(loads)
    if missing:
        out(f"   {' and '.join(missing)} not installed (apt-get install {' '.join(missing)}): "
            f"the loads that need {'them' if len(missing) > 1 else 'it'} are skipped")
    figures: dict = {}
    for endpoint, url in endpoints(base, job_id):
        for load, (connections, think) in loads.items():
            if ("hey" if think is None else "wrk") not in missing:
                figures[f"{endpoint} | {load}"] = http_load(url, token, seconds, connections, think)
        if conditional and shutil.which("wrk") is not None:
            etag, status = current_etag(url, token)
            if etag is None:
                out(f"   GET {PATHS[endpoint]} answered no ETag: its conditional load is skipped")
                continue
            connections, think = LOADS[GOAL_LOAD]
            figures[f"{endpoint} | {CONDITIONAL}"] = {
                **http_load(url, token, seconds, connections, think, {"If-None-Match": etag}),
                "etag": etag, "probe_status": status}
    return figures


def goal_line(figures: dict, where: str) -> tuple[str, dict]:
    """The goals line of one API section from its GOAL_LOAD figures, e.g. "goal: p99 < 10 ms idle at 32 x
    ~1 req/s: detail 3.10 ms, list 4.20 ms (met)", and the same as a dict for the JSON. A load with errors
    misses (an error is an answer that did not come in time); one not measured (no wrk) is said so."""
    limit = GOALS_MS[where]
    p99, errors = {}, 0
    for endpoint in PATHS:
        d = figures.get(f"{endpoint} | {GOAL_LOAD}")
        p99[endpoint] = d["p99"] if d else None
        errors += d["errors"] if d else 0
    if None in p99.values():
        verdict = "not measured"
    elif errors:
        verdict = f"missed: {errors} errors"
    else:
        verdict = "met" if max(p99.values()) < limit else "missed"
    parts = ", ".join(f"{e} {v:.2f} ms" if v is not None else f"{e} not measured" for e, v in p99.items())
    return (f"goal: p99 < {limit} ms {where} at 32 x ~1 req/s: {parts} ({verdict})",
            {"limit_ms": limit, "p99_ms": p99, "errors": errors, "verdict": verdict})


class BusyLoad:
    """Keeps the workers busy: batches of 4 street.mp4 jobs, one after another, until stopped."""

    def __init__(self, service: Service, video: Path) -> None:
        self.service, self.video = service, video
        self.stopping = threading.Event()
        self.batches: list[dict] = []

    def __enter__(self) -> BusyLoad:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        time.sleep(3)  # the first stages under way
        return self

    def _run(self) -> None:
        while not self.stopping.is_set():
            self.batches.append(service_jobs(self.service, [self.video] * 4))

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.thread.join(900)

    @property
    def fps(self) -> float:
        frames = sum(b["frames"] for b in self.batches)
        return round(frames / sum(b["seconds"] for b in self.batches), 2) if self.batches else 0.0


WARM_PUSHES = 10


def socket_idle(service: Service, job_id: int, cycles: int) -> tuple[list[float], list[float]]:
    """Cancel/retry one job with no worker running: each call commits one transition and pushes it.

    Returns (the first WARM_PUSHES delays, the rest): the first pushes to a fresh web process's first socket
    are reported apart from the steady state. With channels_redis's own pub/sub layer they waited up to 100 ms
    for its receiver's first look (gedge_site/channel_layer.py subscribes before the receiver starts)."""
    seen = len(service.socket.pushes)
    for _ in range(cycles + WARM_PUSHES // 2):
        for action in ("cancel", "retry"):
            response = service.http.post(f"{service.base}/api/jobs/{job_id}/{action}/", timeout=10)
            response.raise_for_status()
            time.sleep(0.01)
    service.http.post(f"{service.base}/api/jobs/{job_id}/cancel/", timeout=10).raise_for_status()
    time.sleep(0.5)
    delays = [push_delay_s(p) for p in service.socket.pushes[seen:] if p.job["id"] == job_id]
    return delays[:WARM_PUSHES], delays[WARM_PUSHES:]


def socket_reconnects(service: Service, job_id: int, times: int) -> list[float]:
    """The first push after the web's only socket closed and a new one connected (a user going from one page
    to the next), ``times`` over: one transition each, committed as soon as the new socket has its snapshot."""
    delays = []
    for _ in range(times):
        service.socket.stop()
        service.socket = SocketClient(service.socket.url, service.socket.cookie, service.socket.origin)
        service.socket.start()
        seen = len(service.socket.pushes)
        action = "retry" if service.get_job(job_id).get("status") == "Cancelled" else "cancel"
        service.http.post(f"{service.base}/api/jobs/{job_id}/{action}/", timeout=10).raise_for_status()
        deadline = time.monotonic() + 5
        while len(service.socket.pushes) == seen and time.monotonic() < deadline:
            time.sleep(0.005)
        delays += [push_delay_s(p) for p in service.socket.pushes[seen:seen + 1]]
    return delays


def print_api(figures: dict) -> None:
    """One line per endpoint and load; a closed loop's line leads with its throughput, its p99 marked as no goal."""
    for name, d in figures.items():
        endpoint, load = name.split(" | ")
        head = f"GET {PATHS[endpoint]:16} {load:46}"
        if LOADS.get(load, (0, 0))[1] is not None or not d.get("n"):
            out(f"{head} {fmt_lat(d)}")
        else:
            out(f"{head} {d['rps']:.0f} req/s per web process (a throughput figure; its p99 is not a goal): "
                f"p50 {d['p50']:.2f}  p95 {d['p95']:.2f}  p99 {d['p99']:.2f}  max {d['max']:.2f} ms  "
                f"(n={d['n']}, {d['errors']} errors)")
        if "probe_status" in d and d["probe_status"] != 304:
            out(f"   the GET sending If-None-Match {d['etag']} was answered {d['probe_status']}, not 304: "
                "this load measured full answers")


def fmt_lat(d: dict) -> str:
    if "requests" in d:  # wrk's
        return (f"p50 {d['p50']:.2f}  p95 {d['p95']:.2f}  p99 {d['p99']:.2f} ms  "
                f"({d['rps']:.0f} req/s, {d['errors']} errors{' ' + str(d['error_kinds']) if d['errors'] else ''})")
    if not d.get("n"):
        return "no samples"
    tail = f"p50 {d['p50']:.2f}  p95 {d['p95']:.2f}  p99 {d['p99']:.2f}  max {d['max']:.2f} ms"
    if "rps" in d:  # hey's
        return f"{tail}  (n={d['n']}, {d['rps']:.0f} req/s, {d['errors']} errors)"
    return f"{tail}  (n={d['n']})"


def section_throughput_latency(bench: Bench, cfg: argparse.Namespace, results: dict, sections: set[str]) -> None:
    model, video = default_model(), cfg.video
    frames = frame_count(video)
    if "throughput" in sections:
        out(f"== Throughput: {video.name}, {frames} frames, repeats {cfg.repeats}")
        script = [run_script(video, model) for _ in range(cfg.repeats)]
        pv = [run_process_video(video, bench.env) for _ in range(cfg.repeats)]
        results["script"] = {"fps": median([r["fps"] for r in script]), "runs": script}
        results["process_video"] = {"fps": median([r["fps"] for r in pv]), "runs": pv}
        out(f"one-file script (libx264 default preset) {results['script']['fps']:7.2f} frames/s")
        out(f"process_video                            {results['process_video']['fps']:7.2f} frames/s"
            f"   x{ratio(results['process_video']['fps'], results['script']['fps'])} script")
        ms = pv[len(pv) // 2]["ms_per_frame"]
        out(f"  process_video ms/frame: preprocess {ms['preprocess']}, inference {ms['inference']}, "
            f"postprocess {ms['postprocess']}; peak work storage {pv[0]['peak_work_bytes']} bytes "
            f"({pv[0]['segments']} segment{'s' if pv[0]['segments'] != 1 else ''})")

    service = bench.service(workers=False)
    try:
        tiny = looped_clip(10, 320, 180)
        job_id, _, _ = service.submit(tiny)
        if "latency" in sections:
            first, delays = socket_idle(service, job_id, cfg.ws_cycles)
            results["ws_push_idle"] = summary_ms(delays)
            results["ws_push_idle_first"] = [round(d * 1000, 2) for d in first]
            out(f"== WebSocket push, transition commit -> client, idle: {fmt_lat(results['ws_push_idle'])}")
            out(f"   the first {len(first)} pushes after the socket connected to the fresh web process (ms): "
                f"{', '.join(f'{d:.1f}' for d in results['ws_push_idle_first'])}")
            again = socket_reconnects(service, job_id, 5 if cfg.quick else 20)
            results["ws_push_after_reconnect"] = summary_ms(again)
            out(f"   the first push after the only socket closed and a new one connected: "
                f"{fmt_lat(results['ws_push_after_reconnect'])}")
        service.start_workers()
        warm = service.wait_done([service.submit(tiny)[0]], 300)  # loads the model in the inference worker
        results["worker_peak_mb_warm"] = service.worker_peak_mb()
        if "latency" in sections:
            out(f"== API, workers idle: {GOAL_LOAD} (wrk, think time: the goal load), the same with If-None-Match, "
                "closed loops (hey: throughput)")
            results["api_idle"] = api_latency(service.base, service.token, next(iter(warm)), cfg.wrk_seconds,
                                              conditional=True)
            print_api(results["api_idle"])
            line, results["api_goal_idle"] = goal_line(results["api_idle"], "idle")
            out(f"   {line}")
            out("== Django's own cost of a read, in this process (no server, no network), one request at a time: "
                "its ASGI handler (what Daphne runs) against its WSGI handler, same settings and middleware")
            results["api_handler_cost"] = handler_cost(
                {"detail": f"/api/jobs/{next(iter(warm))}/", "healthz": "/healthz"}, service.token,
                requests=100 if cfg.quick else 300)
            for name, d in results["api_handler_cost"].items():
                out(f"   {name:7} ASGI {fmt_lat(d['asgi'])}")
                out(f"   {name:7} WSGI {fmt_lat(d['wsgi'])}   ASGI - WSGI at the median: "
                    f"{d['asgi']['p50'] - d['wsgi']['p50']:.2f} ms")
        if "throughput" in sections:
            runs: dict[int, dict] = {}
            for n in (1, 4, 8):
                runs[n] = service_jobs(service, [video] * n)
                out(f"service, {n} job(s) at once               {runs[n]['fps']:7.2f} frames/s aggregate"
                    f"   x{ratio(runs[n]['fps'], results['script']['fps'])} script"
                    f"   stage ms/frame {runs[n]['stage_ms_per_frame']}")
            results["service"] = {str(n): {k: v for k, v in r.items() if not k.endswith("_s")} for n, r in runs.items()}
            script_fps = results["script"]["fps"]
            # The script over 8 copies of one video, one after another, runs at its single-video rate.
            out(f"   goals: 1 job >= 1.0x script (aim 1.5): x{ratio(runs[1]['fps'], script_fps)}; 8 jobs >= 1.6x "
                f"the script over the same 8 videos one after another: x{ratio(runs[8]['fps'], script_fps)}")
            # With several jobs at once the later ones queue behind the earlier: only a lone job says how
            # soon an idle worker answers. The street.mp4 job, then small jobs one at a time, for a sample.
            first = runs[1]["accepted_to_first_push_s"]
            for _ in range(cfg.first_push_samples):
                first += service_jobs(service, [tiny])["accepted_to_first_push_s"]
            exits = [d for r in runs.values() for d in r["exit_to_browser_s"]]
            results["accepted_to_first_push"] = summary_ms(first)
            results["exit_to_browser"] = summary_ms(exits)
            out(f"upload accepted -> first worker push:   {fmt_lat(results['accepted_to_first_push'])}  (lone jobs)")
            out(f"Exit committed -> browser knows:        {fmt_lat(results['exit_to_browser'])}")
        if "latency" in sections:
            job_id = next(iter(warm))
            out(f"== API while jobs are processing (4 street.mp4 at a time, all along), per worker priority: "
                f"{GOAL_LOAD} (the goal load), 32 clients closed loop (throughput)")
            # (niceness, SCHED_IDLE): none, niceness alone (the default before run 20), both (the default).
            arms = {"GEDGE_WORKER_NICE=0 GEDGE_WORKER_SCHED_IDLE=0": {"GEDGE_WORKER_NICE": "0",
                                                                     "GEDGE_WORKER_SCHED_IDLE": "0"},
                    "GEDGE_WORKER_NICE=10 GEDGE_WORKER_SCHED_IDLE=0": {"GEDGE_WORKER_SCHED_IDLE": "0"},
                    "GEDGE_WORKER_NICE=10 GEDGE_WORKER_SCHED_IDLE=1": {}}
            default = list(arms)[-1]
            results["api_busy_priority"] = {}
            for name, env in arms.items():
                service.stop_workers()
                service.start_workers(**env)
                service.wait_done([service.submit(tiny)[0]], 300)
                seen = len(service.socket.pushes)
                with BusyLoad(service, video) as load:
                    figures = api_latency(service.base, service.token, job_id, cfg.wrk_seconds, BUSY_LOADS)
                pushes = [p for p in service.socket.pushes[seen:] if p.job["status"] != "Enqueue"]
                results["api_busy_priority"][name] = {"api": figures, "fps": load.fps,
                                                      "ws_push": summary_ms([push_delay_s(p) for p in pushes])}
                out(f"   {name}{' (the defaults)' if name == default else ''}: the jobs ran at {load.fps} "
                    "frames/s meanwhile")
                print_api(figures)
                out("   WebSocket push, commit -> client, busy: "
                    f"{fmt_lat(results['api_busy_priority'][name]['ws_push'])}")
            results["api_busy"] = results["api_busy_priority"][default]["api"]
            line, results["api_goal_busy"] = goal_line(results["api_busy"], "busy")
            out(f"   the defaults: {line}")
        if "throughput" in sections:
            # The deployment knob the in-process levers cannot settle: onnxruntime's threads per inference
            # worker while the other stages' workers share the same cores. Same service, workers restarted.
            out("== Levers in the service (workers restarted per arm; defaults last, to compare with the same load)")
            arms = {"GEDGE_INTRA_OP_THREADS=1": {"GEDGE_INTRA_OP_THREADS": "1"},
                    # Dramatiq's idle consumer polls Redis with a backoff up to worker_timeout (1 s by
                    # default): each stage hand-off can wait that long for the next worker to look.
                    "dramatiq_worker_timeout=100": {"dramatiq_worker_timeout": "100"},
                    "both": {"GEDGE_INTRA_OP_THREADS": "1", "dramatiq_worker_timeout": "100"},
                    "defaults": {}}
            lever: dict[str, dict[int, float]] = {}
            for name, env in arms.items():
                service.stop_workers()
                service.start_workers(**env)
                service.wait_done([service.submit(tiny)[0]], 300)
                lever[name] = {n: service_jobs(service, [video] * n)["fps"] for n in (1, 8)}
                out(f"   {name:28} 1 job {lever[name][1]:6.2f} frames/s   8 jobs {lever[name][8]:6.2f} frames/s")
            results["lever_service"] = lever
        if "memory" in sections:
            short_peak = service.worker_peak_mb()
            long_video = looped_clip(cfg.long_frames)
            long_run = service_jobs(service, [long_video], timeout=1800)
            long_peak = service.worker_peak_mb()
            results["memory"] = {"after_warmup": results["worker_peak_mb_warm"], "after_short_jobs": short_peak,
                                 "after_long_job": long_peak, "long_frames": cfg.long_frames,
                                 "long_fps": long_run["fps"]}
            out(f"== Worker peak RSS (MB), long job of {cfg.long_frames} frames 640x360 ({long_run['fps']} frames/s)")
            for queue in long_peak:
                out(f"{queue:12} after warm-up {results['worker_peak_mb_warm'][queue]:7.1f}   after short jobs "
                    f"{short_peak[queue]:7.1f}   after the long job {long_peak[queue]:7.1f}")
    finally:
        service.stop()


def web_levers(bench: Bench, seconds: int) -> dict:
    """The web process's levers, one fresh Daphne per arm on the same database, workers off."""
    from jobs.models import Job

    job_id = Job.objects.filter(user__username=BENCH_USER).values_list("id", flat=True).first()
    jobs = Job.objects.filter(user__username=BENCH_USER).count()
    arms = {"GEDGE_WEB_GC_THRESHOLD='' (Python's GC)": {"GEDGE_WEB_GC_THRESHOLD": ""},
            "web GC tuned (the defaults)": {}}
    out(f"== Web levers (fresh Daphne per arm, workers off; the list holds {jobs} jobs): the API loads above")
    figures: dict = {}
    for name, env in arms.items():
        service = bench.service(workers=False, web_env=env)
        try:
            figures[name] = api_latency(service.base, service.token, job_id, max(3, seconds // 2))
        finally:
            service.stop()
        out(f"   {name}")
        print_api(figures[name])
    # The channel layer behind the pushes (the web sends them itself here: cancel/retry of a waiting job).
    out("== Channel layer: WebSocket push, commit -> client, idle (arms interleaved)")
    tiny = looped_clip(10, 320, 180)
    for layer in ("core", "pubsub", "core", "pubsub"):
        service = bench.service(workers=False, web_env={"GEDGE_CHANNEL_LAYER": layer})
        try:
            push = summary_ms(socket_idle(service, service.submit(tiny)[0], max(20, seconds * 10))[1])
        finally:
            service.stop()
        figures.setdefault(f"channel layer {layer}", []).append(push)
        out(f"   GEDGE_CHANNEL_LAYER={layer:7} {fmt_lat(push)}")
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs, to check the harness")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run these sections only")
    parser.add_argument("--video", type=Path, default=STREET)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--long-minutes", type=float, default=None,
                        help="the segments section's long video, minutes (default 20; 1 with --quick)")
    cfg = parser.parse_args(argv)
    cfg.repeats = 1 if cfg.quick else 3
    cfg.wrk_seconds = 3 if cfg.quick else 10
    cfg.first_push_samples = 2 if cfg.quick else 10
    cfg.ws_cycles = 30 if cfg.quick else 150
    cfg.long_frames = 600 if cfg.quick else 3000
    cfg.long_minutes = cfg.long_minutes or (1.0 if cfg.quick else 20.0)
    cfg.fair_repeats = 1 if cfg.quick else 5
    cfg.embedded_fair = True
    sections = set(cfg.only or SECTIONS)
    results: dict = {"machine": machine(), "quick": cfg.quick, "video": str(cfg.video)}
    out(f"G-Edge benchmark{' (quick)' if cfg.quick else ''}: {results['machine']}")
    started = time.monotonic()
    if sections & {"throughput", "latency", "memory"}:
        bench = Bench()
        try:
            section_throughput_latency(bench, cfg, results, sections)
            if "latency" in sections:
                results["api_web_levers"] = web_levers(bench, cfg.wrk_seconds)
        finally:
            bench.close()
    if "segments" in sections:
        from .segments import run_segments

        bench = Bench()
        try:
            results["segments"] = run_segments(bench, cfg, out)
        finally:
            bench.close()
    if "tracking" in sections:
        from .tracking import run_tracking

        results["tracking"] = run_tracking(cfg.video, default_model(), quick=cfg.quick, out=out)
    if "levers" in sections:
        from .levers import run_levers

        results["levers"] = run_levers(cfg.video, default_model(), quick=cfg.quick, out=out)
    results["machine"]["load_at_end"] = [round(v, 2) for v in os.getloadavg()]
    results["seconds"] = round(time.monotonic() - started, 1)
    out(f"== done in {results['seconds']} s; load average at end {results['machine']['load_at_end']}")
    if cfg.json:
        cfg.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
