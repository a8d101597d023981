"""Settings helpers that fail loudly on bad values and read ``NAME_FILE`` secrets."""
from __future__ import annotations

import os

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str | None = None) -> str | None:
    """``NAME`` from the environment, else the contents of the file ``NAME_FILE`` names (stripped of surrounding
    whitespace: a Secret mounted as files, a Docker secret), else ``default``. Both set is refused: which one
    wins would be a guess."""
    file_name = os.environ.get(f"{name}_FILE")
    if file_name is None:
        return os.environ.get(name, default)
    if name in os.environ:
        raise ImproperlyConfigured(f"both {name} and {name}_FILE are set: set one of them")
    try:
        with open(file_name, encoding="utf-8") as fh:
            return fh.read().strip()
    except OSError as exc:
        raise ImproperlyConfigured(f"{name}_FILE={file_name} cannot be read: {exc}") from exc


def _env_number(name: str, default, cast, kind: str):
    raw = env_str(name)
    if raw is None or raw == "":
        return default
    try:
        return cast(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be {kind}, got {raw!r}") from exc


def env_int(name: str, default: int) -> int:
    return _env_number(name, default, int, "an integer")


def env_float(name: str, default: float) -> float:
    return _env_number(name, default, float, "a number")


def env_bool(name: str, default: bool) -> bool:
    raw = env_str(name)
    if raw is None:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, got {raw!r}")


def env_list(name: str, default: str = "") -> list[str]:
    raw = env_str(name, default) or ""
    return [item.strip() for item in raw.split(",") if item.strip()]


# Every value of k8s/extras/secret.example.yaml carries this placeholder (tests/test_k8s_manifests.py checks
# it does). That file is public: settings.py refuses such a DJANGO_SECRET_KEY in production and ensure_admin
# such a GEDGE_ADMIN_PASSWORD.
EXAMPLE_MARKER = "example-only-change-me"


def is_example_value(value: str | None) -> bool:
    return bool(value) and EXAMPLE_MARKER in value
