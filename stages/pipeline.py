"""All three stages in one process, no broker: what `manage.py process_video` runs.

The same segment pipeline as the service: the video is planned into segments (stages/segments.py), each goes
through preprocess -> inference -> postprocess on its own (here one after another), its frames are deleted
once inferred, and the annotated parts are joined without encoding again (stages/postprocess.assemble_parts).
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from .detector import Detector
from .inference import run_inference
from .postprocess import EncoderSettings, assemble_parts, postprocess_detections
from .preprocess import preprocess_video
from .segments import DEFAULT_TARGET_S, plan_segments
from .tracking import TrackerSettings
from .video import probe_video


def process_video_file(
    source: str | Path,
    out_dir: str | Path,
    detector: Detector,
    *,
    enhance: bool = False,
    encoder: EncoderSettings | None = None,
    segment_s: float = DEFAULT_TARGET_S,
    tracking: TrackerSettings | None = None,
) -> dict:
    """Run preprocess -> inference -> postprocess segment by segment; returns the one-line summary as a dict."""
    out_dir = Path(out_dir)
    work_dir = out_dir / ".work"
    started = time.perf_counter()
    info = probe_video(source)
    seconds = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
    peak_bytes = 0
    tracking = tracking or TrackerSettings()
    parameters = {**detector.parameters, "enhance": enhance, "tracker": tracking.as_dict()}
    tracker_state = None

    def keep(state: dict) -> None:  # each segment's tracking continues from the one before
        nonlocal tracker_state
        tracker_state = state
    try:
        plans = plan_segments(source, segment_s)
        parts = []
        video: dict = {}
        for plan in plans:
            seg_dir = work_dir / f"s{plan.index}"  # a one-segment plan decodes the file straight, as the service does
            pre = preprocess_video(source, seg_dir, detector.input_size, enhance=enhance, segment=plan,
                                   expected_frames=info.frame_count)
            peak_bytes = max(peak_bytes, pre.bytes_written)
            inf = run_inference(seg_dir, detector)
            shutil.rmtree(seg_dir / "frames", ignore_errors=True)
            video = {"width": pre.width, "height": pre.height, "fps": pre.fps,
                     "frame_count": plans[-1].end_frame, "codec": info.codec, "format": info.format_name}
            post = postprocess_detections(source, seg_dir, seg_dir / "part", video=video, model=detector.facts,
                                          parameters=parameters, encoder=encoder, segment=plan,
                                          tracking=tracking, tracker_state=tracker_state, on_tracked=keep)
            parts.append(seg_dir / "part")
            for name, result in (("preprocess", pre), ("inference", inf), ("postprocess", post)):
                seconds[name] += result.seconds
        result = assemble_parts(parts, out_dir, {"video": video, "model": detector.facts, "parameters": parameters})
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    elapsed = time.perf_counter() - started
    frames = result.frame_count
    return {
        "frames": frames,
        "fps": round(frames / elapsed, 2),
        "seconds": round(elapsed, 3),
        "segments": len(plans),
        "detections": result.detections,
        "per_class": result.per_class,
        "objects": result.objects,
        "tracks": result.tracks,
        "ms_per_frame": {name: round(value * 1000 / frames, 2) for name, value in seconds.items()},
        "peak_work_bytes": peak_bytes,
        "out": str(out_dir),
    }
