"""Stage code on small generated videos, and the output decoders, without Django or a broker."""
from __future__ import annotations

import json
import subprocess
import sys

import av
import numpy as np
import pytest

from stages.detector import (
    Detector,
    DetectorConfig,
    decode_yolov5,
    decode_yolov8,
    load_class_names,
    select_boxes,
)
from stages.errors import ModelError, UnprocessableInput
from stages.framestore import iter_chunks, read_meta
from stages.pipeline import process_video_file
from stages.preprocess import letterbox_geometry, preprocess_video
from stages.video import probe_video

from .conftest import MODEL, ROOT, STREET, make_video


@pytest.fixture(scope="module")
def detector():
    return Detector(DetectorConfig(model_path=str(MODEL)))


@pytest.mark.parametrize(
    ("width", "height", "frames"),
    [(853, 481, 5), (320, 240, 1), (240, 426, 4)],  # odd size, a single frame, portrait
    ids=["odd-853x481", "one-frame", "portrait"],
)
def test_all_stages_on_generated_videos(tmp_path, detector, width, height, frames):
    source = make_video(tmp_path / "in.mp4", width=width, height=height, frames=frames,
                        pix_fmt="yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p")
    summary = process_video_file(source, tmp_path / "out", detector)
    assert summary["frames"] == frames
    with av.open(str(tmp_path / "out" / "annotated.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        decoded = list(container.decode(stream))
    assert len(decoded) == frames
    # yuv420p needs even sizes: odd ones are padded by one pixel, never cropped.
    assert (decoded[0].width, decoded[0].height) == (width + width % 2, height + height % 2)
    doc = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert doc["video"]["width"] == width and doc["video"]["height"] == height
    assert [f["index"] for f in doc["frames"]] == list(range(frames))
    assert not (tmp_path / "out" / ".work").exists()


def test_preprocess_writes_letterboxed_frames_in_the_documented_format(tmp_path):
    source = make_video(tmp_path / "in.mp4", width=640, height=360, frames=40)
    result = preprocess_video(source, tmp_path / "work", (416, 416), chunk_size=16)
    meta = read_meta(tmp_path / "work")
    assert meta["frame_count"] == result.frame_count == 40
    assert meta["resized"] == [234, 416] and meta["scale"] == pytest.approx(0.65)
    assert [c["count"] for c in meta["chunks"]] == [16, 16, 8]
    chunks = list(iter_chunks(tmp_path / "work", meta))
    assert chunks[0][1].shape == (16, 234, 416, 3) and chunks[0][1].dtype == np.uint8
    assert result.bytes_written == sum((tmp_path / "work" / "frames" / c["file"]).stat().st_size
                                       for c in meta["chunks"])


def test_each_stage_reports_after_every_frame_and_inference_after_every_batch(tmp_path):
    # What a worker acts on between two reports (a cancel, a lost lease, a job to give way to) waits at most a
    # frame, or a detector batch in inference, not a chunk of frames.
    from stages.inference import run_inference
    from stages.postprocess import postprocess_detections

    source = make_video(tmp_path / "in.mp4", width=320, height=240, frames=11)
    batched = Detector(DetectorConfig(model_path=str(MODEL), providers=("CPUExecutionProvider",), batch_size=4,
                                      dynamic_batch="on", dynamic_batch_dir=str(tmp_path)))
    assert batched.batch_size == 4
    seen: dict[str, list[tuple[int, int]]] = {"pre": [], "inf": [], "post": []}
    pre = preprocess_video(source, tmp_path / "work", batched.input_size, chunk_size=8,
                           progress=lambda done, total: seen["pre"].append((done, total)))
    run_inference(tmp_path / "work", batched, progress=lambda done, total: seen["inf"].append((done, total)))
    video = {"width": pre.width, "height": pre.height, "fps": pre.fps, "frame_count": 11}
    postprocess_detections(source, tmp_path / "work", tmp_path / "out", video=video, model=batched.facts,
                           parameters=batched.parameters,
                           progress=lambda done, total: seen["post"].append((done, total)))
    assert [done for done, _ in seen["pre"]] == [*range(1, 12), 11]  # and once more when the store is closed
    # Inference's unit is the detector's batch, within each chunk of the store (8 + 3 frames).
    assert seen["inf"] == [(4, 11), (8, 11), (11, 11)]
    assert [done for done, _ in seen["post"]] == [*range(1, 12), 11]


def test_enhancement_changes_pixels_only_when_asked(tmp_path):
    source = make_video(tmp_path / "in.mp4", frames=2)
    preprocess_video(source, tmp_path / "plain", (416, 416))
    preprocess_video(source, tmp_path / "clahe", (416, 416), enhance=True)
    plain = next(iter_chunks(tmp_path / "plain", read_meta(tmp_path / "plain")))[1]
    clahe = next(iter_chunks(tmp_path / "clahe", read_meta(tmp_path / "clahe")))[1]
    assert plain.shape == clahe.shape and not np.array_equal(plain, clahe)


def test_frame_limit_is_enforced_while_decoding(tmp_path):
    source = make_video(tmp_path / "in.mp4", frames=12)
    with pytest.raises(UnprocessableInput, match="more than 5 frames"):
        preprocess_video(source, tmp_path / "work", (416, 416), max_frames=5)


def test_probe_refuses_non_videos(tmp_path):
    (tmp_path / "a.mp4").write_text("not a video")
    with pytest.raises(UnprocessableInput):
        probe_video(tmp_path / "a.mp4")
    info = probe_video(STREET)
    assert (info.width, info.height, info.frame_count, info.fps) == (1280, 720, 84, 30.0)


def test_letterbox_geometry_keeps_aspect():
    assert letterbox_geometry(1280, 720, 416, 416) == (0.325, 416, 234)
    assert letterbox_geometry(240, 426, 416, 416)[1:] == (234, 416)


def test_a_video_smaller_than_the_model_input_is_not_scaled_up(tmp_path, detector):
    """Frames are stored at most at the source's size: inference pads them into the model's input. A 16x16
    video used to be stored at 416x416, 2,000 times its pixels."""
    assert letterbox_geometry(16, 16, 416, 416) == (1.0, 16, 16)
    assert letterbox_geometry(320, 180, 416, 416) == (1.0, 320, 180)
    video = make_video(tmp_path / "tiny.mp4", width=16, height=16, frames=40)
    result = preprocess_video(video, tmp_path / "work", detector.input_size)
    meta = read_meta(tmp_path / "work")
    assert (result.frame_count, meta["resized"], meta["scale"]) == (40, [16, 16], 1.0)
    stored = sum(p.stat().st_size for p in (tmp_path / "work").rglob("*.npy"))
    assert stored < 40 * 16 * 16 * 3 + 4096  # the pixels and the .npy headers, nothing more
    _, frames = next(iter_chunks(tmp_path / "work", meta))
    boxes = detector.detect(list(frames[:2]), meta["scale"])  # padded into the input, boxes in source pixels
    assert len(boxes) == 2 and all((b[:, :4] <= 16.5).all() for b in boxes if len(b))


def test_detector_finds_people_in_the_street_video(tmp_path, detector):
    preprocess_video(STREET, tmp_path, detector.input_size)
    meta = read_meta(tmp_path)
    _, frames = next(iter_chunks(tmp_path, meta))
    boxes = detector.detect(list(frames[:3]), meta["scale"])
    assert len(boxes) == 3
    for per_frame in boxes:
        people = per_frame[per_frame[:, 5] == 0]
        assert len(people) >= 5 and (people[:, 4] >= 0.3).all()
        assert (people[:, 2] > people[:, 0]).all() and people[:, 2].max() > 416  # original pixels
    assert detector.facts["sha256"] == "4903c9058f6e2553834e9905be1ae5d67e262cb6321964dbc57a49edc6fa10da"


def _two_anchor_scores(num_classes=3):
    scores = np.zeros((2, num_classes), np.float32)
    scores[0, 2] = 0.9  # anchor 0: class 2
    scores[1, 1] = 0.8  # anchor 1: class 1
    return scores


def test_yolov5_layout_decodes_boxes_in_input_pixels():
    scores = _two_anchor_scores()
    raw = np.zeros((2, 5 + 3), np.float32)
    raw[0, :5] = [100, 50, 20, 10, 1.0]
    raw[1, :5] = [200, 100, 40, 20, 0.5]  # objectness halves the class score: 0.4 < 0.5 threshold
    raw[:, 5:] = scores
    boxes = select_boxes(*decode_yolov5(raw), score_threshold=0.5, iou_threshold=0.45, scale=0.5)
    assert boxes.shape == (1, 6)
    np.testing.assert_allclose(boxes[0], [180, 90, 220, 110, 0.9, 2], rtol=1e-5)


def test_yolov8_layout_is_channels_first_without_objectness():
    scores = _two_anchor_scores()
    raw = np.zeros((4 + 3, 2), np.float32)  # [4 + C, anchors]
    raw[:4, 0] = [100, 50, 20, 10]
    raw[:4, 1] = [200, 100, 40, 20]
    raw[4:, :] = scores.T
    boxes = select_boxes(*decode_yolov8(raw), score_threshold=0.5, iou_threshold=0.45, scale=1.0)
    assert sorted(boxes[:, 5].tolist()) == [1, 2]
    np.testing.assert_allclose(boxes[0, :5], [90, 45, 110, 55, 0.9], rtol=1e-5)


def test_nms_is_per_class():
    raw = np.zeros((3, 5 + 2), np.float32)
    raw[:, :5] = [[100, 100, 50, 50, 1], [102, 100, 50, 50, 1], [101, 100, 50, 50, 1]]
    raw[0, 5] = 0.9  # class 0
    raw[1, 5] = 0.8  # class 0, overlaps anchor 0: suppressed
    raw[2, 6] = 0.7  # class 1, same place: kept
    boxes = select_boxes(*decode_yolov5(raw), score_threshold=0.3, iou_threshold=0.45, scale=1.0)
    assert sorted(boxes[:, 5].tolist()) == [0, 1]


def test_class_names_from_labels_file_or_metadata(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    assert load_class_names({}, str(labels), 2) == ["cat", "dog"]
    assert load_class_names({"names": "{0: 'a', 1: 'b'}"}, None, 2) == ["a", "b"]
    assert load_class_names({}, None, 80)[0] == "person"
    with pytest.raises(ModelError, match="80 classes"):
        load_class_names({}, str(labels), 80)


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="model file not found"):
        Detector(DetectorConfig(model_path=str(tmp_path / "nope.onnx")))


def test_process_video_command_prints_a_json_summary_last(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "manage.py", "process_video", str(STREET), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    print("\nprocess_video street.mp4:", json.dumps(summary))
    assert summary["frames"] == 84 and summary["fps"] > 0
    assert summary["detections"] > 800 and summary["per_class"]["person"] > 800
    assert set(summary["ms_per_frame"]) == {"preprocess", "inference", "postprocess"}
    assert (out / "annotated.mp4").stat().st_size > 10_000 and (out / "detections.json").exists()
