"""Cutting a video into segments that each go through the three stages on their own.

A segment is a run of frames that a decoder can produce starting from one keyframe, so a worker can decode
segment k without decoding segments 0..k-1. Planning only demuxes (reads packet headers and data, decodes
nothing): an hour of 30 fps video is ~108,000 packets, read in about a second.

The plan partitions the frames a full decode yields. Frames are counted and assigned by presentation time
(pts), not by packet order, because with B-frames the decoder outputs frames in a different order than the
packets arrive; ``decode_segment`` keeps exactly the frames with ``start_pts <= pts < end_pts``. So every
frame belongs to exactly one segment, and decoding the segments one after another yields, bit for bit, the
frames of one straight decode, with the same global indices.

A cut is only made at a keyframe K that no earlier packet (in decode order) is displayed at or after: then
every frame shown from K on is decoded from K on, and the frames shown before K (including an open GOP's
leading pictures, decoded after K but shown before it) belong to the previous segment, whose decode simply
continues past K until the decoder outputs a frame at or past ``end_pts``.
"""
from __future__ import annotations

import itertools
import math
import os
from array import array
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from .errors import UnprocessableInput
from .video import VideoLimits, iter_frames, open_video, to_bgr

DEFAULT_TARGET_S = 10.0


@dataclass(frozen=True)
class SegmentPlan:
    """One segment: frames ``first_frame .. first_frame + frame_count - 1`` of the video (presentation order).

    ``start_pts``/``end_pts`` are in the video stream's ``time_base``: the segment holds the frames with
    ``start_pts <= pts < end_pts``; ``end_pts`` is None for the last segment (to the end of the stream).
    ``start_pts`` is the pts of the keyframe decoding starts at (for segment 0: the video's first pts).
    ``start_s`` is where the segment starts, in seconds from the video's first frame.
    """

    index: int
    first_frame: int
    frame_count: int
    start_pts: int
    end_pts: int | None
    start_s: float
    time_base: Fraction

    @property
    def end_frame(self) -> int:
        """One past the last global frame index of the segment (the next segment's ``first_frame``)."""
        return self.first_frame + self.frame_count

    @property
    def is_whole_video(self) -> bool:
        """The only segment: decoding it is a straight decode of the file."""
        return self.index == 0 and self.end_pts is None


def plan_segments(
    path: str | os.PathLike,
    target_s: float = DEFAULT_TARGET_S,
    limits: VideoLimits | None = None,
) -> list[SegmentPlan]:
    """Plan segments of about ``target_s`` seconds, cut at the first usable keyframe at or after each multiple
    of ``target_s`` (measured from the first frame); a video shorter than ``target_s``, or one whose only
    keyframe is its first, is one segment. Where keyframes are sparser than ``target_s``, segments are longer
    (a cut can only be where decoding can start).

    ``limits`` are checked on what the packets say (size as declared, frame count and pts span as counted),
    while demuxing, so an over-long file is refused without reading it to the end.

    Where some packet has no pts (raw streams, some AVI files), frames cannot be placed by time: the plan is
    then one segment, and its ``frame_count`` is the packet count (decode_segment does not check it).
    """
    if not (isinstance(target_s, int | float) and math.isfinite(target_s) and target_s > 0):
        raise ValueError(f"target_s must be a positive number of seconds, not {target_s!r}")
    limits = limits or VideoLimits()
    # Decimal-exact (0.1 s is 1/10, not the nearest binary fraction), so a keyframe exactly on a multiple
    # of target_s is "at" it, whatever the time base.
    target = Fraction(repr(float(target_s)))
    with open_video(path) as container:
        stream = container.streams.video[0]
        limits.check_size(stream.codec_context.width, stream.codec_context.height)
        time_base = stream.time_base
        if time_base is None or time_base <= 0:
            raise UnprocessableInput("the video stream has no time base")
        pts_of_frames, cut_candidates, frames_without_pts = _scan_packets(container, stream, limits, time_base)

    frame_total = len(pts_of_frames) + frames_without_pts
    if frame_total == 0:
        raise UnprocessableInput("the video has no frames")
    limits.check_frames(frame_total)
    if frames_without_pts:
        first = min(pts_of_frames) if pts_of_frames else 0
        return [SegmentPlan(0, 0, frame_total, first, None, 0.0, time_base)]

    ordered = np.sort(np.frombuffer(pts_of_frames, dtype=np.int64))
    first_pts = int(ordered[0])
    limits.check_duration(float((int(ordered[-1]) - first_pts) * time_base))

    starts = [first_pts]
    next_cut = target
    for pts in cut_candidates:  # increasing: each is above every pts before it
        if pts <= first_pts:
            continue
        t = (pts - first_pts) * time_base
        if t >= next_cut:
            starts.append(pts)
            next_cut = (t // target + 1) * target  # the next multiple strictly after this cut

    firsts = np.searchsorted(ordered, np.asarray(starts, dtype=np.int64), side="left").tolist()
    firsts[0] = 0
    ends = [*firsts[1:], len(ordered)]
    return [
        SegmentPlan(
            index=i,
            first_frame=int(firsts[i]),
            frame_count=int(ends[i] - firsts[i]),
            start_pts=int(start),
            end_pts=int(starts[i + 1]) if i + 1 < len(starts) else None,
            start_s=round(float((start - first_pts) * time_base), 6),
            time_base=time_base,
        )
        for i, start in enumerate(starts)
    ]


def _scan_packets(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    limits: VideoLimits,
    time_base: Fraction,
) -> tuple[array, array, int]:
    """Demux the video stream: the pts of every packet that becomes a frame, the pts of the keyframes a
    segment may start at (in decode order), and how many frame packets had no pts."""
    frames = array("q")
    candidates = array("q")
    without_pts = 0
    highest: int | None = None  # the largest pts of any packet so far, in decode order
    lowest: int | None = None
    max_frames = limits.max_frames
    max_span = limits.max_duration_s / time_base if limits.max_duration_s else None
    try:
        for packet in container.demux(stream):
            if packet.size == 0:  # the flush packets demux() yields at the end: no frame
                continue
            pts = packet.pts
            if packet.is_discard:
                # Decoded as a reference (edit lists start mid-GOP) but its frame is dropped: not a frame,
                # but no cut may come before it in presentation.
                if pts is not None:
                    highest = pts if highest is None else max(highest, pts)
                continue
            if pts is None:
                without_pts += 1
            else:
                if packet.is_keyframe and (highest is None or pts > highest):
                    candidates.append(pts)
                highest = pts if highest is None else max(highest, pts)
                lowest = pts if lowest is None else min(lowest, pts)
                frames.append(pts)
                if max_span is not None and highest - lowest > max_span:
                    raise UnprocessableInput(f"the video is longer than {limits.max_duration_s:g} s")
            if max_frames and len(frames) + without_pts > max_frames:
                raise UnprocessableInput(f"the video has more than {max_frames} frames")
    except av.error.FFmpegError as exc:
        raise UnprocessableInput(f"the video's packets cannot be read ({exc.__class__.__name__})") from exc
    return frames, candidates, without_pts


def decode_segment(
    path: str | os.PathLike,
    plan: SegmentPlan,
    *,
    as_bgr: bool = False,
) -> Iterator[tuple[int, av.VideoFrame | np.ndarray]]:
    """Yield ``(global frame index, frame)`` for the frames of one segment, indices from ``plan.first_frame``.

    Seeks to the segment's keyframe, decodes, drops frames shown before ``start_pts`` (the previous
    segment's, e.g. an open GOP's leading pictures) and stops at the first frame at or past ``end_pts``.
    Frames are ``av.VideoFrame`` (their ``pts``/``time`` are the file's), or BGR uint8 arrays with
    ``as_bgr``.

    The count is checked against the plan: a segment that decodes to more or fewer frames than planned
    raises UnprocessableInput (after the frames it did yield) rather than shifting every later index. The
    whole-video segment is not checked: it is a straight decode, whatever that yields.
    """
    container = open_video(path)
    demuxed = None
    try:
        stream = container.streams.video[0]
        packets: Iterator[av.Packet] | None = None
        if plan.index > 0:
            landed = _seek_to_keyframe(container, stream, plan.start_pts)
            if landed is None:  # the demuxer's seek missed the keyframe: decode from the start instead
                container.close()
                container = open_video(path)
                stream = container.streams.video[0]
            else:
                keyframe, demuxed = landed
                packets = itertools.chain((keyframe,), demuxed)
        if packets is None:
            packets = demuxed = container.demux(stream)
        stream.thread_type = "AUTO"  # frame/slice threads; output is bit-identical to single-threaded
        index = plan.first_frame
        try:
            for frame in _frames_of_segment(packets, plan):
                if not plan.is_whole_video and index >= plan.end_frame:
                    raise UnprocessableInput(
                        f"segment {plan.index} decodes to more than the {plan.frame_count} frames planned"
                    )
                yield index, (to_bgr(frame) if as_bgr else frame)
                index += 1
        except av.error.FFmpegError as exc:
            raise UnprocessableInput(f"the video stream is corrupt after frame {index} ({exc})") from exc
        if not plan.is_whole_video and index != plan.end_frame:
            raise UnprocessableInput(
                f"segment {plan.index} decoded {index - plan.first_frame} frames where planning counted "
                f"{plan.frame_count}"
            )
    finally:
        if demuxed is not None:
            demuxed.close()
        container.close()


def _seek_to_keyframe(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, start_pts: int
) -> tuple[av.Packet, Generator[av.Packet, None, None]] | None:
    """The keyframe (shown at or before ``start_pts``) a seek landed on and the demuxer to read on from, or
    None where no seek gives that.

    Demuxers seek by different clocks (MP4's index is by decode time, Matroska's by presentation time,
    MPEG-TS bisects the file by decode time and lands a few packets late), so where a seek lands is checked,
    not trusted: non-keyframes before the first keyframe are skipped (they cannot be decoded), and a
    keyframe shown after ``start_pts`` means the seek overshot; then the seek is retried 1, 2, 4 and 8 s
    earlier. An earlier keyframe is fine: its extra frames are decoded and dropped by pts.
    """
    second = max(1, round(1 / stream.time_base))
    for back in (0, 1, 2, 4, 8):
        try:
            container.seek(start_pts - back * second, stream=stream, backward=True)
        except av.error.FFmpegError:
            return None
        packets = container.demux(stream)
        for packet in packets:
            if packet.size == 0:
                break
            if packet.is_keyframe:
                if packet.pts is not None and packet.pts <= start_pts:
                    return packet, packets
                break
        packets.close()
    return None


def _frames_of_segment(packets: Iterator[av.Packet], plan: SegmentPlan) -> Iterator[av.VideoFrame]:
    """Decode ``packets`` and keep the frames in ``[start_pts, end_pts)``; stop at the first one past it.

    The decoder outputs frames in presentation order, so the first frame at or past ``end_pts`` means every
    frame of this segment has been output.
    """
    check_start = plan.index > 0
    for packet in packets:
        for frame in packet.decode():
            pts = frame.pts
            if pts is None:
                if plan.is_whole_video:
                    yield frame
                    continue
                raise UnprocessableInput(f"segment {plan.index}: a decoded frame has no timestamp")
            if check_start and pts < plan.start_pts:
                continue
            if plan.end_pts is not None and pts >= plan.end_pts:
                return
            yield frame


def frames_of(path: str | os.PathLike, plan: SegmentPlan | None) -> Iterator[tuple[int, av.VideoFrame]]:
    """``(global frame index, frame)`` of one segment, or of the whole video where ``plan`` is None (a
    straight decode). The stages read their input through this one function."""
    if plan is not None:
        yield from decode_segment(path, plan)
        return
    with open_video(path) as container:
        yield from enumerate(iter_frames(container))
