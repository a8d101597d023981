"""The segments section of `make bench` (issue 19): figures of one long job cut into segments, each a ratio of
two measurements of one run on this machine. Nothing is asserted about time.

- (a) a long video (street.mp4 ping-pong looped, a keyframe every 1.5 s; ``--long-minutes``) end to end
  through the production-like service with 1 and then 2 CPU worker processes (queues preprocess +
  postprocess, as k8s/base/worker-cpu.yaml) beside the inference worker: frames/s of each and their ratio;
- (b) the long job's peak frames on shared storage (``work_bytes_peak``) against what all its frames would
  take unsegmented (frames x the letterboxed frame's bytes: computed, not measured);
- (c) the long job's frames/s against the aggregate frames/s of 8 street.mp4 jobs submitted at once, in the
  same service: how much of the machine one long job uses;
- (d) fair sharing: street.mp4 submitted while the long job runs (its first segment through all three
  stages, so every queue holds its work), against street.mp4 alone in the same service before the long job
  and after it (the runs alone bracket the runs beside it, against a machine's drift); in each topology
  and in the embedded mode of `make run` (``manage.py run_embedded``: SQLite, worker threads). The long job
  is cancelled once the short jobs are done (its length does not matter there, only that it still runs).

Times are from the start of the POST to the job's ``ended_at`` (the server's clock at the Exit commit, on
this machine), so they include the upload.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

from .media import STREET, frame_count, looped_clip, street_long
from .service import Bench, Service, embedded_service
from .stats import ratio

SHORT_JOBS = 8


def cpu_layout(cpu_workers: int) -> dict[str, tuple[str, ...]]:
    """``cpu_workers`` worker processes on preprocess + postprocess (the CPU Pods), one on inference."""
    return {**{f"cpu-{i + 1}": ("preprocess", "postprocess") for i in range(cpu_workers)},
            "inference": ("inference",)}


def unsegmented_bytes(frames: int, width: int, height: int, input_size: tuple[int, int] = (416, 416)) -> int:
    """Bytes of frames on shared storage if every frame of the video were stored at once (the job as one
    unit, before segments): frames x the letterboxed content's width x height x 3 (BGR, uint8)."""
    from stages.preprocess import letterbox_geometry

    _, new_w, new_h = letterbox_geometry(width, height, *input_size)
    return frames * new_w * new_h * 3


def ended(job: dict) -> float:
    return datetime.fromisoformat(job["ended_at"].replace("Z", "+00:00")).timestamp()


def timed_jobs(service: Service, videos: list[Path], timeout: float) -> dict:
    """Submit ``videos`` at once; seconds from the first POST to the last ``ended_at``, frames/s over all."""
    with ThreadPoolExecutor(max_workers=len(videos)) as pool:
        submitted = list(pool.map(service.submit, videos))
    jobs = service.wait_done([job_id for job_id, _, _ in submitted], timeout)
    jobs = {job_id: service.get_job(job_id) or job for job_id, job in jobs.items()}  # the row as committed
    started = min(sent for _, sent, _ in submitted)
    seconds = max(ended(job) for job in jobs.values()) - started
    frames = sum(job["frame_count"] for job in jobs.values())
    return {"jobs": len(jobs), "frames": frames, "seconds": round(seconds, 2), "fps": round(frames / seconds, 2),
            "upload_s": round(max(accepted - sent for _, sent, accepted in submitted), 2),
            "each": list(jobs.values())}


def long_job(service: Service, video: Path, frames: int) -> dict:
    run = timed_jobs(service, [video], timeout=600 + frames)
    job = run.pop("each")[0]
    run.update(segments=job["segment_count"], window=job["window"], work_bytes_peak=job["work_bytes_peak"],
               stage_ms_per_frame={s: round(ms / job["frame_count"], 2) for s, ms in job["stage_ms"].items()})
    return run


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def fair_share(service: Service, long_video: Path, short: Path, repeats: int) -> dict:
    """The short job ``repeats`` times alone, the same while the long job runs, the long job cancelled, then
    ``repeats`` times alone again: the runs alone bracket the runs beside it, so a machine that gets slower
    or faster during the measurement (a shared host does, by x1.3 within minutes) moves both sides alike."""
    before = [timed_jobs(service, [short], 600)["seconds"] for _ in range(repeats)]
    long_id, _, _ = service.submit(long_video)
    deadline = time.monotonic() + 900
    while (job := service.get_job(long_id)).get("stage_progress", {}).get("postprocess", 0) == 0:
        if job.get("status") in ("Exit", "Failed", "Cancelled") or time.monotonic() > deadline:
            raise RuntimeError(f"the long job {long_id} did not get under way: {job.get('status')} "
                               f"{job.get('error')}\n{service.logs()}")
        time.sleep(0.5)
    during = [timed_jobs(service, [short], 900)["seconds"] for _ in range(repeats)]
    job = service.get_job(long_id)
    still_running = job.get("status") not in ("Exit", "Failed", "Cancelled")
    service.http.post(f"{service.base}/api/jobs/{long_id}/cancel/", timeout=30)
    deadline = time.monotonic() + 120
    while service.get_job(long_id).get("status") not in ("Exit", "Failed", "Cancelled"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the long job {long_id} did not end after its cancel")
        time.sleep(0.5)
    after = [timed_jobs(service, [short], 600)["seconds"] for _ in range(repeats)]
    alone = before + after
    return {"alone_s": [round(s, 2) for s in alone], "during_s": [round(s, 2) for s in during],
            "ratio": ratio(median(during), median(alone)), "long_still_running": still_running,
            "long_frames_done_meanwhile": job.get("stage_progress", {}).get("postprocess", 0)}


def fair_line(name: str, figures: dict) -> str:
    void = ("" if figures["long_still_running"] else
            "  (the long job ended before the last short job: that one waited behind all of its rest)")
    return (f"   {name}: street.mp4 alone {median(figures['alone_s']):.2f} s, while the long job runs "
            f"{median(figures['during_s']):.2f} s (medians of {figures['alone_s']} and {figures['during_s']}): "
            f"x{figures['ratio']}{void}")


def run_segments(bench: Bench, cfg, out: Callable[[str], None]) -> dict:
    minutes = cfg.long_minutes
    out(f"== Segments: a {minutes:g}-minute video (street.mp4 ping-pong looped, 1280x720, a keyframe every "
        f"1.5 s; --long-minutes), GEDGE_SEGMENT_S={os.environ.get('GEDGE_SEGMENT_S', '5 (default)')}, "
        f"GEDGE_SEGMENTS_IN_FLIGHT={os.environ.get('GEDGE_SEGMENTS_IN_FLIGHT', '6 (default)')}, worker priority "
        f"GEDGE_WORKER_NICE={os.environ.get('GEDGE_WORKER_NICE', '10 (default)')} "
        f"GEDGE_WORKER_SCHED_IDLE={os.environ.get('GEDGE_WORKER_SCHED_IDLE', '1 (default)')}")
    made = time.monotonic()
    video = street_long(minutes)
    frames = frame_count(video)
    out(f"   {video.name}: {frames} frames, {video.stat().st_size / 1e6:.0f} MB "
        f"(ready in {time.monotonic() - made:.0f} s)")
    tiny = looped_clip(10, 320, 180)
    repeats = cfg.fair_repeats
    results: dict = {"long_minutes": minutes, "long_frames": frames, "long_video": video.name, "topologies": {}}
    for cpu_workers in (1, 2):
        name = f"{cpu_workers} CPU worker{'s' if cpu_workers > 1 else ''} + inference"
        service = bench.service(workers=False)
        try:
            service.start_workers(cpu_layout(cpu_workers))
            service.wait_done([service.submit(tiny)[0]], 300)  # the model loaded in the inference worker
            long_run = long_job(service, video, frames)
            short_run = timed_jobs(service, [STREET] * SHORT_JOBS, 900)
            short_run.pop("each")
            fair = fair_share(service, video, STREET, repeats)
        finally:
            service.stop()
        results["topologies"][cpu_workers] = {"long": long_run, "short_jobs": short_run, "fair": fair}
        out(f"   {name}: the long job {long_run['fps']:6.2f} frames/s ({long_run['seconds']:.0f} s, upload "
            f"{long_run['upload_s']:.1f} s, {long_run['segments']} segments, window {long_run['window']}, stage "
            f"ms/frame {long_run['stage_ms_per_frame']}); {SHORT_JOBS} street.mp4 at once "
            f"{short_run['fps']:6.2f} frames/s aggregate: long/short x{ratio(long_run['fps'], short_run['fps'])}")
        out(fair_line(f"fair sharing, {name}", fair))
    one, two = (results["topologies"][n] for n in (1, 2))
    peak = two["long"]["work_bytes_peak"]
    whole = unsegmented_bytes(frames, 1280, 720)
    results.update(
        cpu_scaling=ratio(two["long"]["fps"], one["long"]["fps"]),
        peak_work_bytes=peak, unsegmented_bytes=whole, peak_ratio=round(peak / whole, 4),
        long_vs_short=ratio(two["long"]["fps"], two["short_jobs"]["fps"]))
    out(f"   (a) the long job, 2 CPU workers against 1: {two['long']['fps']} / {one['long']['fps']} frames/s "
        f"= x{results['cpu_scaling']}")
    out(f"   (b) peak frames on shared storage {peak / 1e6:,.1f} MB (work_bytes_peak, 2 CPU workers; 1 CPU "
        f"worker: {one['long']['work_bytes_peak'] / 1e6:,.1f} MB) against {whole / 1e6:,.1f} MB unsegmented "
        f"({frames} frames x 416x234x3 bytes, computed): x{results['peak_ratio']}")
    out(f"   (c) one long job against {SHORT_JOBS} street.mp4 at once, 2 CPU workers: {two['long']['fps']} / "
        f"{two['short_jobs']['fps']} frames/s = x{results['long_vs_short']} (goal >= 0.9); 1 CPU worker: "
        f"x{ratio(one['long']['fps'], one['short_jobs']['fps'])}")
    if cfg.embedded_fair:
        service = embedded_service(bench.tmp / "embedded")
        try:
            service.wait_done([service.submit(tiny)[0]], 300)
            results["embedded_fair"] = fair_share(service, video, STREET, repeats)
        finally:
            service.stop()
        out(fair_line("fair sharing, embedded (make run: run_embedded, 3 worker threads, SQLite)",
                      results["embedded_fair"]))
    out(f"   (d) fair sharing, street.mp4 while the long job runs against alone: 1 CPU worker "
        f"x{one['fair']['ratio']}, 2 CPU workers x{two['fair']['ratio']}"
        + (f", embedded x{results['embedded_fair']['ratio']}" if "embedded_fair" in results else ""))
    return results
