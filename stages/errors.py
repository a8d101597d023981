class StageError(Exception):
    """Base class of errors raised by stage code."""


class UnprocessableInput(StageError):
    """The input can never work (not a video, no video stream, zero frames): fail at once, no retries."""


class ModelError(StageError):
    """The model file is missing or cannot be used."""
