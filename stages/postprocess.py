"""Stage 3 (CPU): draw the boxes on the original frames, encode H.264, write detections.json.

annotated.mp4 is H.264 (libx264), yuv420p, with the moov atom at the front (faststart) so browsers start
playing before the download ends. yuv420p needs even sizes: an odd width or height is padded by one
repeated pixel column/row; boxes keep the original coordinates.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from .errors import UnprocessableInput
from .inference import load_detections
from .segments import SegmentPlan, frames_of
from .tracking import TrackerSettings, Trails, objects_per_class, summarize_tracks, track_segment
from .video import as_fraction, frame_time_ms, to_bgr, video_fps

ANNOTATED = "annotated.mp4"
DETECTIONS_JSON = "detections.json"


@dataclass
class EncoderSettings:
    preset: str = "superfast"  # see GEDGE_X264_PRESET
    crf: int = 23
    threads: int = 0  # 0: libx264 chooses


@dataclass
class PostprocessResult:
    frame_count: int
    detections: int
    per_class: dict[str, int]
    width: int
    height: int
    bytes_video: int
    seconds: float


def class_color(class_id: int) -> tuple[int, int, int]:
    """A stable, well-spread BGR colour per class."""
    hue = (class_id * 47) % 180
    hsv = np.uint8([[[hue, 220, 255]]])
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def track_color(track_id: int) -> tuple[int, int, int]:
    """A stable BGR colour per track: hues a golden angle apart, so neighbouring ids differ."""
    hue = int(track_id * 137.508) % 180
    hsv = np.uint8([[[hue, 200, 255]]])
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def draw_boxes(image: np.ndarray, rows: np.ndarray, names: list[str], track_ids: np.ndarray | None = None,
               trails: Trails | None = None) -> None:
    """rows: [K, 7] (frame, x1, y1, x2, y2, score, class_id), drawn in place; with ``track_ids`` coloured by
    track, the id beside the label and the track's recent path (``trails``) behind it."""
    thickness = max(1, round(min(image.shape[:2]) / 360))
    font_scale = max(0.4, min(image.shape[:2]) / 1200)
    for k, (_, x1, y1, x2, y2, score, class_id) in enumerate(rows):
        cid = int(class_id)
        track_id = int(track_ids[k]) if track_ids is not None else -1
        color = track_color(track_id) if track_id >= 0 else class_color(cid)
        p1, p2 = (int(x1), int(y1)), (int(x2), int(y2))
        if trails is not None and track_id >= 0:
            path = np.array(trails.of(track_id), np.int32).reshape(-1, 1, 2)
            if len(path) > 1:
                cv2.polylines(image, [path], False, color, thickness, cv2.LINE_AA)
        cv2.rectangle(image, p1, p2, color, thickness, cv2.LINE_AA)
        name = names[cid] if cid < len(names) else str(cid)
        label = f"{name} #{track_id} {score:.2f}" if track_id >= 0 else f"{name} {score:.2f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        top = max(p1[1], th + base + 2)
        cv2.rectangle(image, (p1[0], top - th - base - 2), (p1[0] + tw + 2, top), color, -1)
        cv2.putText(image, label, (p1[0] + 1, top - base - 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    (0, 0, 0), 1, cv2.LINE_AA)


def bgr_to_yuv420_frame(image: np.ndarray) -> av.VideoFrame:
    """An even-sized BGR image as the encoder's yuv420p frame (BT.601, limited range, as swscale's default).

    ``VideoFrame.from_ndarray(image, "bgr24")`` and the encoder's own conversion cost ~3.8 ms a 720p frame;
    OpenCV's SIMD conversion written straight into the frame's planes costs ~0.9 ms (docs/performance.md).
    """
    height, width = image.shape[:2]
    i420 = cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420)  # Y (h x w), then U and V (h/2 x w/2 each), packed
    chroma = height * width // 4
    planes = (i420[:height], i420[height:].reshape(-1)[:chroma].reshape(height // 2, width // 2),
              i420[height:].reshape(-1)[chroma:].reshape(height // 2, width // 2))
    frame = av.VideoFrame(width, height, "yuv420p")
    for plane, data in zip(frame.planes, planes, strict=True):
        if plane.line_size == data.shape[1]:
            plane.update(data)
        else:  # rows padded for alignment: copy row by row into the padded buffer
            np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[: data.shape[0], : data.shape[1]] = data
    return frame


FRAMES_OPEN = '"frames": ['


def iter_detection_frames(path: Path) -> Iterator[dict]:
    """The frames of a detections.json one at a time, in order, as DetectionsJsonWriter laid them out (one
    frame a line), so a reader's memory does not grow with the video either. Any other layout of the same
    document (a file written in one piece) is parsed whole."""
    with open(path, encoding="utf-8") as fh:
        head = fh.readline()
        if not head.rstrip().endswith(FRAMES_OPEN):
            fh.seek(0)
            yield from json.load(fh)["frames"]
            return
        for line in fh:
            line = line.strip()
            if line.startswith("]"):
                return
            yield json.loads(line.removesuffix(","))


def read_detection_facts(path: Path) -> dict:
    """detections.json without its frames: video, model, parameters and summary (first and last line)."""
    with open(path, encoding="utf-8") as fh:
        head = fh.readline().rstrip()
        if not head.endswith(FRAMES_OPEN):
            fh.seek(0)
            doc = json.load(fh)
            doc.pop("frames", None)
            return doc
        tail = ""
        for line in fh:
            tail = line
    doc = json.loads(head.removesuffix(FRAMES_OPEN).rstrip().removesuffix(",") + "}")
    tail = tail.strip()
    if tail.startswith("],"):
        doc.update(json.loads("{" + tail.removeprefix("],")))
    return doc


class DetectionsJsonWriter:
    """Streams detections.json frame by frame so memory does not grow with the video's length."""

    def __init__(self, path: Path, header: dict) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self.fh = open(self.tmp, "w", encoding="utf-8")
        head = json.dumps(header)
        self.fh.write(head[:-1] + ', "frames": [\n')
        self.first = True

    def frame(self, index: int, time_ms: float, rows: np.ndarray, names: list[str],
              track_ids: np.ndarray | None = None) -> None:
        boxes = [
            {
                "class": names[int(r[6])] if int(r[6]) < len(names) else str(int(r[6])),
                "class_id": int(r[6]),
                "score": round(float(r[5]), 4),
                "box": [round(float(v), 1) for v in r[1:5]],
                "track_id": int(track_ids[k]) if track_ids is not None else -1,
            }
            for k, r in enumerate(rows)
        ]
        if not self.first:
            self.fh.write(",\n")
        self.first = False
        self.fh.write(json.dumps({"index": index, "time_ms": time_ms, "boxes": boxes}))

    def raw_frame(self, text: str) -> None:
        """A frame already in JSON (a line of another detections.json)."""
        if not self.first:
            self.fh.write(",\n")
        self.first = False
        self.fh.write(text)

    def close(self, summary: dict, tracks: list[dict] | None = None) -> None:
        tail = '\n], "tracks": ' + json.dumps(tracks) + ', "summary": ' if tracks is not None else '\n], "summary": '
        self.fh.write(tail + json.dumps(summary) + "}\n")
        self.fh.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.fh.close()
        self.tmp.unlink(missing_ok=True)


def postprocess_detections(
    source: str | Path,
    work_dir: str | Path,
    out_dir: str | Path,
    *,
    video: dict,
    model: dict,
    parameters: dict,
    encoder: EncoderSettings | None = None,
    progress: Callable[[int, int], None] | None = None,
    segment: SegmentPlan | None = None,
    tracking: TrackerSettings | None = None,
    tracker_state: dict | None = None,
    on_tracked: Callable[[dict], None] | None = None,
) -> PostprocessResult:
    """Track ``work_dir``'s detections, continuing from ``tracker_state`` (the previous segment's; None for the
    first), hand the state this segment leaves to ``on_tracked`` (so the next segment may start while this one
    encodes), then draw the boxes, ids and trails on the source frames (``segment``'s only, where one is
    given), encode them to ``out_dir``/annotated.mp4 and write ``out_dir``/detections.json with global frame
    indexes. A segment's two files are a part: :func:`assemble_parts` joins the parts of a video.
    ``progress(done, total)`` is called after each frame."""
    started = time.perf_counter()
    encoder = encoder or EncoderSettings()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = model["class_names"]
    rows = load_detections(work_dir)
    order = np.argsort(rows[:, 0], kind="stable")
    rows = rows[order]
    frame_ids = rows[:, 0].astype(np.int64)
    total = segment.frame_count if segment is not None else int(video.get("frame_count") or 0)
    first_frame = segment.first_frame if segment is not None else 0
    per_class: Counter[str] = Counter()
    tracking = tracking or TrackerSettings()
    fps = video_fps(source)
    tracked_frames = max(total, int(frame_ids[-1]) + 1 if len(frame_ids) else 0)
    track_ids, state_after = track_segment(rows, tracked_frames, tracking, float(fps), tracker_state)
    if on_tracked is not None:
        on_tracked(state_after)
    trails = Trails(tracking.trail, (tracker_state or {}).get("trails"))

    video_tmp = out_dir / f".{ANNOTATED}.{os.getpid()}.tmp.mp4"
    json_writer = DetectionsJsonWriter(out_dir / DETECTIONS_JSON, {"video": video, "model": model,
                                                                   "parameters": parameters})
    count = 0
    try:
        with av.open(str(video_tmp), "w", format="mp4", options={"movflags": "+faststart"}) as dst:
            out_stream = None
            for index, frame in frames_of(source, segment):
                local = index - first_frame
                lo, hi = np.searchsorted(frame_ids, [local, local + 1])
                frame_rows, frame_tracks = rows[lo:hi], track_ids[lo:hi]
                image = to_bgr(frame)
                trails.update(frame_rows[:, 1:5], frame_tracks)
                draw_boxes(image, frame_rows, names, frame_tracks, trails)
                height, width = image.shape[:2]
                if width % 2 or height % 2:
                    image = cv2.copyMakeBorder(image, 0, height % 2, 0, width % 2, cv2.BORDER_REPLICATE)
                if out_stream is None:
                    out_stream = dst.add_stream("libx264", rate=as_fraction(fps))
                    out_stream.width, out_stream.height = image.shape[1], image.shape[0]
                    out_stream.pix_fmt = "yuv420p"
                    out_stream.options = {"preset": encoder.preset, "crf": str(encoder.crf)}
                    out_stream.codec_context.thread_count = encoder.threads
                out_frame = bgr_to_yuv420_frame(image)
                out_frame.pts = local
                for packet in out_stream.encode(out_frame):
                    dst.mux(packet)
                json_writer.frame(index, frame_time_ms(frame, index, fps), frame_rows, names, frame_tracks)
                for class_id in frame_rows[:, 6].astype(np.int64):
                    per_class[names[class_id] if class_id < len(names) else str(class_id)] += 1
                count = local + 1
                if progress:
                    progress(count, max(total, count))
            if out_stream is None:
                raise UnprocessableInput("the video has no frames")
            for packet in out_stream.encode():
                dst.mux(packet)
        summary = {"frames": count, "detections": int(len(rows)), "per_class": dict(per_class.most_common())}
        json_writer.close(summary)
    except BaseException:
        json_writer.abort()
        video_tmp.unlink(missing_ok=True)
        raise
    os.replace(video_tmp, out_dir / ANNOTATED)
    if progress:
        progress(count, count)
    return PostprocessResult(
        frame_count=count,
        detections=int(len(rows)),
        per_class=dict(per_class.most_common()),
        width=out_stream.width,
        height=out_stream.height,
        bytes_video=(out_dir / ANNOTATED).stat().st_size,
        seconds=time.perf_counter() - started,
    )


@dataclass
class AssembledResult:
    frame_count: int
    detections: int
    per_class: dict[str, int]
    objects: dict[str, int]
    tracks: int
    bytes_video: int


def assemble_parts(part_dirs: list[Path], out_dir: Path, header: dict) -> AssembledResult:
    """Join the parts of a video, in order, into ``out_dir``'s annotated.mp4 (packets copied, not encoded
    again: stages/concat.py) and detections.json (``header``, every part's frame lines copied as they are,
    one summary over all parts). Memory does not grow with the video's length."""
    from .concat import join_parts

    out_dir.mkdir(parents=True, exist_ok=True)
    per_class: Counter[str] = Counter()
    frames = detections = 0
    writer = DetectionsJsonWriter(out_dir / DETECTIONS_JSON, header)

    def frame_lines() -> Iterator[dict]:
        nonlocal frames, detections
        for part in part_dirs:
            facts = read_detection_facts(part / DETECTIONS_JSON)["summary"]
            frames += facts["frames"]
            detections += facts["detections"]
            per_class.update(facts["per_class"])
            for line in _frame_lines(part / DETECTIONS_JSON):
                writer.raw_frame(line)
                yield json.loads(line)

    try:
        tracks = summarize_tracks(frame_lines())
        summary = {"frames": frames, "detections": detections, "per_class": dict(per_class.most_common()),
                   "objects": objects_per_class(tracks), "tracks": len(tracks)}
        if len(part_dirs) == 1:  # one part: it is the result (a link: the part stays for a rerun)
            _link_or_copy(part_dirs[0] / ANNOTATED, out_dir / ANNOTATED)
        else:
            joined = join_parts([part / ANNOTATED for part in part_dirs], out_dir / ANNOTATED)
            if joined != frames:
                raise RuntimeError(f"the joined video has {joined} frames where the parts' detections have {frames}")
        writer.close(summary, tracks)
    except BaseException:
        writer.abort()
        raise
    return AssembledResult(frame_count=frames, detections=detections, per_class=summary["per_class"],
                           objects=summary["objects"], tracks=len(tracks),
                           bytes_video=(out_dir / ANNOTATED).stat().st_size)


def _link_or_copy(source: Path, target: Path) -> None:
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed
        shutil.copyfile(source, target)


def _frame_lines(path: Path) -> Iterator[str]:
    """The frame lines of a detections.json that DetectionsJsonWriter wrote, as JSON text, in order."""
    with open(path, encoding="utf-8") as fh:
        if not fh.readline().rstrip().endswith(FRAMES_OPEN):
            raise ValueError(f"{path} was not written frame by frame")
        for line in fh:
            line = line.strip()
            if line.startswith("]"):
                return
            if line:
                yield line.removesuffix(",")
