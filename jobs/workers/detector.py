"""The process-wide detector: loaded once per worker process, on first use."""
from __future__ import annotations

import threading
from functools import lru_cache

from django.conf import settings

from stages.detector import Detector, DetectorConfig

_lock = threading.Lock()
_detector: Detector | None = None


def detector_config() -> DetectorConfig:
    return DetectorConfig(
        model_path=settings.GEDGE_MODEL_PATH,
        model_format=settings.GEDGE_MODEL_FORMAT,
        providers=tuple(settings.GEDGE_PROVIDERS),
        labels_path=settings.GEDGE_LABELS_PATH,
        score_threshold=settings.GEDGE_SCORE_THRESHOLD,
        iou_threshold=settings.GEDGE_NMS_IOU,
        batch_size=settings.GEDGE_BATCH_SIZE,
        intra_op_threads=settings.GEDGE_INTRA_OP_THREADS,
        allow_spinning=settings.GEDGE_ORT_SPINNING,
        device_id=settings.GEDGE_CUDA_DEVICE_ID,
        dynamic_batch=settings.GEDGE_DYNAMIC_BATCH,
        dynamic_batch_dir=settings.GEDGE_DYNAMIC_BATCH_DIR,
        io_binding=settings.GEDGE_IO_BINDING,
    )


def get_detector() -> Detector:
    global _detector
    with _lock:
        if _detector is None:
            _detector = Detector(detector_config())
        return _detector


@lru_cache(maxsize=1)
def model_input_size() -> tuple[int, int]:
    """The model's input (h, w) for preprocessing, read without keeping a session in CPU workers."""
    import onnxruntime as ort

    session = ort.InferenceSession(settings.GEDGE_MODEL_PATH, providers=["CPUExecutionProvider"])
    _, _, height, width = session.get_inputs()[0].shape
    return int(height), int(width)
