"""The benchmark's helpers (python -m bench): figures it prints must come out right. No timings asserted."""
from __future__ import annotations

import numpy as np
import pytest

from bench.stats import parse_wrk, percentile, summary_ms
from stages.detector import Detector, DetectorConfig

from .conftest import MODEL, STREET

WRK_OUTPUT = """Running 3s test @ http://127.0.0.1:1/api/jobs/
  2 threads and 32 connections
BENCH requests=300 errors=2 duration_us=3000000
BENCH detail connect=0 read=2 write=0 status=0 timeout=0
BENCH p50_us=4100
BENCH p95_us=9000
BENCH p99_us=12500
BENCH max_us=20001
"""


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_summary_in_milliseconds():
    summary = summary_ms([0.001, 0.002, 0.003, 0.010])
    assert summary == {"n": 4, "p50": 2.0, "p95": 10.0, "p99": 10.0, "max": 10.0}
    assert summary_ms([]) == {"n": 0}


def test_wrk_hook_output_is_parsed():
    figures = parse_wrk(WRK_OUTPUT)
    assert figures["rps"] == 100.0 and figures["errors"] == 2 and figures["error_kinds"] == {"read": 2}
    assert (figures["p50"], figures["p95"], figures["p99"], figures["max"]) == (4.1, 9.0, 12.5, 20.0)


HEY_CSV = ("response-time,DNS+dialup,DNS,Request-write,Response-delay,Response-read,status-code,offset\n"
           "0.002,0,0,0,0,0,200,0.1\n0.004,0,0,0,0,0,200,1.0\n0.250,0,0,0,0,0,503,2.0\n")


def test_hey_rows_are_counted():
    """hey's CSV, one row per request as it was: percentiles, rate over the run, non-200 answers as errors."""
    import csv
    import io

    from bench.__main__ import hey_figures

    figures = hey_figures(list(csv.DictReader(io.StringIO(HEY_CSV))), 2)
    assert figures == {"n": 3, "p50": 4.0, "p95": 250.0, "p99": 250.0, "max": 250.0, "rps": 1.5, "errors": 1}


def test_wrk_sends_the_token_and_any_other_header():
    from bench.__main__ import wrk_command

    args = wrk_command("http://127.0.0.1:1/api/jobs/", "tok", 3, 32, "/tmp/s.lua", {"If-None-Match": '"abc"'})
    assert args[:6] == ["wrk", "-t2", "-c32", "-d3s", "--timeout", "10s"]
    assert args[6:] == ["-H", "Authorization: Token tok", "-H", 'If-None-Match: "abc"', "-s", "/tmp/s.lua",
                        "http://127.0.0.1:1/api/jobs/"]
    assert "-H" not in wrk_command("http://127.0.0.1:1/", None, 3, 1, "/tmp/s.lua")


def test_api_loads_and_the_conditional_get(monkeypatch, capsys):
    """Each endpoint under the goal load (wrk, 1 s think time) and the closed loops (hey), then the goal load
    again sending If-None-Match with the ETag a plain GET just answered; the probe's 304 is recorded."""
    import requests

    import bench.__main__ as bench_main

    runs, probes = [], []

    class Done:
        def __init__(self, stdout: str) -> None:
            self.stdout = stdout

    def fake_run(args, env=None, **kwargs):
        runs.append((args, env))
        return Done(WRK_OUTPUT if args[0] == "wrk" else HEY_CSV)

    class Answer:
        def __init__(self, status_code: int, url: str) -> None:
            self.status_code, self.headers = status_code, {"ETag": f'"{url.rstrip("/").rsplit("/", 1)[-1]}"'}

        def raise_for_status(self) -> None:
            assert self.status_code == 200

    def fake_get(url, headers, timeout):
        probes.append((url, dict(headers)))
        return Answer(304 if "If-None-Match" in headers else 200, url)

    monkeypatch.setattr(bench_main.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setattr(bench_main.subprocess, "run", fake_run)
    monkeypatch.setattr(requests, "get", fake_get)
    figures = bench_main.api_latency("http://127.0.0.1:1", "tok", 7, 4, conditional=True)

    assert list(figures) == [f"{endpoint} | {load}" for endpoint in ("detail", "list")
                             for load in (*bench_main.LOADS, bench_main.CONDITIONAL)]
    wrk_runs = [(args, env) for args, env in runs if args[0] == "wrk"]
    hey_runs = [args for args, _ in runs if args[0] == "hey"]
    assert len(wrk_runs) == 4 and all(env["GEDGE_WRK_THINK_MS"] == "1000" and "-c32" in args
                                      for args, env in wrk_runs)
    assert [(a[a.index("-c") + 1], a[a.index("-z") + 1]) for a in hey_runs] == [("1", "2s"), ("32", "4s")] * 2
    conditional = [args for args, _ in wrk_runs if 'If-None-Match: "7"' in args or 'If-None-Match: "jobs"' in args]
    assert [args[-1] for args in conditional] == ["http://127.0.0.1:1/api/jobs/7/", "http://127.0.0.1:1/api/jobs/"]
    assert probes[1] == ("http://127.0.0.1:1/api/jobs/7/", {"Authorization": "Token tok", "If-None-Match": '"7"'})
    assert figures[f"list | {bench_main.CONDITIONAL}"]["probe_status"] == 304

    bench_main.print_api(figures)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 8 and not any("not 304" in line for line in lines)
    closed = [line for line in lines if "closed loop" in line]
    assert len(closed) == 4 and all("req/s per web process (a throughput figure; its p99 is not a goal)" in line
                                    for line in closed)


def test_a_missing_load_tool_skips_only_its_loads(monkeypatch, capsys):
    import bench.__main__ as bench_main

    monkeypatch.setattr(bench_main.shutil, "which", lambda tool: None if tool == "hey" else f"/usr/bin/{tool}")
    monkeypatch.setattr(bench_main, "http_load", lambda url, token, seconds, c, think, headers=None: {"p99": 1.0})
    figures = bench_main.api_latency("http://127.0.0.1:1", "tok", 7, 4)
    assert list(figures) == [f"detail | {bench_main.GOAL_LOAD}", f"list | {bench_main.GOAL_LOAD}"]
    assert "hey not installed" in capsys.readouterr().out


def test_goal_line_says_met_missed_or_not_measured():
    """One line per API section from the goal load's p99 on both endpoints; nothing asserted by the bench."""
    from bench.__main__ import GOAL_LOAD, goal_line

    def figures(detail: float, list_: float, errors: int = 0) -> dict:
        return {f"detail | {GOAL_LOAD}": {"p99": detail, "errors": 0},
                f"list | {GOAL_LOAD}": {"p99": list_, "errors": errors},
                "detail | 32 clients, closed loop": {"p99": 500.0, "errors": 0}}

    line, record = goal_line(figures(3.1, 4.2), "idle")
    assert line == "goal: p99 < 10 ms idle at 32 x ~1 req/s: detail 3.10 ms, list 4.20 ms (met)"
    assert record == {"limit_ms": 10, "p99_ms": {"detail": 3.1, "list": 4.2}, "errors": 0, "verdict": "met"}
    assert goal_line(figures(3.1, 12.0), "idle")[0].endswith("list 12.00 ms (missed)")
    assert goal_line(figures(12.0, 4.2), "busy")[0] == ("goal: p99 < 50 ms busy at 32 x ~1 req/s: "
                                                       "detail 12.00 ms, list 4.20 ms (met)")
    assert goal_line(figures(3.1, 4.2, errors=2), "busy")[1]["verdict"] == "missed: 2 errors"
    assert goal_line({}, "idle")[0] == ("goal: p99 < 10 ms idle at 32 x ~1 req/s: detail not measured, "
                                        "list not measured (not measured)")


def test_dynamic_batch_copy_finds_what_batch_one_finds(tmp_path):
    """The batched copy of the fixed batch-1 model must give the same boxes, frame by frame."""
    rng = np.random.default_rng(7)
    frames = [rng.integers(0, 255, (234, 416, 3), dtype=np.uint8) for _ in range(3)]
    frames[1][60:180, 150:260] = 255  # something box-like, so that at least one frame has detections
    single = Detector(DetectorConfig(str(MODEL), providers=("CPUExecutionProvider",), score_threshold=0.05))
    batched = Detector(DetectorConfig(str(MODEL), providers=("CPUExecutionProvider",), score_threshold=0.05,
                                      batch_size=3, dynamic_batch="on", dynamic_batch_dir=str(tmp_path)))
    assert single.batch_size == 1 and batched.batch_size == 3
    assert batched.facts["sha256"] == single.facts["sha256"], "facts name the model given, not the copy"
    for a, b in zip(single.detect(frames, 0.5), batched.detect(frames, 0.5), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-2)


def test_io_binding_finds_what_plain_run_finds():
    """The bound path (``io_binding``: on CUDA by default) run on the CPU, with ``run()`` itself barred, gives
    the plain path's boxes on frames of the real video: the same code the GPU takes, minus the device."""
    from bench.media import model_inputs

    frames, scale = model_inputs(STREET, 3)
    plain = Detector(DetectorConfig(str(MODEL), providers=("CPUExecutionProvider",), io_binding="off"))
    bound = Detector(DetectorConfig(str(MODEL), providers=("CPUExecutionProvider",), io_binding="on"))
    assert plain.bound_device is None and bound.bound_device == "cpu"
    assert Detector(DetectorConfig(str(MODEL), providers=("CPUExecutionProvider",))).bound_device is None

    def barred(*args, **kwargs):
        raise AssertionError("the bound path must not call run()")

    bound.session.run = barred
    expected, found = plain.detect(frames, scale), bound.detect(frames, scale)
    assert all(len(boxes) for boxes in expected), "people in every frame"
    for a, b in zip(expected, found, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(Exception, match="io_binding must be auto, on or off"):
        Detector(DetectorConfig(str(MODEL), providers=("CPUExecutionProvider",), io_binding="yes"))


def test_gpu_check_runs_its_arms_and_says_what_it_did_not_run(capsys):
    """The prepared GPU check, on the CPU: every arm (batch 1 and 8, I/O binding on and off) agrees with the
    reference; without CUDA in this onnxruntime it says the GPU path was not run and exits 3."""
    import onnxruntime as ort

    from bench import gpu_check

    assert gpu_check.main(["--cpu", "--frames", "9"]) == 0
    out = capsys.readouterr().out
    arms = [line for line in out.splitlines() if " I/O binding " in line]
    assert len(arms) == 4 and all("9/9 frames with the same box count" in line and line.endswith("agrees")
                                  for line in arms), out
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert gpu_check.main([]) == 3
        assert "the GPU path was NOT run" in capsys.readouterr().out


def test_the_long_video_segments_and_the_figures_around_it(tmp_path):
    """The segments section's long video: street.mp4 looped at its own size, a keyframe every 1.5 s and no
    other (the source's one keyframe is not copied into each loop), so it is cut into ~10 s segments; the
    unsegmented figure it is compared with; the worker layouts of its two topologies."""
    import av

    from bench.media import street_long
    from bench.segments import cpu_layout, unsegmented_bytes
    from stages.segments import plan_segments

    video = street_long(0.2, cache=tmp_path)  # 12 s, 360 frames
    assert street_long(0.2, cache=tmp_path) == video, "made once"
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (1280, 720)
        keyframes = [p.pts for p in container.demux(stream) if p.is_keyframe and p.pts is not None]
        step = round(1.5 / stream.time_base)
    assert keyframes == [i * step for i in range(8)]
    plans = plan_segments(str(video), 6.0)
    assert [p.frame_count for p in plans] == [180, 180] and plans[-1].end_frame == 360

    assert unsegmented_bytes(36_000, 1280, 720) == 36_000 * 416 * 234 * 3
    assert unsegmented_bytes(10, 16, 16) == 10 * 16 * 16 * 3, "never scaled up"
    assert cpu_layout(2) == {"cpu-1": ("preprocess", "postprocess"), "cpu-2": ("preprocess", "postprocess"),
                             "inference": ("inference",)}


def test_the_tracking_section_prints_the_tracker_against_postprocessing():
    from bench.tracking import run_tracking

    lines = []
    result = run_tracking(STREET, str(MODEL), quick=True, out=lines.append)
    assert result["frames"] == 84 and result["tracker_ms_per_frame"] > 0 and result["postprocess_ms_per_frame"] > 0
    assert 0 < result["objects"]["person"] < result["per_class"]["person"]
    assert any("tracker" in line and "% of it" in line for line in lines)


@pytest.mark.django_db(transaction=True)
def test_the_handler_cost_reads_the_same_answer_through_both_handlers(owner, other, redis_clean):
    from bench.handlers import handler_cost
    from jobs.models import Job

    from .conftest import token_for

    mine = Job.objects.create(user=owner, path="uploads/a.mp4", original_name="a.mp4")
    theirs = Job.objects.create(user=other, path="uploads/b.mp4", original_name="b.mp4")
    figures = handler_cost({"detail": f"/api/jobs/{mine.pk}/", "healthz": "/healthz"}, token_for(owner),
                           requests=3, warmup=1)
    assert set(figures) == {"detail", "healthz"}
    assert all(d[handler]["n"] == 3 for d in figures.values() for handler in ("asgi", "wsgi"))
    # A request the API refuses is not timed as if it were a read.
    with pytest.raises(RuntimeError, match="answered 404"):
        handler_cost({"detail": f"/api/jobs/{theirs.pk}/"}, token_for(owner), requests=1, warmup=0)
