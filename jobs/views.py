"""Pages: the console (upload + live job list) and a job page. Views call services."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from stages.errors import UnprocessableInput

from .api import visible_jobs
from .models import PIPELINE
from .services import submit_job
from .uploads import UploadTooLarge


@login_required
def console(request: HttpRequest) -> HttpResponse:
    jobs = visible_jobs(request.user).order_by("-id")[:100]
    return render(request, "jobs/console.html", {"jobs": jobs, "pipeline": PIPELINE})


@login_required
@require_POST
def upload(request: HttpRequest) -> HttpResponse:
    files = request.FILES.getlist("video")
    if not files:
        messages.error(request, "Choose a video file first.")
    for uploaded in files:
        try:
            job, _ = submit_job(request.user, uploaded, enhance=bool(request.POST.get("enhance")))
            messages.success(request, f"{job.original_name}: job #{job.pk} queued.")
        except UnprocessableInput as exc:
            messages.error(request, f"{uploaded.name}: not a usable video ({exc}).")
        except UploadTooLarge:
            messages.error(request, f"{uploaded.name}: the file is too large.")
    return redirect("console")


@login_required
def job_page(request: HttpRequest, pk: int) -> HttpResponse:
    job = visible_jobs(request.user).filter(pk=pk).first()
    if job is None:
        raise Http404("no such job")
    return render(request, "jobs/job.html", {"job": job, "events": job.events.all(), "pipeline": PIPELINE})


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - report, don't crash the probe
        checks["database"] = f"error: {exc.__class__.__name__}"
    from django.conf import settings

    if settings.REDIS_URL:
        try:
            import redis

            redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2).ping()
            checks["redis"] = "ok"
        except Exception as exc:  # noqa: BLE001
            checks["redis"] = f"error: {exc.__class__.__name__}"
    ok = all(v == "ok" for v in checks.values())
    return JsonResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503)
