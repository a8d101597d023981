from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from jobs.web import views
from jobs.web.api import JobViewSet
from jobs.web.tus import AuthCheckView, UploadDetailView, UploadsView

router = DefaultRouter()
router.register("jobs", JobViewSet, basename="job")

urlpatterns = [
    path("", views.console, name="console"),
    path("upload/", views.upload, name="upload"),
    path("jobs/<int:pk>/", views.job_page, name="job-page"),
    path("jobs/<int:pk>/chart.json", views.job_chart, name="job-chart"),
    path("jobs/<int:pk>/detections.csv", views.job_detections_csv, name="job-detections-csv"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/auth/check/", AuthCheckView.as_view(), name="auth-check"),
    path("api/uploads/", UploadsView.as_view(), name="uploads"),
    path("api/uploads/<uuid:pk>/", UploadDetailView.as_view(), name="upload-detail"),
    path("api/", include(router.urls)),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", views.metrics, name="metrics"),
]
