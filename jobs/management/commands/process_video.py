"""Run the three stages in-process (no broker, no database rows) and print a one-line JSON summary last."""
import json
import sys

from django.core.management.base import BaseCommand, CommandError

from jobs.workers.detector import get_detector
from stages.errors import StageError
from stages.pipeline import process_video_file
from stages.postprocess import EncoderSettings


class Command(BaseCommand):
    help = "Detect objects in VIDEO; writes OUT/annotated.mp4 and OUT/detections.json."

    def add_arguments(self, parser):
        parser.add_argument("video")
        parser.add_argument("--out", required=True, help="output folder")
        parser.add_argument("--enhance", action="store_true", help="CLAHE contrast enhancement")
        parser.add_argument("--preset", default=None, help="libx264 preset (default: GEDGE_X264_PRESET)")

    def handle(self, video, out, enhance, preset, **options):
        from django.conf import settings

        try:
            detector = get_detector()
            encoder = EncoderSettings(preset=preset or settings.GEDGE_X264_PRESET, crf=settings.GEDGE_X264_CRF)
            summary = process_video_file(video, out, detector, enhance=enhance, encoder=encoder)
        except StageError as exc:
            raise CommandError(str(exc)) from exc
        sys.stdout.write(json.dumps(summary) + "\n")
