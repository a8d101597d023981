"""The GPU check: the inference stage's CUDA path, prepared for a machine with a GPU (issue 7, "GPU").

    python -m bench.gpu_check [--frames 64] [--device-id 0]     # on the GPU machine
    python -m bench.gpu_check --cpu                              # the same checks on the CPU: the harness

What it runs, on frames of ../shared/media/street.mp4 resized as the preprocessing stage resizes them:
the detector as the inference worker builds it (``stages.detector.Detector``) on CUDAExecutionProvider with
the dynamic-batch copy of the model, batch 1 and batch 8, with and without I/O binding; each arm's boxes
against a CPU detector at batch 1 (the same count per frame, the largest coordinate difference in pixels),
and its ms/frame after a warm-up. It prints what it found and exits 0 when every arm ran and agreed, 1 when
an arm disagreed, 3 when CUDAExecutionProvider is not there (then nothing on the GPU was run, and it says so).
It asserts nothing about speed.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from stages.detector import Detector, DetectorConfig

from .media import STREET, model_inputs
from .service import default_model

TOLERANCE_PX = 1.0  # boxes in 1280x720 pixels: float32 kernels differ between devices in the last bits


def compare(expected: list[np.ndarray], found: list[np.ndarray]) -> tuple[bool, str]:
    counts = sum(len(a) == len(b) for a, b in zip(expected, found, strict=True))
    worst = max((float(np.abs(a[:, :4] - b[:, :4]).max()) for a, b in zip(expected, found, strict=True)
                 if len(a) == len(b) and len(a)), default=0.0)
    same = counts == len(expected) and worst <= TOLERANCE_PX
    return same, (f"{counts}/{len(expected)} frames with the same box count, "
                  f"largest coordinate difference {worst:.3f} px")


def timed(detector: Detector, images: list[np.ndarray], scale: float) -> tuple[list[np.ndarray], float]:
    detector.detect(images[: detector.batch_size], scale)  # warm-up: CUDA kernels, memory arenas
    started = time.perf_counter()
    found = detector.detect(images, scale)
    return found, (time.perf_counter() - started) * 1000 / len(images)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path(default_model()))
    parser.add_argument("--video", type=Path, default=STREET)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--device-id", type=int, default=0)
    parser.add_argument("--cpu", action="store_true", help="run the arms on the CPU (checks the harness, not a GPU)")
    args = parser.parse_args(argv)

    import onnxruntime as ort

    available = ort.get_available_providers()
    print(f"onnxruntime {ort.__version__}, providers available: {', '.join(available)}")
    if shutil.which("nvidia-smi"):
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
        print(f"nvidia-smi -L: {listed.stdout.strip() or listed.stderr.strip()}")
    provider = "CPUExecutionProvider" if args.cpu else "CUDAExecutionProvider"
    if provider not in available:
        print(f"{provider} is not in this onnxruntime: the GPU path was NOT run (install onnxruntime-gpu)")
        return 3

    reference = Detector(DetectorConfig(str(args.model), providers=("CPUExecutionProvider",), io_binding="off",
                                        dynamic_batch="off"))
    images, scale = model_inputs(args.video, args.frames, reference.input_size)
    expected, ms = timed(reference, images, scale)
    print(f"{len(images)} frames of {args.video.name}; CPU reference, batch 1: {ms:.2f} ms/frame, "
          f"{sum(map(len, expected))} boxes")
    agreed = True
    with tempfile.TemporaryDirectory() as copies:
        for batch in (1, 8):
            for binding in ("on", "off"):
                detector = Detector(DetectorConfig(
                    str(args.model), providers=(provider,), device_id=args.device_id, batch_size=batch,
                    dynamic_batch="on", dynamic_batch_dir=copies, io_binding=binding))
                found, ms = timed(detector, images, scale)
                same, detail = compare(expected, found)
                agreed &= same and detector.providers[0] == provider
                print(f"{detector.providers[0]} batch {detector.batch_size} I/O binding {binding:3}: "
                      f"{ms:7.2f} ms/frame; {detail}: {'agrees' if same else 'DISAGREES'}")
    print("every arm ran and agreed with the CPU" if agreed else "an arm did NOT agree with the CPU")
    return 0 if agreed else 1


if __name__ == "__main__":
    sys.exit(main())
