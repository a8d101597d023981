"""All three stages in one process, no broker: what `manage.py process_video` runs."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from .detector import Detector
from .inference import run_inference
from .postprocess import EncoderSettings, postprocess_detections
from .preprocess import preprocess_video
from .video import probe_video


def process_video_file(
    source: str | Path,
    out_dir: str | Path,
    detector: Detector,
    *,
    enhance: bool = False,
    encoder: EncoderSettings | None = None,
) -> dict:
    """Run preprocess -> inference -> postprocess; returns the one-line summary as a dict."""
    out_dir = Path(out_dir)
    work_dir = out_dir / ".work"
    started = time.perf_counter()
    info = probe_video(source)
    try:
        pre = preprocess_video(source, work_dir, detector.input_size, enhance=enhance,
                               expected_frames=info.frame_count)
        inf = run_inference(work_dir, detector)
        shutil.rmtree(work_dir / "frames", ignore_errors=True)
        video = {"width": pre.width, "height": pre.height, "fps": pre.fps, "frame_count": pre.frame_count,
                 "codec": info.codec, "format": info.format_name}
        parameters = {**detector.parameters, "enhance": enhance}
        post = postprocess_detections(source, work_dir, out_dir, video=video, model=detector.facts,
                                      parameters=parameters, encoder=encoder)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    seconds = time.perf_counter() - started
    frames = post.frame_count
    return {
        "frames": frames,
        "fps": round(frames / seconds, 2),
        "seconds": round(seconds, 3),
        "detections": post.detections,
        "per_class": post.per_class,
        "ms_per_frame": {
            "preprocess": round(pre.seconds * 1000 / frames, 2),
            "inference": round(inf.seconds * 1000 / frames, 2),
            "postprocess": round(post.seconds * 1000 / frames, 2),
        },
        "interstage_bytes_per_frame": round(pre.bytes_written / frames),
        "out": str(out_dir),
    }
