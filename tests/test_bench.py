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


def test_lockstep_bursts_are_told_apart():
    """hey's lockstep CSV: rows by burst (offset x rate), the first burst apart from the later ones."""
    from bench.__main__ import burst_figures

    def row(offset: float, seconds: float) -> dict:
        return {"offset": str(offset), "response-time": str(seconds)}

    rows = [row(0.0005 * i, 0.020 + 0.0001 * i) for i in range(4)]  # the first burst: 20-20.3 ms
    rows += [row(0.5 * k + 0.0003 * i, 0.004 + 0.001 * k) for k in (1, 2, 3) for i in range(4)]  # 5, 6, 7 ms
    assert burst_figures(rows, 2.0) == {"first_burst_max": 20.3, "later_bursts": 3, "later_p99": 7.0,
                                        "later_max": 7.0}
    assert burst_figures(rows[:4], 2.0) == {}


def test_a_job_each_runs_one_single_processor_hey_per_url(monkeypatch):
    """The "a job each" load: one hey process per URL, one client each, Go on one processor; every
    process's rows counted, those it started past the measured window (while others report) left out."""
    import bench.__main__ as bench_main

    started = []

    class FakeHey:
        def __init__(self, args, env, **kwargs) -> None:
            started.append((args, env))
            self.returncode = 0

        def communicate(self):
            return "response-time,DNS+dialup,DNS,Request-write,Response-delay,Response-read,status-code,offset\n" \
                   "0.002,0,0,0,0,0,200,0.1\n0.004,0,0,0,0,0,200,1.9\n0.250,0,0,0,0,0,200,2.0\n", None

    monkeypatch.setattr(bench_main.subprocess, "Popen", FakeHey)
    figures = bench_main.hey_each(["http://127.0.0.1:1/a/", "http://127.0.0.1:1/b/"], "tok", 2)
    assert [args[-1] for args, _ in started] == ["http://127.0.0.1:1/a/", "http://127.0.0.1:1/b/"]
    assert all(args[args.index("-c") + 1] == "1" and env["GOMAXPROCS"] == "1" for args, env in started)
    assert all(args[args.index("-z") + 1] == "3s" for args, _ in started), "a second past the window"
    assert figures["n"] == 4 and figures["rps"] == 2.0 and figures["errors"] == 0 and figures["max"] == 4.0


def test_the_diagnostic_load_runs_hey_under_sched_batch():
    """hey under SCHED_BATCH for the diagnostic loads only: the judged loads run it as it is."""
    from bench.__main__ import hey_command

    plain = hey_command("http://127.0.0.1:1/api/jobs/", "tok", 3, 32, 2.0)
    batch = hey_command("http://127.0.0.1:1/api/jobs/", "tok", 3, 32, 2.0, batch=True)
    assert plain[0] == "hey" and batch == ["chrt", "--batch", "0", *plain]


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
