"""Pages: the console (upload + live job list) and a job page. Views call services."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
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
    """The web's readiness: database and Redis. Worker Pods use `manage.py worker_ready` (model loaded too)."""
    from .health import dependency_checks

    checks = dependency_checks()
    ok = all(v == "ok" for v in checks.values())
    return JsonResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503)


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text: this process's metrics plus jobs by status and queue depths (see jobs/metrics.py)."""
    from prometheus_client import CONTENT_TYPE_LATEST

    from .metrics import exposition

    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)
