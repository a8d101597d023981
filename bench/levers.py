"""Lever experiments: each an A/B (or A/B/C) taken back to back in one process, so that load from
elsewhere on the machine disturbs every arm alike. Ratios between arms are the result; absolutes are not.

Every lever prints its prediction first, then the figures. The decision (kept or dropped) is recorded in
docs/performance.md next to the figures of the run it was taken from.
"""
from __future__ import annotations

import multiprocessing
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from stages.detector import Detector, DetectorConfig
from stages.framestore import FrameWriter, iter_chunks, read_meta
from stages.preprocess import letterbox_geometry

from .media import looped_clip

Out = Callable[[str], None]


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, every thread counted) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def ms(wall: float, cpu: float, frames: int) -> dict[str, float]:
    return {"wall_ms": round(wall * 1000 / frames, 2), "cpu_ms": round(cpu * 1000 / frames, 2)}


ROUNDS = 3  # set by run_levers


def compare(arms: dict[str, Callable[[], object]], frames: int) -> dict[str, dict[str, float]]:
    """Run the arms in turn, ROUNDS times (A B C A B C ...), and keep each arm's best wall and CPU time:
    a burst of load from elsewhere then spoils one round of one arm, not the comparison."""
    best: dict[str, list[float]] = {name: [float("inf"), float("inf")] for name in arms}
    for _ in range(ROUNDS):
        for name, fn in arms.items():
            wall, cpu = timed(fn)
            best[name] = [min(best[name][0], wall), min(best[name][1], cpu)]
    return {name: ms(wall, cpu, frames) for name, (wall, cpu) in best.items()}


def decode_frames(video: Path, limit: int) -> list[np.ndarray]:
    with av.open(str(video)) as src:
        frames = []
        for frame in src.decode(video=0):
            frames.append(frame.to_ndarray(format="bgr24"))
            if len(frames) >= limit:
                break
    return frames


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def encode(frames: list[np.ndarray], path: Path, preset: str, threads: int = 0, crf: int = 23) -> None:
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w", format="mp4") as dst:
        stream = dst.add_stream("libx264", rate=Fraction(30))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": preset, "crf": str(crf)}
        stream.codec_context.thread_count = threads
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = index
            for packet in stream.encode(frame):
                dst.mux(packet)
        for packet in stream.encode():
            dst.mux(packet)


def lever_encoder(video: Path, tmp: Path, frames_n: int, out: Out) -> dict:
    out("-- libx264 preset (crf 23), 720p: encode ms/frame, size and PSNR against the source, vs medium")
    out("   prediction: veryfast ~3x cheaper than medium for <1 dB PSNR and a somewhat larger file; ultrafast")
    out("   cheapest but much larger files at the same crf")
    frames = decode_frames(video, frames_n)
    presets = ("ultrafast", "superfast", "veryfast", "faster", "medium")
    result = compare({p: (lambda p=p: encode(frames, tmp / f"{p}.mp4", p)) for p in presets}, len(frames))
    for preset in presets:
        path = tmp / f"{preset}.mp4"
        decoded = decode_frames(path, frames_n)
        quality = float(np.mean([psnr(a, b) for a, b in zip(frames, decoded, strict=True)]))
        size_kb = path.stat().st_size / 1024 / len(frames)
        result[preset].update(psnr_db=round(quality, 2), kb_per_frame=round(size_kb, 1))
    medium = result["medium"]
    for preset, r in result.items():
        out(f"   {preset:10} wall {r['wall_ms']:6.2f} ms  cpu {r['cpu_ms']:6.2f} ms  {r['kb_per_frame']:6.1f} KB/frame "
            f"(x{r['kb_per_frame'] / medium['kb_per_frame']:.2f})  PSNR {r['psnr_db']:.2f} dB "
            f"({r['psnr_db'] - medium['psnr_db']:+.2f})")
    out("-- libx264 threads at veryfast: wall and CPU ms/frame")
    out("   prediction: threads=1 costs the least CPU; auto (0) finishes sooner alone but uses more CPU in total")
    threads = compare({str(c): (lambda c=c: encode(frames, tmp / f"t{c}.mp4", "veryfast", threads=c))
                       for c in (1, 2, 0)}, len(frames))
    for count in (1, 2, 0):
        out(f"   threads={count if count else 'auto'}  wall {threads[str(count)]['wall_ms']:6.2f} ms  "
            f"cpu {threads[str(count)]['cpu_ms']:6.2f} ms")
    return {"presets": result, "threads": threads}


def lever_decode(video: Path, out: Out) -> dict:
    out("-- decode + BGR conversion threading (FFmpeg thread_type), 720p H.264: ms/frame")
    out("   prediction: frame threads help wall time alone (~1.5x) at equal CPU; little help when cores are busy")

    def run(thread_type: str | None) -> int:
        n = 0
        with av.open(str(video)) as src:
            stream = src.streams.video[0]
            if thread_type:
                stream.thread_type = thread_type
            for frame in src.decode(stream):
                frame.to_ndarray(format="bgr24")
                n += 1
        return n

    frames = run(None)
    result = compare({m or "none": (lambda m=m: run(m)) for m in (None, "SLICE", "FRAME", "AUTO")}, frames)
    for mode in (None, "SLICE", "FRAME", "AUTO"):
        r = result[mode or "none"]
        out(f"   {mode or 'none':6} wall {r['wall_ms']:6.2f} ms  cpu {r['cpu_ms']:6.2f} ms")
    return result


def lever_inference(video: Path, model: str, tmp: Path, frames_n: int, out: Out) -> dict:
    frames = decode_frames(video, frames_n)
    _, new_w, new_h = letterbox_geometry(frames[0].shape[1], frames[0].shape[0], 416, 416)
    import cv2

    images = [cv2.resize(f, (new_w, new_h)) for f in frames]
    result: dict = {}

    def per_frame(detector: Detector, repeat: int = 1) -> float:
        wall = time.perf_counter()
        for _ in range(repeat):
            detector.detect(images, 1.0)
        return (time.perf_counter() - wall) * 1000 / (len(images) * repeat)

    out("-- onnxruntime intra-op threads, one session alone: ms/frame (detect incl. NMS)")
    out("   prediction: 2 threads ~1.6x faster than 1 alone on 2 cores")
    alone = {t: Detector(DetectorConfig(model, providers=("CPUExecutionProvider",), intra_op_threads=t))
             for t in (1, 2)}
    figures = compare({f"alone_threads_{t}": (lambda d=d: d.detect(images, 1.0)) for t, d in alone.items()},
                      len(images))
    for name, r in figures.items():
        result[name] = r
        out(f"   {name}: wall {r['wall_ms']:.2f} ms/frame, cpu {r['cpu_ms']:.2f} ms/frame")

    out("-- two sessions at once (two inference workers, or inference beside another stage): aggregate ms/frame")
    out("   prediction: 1 thread each beats 2 each (2 x 2 threads on 2 cores oversubscribe and spin)")
    def both(detectors: list[Detector]) -> None:
        workers = [threading.Thread(target=d.detect, args=(images, 1.0)) for d in detectors]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    pairs = {t: [Detector(DetectorConfig(model, providers=("CPUExecutionProvider",), intra_op_threads=t))
                 for _ in range(2)] for t in (1, 2)}
    figures = compare({f"two_sessions_threads_{t}": (lambda p=p: both(p)) for t, p in pairs.items()},
                      2 * len(images))
    for name, r in figures.items():
        result[name] = r
        out(f"   {name}: wall {r['wall_ms']:.2f} ms/frame aggregate, cpu {r['cpu_ms']:.2f} ms/frame")

    out("-- inference beside an encoder (inference and postprocess workers sharing 2 cores): thread spinning")
    out("   prediction: ORT's spin-waiting threads steal CPU from the encoder; no spinning helps the pair")
    encode_frames = decode_frames(video, min(len(frames), 40))
    for spin in (True, False) * ROUNDS:
        detector = Detector(DetectorConfig(model, providers=("CPUExecutionProvider",), intra_op_threads=2,
                                           allow_spinning=spin))
        detector.detect(images[:2], 1.0)
        timings = {}

        def infer(d=detector, t=timings):
            t["infer"] = per_frame(d)

        def enc(t=timings, s=spin):
            start = time.perf_counter()
            encode(encode_frames, tmp / f"spin{s}.mp4", "veryfast", threads=1)
            t["encode"] = (time.perf_counter() - start) * 1000 / len(encode_frames)

        wall = time.perf_counter()
        pair = [threading.Thread(target=infer), threading.Thread(target=enc)]
        for p in pair:
            p.start()
        for p in pair:
            p.join()
        key = "spinning" if spin else "no_spinning"
        timings["pair_wall_s"] = time.perf_counter() - wall
        previous = result.get(key)
        if previous is None or timings["pair_wall_s"] < previous["pair_wall_s"]:
            result[key] = {k: round(v, 3) for k, v in timings.items()}
    for key in ("spinning", "no_spinning"):
        r = result[key]
        out(f"   {key:12} inference {r['infer']:.2f} ms/frame, encoder {r['encode']:.2f} ms/frame, "
            f"both done in {r['pair_wall_s']:.2f} s (best of {ROUNDS})")

    out("-- batched inference on CPU (a dynamic-batch copy of the model): ms/frame, 2 threads")
    out("   prediction: little gain on CPU (<10%): the convolutions already fill the cores at batch 1")
    batched = {b: Detector(DetectorConfig(model, providers=("CPUExecutionProvider",), intra_op_threads=2,
                                          batch_size=b, dynamic_batch="on", dynamic_batch_dir=str(tmp)))
               for b in (1, 4, 8)}
    figures = compare({f"batch_{b}": (lambda d=d: d.detect(images, 1.0)) for b, d in batched.items()}, len(images))
    for name, r in figures.items():
        result[name] = r
        out(f"   {name}: wall {r['wall_ms']:.2f} ms/frame, cpu {r['cpu_ms']:.2f} ms/frame")
    return result


def lever_framestore(video: Path, tmp: Path, out: Out) -> dict:
    out("-- inter-stage format: write + read per frame, bytes per frame (720p -> 416x234 letterbox content)")
    out("   prediction: raw .npy chunks cost well under 1 ms/frame; compression costs more CPU than it saves")
    import cv2

    frames = decode_frames(video, 64)
    _, new_w, new_h = letterbox_geometry(frames[0].shape[1], frames[0].shape[0], 416, 416)
    images = [cv2.resize(f, (new_w, new_h)) for f in frames]
    result = {}
    store = tmp / "store"

    def write() -> None:
        shutil.rmtree(store, ignore_errors=True)
        writer = FrameWriter(store)
        for image in images:
            writer.add(image)
        writer.close(width=1280, height=720, scale=1.0)

    def read() -> None:
        meta = read_meta(store)
        for _ in iter_chunks(store, meta):
            pass

    w_wall, _ = timed(write)
    r_wall, _ = timed(read)
    size = sum(p.stat().st_size for p in (store / "frames").glob("*.npy"))
    n = len(images)
    result["npy"] = {"write_ms": round(w_wall * 1000 / n, 3), "read_ms": round(r_wall * 1000 / n, 3),
                     "bytes_per_frame": size // n}
    # The alternative a reader might expect: JPEG per frame (small files, but an encode and a decode each).
    encoded: list[bytes] = []
    w_wall, _ = timed(lambda: encoded.extend(cv2.imencode(".jpg", i, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
                                             for i in images))
    r_wall, _ = timed(lambda: [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR) for b in encoded])
    result["jpeg95"] = {"write_ms": round(w_wall * 1000 / n, 3), "read_ms": round(r_wall * 1000 / n, 3),
                        "bytes_per_frame": sum(map(len, encoded)) // n}
    for name, r in result.items():
        out(f"   {name:7} write {r['write_ms']:.3f} ms  read {r['read_ms']:.3f} ms  {r['bytes_per_frame']} bytes/frame")
    return result


# --- overlapping the stages of one long video: an in-process prototype of segment-level pipelining ---


def _cut_segments(video: Path, dest: Path, segments: int) -> list[Path]:
    """Re-encode ``video`` into ``segments`` files (in production: cut at keyframes with stream copy)."""
    frames = decode_frames(video, 1_000_000)
    size = -(-len(frames) // segments)
    paths = []
    for i in range(segments):
        path = dest / f"seg_{i:03d}.mp4"
        encode(frames[i * size : (i + 1) * size], path, "ultrafast", crf=18)
        paths.append(path)
    return paths


def _stage_loop(stage: str, sources: list[Path], work: Path, model: str, threads: int) -> None:
    """One worker process: runs its stage over every segment in order, waiting for the previous stage's file."""
    from stages.inference import DETECTIONS_FILE, run_inference
    from stages.postprocess import EncoderSettings, postprocess_detections
    from stages.preprocess import preprocess_video

    detector = None
    if stage == "inference":
        detector = Detector(DetectorConfig(model, providers=("CPUExecutionProvider",), intra_op_threads=threads))
    for i, source in enumerate(sources):
        seg = work / f"seg_{i:03d}"
        needed = {"preprocess": None, "inference": seg / "frames" / "meta.json",
                  "postprocess": seg / DETECTIONS_FILE}[stage]
        while needed is not None and not needed.exists():
            time.sleep(0.005)
        if stage == "preprocess":
            preprocess_video(source, seg, (416, 416))
        elif stage == "inference":
            run_inference(seg, detector)
        else:
            with av.open(str(source)) as probe:
                stream = probe.streams.video[0]
                video = {"width": stream.width, "height": stream.height, "fps": float(stream.average_rate),
                         "frame_count": stream.frames}
            postprocess_detections(source, seg, seg / "out", video=video, model={"class_names": ["x"] * 80},
                                   parameters={}, encoder=EncoderSettings(preset="veryfast", threads=1))


def _pipelined(sources: list[Path], work: Path, model: str, threads: int) -> float:
    ctx = multiprocessing.get_context("fork")
    started = time.perf_counter()
    procs = [ctx.Process(target=_stage_loop, args=(stage, sources, work, model, threads))
             for stage in ("preprocess", "inference", "postprocess")]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        if p.exitcode:
            raise RuntimeError(f"segment stage process failed ({p.exitcode})")
    return time.perf_counter() - started


def lever_segments(model: str, tmp: Path, frames_n: int, out: Out) -> dict:
    out(f"-- overlapping the stages of one {frames_n}-frame 640x360 video: whole video stage after stage, vs")
    out("   segments flowing through three stage processes (as three workers would)")
    out("   prediction: ~1.4x (one job keeps one core busy stage after stage; segments keep both busy)")
    video = looped_clip(frames_n)
    result = {}
    for segments in (1, 8):
        seg_dir = tmp / f"segments_{segments}"
        seg_dir.mkdir()
        sources = _cut_segments(video, seg_dir, segments)
        seconds = _pipelined(sources, seg_dir / "work", model, threads=1)
        result[f"segments_{segments}"] = {"seconds": round(seconds, 2), "fps": round(frames_n / seconds, 2)}
        out(f"   {segments} segment(s): {seconds:.2f} s, {frames_n / seconds:.2f} frames/s")
    result["ratio"] = round(result["segments_8"]["fps"] / result["segments_1"]["fps"], 2)
    out(f"   overlap gain x{result['ratio']}")
    return result


def run_levers(video: Path, model: str, *, quick: bool, out: Out) -> dict:
    global ROUNDS
    ROUNDS = 2 if quick else 3
    out(f"== Levers (arms interleaved, best of {ROUNDS} rounds each; compare arms, not absolutes)")
    with tempfile.TemporaryDirectory(prefix="gedge-levers-") as tmp_name:
        tmp = Path(tmp_name)
        return {
            "encoder": lever_encoder(video, tmp, 30 if quick else 84, out),
            "decode": lever_decode(video, out),
            "inference": lever_inference(video, model, tmp, 24 if quick else 64, out),
            "framestore": lever_framestore(video, tmp, out),
            "segments": lever_segments(model, tmp, 240 if quick else 960, out),
        }
