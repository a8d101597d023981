"""Segments (stages/segments.py) and the joining of annotated parts (stages/concat.py), without Django.

What is proven here: a plan partitions the frames of a full decode (no frame lost or doubled, in order),
cuts only at keyframes, and decoding the segments one after another gives, bit for bit and with the same
indices and timestamps, the frames of one straight decode, also with B-frames, open GOPs and other
containers. Joined parts decode to exactly the parts' frames, with increasing timestamps, the summed
duration, the index at the front and working seeks; parts that cannot share a track are refused.
"""
from __future__ import annotations

import dataclasses
import hashlib
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from stages import segments
from stages.concat import join_parts, read_part
from stages.errors import UnprocessableInput
from stages.postprocess import ANNOTATED, EncoderSettings, postprocess_detections
from stages.segments import SegmentPlan, decode_segment, plan_segments
from stages.video import VideoLimits, iter_frames, open_video, to_bgr

from .conftest import STREET, make_video

# No scene-cut keyframes, so the keyframes are exactly every `g` frames and the expected cuts are known.
FIXED_GOP = "scenecut=0"
BFRAMES = {"bf": "2", "g": "12", "x264-params": FIXED_GOP}
# Open GOPs: each keyframe (a non-IDR I frame) is followed, in decode order, by B-frames shown before it that
# reference the previous GOP (leading pictures). They belong to the previous segment.
OPEN_GOP = {"bf": "3", "g": "12", "x264-params": f"open-gop=1:b-adapt=0:{FIXED_GOP}"}


def digest(frame: av.VideoFrame) -> str:
    """The frame's pixels exactly (every plane, without line padding), as a short comparable value."""
    return hashlib.sha256(frame.to_ndarray().tobytes()).hexdigest()[:24]


def straight_decode(path: Path) -> list[tuple[int, int | None, str]]:
    """(index, pts, pixels) of every frame of one decode of the whole file, the way preprocess reads it."""
    with open_video(path) as container:
        return [(i, frame.pts, digest(frame)) for i, frame in enumerate(iter_frames(container))]


def segmented_decode(path: Path, plans: list[SegmentPlan]) -> list[tuple[int, int | None, str]]:
    return [(index, frame.pts, digest(frame)) for plan in plans for index, frame in decode_segment(path, plan)]


def packets(path: Path) -> list[av.Packet]:
    with open_video(path) as container:
        return [p for p in container.demux(container.streams.video[0]) if p.size]


def keyframe_pts(path: Path) -> set[int]:
    return {p.pts for p in packets(path) if p.is_keyframe}


def assert_partition(plans: list[SegmentPlan], total: int) -> None:
    assert [p.index for p in plans] == list(range(len(plans)))
    assert plans[0].first_frame == 0 and plans[0].start_s == 0.0
    for before, after in zip(plans, plans[1:]):
        assert after.first_frame == before.end_frame and before.end_pts == after.start_pts
        assert after.start_pts > before.start_pts and after.start_s > before.start_s
    assert all(p.frame_count > 0 for p in plans) and plans[-1].end_pts is None
    assert sum(p.frame_count for p in plans) == total


# ---------------------------------------------------------------- planning and decoding segments


def test_street_video_has_one_keyframe_so_it_is_one_segment():
    """street.mp4 is one GOP (its only keyframe is the first frame): there is nowhere to cut it."""
    whole = straight_decode(STREET)
    assert len(whole) == 84 and keyframe_pts(STREET) == {0}
    (plan,) = plan_segments(STREET, target_s=0.5)
    assert (plan.first_frame, plan.frame_count, plan.end_pts) == (0, 84, None)
    assert segmented_decode(STREET, [plan]) == whole


def test_street_video_reencoded_with_short_gops_segments_to_the_straight_decode(tmp_path):
    """The street scene (real content, real motion) re-encoded at 640x360 with 3 B-frames and a keyframe every
    15 frames (0.5 s), in MP4: several segments, decoded bit for bit as one straight decode."""
    source = tmp_path / "street-gop15.mp4"
    with open_video(STREET) as src, av.open(str(source), "w") as dst:
        stream = dst.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        stream.options = {"preset": "superfast", "bf": "3", "g": "15", "x264-params": FIXED_GOP}
        for frame in iter_frames(src):
            dst.mux(stream.encode(frame.reformat(width=640, height=360, format="yuv420p")))
        dst.mux(stream.encode())
    whole = straight_decode(source)
    assert len(whole) == 84
    plans = plan_segments(source, target_s=0.5)
    assert [p.first_frame for p in plans] == [0, 15, 30, 45, 60, 75]
    assert_partition(plans, len(whole))
    assert {p.start_pts for p in plans[1:]} <= keyframe_pts(source)
    assert segmented_decode(source, plans) == whole


@pytest.mark.parametrize(
    ("suffix", "fmt", "options"),
    [
        (".mp4", None, BFRAMES),
        (".mp4", None, {"bf": "3", "g": "10", "x264-params": "b-pyramid=normal"}),
        (".mp4", None, OPEN_GOP),
        (".mkv", "matroska", BFRAMES),
        (".ts", "mpegts", BFRAMES),
    ],
    ids=["mp4-bframes", "mp4-bpyramid", "mp4-open-gop", "matroska", "mpegts"],
)
def test_bframe_videos_segment_without_losing_or_doubling_a_frame(tmp_path, suffix, fmt, options):
    source = make_video(tmp_path / f"in{suffix}", width=96, height=64, frames=100, fps=25, fmt=fmt,
                        options=options)
    demuxed = packets(source)
    decode_order = [p.pts for p in demuxed]
    assert decode_order != sorted(decode_order)  # the packets really are reordered: B-frames
    leading = [k for k, p in enumerate(demuxed) if p.is_keyframe and k and any(q.pts < p.pts for q in demuxed[k:])]
    assert bool(leading) == (options is OPEN_GOP)  # open GOPs really have leading pictures after keyframes
    whole = straight_decode(source)
    assert len(whole) == 100
    plans = plan_segments(source, target_s=0.7)
    assert len(plans) >= 4, plans
    assert_partition(plans, len(whole))
    assert {p.start_pts for p in plans[1:]} <= keyframe_pts(source)
    assert segmented_decode(source, plans) == whole
    # Any one segment alone (a worker decodes only its own) gives the same frames as in the sequence.
    middle = plans[len(plans) // 2]
    alone = [(i, f.pts, digest(f)) for i, f in decode_segment(source, middle)]
    assert alone == whole[middle.first_frame : middle.end_frame]


def test_cuts_are_the_first_keyframe_at_or_after_each_multiple_of_the_target(tmp_path):
    # 25 fps, a keyframe every 12 frames: at 0, 0.48, 0.96, 1.44, 1.92, 2.40, 2.88, 3.36, 3.84 s.
    source = make_video(tmp_path / "in.mp4", width=96, height=64, frames=100, fps=25, options=BFRAMES)
    plans = plan_segments(source, target_s=1.0)
    # 1 s -> 1.44 (frame 36); the next multiple after 1.44 is 2 s -> 2.40 (60); 3 s -> 3.36 (84); no 4 s.
    assert [p.first_frame for p in plans] == [0, 36, 60, 84]
    assert [p.frame_count for p in plans] == [36, 24, 24, 16]
    assert [p.start_s for p in plans] == pytest.approx([0.0, 1.44, 2.40, 3.36])
    assert plans[1].time_base == plans[0].time_base and plans[1].start_pts * plans[1].time_base == Fraction(36, 25)
    # Keyframes sparser than the target: a cut only where decoding can start, so longer segments.
    sparse = make_video(tmp_path / "sparse.mp4", width=96, height=64, frames=100, fps=25,
                        options={"bf": "2", "g": "50", "x264-params": FIXED_GOP})
    assert [p.first_frame for p in plan_segments(sparse, target_s=0.5)] == [0, 50]


def test_a_short_video_is_one_segment_that_is_a_straight_decode(tmp_path):
    source = make_video(tmp_path / "in.mp4", width=96, height=64, frames=10, options=BFRAMES)
    (plan,) = plan_segments(source)
    assert (plan.index, plan.first_frame, plan.frame_count, plan.end_pts, plan.start_s) == (0, 0, 10, None, 0.0)
    assert plan.is_whole_video
    assert segmented_decode(source, [plan]) == straight_decode(source)
    (one,) = plan_segments(make_video(tmp_path / "one.mp4", width=96, height=64, frames=1), target_s=0.01)
    assert one.frame_count == 1


def test_a_seek_that_misses_the_keyframe_falls_back_to_decoding_from_the_start(tmp_path, monkeypatch):
    source = make_video(tmp_path / "in.mp4", width=96, height=64, frames=60, options=BFRAMES)
    plans = plan_segments(source, target_s=0.5)
    whole = straight_decode(source)
    monkeypatch.setattr(segments, "_seek_to_keyframe", lambda container, stream, start_pts: None)
    assert segmented_decode(source, plans) == whole


def test_a_stream_without_timestamps_is_one_segment(tmp_path):
    """A raw H.264 stream with B-frames has no pts: frames cannot be placed by time, so no cut is made."""
    source = make_video(tmp_path / "in.h264", width=96, height=64, frames=60, fmt="h264", options=BFRAMES)
    assert all(p.pts is None for p in packets(source))
    (plan,) = plan_segments(source, target_s=0.5)
    assert (plan.first_frame, plan.frame_count, plan.end_pts) == (0, 60, None)
    assert [(i, pixels) for i, _, pixels in segmented_decode(source, [plan])] == [
        (i, pixels) for i, _, pixels in straight_decode(source)]


def test_decode_segment_can_give_bgr_arrays(tmp_path):
    source = make_video(tmp_path / "in.mp4", width=96, height=64, frames=40, options=BFRAMES)
    plans = plan_segments(source, target_s=0.5)
    with open_video(source) as container:
        expected = [to_bgr(frame) for frame in iter_frames(container)]
    got = [(index, image) for plan in plans for index, image in decode_segment(source, plan, as_bgr=True)]
    assert [index for index, _ in got] == list(range(40))
    assert all(image.dtype == np.uint8 and np.array_equal(image, expected[i]) for i, image in got)


def test_a_plan_that_does_not_match_the_file_is_an_error_not_shifted_indices(tmp_path):
    source = make_video(tmp_path / "in.mp4", width=96, height=64, frames=60, options=BFRAMES)
    plans = plan_segments(source, target_s=0.5)
    too_many = dataclasses.replace(plans[1], frame_count=plans[1].frame_count + 1)
    with pytest.raises(UnprocessableInput, match="planning counted"):
        list(decode_segment(source, too_many))
    too_few = dataclasses.replace(plans[1], frame_count=plans[1].frame_count - 1)
    with pytest.raises(UnprocessableInput, match="more than"):
        list(decode_segment(source, too_few))


def test_limits_are_enforced_while_planning(tmp_path):
    source = make_video(tmp_path / "in.mp4", width=96, height=64, frames=60, fps=25, options=BFRAMES)
    with pytest.raises(UnprocessableInput, match="more than 50 frames"):
        plan_segments(source, limits=VideoLimits(max_frames=50))
    with pytest.raises(UnprocessableInput, match="longer than 2 s"):
        plan_segments(source, limits=VideoLimits(max_duration_s=2))
    with pytest.raises(UnprocessableInput, match="96x64"):
        plan_segments(source, limits=VideoLimits(max_width=64))
    assert sum(p.frame_count for p in plan_segments(source, limits=VideoLimits(max_frames=60))) == 60
    with pytest.raises(ValueError, match="positive"):
        plan_segments(source, target_s=0)
    (tmp_path / "text.mp4").write_text("not a video")
    with pytest.raises(UnprocessableInput):
        plan_segments(tmp_path / "text.mp4")


def test_planning_a_long_video_only_demuxes(tmp_path):
    """A 10-minute video (15,000 frames, made by joining a 10 s part 60 times) is planned in well under a
    second or two, and any of its segments decodes alone to the part's frames with the global indices."""
    part = make_video(tmp_path / "part.mp4", width=64, height=48, frames=250, fps=25,
                      options={"bf": "2", "g": "50", "x264-params": FIXED_GOP})
    long = tmp_path / "long.mp4"
    assert join_parts([part] * 60, long) == 15_000
    started = time.perf_counter()
    plans = plan_segments(long, target_s=10.0)
    seconds = time.perf_counter() - started
    print(f"\nplan_segments, 10 min of 25 fps video (15,000 packets): {seconds * 1000:.0f} ms")
    assert seconds < 5
    assert_partition(plans, 15_000)
    assert [p.frame_count for p in plans] == [250] * 60
    part_frames = [pixels for _, _, pixels in straight_decode(part)]
    got = list(decode_segment(long, plans[37]))
    assert [index for index, _ in got] == list(range(37 * 250, 38 * 250))
    assert [digest(frame) for _, frame in got] == part_frames


# ---------------------------------------------------------------- joining annotated parts


def annotated_part(tmp_path: Path, name: str, frames: int, *, width: int = 96, height: int = 64, fps: int = 25,
                   encoder: EncoderSettings | None = None) -> Path:
    """A part as the postprocess stage writes it: its own encoder path, with a box drawn on each frame."""
    source = make_video(tmp_path / f"{name}-src.mp4", width=width, height=height, frames=frames, fps=fps)
    work = tmp_path / f"{name}-work"
    work.mkdir()
    rows = np.array([[i, 5 + i, 8, 40 + i, 30, 0.9, 0] for i in range(frames)], np.float32)
    rows.tofile(work / "detections.f32")
    out = tmp_path / f"{name}-out"
    postprocess_detections(source, work, out, video={"width": width, "height": height, "fps": fps},
                           model={"class_names": ["person"]}, parameters={}, encoder=encoder)
    return out / ANNOTATED


def top_level_boxes(path: Path) -> list[str]:
    data, boxes, offset = path.read_bytes(), [], 0
    while offset + 8 <= len(data):
        size, kind = int.from_bytes(data[offset : offset + 4], "big"), data[offset + 4 : offset + 8].decode()
        if size == 1:
            size = int.from_bytes(data[offset + 8 : offset + 16], "big")
        boxes.append(kind)
        offset += size if size else len(data)
    return boxes


def test_joined_parts_decode_to_the_parts_frames_without_re_encoding(tmp_path):
    parts = [annotated_part(tmp_path, name, frames) for name, frames in (("a", 17), ("b", 30), ("c", 9))]
    expected = [pixels for part in parts for _, _, pixels in straight_decode(part)]
    out = tmp_path / "joined.mp4"
    started = time.perf_counter()
    count = join_parts(parts, out)
    print(f"\njoin_parts, 3 parts of 56 frames: {(time.perf_counter() - started) * 1000:.1f} ms")
    assert count == 56 == len(expected)
    # The packets are the parts' packets, byte for byte: nothing was re-encoded.
    assert [bytes(p) for p in packets(out)] == [bytes(p) for part in parts for p in packets(part)]
    assert not list(tmp_path.glob(".joined.mp4.*"))

    frames = straight_decode(out)
    assert [f for _, _, f in frames] == expected
    pts = [p for _, p, _ in frames]
    assert all(b > a for a, b in zip(pts, pts[1:]))
    dts = [p.dts for p in packets(out)]
    assert all(b > a for a, b in zip(dts, dts[1:]))

    facts = [read_part(part) for part in parts]
    with open_video(out) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert stream.average_rate == 25 and stream.frames == 56
        duration = stream.duration * stream.time_base
        assert duration == sum(Fraction(f.end_pts - f.first_pts) * f.time_base for f in facts) == Fraction(56, 25)
        assert container.duration / 1_000_000 == pytest.approx(56 / 25, abs=0.001)
    boxes = top_level_boxes(out)
    assert boxes.index("moov") < boxes.index("mdat")  # faststart: browsers play before the download ends

    # A seek into the middle part lands on a keyframe before the target and decodes on to the right frame.
    target_index = 17 + 20
    target_pts = pts[target_index]
    with open_video(out) as container:
        stream = container.streams.video[0]
        container.seek(target_pts, stream=stream, backward=True)
        decoded = []
        for frame in container.decode(stream):
            decoded.append(frame.pts)
            if frame.pts >= target_pts:
                break
        assert decoded[0] <= target_pts and frame.pts == target_pts
        assert digest(frame) == expected[target_index]


def test_one_frame_parts_join(tmp_path):
    parts = [annotated_part(tmp_path, name, 1) for name in "abc"]
    out = tmp_path / "joined.mp4"
    assert join_parts(parts, out) == 3
    assert [f for _, _, f in straight_decode(out)] == [f for part in parts for _, _, f in straight_decode(part)]


def test_assembling_one_part_again_works(tmp_path):
    """A worker that dies after assembling but before the results are in place assembles again: the one part of
    a single-segment job is linked, not moved, so it is still there the second time."""
    from stages.postprocess import assemble_parts

    part = annotated_part(tmp_path, "only", 4).parent
    header = {"video": {"frame_count": 4}, "model": {}, "parameters": {}}
    for attempt in ("first", "second"):
        result = assemble_parts([part], tmp_path / attempt, header)
        assert result.frame_count == 4 and (tmp_path / attempt / ANNOTATED).stat().st_size > 0
    assert (part / ANNOTATED).exists()


def test_parts_that_cannot_share_a_track_are_refused(tmp_path):
    good = annotated_part(tmp_path, "good", 6)
    out = tmp_path / "joined.mp4"
    bigger = annotated_part(tmp_path, "bigger", 6, width=128)
    with pytest.raises(ValueError, match=r"bigger.*width 96 vs 128"):
        join_parts([good, bigger], out)
    faster = annotated_part(tmp_path, "faster", 6, fps=30)
    with pytest.raises(ValueError, match="time_base|frame_rate"):
        join_parts([good, faster], out)
    other_settings = annotated_part(tmp_path, "medium", 6, encoder=EncoderSettings(preset="medium"))
    with pytest.raises(ValueError, match="extradata"):
        join_parts([good, other_settings], out)
    yuv444 = make_video(tmp_path / "yuv444.mp4", width=96, height=64, frames=6, pix_fmt="yuv444p")
    with pytest.raises(ValueError, match="pix_fmt yuv420p vs yuv444p"):
        join_parts([good, yuv444], out)
    mkv = make_video(tmp_path / "part.mkv", width=96, height=64, frames=6, fmt="matroska")
    with pytest.raises(ValueError, match="not an MP4"):
        join_parts([good, mkv], out)
    with pytest.raises(ValueError, match="no parts"):
        join_parts([], out)
    assert not out.exists() and not list(tmp_path.glob(".joined.mp4.*"))

