"""The ONNX detector: one onnxruntime session, letterbox batching, and output decoders.

Supported output layouts (``model_format``):

- ``yolox``: [N, A, 5 + C] raw grid outputs (cx, cy, log w, log h, objectness, class scores), decoded with
  strides 8/16/32 as in the YOLOX demo; input BGR 0..255.
- ``yolov5``: [N, A, 5 + C] boxes already in input pixels (cx, cy, w, h), objectness, class scores;
  input RGB 0..1.
- ``yolov8``: [N, 4 + C, A] (cx, cy, w, h, class scores), no objectness; input RGB 0..1.
"""
from __future__ import annotations

import ast
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import ModelError

COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

MODEL_FORMATS = ("yolox", "yolov5", "yolov8")
PAD_VALUE = 114


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_class_names(metadata: dict[str, str], labels_path: str | None, num_classes: int) -> list[str]:
    """Class names from a labels file (one per line), else the model's ``names`` metadata, else COCO."""
    if labels_path:
        with open(labels_path, encoding="utf-8") as fh:
            names = [line.strip() for line in fh if line.strip()]
    elif "names" in metadata:  # Ultralytics exports: "{0: 'person', 1: 'bicycle', ...}"
        parsed = ast.literal_eval(metadata["names"])
        names = [parsed[k] for k in sorted(parsed)] if isinstance(parsed, dict) else list(parsed)
    else:
        names = list(COCO_CLASSES)
    if num_classes and len(names) != num_classes:
        raise ModelError(f"the model has {num_classes} classes but {len(names)} class names were given")
    return names


def _yolox_grids(input_h: int, input_w: int, strides=(8, 16, 32)) -> tuple[np.ndarray, np.ndarray]:
    grids, expanded = [], []
    for stride in strides:
        hs, ws = input_h // stride, input_w // stride
        xv, yv = np.meshgrid(np.arange(ws), np.arange(hs))
        grid = np.stack((xv, yv), 2).reshape(-1, 2)
        grids.append(grid)
        expanded.append(np.full((grid.shape[0], 1), stride))
    return np.concatenate(grids).astype(np.float32), np.concatenate(expanded).astype(np.float32)


def decode_yolox(raw: np.ndarray, grids: np.ndarray, strides: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One image's [A, 5 + C] -> (cx cy w h boxes [A, 4], class scores [A, C]) in input pixels."""
    centers = (raw[:, :2] + grids) * strides
    sizes = np.exp(raw[:, 2:4]) * strides
    return np.concatenate([centers, sizes], axis=1), raw[:, 4:5] * raw[:, 5:]


def decode_yolov5(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return raw[:, :4], raw[:, 4:5] * raw[:, 5:]


def decode_yolov8(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One image's [4 + C, A] (channels first, as Ultralytics exports it)."""
    raw = raw.T
    return raw[:, :4], raw[:, 4:]


def select_boxes(
    cxcywh: np.ndarray, class_scores: np.ndarray, score_threshold: float, iou_threshold: float, scale: float
) -> np.ndarray:
    """Best class per anchor, threshold, per-class NMS; returns [K, 6] (x1, y1, x2, y2, score, class_id)."""
    class_ids = class_scores.argmax(axis=1)
    scores = class_scores[np.arange(len(class_ids)), class_ids]
    keep = scores >= score_threshold
    if not keep.any():
        return np.zeros((0, 6), np.float32)
    boxes, scores, class_ids = cxcywh[keep], scores[keep], class_ids[keep]
    xywh = np.concatenate([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, 2:]], axis=1) / scale
    picked = cv2.dnn.NMSBoxesBatched(
        xywh.tolist(), scores.tolist(), class_ids.tolist(), score_threshold, iou_threshold
    )
    picked = np.asarray(picked, dtype=np.int64).reshape(-1)
    out = np.empty((len(picked), 6), np.float32)
    out[:, :2] = xywh[picked, :2]
    out[:, 2:4] = xywh[picked, :2] + xywh[picked, 2:]
    out[:, 4] = scores[picked]
    out[:, 5] = class_ids[picked]
    return out[np.argsort(-out[:, 4], kind="stable")]


def dynamic_batch_model(model_path: str, cache_dir: str | None = None) -> Path:
    """A copy of ``model_path`` whose first input and output axis is symbolic ("N"), made once and cached.

    Exports with a fixed batch of 1 (as the YOLOX-Nano release) run one frame per call; on a GPU that leaves
    it mostly idle. The declared dims change, and Reshape targets that fixed the batch at 1 copy it instead.
    """
    source = Path(model_path)
    folder = Path(cache_dir) if cache_dir else source.parent
    target = folder / f"{source.stem}.dynamic-batch.{file_sha256(source)[:12]}.onnx"
    if target.exists():
        return target
    try:
        import onnx
    except ImportError as exc:
        raise ModelError("a dynamic batch axis needs the `onnx` package (pip install onnx)") from exc
    from onnx import numpy_helper

    proto = onnx.load(str(source))
    graph = proto.graph
    for value in [*graph.input, *graph.output]:
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    # Exports traced at batch 1 bake it into Reshape targets ([1, 85, -1] in YOLOX's head). With N frames
    # that Reshape would silently mix the frames' channels; 0 means "copy this dim from the input".
    shapes = {t.name: t for t in graph.initializer}
    shapes.update({n.output[0]: n.attribute[0].t for n in graph.node if n.op_type == "Constant" and n.attribute})
    for node in graph.node:
        if node.op_type == "Reshape" and node.input[1] in shapes:
            tensor = shapes[node.input[1]]
            dims = numpy_helper.to_array(tensor).copy()
            if dims.ndim == 1 and len(dims) > 1 and dims[0] == 1:
                dims[0] = 0
                tensor.CopyFrom(numpy_helper.from_array(dims, tensor.name))
    del graph.value_info[:]  # inferred shapes with the old batch of 1; onnxruntime infers them again
    folder.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    onnx.save(proto, str(tmp))
    os.replace(tmp, target)
    return target


@dataclass(frozen=True)
class DetectorConfig:
    model_path: str
    model_format: str = "yolox"
    providers: tuple[str, ...] = ()  # empty: CUDA where available, else CPU
    labels_path: str | None = None
    score_threshold: float = 0.3
    iou_threshold: float = 0.45
    batch_size: int = 8
    intra_op_threads: int = 0  # 0: onnxruntime's default (all cores)
    # onnxruntime's pool threads spin between runs by default: on a few cores shared with the decoder and
    # the encoder of other workers that spinning is stolen CPU (docs/performance.md, "spinning").
    allow_spinning: bool = True
    device_id: int = 0
    # "auto": on CUDA, run a copy of a fixed batch-1 model with a dynamic batch axis (made with the
    # `onnx` package, cached next to the model or in dynamic_batch_dir); "on"/"off" force it everywhere.
    dynamic_batch: str = "auto"
    dynamic_batch_dir: str | None = None
    # "auto": I/O binding on CUDA only (the input copied to the device once per batch, the output allocated
    # there); "on" binds on the CPU too (the same path, device "cpu": how it is tested without a GPU); "off".
    io_binding: str = "auto"


class Detector:
    """Loaded once per worker process; ``detect`` takes a batch of resized frames."""

    def __init__(self, config: DetectorConfig) -> None:
        import onnxruntime as ort  # imported here so stage modules without inference stay light

        if config.model_format not in MODEL_FORMATS:
            raise ModelError(f"unknown model format '{config.model_format}' (one of {', '.join(MODEL_FORMATS)})")
        if not os.path.isfile(config.model_path):
            raise ModelError(f"model file not found: {config.model_path}")
        for name in ("dynamic_batch", "io_binding"):
            if getattr(config, name) not in ("auto", "on", "off"):
                raise ModelError(f"{name} must be auto, on or off, not '{getattr(config, name)}'")
        self.config = config
        # The facts name the model the user gave, even where a dynamic-batch copy of it runs.
        self.sha256 = file_sha256(config.model_path)
        self.name = Path(config.model_path).stem
        options = ort.SessionOptions()
        if config.intra_op_threads:
            options.intra_op_num_threads = config.intra_op_threads
        if not config.allow_spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        available = ort.get_available_providers()
        wanted = list(config.providers) or ["CUDAExecutionProvider", "CPUExecutionProvider"]
        providers = [p for p in wanted if p in available] or ["CPUExecutionProvider"]
        provider_options = [{"device_id": config.device_id} if p == "CUDAExecutionProvider" else {} for p in providers]
        self.on_cuda = providers[0] == "CUDAExecutionProvider"
        model_path = config.model_path
        if config.dynamic_batch == "on" or (config.dynamic_batch == "auto" and self.on_cuda):
            model_path = str(dynamic_batch_model(config.model_path, config.dynamic_batch_dir))
        self.session = ort.InferenceSession(model_path, options, providers=providers,
                                            provider_options=provider_options)
        self.providers = self.session.get_providers()
        self.on_cuda = self.providers[0] == "CUDAExecutionProvider"
        # Where bound inputs and outputs live; None: plain run() with host arrays.
        self.bound_device: str | None = None
        if config.io_binding == "on":
            self.bound_device = "cuda" if self.on_cuda else "cpu"
        elif config.io_binding == "auto" and self.on_cuda:
            self.bound_device = "cuda"
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        batch_dim, _, input_h, input_w = model_input.shape
        if not isinstance(input_h, int) or not isinstance(input_w, int):
            raise ModelError("the model's input height and width must be fixed")
        self.input_size = (input_h, input_w)
        self.batch_size = max(1, config.batch_size) if not isinstance(batch_dim, int) else batch_dim
        self.output_name = self.session.get_outputs()[0].name
        out_shape = self.session.get_outputs()[0].shape
        classes_dim = out_shape[1] if config.model_format == "yolov8" else out_shape[-1]
        num_classes = classes_dim - (4 if config.model_format == "yolov8" else 5) if isinstance(classes_dim, int) else 0
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.class_names = load_class_names(metadata, config.labels_path, num_classes)
        if config.model_format == "yolox":
            self._grids, self._strides = _yolox_grids(input_h, input_w)

    @property
    def facts(self) -> dict:
        return {
            "name": self.name,
            "sha256": self.sha256,
            "format": self.config.model_format,
            "input_size": list(self.input_size),
            "batch_size": self.batch_size,
            "providers": self.providers,
            "class_names": self.class_names,
        }

    @property
    def parameters(self) -> dict:
        """The detection parameters that decide the results (recorded with them, for reproducing them)."""
        return {
            "score_threshold": self.config.score_threshold,
            "iou_threshold": self.config.iou_threshold,
            "batch_size": self.batch_size,
            "model_format": self.config.model_format,
        }

    def _blob(self, images: list[np.ndarray]) -> np.ndarray:
        input_h, input_w = self.input_size
        blob = np.full((len(images), input_h, input_w, 3), PAD_VALUE, np.uint8)
        for i, image in enumerate(images):
            blob[i, : image.shape[0], : image.shape[1]] = image
        if self.config.model_format == "yolox":
            return np.ascontiguousarray(blob.transpose(0, 3, 1, 2), dtype=np.float32)
        rgb = blob[..., ::-1].transpose(0, 3, 1, 2)
        return np.ascontiguousarray(rgb, dtype=np.float32) * np.float32(1 / 255)

    def _decode(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.config.model_format == "yolox":
            return decode_yolox(raw, self._grids, self._strides)
        if self.config.model_format == "yolov5":
            return decode_yolov5(raw)
        return decode_yolov8(raw)

    def _run(self, blob: np.ndarray) -> np.ndarray:
        if self.bound_device is None:
            return self.session.run(None, {self.input_name: blob})[0]
        # Bound: the input copied once into a buffer on the device and the output allocated there by
        # onnxruntime: on the GPU one host-to-device copy per batch and one copy back, none hidden in run().
        import onnxruntime as ort

        device_id = self.config.device_id if self.bound_device == "cuda" else 0
        binding = self.session.io_binding()
        device_input = ort.OrtValue.ortvalue_from_numpy(blob, self.bound_device, device_id)
        binding.bind_ortvalue_input(self.input_name, device_input)
        binding.bind_output(self.output_name, self.bound_device, device_id)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def detect(self, images: list[np.ndarray], scale: float) -> list[np.ndarray]:
        """Resized frames (the letterbox content, top-left) -> per frame [K, 6] boxes in original pixels."""
        results: list[np.ndarray] = []
        for start in range(0, len(images), self.batch_size):
            batch = images[start : start + self.batch_size]
            outputs = self._run(self._blob(batch))
            for raw in outputs:
                boxes, scores = self._decode(raw)
                results.append(
                    select_boxes(boxes, scores, self.config.score_threshold, self.config.iou_threshold, scale)
                )
        return results
