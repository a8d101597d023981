"""G-Edge settings. Everything an operator sets comes from the environment (see README, Configuration).

Without DATABASE_URL and REDIS_URL this is the embedded default: SQLite, Dramatiq's in-process StubBroker
(worker threads started by `manage.py run_embedded`) and the in-memory channel layer.
"""
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from .envconf import env_bool, env_float, env_int, env_list, env_str, is_example_value

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("GEDGE_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DJANGO_DEBUG", False)
# Redis set means production: Dramatiq's Redis broker and the Redis channel layer (see below).
REDIS_URL = env_str("REDIS_URL") or ""
EMBEDDED = not REDIS_URL
SECRET_KEY = env_str("DJANGO_SECRET_KEY") or ""
_MAKE_A_KEY = ("set a random one of 50+ characters, e.g. "
               "python3 -c 'import secrets; print(secrets.token_urlsafe(50))' (docs/deploy.md, \"Secrets\")")
if not SECRET_KEY:
    if not EMBEDDED:
        raise ImproperlyConfigured(f"DJANGO_SECRET_KEY must be set when REDIS_URL is (production): {_MAKE_A_KEY}")
    SECRET_KEY = "gedge-embedded-not-secret"  # noqa: S105 - embedded default only, never production
elif not EMBEDDED and is_example_value(SECRET_KEY):
    raise ImproperlyConfigured("DJANGO_SECRET_KEY is the example value of k8s/extras/secret.example.yaml, "
                               f"which anyone can read: {_MAKE_A_KEY}")
elif not EMBEDDED and len(SECRET_KEY) < 50:
    raise ImproperlyConfigured(f"DJANGO_SECRET_KEY has {len(SECRET_KEY)} characters, production needs at least "
                               f"50 characters: {_MAKE_A_KEY}")
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")

# HTTPS. In production TLS ends at the ingress and the Pods speak HTTP behind it: the ingress controller sets
# X-Forwarded-Proto (Daphne runs with --proxy-headers, and the NetworkPolicies let only the ingress controller
# reach the web). Plain HTTP from outside is redirected, except the paths the kubelet's probes and Prometheus
# fetch over plain HTTP inside the cluster. Each is a switch for production-like runs over plain HTTP (the test
# suite, the bench): GEDGE_SECURE_SSL_REDIRECT=false GEDGE_SECURE_COOKIES=false. Embedded: all off.
_PRODUCTION = not EMBEDDED
SECURE_SSL_REDIRECT = env_bool("GEDGE_SECURE_SSL_REDIRECT", _PRODUCTION)
# In-cluster plain HTTP: the kubelet's probes, Prometheus' scrapes, the ingress's auth check.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$", r"^api/auth/check/$"]
SECURE_PROXY_SSL_HEADER = (("HTTP_X_FORWARDED_PROTO", "https") if env_bool("GEDGE_SECURE_PROXY_SSL_HEADER", _PRODUCTION)
                           else None)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("GEDGE_SECURE_COOKIES", _PRODUCTION)
SECURE_HSTS_SECONDS = env_int("GEDGE_SECURE_HSTS_SECONDS", 365 * 24 * 3600 if _PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("GEDGE_SECURE_HSTS_INCLUDE_SUBDOMAINS", _PRODUCTION)
SECURE_HSTS_PRELOAD = env_bool("GEDGE_SECURE_HSTS_PRELOAD", False)
SECURE_CONTENT_TYPE_NOSNIFF = env_bool("GEDGE_SECURE_CONTENT_TYPE_NOSNIFF", True)
# security.W021 (SECURE_HSTS_PRELOAD not set) is the one deployment check that does not apply by default: the
# preload list takes registrable domains only (a G-Edge host is usually a subdomain, where the directive does
# nothing), and on a domain that does qualify the directive lets anyone submit it, forcing HTTPS on every
# subdomain in browsers for months. That is the domain owner's decision: GEDGE_SECURE_HSTS_PRELOAD=true.
SILENCED_SYSTEM_CHECKS = ["security.W021"]

INSTALLED_APPS = [
    "daphne",
    "jobs",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "django_dramatiq",
    "axes",  # login throttling (AXES_* below)
]
# The fault run (faultlab/: `manage.py fault_test`) kills workers and restarts Redis and PostgreSQL. It is a
# test tool: not in the package or the images, and installed only where this is set (`make test` does).
GEDGE_FAULT_LAB = env_bool("GEDGE_FAULT_LAB", False)
if GEDGE_FAULT_LAB:
    INSTALLED_APPS.append("faultlab")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",  # Daphne serves the pages' CSS/JS itself: no extra server
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "jobs.web.body_limit.BodyLimitMiddleware",  # small bodies only, but a signed-in user's classic upload
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "jobs.web.api_errors.ApiErrorMiddleware",  # Django's own 404/500 pages become the API's JSON shape under /api/
    "axes.middleware.AxesMiddleware",  # last: answers a locked-out login with the lockout page (429)
]

# Login throttling (django-axes): after GEDGE_LOGIN_FAILURE_LIMIT failed logins for one user name from one
# address, that pair is refused (429, templates/registration/locked_out.html) for GEDGE_LOGIN_COOLOFF_S, on
# every login path (/login/, /admin/login/: both authenticate through the backends below). Attempts are rows
# in the database (every web replica sees them); a success resets the count. The address is the peer's as
# Daphne gives it (--proxy-headers: the ingress's X-Forwarded-For). Unlock early: manage.py axes_reset.
AUTHENTICATION_BACKENDS = ["gedge_site.login_throttle.LoginThrottleBackend",
                           "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env_int("GEDGE_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(seconds=env_int("GEDGE_LOGIN_COOLOFF_S", 900))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False

ROOT_URLCONF = "gedge_site.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
WSGI_APPLICATION = "gedge_site.wsgi.application"
ASGI_APPLICATION = "gedge_site.asgi.application"

DATABASE_URL = env_str("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'db.sqlite3'}"
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
                                              conn_health_checks=True)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web and worker threads share one file: WAL lets readers run beside the writer, IMMEDIATE
    # transactions take the write lock up front instead of failing half way with "database is locked".
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
elif env_bool("GEDGE_DB_POOL", True):
    # Under ASGI every request runs in a thread of its own, so persistent per-thread connections pile up
    # (one Daphne held 52 under load). A psycopg pool shares a few connections instead; Django requires
    # CONN_MAX_AGE=0 with it.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env_int("GEDGE_DB_POOL_MIN", 1),
        "max_size": env_int("GEDGE_DB_POOL_MAX", 10),
        "timeout": env_float("GEDGE_DB_POOL_TIMEOUT_S", 10),
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TZ", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
# Serve straight from static/ (committed, vendored libraries included) so neither `make run` nor the tests
# need a collectstatic step; files collected into STATIC_ROOT are served too (WhiteNoise warns if it is missing).
WHITENOISE_USE_FINDERS = True
try:
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)
except OSError:  # a read-only image: collectstatic ran at build time or finders serve everything
    pass
# Uploads, intermediate artifacts and results. Never served as static files: results go through views that
# check ownership.
MEDIA_ROOT = Path(env_str("GEDGE_MEDIA_ROOT", str(VAR_DIR / "media")))
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "console"
LOGOUT_REDIRECT_URL = "login"

_DRAMATIQ_MIDDLEWARE = [
    "dramatiq.middleware.AgeLimit",
    "dramatiq.middleware.TimeLimit",
    "dramatiq.middleware.Callbacks",
    "dramatiq.middleware.Retries",
    "dramatiq.middleware.ShutdownNotifications",
    "jobs.workers.shutdown.GracefulShutdown",  # stages hand their jobs back on SIGTERM (jobs/lifecycle/leases.py)
    "django_dramatiq.middleware.DbConnectionsMiddleware",
]
if REDIS_URL:
    DRAMATIQ_BROKER = {
        "BROKER": "dramatiq.brokers.redis.RedisBroker",
        "OPTIONS": {"url": REDIS_URL, "namespace": env_str("GEDGE_DRAMATIQ_NAMESPACE", "gedge")},
        "MIDDLEWARE": [
            *_DRAMATIQ_MIDDLEWARE,
            "django_dramatiq.middleware.AdminMiddleware",
            # Worker Pods: Dramatiq's metrics (and ours, see jobs/ops/metrics.py) on :9191, and the readiness
            # marker that `manage.py worker_ready` checks (jobs/ops/health.py). Both act only in worker processes.
            "dramatiq.middleware.prometheus.Prometheus",
            "jobs.ops.health.WorkerHealth",
        ],
    }
    # "pubsub": Redis PUBLISH/SUBSCRIBE, one round trip per group send; "core": lists in Redis, four round trips
    # per group send and a blocking pop on the receiving side. Pushes are hints (jobs/lifecycle/broadcast.py).
    GEDGE_CHANNEL_LAYER = env_str("GEDGE_CHANNEL_LAYER", "pubsub")
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": {"core": "channels_redis.core.RedisChannelLayer",
                        "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer"}[GEDGE_CHANNEL_LAYER],
            # redis-py 8 reads with a 5 s socket timeout by default, the same as channels_redis's blocking
            # BZPOPMIN: every idle WebSocket consumer died with TimeoutError after 5 s (channels_redis#422).
            # A longer bound keeps the blocking read alive and still notices a dead Redis.
            "CONFIG": {"hosts": [{"address": env_str("CHANNELS_REDIS_URL", REDIS_URL), "socket_timeout": 30}],
                       "prefix": env_str("GEDGE_CHANNELS_PREFIX", "gedge")},
        }
    }
    # Shared by every web process, so a per-user submit rate limit holds across replicas.
    CACHES = {
        "default": {
            # django-redis: one connection pool per process (Django's own RedisCache builds a client and pool
            # per async context under ASGI and never closes them: docs/upstream.md).
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": env_str("CACHE_REDIS_URL", REDIS_URL),
            "KEY_PREFIX": env_str("GEDGE_CACHE_PREFIX", "gedge"),
        }
    }
else:
    DRAMATIQ_BROKER = {
        "BROKER": "dramatiq.brokers.stub.StubBroker",
        "OPTIONS": {},
        "MIDDLEWARE": _DRAMATIQ_MIDDLEWARE,
    }
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
DRAMATIQ_AUTODISCOVER_MODULES = ["actors"]
DRAMATIQ_TASKS_DATABASE = "default"

REST_FRAMEWORK = {
    # Token first: its WWW-Authenticate header lets an anonymous request answer 401 (not 403).
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "jobs.web.api_errors.exception_handler",
    "DEFAULT_THROTTLE_RATES": {"submit": env_str("GEDGE_SUBMIT_RATE", "30/min")},
}
SPECTACULAR_SETTINGS = {
    "TITLE": "G-Edge API",
    "DESCRIPTION": "Video object detection: upload a video, follow the job, download the results.",
    "VERSION": "1.0.0",
    "SWAGGER_UI_DIST": "SIDECAR",  # served from our static files: no CDN at run time
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Job.status and JobEvent.to_status share one choice set: one component instead of two names for it.
    "ENUM_NAME_OVERRIDES": {"StatusEnum": "jobs.models.Status"},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "gedge_site.logjson.JsonFormatter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
    "root": {"handlers": ["console"], "level": env_str("GEDGE_LOG_LEVEL", "INFO")},
    # axes: lockouts are warnings; its INFO lines (every login's "Deleted 0 failed login attempts") are noise.
    "loggers": {"django.channels.server": {"level": "WARNING"}, "axes": {"level": "WARNING"}},
}

# --- G-Edge ---
GEDGE_MODEL_PATH = env_str("GEDGE_MODEL_PATH") or str(BASE_DIR / "models" / "yolox_nano.onnx")
GEDGE_MODEL_FORMAT = env_str("GEDGE_MODEL_FORMAT", "yolox")
GEDGE_LABELS_PATH = env_str("GEDGE_LABELS_PATH") or None
GEDGE_PROVIDERS = env_list("GEDGE_PROVIDERS", "")  # empty: CUDA where available, else CPU
GEDGE_CUDA_DEVICE_ID = env_int("GEDGE_CUDA_DEVICE_ID", 0)
GEDGE_INTRA_OP_THREADS = env_int("GEDGE_INTRA_OP_THREADS", 0)
# onnxruntime's idle threads spin by default; on cores shared with other stages that is stolen CPU
# (docs/performance.md, "spinning").
GEDGE_ORT_SPINNING = env_bool("GEDGE_ORT_SPINNING", False)
GEDGE_BATCH_SIZE = env_int("GEDGE_BATCH_SIZE", 8)
# auto: a dynamic-batch copy of a batch-1 model on CUDA only (batching does not pay on CPU); on / off.
GEDGE_DYNAMIC_BATCH = env_str("GEDGE_DYNAMIC_BATCH", "auto")
GEDGE_DYNAMIC_BATCH_DIR = env_str("GEDGE_DYNAMIC_BATCH_DIR", str(VAR_DIR / "models"))
# auto: I/O binding on CUDA only (one copy to the device and one back per batch); on: also on the CPU; off.
GEDGE_IO_BINDING = env_str("GEDGE_IO_BINDING", "auto")
GEDGE_SCORE_THRESHOLD = env_float("GEDGE_SCORE_THRESHOLD", 0.3)
GEDGE_NMS_IOU = env_float("GEDGE_NMS_IOU", 0.45)
# superfast: ~40% less CPU than veryfast at a higher PSNR, ~15% larger files (docs/performance.md).
GEDGE_X264_PRESET = env_str("GEDGE_X264_PRESET", "superfast")
GEDGE_X264_CRF = env_int("GEDGE_X264_CRF", 23)
# Tracking (stages/tracking.py, docs/tracking.md): ByteTrack's thresholds; recorded in each job's params.
GEDGE_TRACK_HIGH_SCORE = env_float("GEDGE_TRACK_HIGH_SCORE", 0.5)
GEDGE_TRACK_MATCH_COST = env_float("GEDGE_TRACK_MATCH_COST", 0.8)
GEDGE_TRACK_LOW_MATCH_IOU = env_float("GEDGE_TRACK_LOW_MATCH_IOU", 0.5)
GEDGE_TRACK_NEW_SCORE = env_float("GEDGE_TRACK_NEW_SCORE", 0.6)
GEDGE_TRACK_LOST_S = env_float("GEDGE_TRACK_LOST_S", 1.0)
GEDGE_TRACK_TRAIL = env_int("GEDGE_TRACK_TRAIL", 24)
GEDGE_MAX_ITERATIONS = env_int("GEDGE_MAX_ITERATIONS", 3)  # restarts of one segment before its job fails
# Segments (docs/segments.md): a job's video is cut at keyframes into segments of about GEDGE_SEGMENT_S seconds,
# each its own message through the three stages. At most GEDGE_SEGMENTS_IN_FLIGHT segments of one job are in
# flight (dispatched, not yet postprocessed) at a time, fewer where their frames would not fit in
# GEDGE_WORK_BUDGET_BYTES of shared storage; a job whose one segment does not fit fails at once.
GEDGE_SEGMENT_S = env_float("GEDGE_SEGMENT_S", 5.0)
GEDGE_SEGMENTS_IN_FLIGHT = env_int("GEDGE_SEGMENTS_IN_FLIGHT", 6)
# A running stage pauses (up to this long at a time) while a job with fewer segments left runs on the same
# host, so a short job is not slowed by a long one's share of the cores (docs/segments.md); 0 turns it off.
GEDGE_GIVE_WAY_MAX_S = env_float("GEDGE_GIVE_WAY_MAX_S", 30.0)
# The queues this worker process takes: set by `manage.py rundramatiq` from its --queues (empty: all, as the
# embedded worker threads of `make run`); fair sharing gives way to a shorter job waiting on any of them.
GEDGE_WORKER_QUEUES = env_list("GEDGE_WORKER_QUEUES", "")
GEDGE_WORK_BUDGET_BYTES = env_int("GEDGE_WORK_BUDGET_BYTES", 1_000_000_000)
GEDGE_RETRY_BACKOFF_MS = env_int("GEDGE_RETRY_BACKOFF_MS", 2000)
GEDGE_STAGE_TIME_LIMIT_S = env_int("GEDGE_STAGE_TIME_LIMIT_S", 3600)
# Leases and the reaper (jobs/lifecycle/leases.py and reaper.py): a running stage renews its lease every TTL/3.
GEDGE_LEASE_TTL_S = env_float("GEDGE_LEASE_TTL_S", 20)
GEDGE_REDISPATCH_AFTER_S = env_float("GEDGE_REDISPATCH_AFTER_S", 30)
GEDGE_REAPER_INTERVAL_S = env_float("GEDGE_REAPER_INTERVAL_S", 5)
# Fault tests only (jobs/workers/faults.py): jobs whose file name contains the marker crash the worker at that stage.
GEDGE_FAULT_CRASH_MARKER = env_str("GEDGE_FAULT_CRASH_MARKER", "")
GEDGE_FAULT_CRASH_STAGE = env_str("GEDGE_FAULT_CRASH_STAGE", "inference")
GEDGE_FAULT_CRASH_LOG = env_str("GEDGE_FAULT_CRASH_LOG", "")
GEDGE_FAULT_SLOW_STAGE = env_str("GEDGE_FAULT_SLOW_STAGE", "")
GEDGE_MAX_UPLOAD_BYTES = env_int("GEDGE_MAX_UPLOAD_BYTES", 2 * 1024**3)
GEDGE_MAX_FRAMES = env_int("GEDGE_MAX_FRAMES", 200_000)
GEDGE_MAX_WIDTH = env_int("GEDGE_MAX_WIDTH", 7680)
GEDGE_MAX_HEIGHT = env_int("GEDGE_MAX_HEIGHT", 4320)
GEDGE_MAX_DURATION_S = env_float("GEDGE_MAX_DURATION_S", 4 * 3600)
GEDGE_MAX_ACTIVE_JOBS_PER_USER = env_int("GEDGE_MAX_ACTIVE_JOBS_PER_USER", 20)
# Per-user storage (uploads + results of jobs not yet expired; 0: none) and retention (0: keep forever): past
# GEDGE_RETENTION_DAYS after a job ended its upload and results are deleted and the row is marked expired.
GEDGE_USER_QUOTA_BYTES = env_int("GEDGE_USER_QUOTA_BYTES", 20 * 1024**3)
GEDGE_RETENTION_DAYS = env_float("GEDGE_RETENTION_DAYS", 30)
GEDGE_MAX_FILES_PER_UPLOAD = env_int("GEDGE_MAX_FILES_PER_UPLOAD", 10)  # the HTML form's files per POST
# Resumable uploads (tus): the largest chunk one request may carry, and how long an unfinished upload is kept.
GEDGE_MAX_CHUNK_BYTES = env_int("GEDGE_MAX_CHUNK_BYTES", 8 * 1024 * 1024)
# Any other request body (jobs/web/body_limit.py): a chunk and its framing fit.
GEDGE_MAX_BODY_BYTES = env_int("GEDGE_MAX_BODY_BYTES", GEDGE_MAX_CHUNK_BYTES + 1024 * 1024)
GEDGE_UPLOAD_EXPIRY_S = env_float("GEDGE_UPLOAD_EXPIRY_S", 24 * 3600)
GEDGE_PROGRESS_INTERVAL_S = env_float("GEDGE_PROGRESS_INTERVAL_S", 0.25)
GEDGE_ADMIN_USER = env_str("GEDGE_ADMIN_USER", "admin")
# Worker processes write a marker here once their model is loaded and touch it as a heartbeat; the worker
# Pods' probes (`manage.py worker_ready`) read it. One folder per Pod (an emptyDir).
GEDGE_WORKER_STATE_DIR = Path(env_str("GEDGE_WORKER_STATE_DIR", str(VAR_DIR / "worker")))
GEDGE_WORKER_HEARTBEAT_S = env_float("GEDGE_WORKER_HEARTBEAT_S", 10)
GEDGE_WEB_GC_THRESHOLD = [int(v) for v in env_list("GEDGE_WEB_GC_THRESHOLD", "10000,10,10")]
GEDGE_WORKER_NICE = env_int("GEDGE_WORKER_NICE", 10)
GEDGE_WORKER_SCHED_IDLE = env_bool("GEDGE_WORKER_SCHED_IDLE", True)
