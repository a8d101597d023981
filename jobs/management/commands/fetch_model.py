"""Put the YOLOX-Nano model where G-Edge looks for it (GEDGE_MODEL_PATH, default models/yolox_nano.onnx).

Takes a local copy (--from PATH) or downloads the official release asset; either way the size and sha256
are checked, and a mismatch stops with both hashes and how to accept the file anyway.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from stages.detector import file_sha256

URL = "https://github.com/Megvii-BaseDetection/YOLOX/releases/download/0.1.1rc0/yolox_nano.onnx"
SIZE = 3_659_407
SHA256 = "4903c9058f6e2553834e9905be1ae5d67e262cb6321964dbc57a49edc6fa10da"


class Command(BaseCommand):
    help = "Check for, copy or download the detection model."

    def add_arguments(self, parser):
        parser.add_argument("--from", dest="source", help="copy this local file instead of downloading")
        parser.add_argument("--download", action="store_true", help="download without asking")
        parser.add_argument("--accept-sha256", default="", help="accept a file with this sha256")
        parser.add_argument("--check", action="store_true", help="only report whether the model is present")

    def handle(self, source, download, accept_sha256, check, **options):
        target = Path(settings.GEDGE_MODEL_PATH)
        if target.is_file():
            self.stdout.write(f"model: {target}\n")
            return
        if check:
            raise CommandError(self._missing_help(target))
        if source:
            if not Path(source).is_file():
                raise CommandError(f"--from {source}: no such file")
            self._install(Path(source), target, accept_sha256, keep_source=True)
            return
        if not download:
            if not os.isatty(0):
                raise CommandError(self._missing_help(target))
            answer = input(f"No model at {target}. Download YOLOX-Nano ({SIZE:,} bytes) from\n{URL}\n[Y/n] ")
            if answer.strip().lower() not in ("", "y", "yes"):
                raise CommandError(self._missing_help(target))
        fd, tmp = tempfile.mkstemp(suffix=".onnx")
        os.close(fd)
        try:
            self.stdout.write(f"downloading {URL}\n")
            with urllib.request.urlopen(URL, timeout=60) as response, open(tmp, "wb") as fh:  # noqa: S310
                shutil.copyfileobj(response, fh)
        except OSError as exc:
            os.unlink(tmp)
            raise CommandError(f"download failed ({exc}).\n" + self._missing_help(target)) from exc
        self._install(Path(tmp), target, accept_sha256, keep_source=False)

    def _install(self, source: Path, target: Path, accept_sha256: str, keep_source: bool) -> None:
        size, digest = source.stat().st_size, file_sha256(source)
        if digest != SHA256 and digest != accept_sha256:
            if not keep_source:
                source.unlink()
            raise CommandError(
                f"sha256 mismatch: expected {SHA256} ({SIZE} bytes), got {digest} ({size} bytes).\n"
                f"If you trust this file, run again with --accept-sha256 {digest}"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copyfile if keep_source else shutil.move)(source, target)
        self.stdout.write(f"model installed: {target} (sha256 {digest})\n")

    @staticmethod
    def _missing_help(target: Path) -> str:
        return (
            f"No detection model at {target}. Do one of:\n"
            f"  - set GEDGE_MODEL_PATH=/path/to/yolox_nano.onnx\n"
            f"  - python manage.py fetch_model --from /path/to/yolox_nano.onnx\n"
            f"  - python manage.py fetch_model --download   (needs internet: {URL})"
        )
