"""The honest competitor: the one-file script a user writes in an afternoon.

Decode with PyAV, letterbox with OpenCV, YOLOX-Nano on onnxruntime's defaults, draw with OpenCV, encode
with libx264 at its default settings (preset medium, crf 23), one frame at a time. It deliberately imports
nothing from G-Edge, so it stays what a user would write.

    python bench/script.py VIDEO MODEL OUT.mp4   -> prints {"frames": ..., "seconds": ..., "fps": ...}
"""
from __future__ import annotations

import json
import sys
import time
from fractions import Fraction

import av
import cv2
import numpy as np
import onnxruntime as ort


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    scale = min(size / image.shape[0], size / image.shape[1])
    resized = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)))
    canvas = np.full((size, size, 3), 114, np.uint8)
    canvas[: resized.shape[0], : resized.shape[1]] = resized
    return canvas, scale


def yolox_grids(size: int) -> tuple[np.ndarray, np.ndarray]:
    grids, strides = [], []
    for stride in (8, 16, 32):
        n = size // stride
        xv, yv = np.meshgrid(np.arange(n), np.arange(n))
        grids.append(np.stack((xv, yv), 2).reshape(-1, 2))
        strides.append(np.full((n * n, 1), stride))
    return np.concatenate(grids).astype(np.float32), np.concatenate(strides).astype(np.float32)


def detect(session, name, image, grids, strides, size, conf=0.3, iou=0.45):
    blob, scale = letterbox(image, size)
    out = session.run(None, {name: blob.transpose(2, 0, 1)[None].astype(np.float32)})[0][0]
    centers = (out[:, :2] + grids) * strides
    wh = np.exp(out[:, 2:4]) * strides
    scores = out[:, 4:5] * out[:, 5:]
    cls = scores.argmax(1)
    best = scores[np.arange(len(cls)), cls]
    keep = best >= conf
    xywh = np.concatenate([centers - wh / 2, wh], 1)[keep] / scale
    picked = cv2.dnn.NMSBoxesBatched(xywh.tolist(), best[keep].tolist(), cls[keep].tolist(), conf, iou)
    return [(xywh[i], float(best[keep][i]), int(cls[keep][i])) for i in np.asarray(picked).reshape(-1)]


def main(video: str, model: str, out_path: str) -> dict:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    size = session.get_inputs()[0].shape[2]
    grids, strides = yolox_grids(size)
    started = time.perf_counter()
    frames = 0
    with av.open(video) as src, av.open(out_path, "w") as dst:
        in_stream = src.streams.video[0]
        out_stream = dst.add_stream("libx264", rate=Fraction(in_stream.average_rate or 25))
        out_stream.width, out_stream.height = in_stream.width, in_stream.height
        out_stream.pix_fmt = "yuv420p"
        for frame in src.decode(in_stream):
            image = frame.to_ndarray(format="bgr24")
            for (x, y, w, h), score, cls in detect(session, name, image, grids, strides, size):
                cv2.rectangle(image, (int(x), int(y)), (int(x + w), int(y + h)), (0, 255, 0), 2)
                cv2.putText(image, f"{cls} {score:.2f}", (int(x), int(y) - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                            (0, 255, 0), 1)
            for packet in out_stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                dst.mux(packet)
            frames += 1
        for packet in out_stream.encode():
            dst.mux(packet)
    seconds = time.perf_counter() - started
    return {"frames": frames, "seconds": round(seconds, 3), "fps": round(frames / seconds, 2)}


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    print(json.dumps(main(*sys.argv[1:])))
