import math

from django.contrib import admin, messages
from django.utils.html import format_html

from .lifecycle.services import ActionNotAllowed, TooManyActiveJobs, cancel_job, retry_job
from .models import Job, JobEvent, Segment
from .web.api import SubmitThrottle  # a retry is a submission: the same budget as the API and the form


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class SegmentInline(ReadOnlyInline):
    model = Segment
    fields = ["index", "first_frame", "frame_count", "start_s", "status", "iteration", "attempt", "lease_owner",
              "heartbeat_at", "preprocess_done", "inference_done", "postprocess_done", "work_bytes"]
    readonly_fields = fields


class JobEventInline(ReadOnlyInline):
    model = JobEvent
    fields = ["at", "segment", "from_status", "to_status", "iteration", "message"]
    readonly_fields = fields


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["id", "user", "original_name", "status", "progress_bar", "iteration", "started_at",
                    "ended_at", "frame_count"]
    list_filter = ["status", "iteration", "user", "created_at"]
    search_fields = ["id", "original_name", "user__username", "error", "client_token"]
    date_hierarchy = "created_at"
    inlines = [SegmentInline, JobEventInline]
    actions = ["retry_selected", "cancel_selected"]
    readonly_fields = [f.name for f in Job._meta.fields]

    def has_add_permission(self, request):
        return False  # jobs come from uploads

    @admin.display(description="progress")
    def progress_bar(self, job: Job):
        pct = round(job.progress * 100)
        return format_html('<progress value="{}" max="100" title="{}%"></progress> {}%', pct, pct, pct)

    def _apply(self, request, queryset, action, verb):
        done, refused = 0, []
        throttle = SubmitThrottle()
        for job in queryset:
            if action is retry_job and not throttle.allow_request(request, None):
                refused.append(f"#{job.pk} and the rest: too many submissions; try again in "
                               f"{math.ceil(throttle.wait() or 1)} s")
                break
            try:
                action(job, by=request.user.username) if action is retry_job else action(job)
                done += 1
            except (ActionNotAllowed, TooManyActiveJobs) as exc:
                refused.append(f"#{job.pk}: {exc}")
        if done:
            self.message_user(request, f"{verb} {done} job(s).", messages.SUCCESS)
        if refused:
            self.message_user(request, "Not changed: " + "; ".join(refused), messages.WARNING)

    @admin.action(description="Retry selected jobs (planned again from the start)", permissions=["change"])
    def retry_selected(self, request, queryset):
        self._apply(request, queryset, retry_job, "Retried")

    @admin.action(description="Cancel selected jobs", permissions=["change"])
    def cancel_selected(self, request, queryset):
        self._apply(request, queryset, cancel_job, "Cancelled")
