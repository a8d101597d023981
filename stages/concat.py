"""Joining the annotated parts of a segmented job into one MP4, without re-encoding.

Each segment's postprocess writes its own annotated MP4 (stages/postprocess.py: libx264, yuv420p,
faststart), every part starting with an IDR frame. Parts encoded with the same settings at the same size
and rate carry the same SPS/PPS, so their packets can be copied one after another into a single H.264
track: the decoder resets at each part's IDR and decodes exactly the frames it decodes from the part
alone. Copying costs a demux and a mux (milliseconds a part), where re-encoding would cost as much as the
postprocess stage itself, and it loses no quality.

Timestamps are shifted so each part continues where the previous one ended (its last pts plus that packet's
duration): the joined file has strictly increasing pts, one edit list (the first part's B-frame delay), the
summed duration and a complete index, so it seeks like any MP4. The moov atom is written at the front
(``movflags=+faststart``, as postprocess does) so browsers start playing before the download ends.

Parts whose codec parameters differ cannot share one track (one avcC box describes them all): they are
refused with a ValueError naming the difference, never written as a file that decodes to garbage.
Only the first video stream of each part is copied; any other stream (audio, data) is dropped.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from fractions import Fraction
from pathlib import Path

import av

from .video import open_video

MP4_FORMAT = "mov,mp4,m4a,3gp,3g2,mj2"


@dataclass(frozen=True)
class PartFacts:
    """What a part must share with the others to be copied into the same track, and where its time runs.

    The first seven fields are compared between parts; the rest are the part's own, in its stream time base:
    ``first_pts``, ``end_pts`` (the last pts plus that packet's duration), the first and last dts (decode
    order), and the packet count.
    """

    codec: str
    width: int
    height: int
    pix_fmt: str
    time_base: Fraction
    frame_rate: Fraction | None
    extradata: bytes  # avcC: the SPS/PPS every packet of the track is decoded with
    first_pts: int
    end_pts: int
    first_dts: int
    last_dts: int
    packets: int


COMPARED = ("codec", "width", "height", "pix_fmt", "time_base", "frame_rate", "extradata")


def read_part(path: str | os.PathLike) -> PartFacts:
    """Demux (not decode) a part: its codec parameters and time span. Raises ValueError for a part that
    cannot be joined at all (not MP4, no frames, no timestamps, not starting at a keyframe)."""
    name = os.fspath(path)
    with open_video(path) as container:
        if container.format.name != MP4_FORMAT:
            raise ValueError(f"part {name} is not an MP4 file ({container.format.name})")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        first_pts: int | None = None
        end_pts: int | None = None
        first_dts = last_dts = 0
        count = 0
        default_duration = _frame_ticks(stream)
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            if packet.pts is None or packet.dts is None:
                raise ValueError(f"part {name}: packet {count} has no timestamp")
            if count == 0:
                if not packet.is_keyframe:
                    raise ValueError(f"part {name} does not start with a keyframe")
                first_dts = packet.dts
            elif packet.dts <= last_dts:
                raise ValueError(f"part {name}: its decode timestamps do not increase (packet {count})")
            last_dts = packet.dts
            end = packet.pts + (packet.duration or default_duration)
            first_pts = packet.pts if first_pts is None else min(first_pts, packet.pts)
            end_pts = end if end_pts is None else max(end_pts, end)
            count += 1
        if first_pts is None or end_pts is None:
            raise ValueError(f"part {name} has no frames")
        return PartFacts(
            codec=ctx.name or "",
            width=ctx.width,
            height=ctx.height,
            pix_fmt=ctx.pix_fmt or "",
            time_base=stream.time_base,
            frame_rate=stream.average_rate,
            extradata=bytes(ctx.extradata or b""),
            first_pts=first_pts,
            end_pts=end_pts,
            first_dts=first_dts,
            last_dts=last_dts,
            packets=count,
        )


def _frame_ticks(stream: av.video.stream.VideoStream) -> int:
    """One frame's duration in the stream's time base, for packets that do not say (1 where unknown)."""
    rate = stream.average_rate or stream.guessed_rate
    if not rate or not stream.time_base:
        return 1
    return max(1, round(1 / (rate * stream.time_base)))


def check_joinable(parts: Sequence[str | os.PathLike], facts: Sequence[PartFacts]) -> None:
    """Raise ValueError naming the first part whose codec parameters differ from the first part's."""
    reference = facts[0]
    for number, (path, fact) in enumerate(zip(parts[1:], facts[1:], strict=True), start=2):
        differ = [f.name for f in fields(PartFacts) if f.name in COMPARED
                  and getattr(fact, f.name) != getattr(reference, f.name)]
        if differ:
            shown = ", ".join(
                f"{field} {_show(getattr(reference, field))} vs {_show(getattr(fact, field))}" for field in differ
            )
            raise ValueError(
                f"part {number} of {len(parts)} ({os.fspath(path)}) cannot be joined to part 1 "
                f"({os.fspath(parts[0])}) without re-encoding: its codec parameters differ ({shown})"
            )


def _show(value: object) -> str:
    if isinstance(value, bytes):
        return f"<{len(value)} bytes, sha256 {hashlib.sha256(value).hexdigest()[:12]}>"
    return str(value)


def join_parts(parts: Sequence[str | os.PathLike], out: str | os.PathLike) -> int:
    """Copy the parts' video packets, in order, into the MP4 ``out``; returns the number of frames (packets).

    Every part is read and compared before anything is written; ``out`` is written to a temporary name beside
    it and renamed into place, so it is either the complete joined file or untouched.
    """
    if not parts:
        raise ValueError("no parts to join")
    facts = [read_part(path) for path in parts]
    check_joinable(parts, facts)
    out = Path(out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.mp4")
    count = 0
    try:
        with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as dst:
            out_stream = None
            offset = facts[0].first_pts  # the joined track's time starts where the first part's does
            last_dts: int | None = None
            for path, fact in zip(parts, facts, strict=True):
                shift = offset - fact.first_pts
                if last_dts is not None and fact.first_dts + shift <= last_dts:
                    # Parts with the same SPS have the same B-frame delay, so this does not happen with parts of
                    # one encoder; where it would, the part starts a little later (the previous frame shows a
                    # little longer) rather than give the muxer a decode time that goes back.
                    shift = last_dts + 1 - fact.first_dts
                with open_video(path) as src:
                    stream = src.streams.video[0]
                    if out_stream is None:
                        out_stream = dst.add_stream_from_template(stream)
                    for packet in src.demux(stream):
                        if packet.size == 0:
                            continue
                        packet.pts += shift
                        packet.dts += shift
                        packet.stream = out_stream  # mux() rescales from the part's time base (the same)
                        dst.mux(packet)
                        count += 1
                last_dts = fact.last_dts + shift
                offset = fact.end_pts + shift
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return count
