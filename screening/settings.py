"""Settings for the XAS topology screening app.

One file, driven by the environment (see ``.env.example`` for every variable).
With no environment at all the app runs on a SQLite file with in-process tasks, so a
fresh machine needs no server; ``DATABASE_URL`` and ``CELERY_BROKER_URL`` switch it to
PostgreSQL and Redis.
"""

import os
from importlib.util import find_spec
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DJANGO_ENV = os.environ.get("DJANGO_ENV", "development")
PRODUCTION = DJANGO_ENV == "production"

# A development key is fine on a laptop; production refuses to start without a real one.
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if PRODUCTION:
        raise RuntimeError("SECRET_KEY must be set when DJANGO_ENV=production")
    SECRET_KEY = "dev-only-insecure-key-change-me-0123456789abcdefghijklmnopqrstuvwxyz"

DEBUG = env_bool("DEBUG", default=not PRODUCTION)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "" if PRODUCTION else "127.0.0.1,localhost,testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "materials",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "materials.middleware.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "screening.urls"
WSGI_APPLICATION = "screening.wsgi.application"

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
            ],
        },
    },
]

# SQLite by default; DATABASE_URL (postgres://...) for the real deployment and CI.
# CONN_HEALTH_CHECKS lets a persistent connection notice that PostgreSQL went away
# and reconnect on the next request instead of failing forever.
DATA_DIR = Path(os.environ.get("DATA_DIR", BASE_DIR / "var"))
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{DATA_DIR / 'db.sqlite3'}",
        conn_max_age=int(os.environ.get("CONN_MAX_AGE", "60")),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # WAL lets the web server read while a worker thread writes.
    DATABASES["default"].setdefault("OPTIONS", {})["init_command"] = "PRAGMA journal_mode=WAL;"
    DATABASES["default"]["OPTIONS"]["timeout"] = 30
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [
    BASE_DIR / "materials" / "static",
    # plotly.js served from the installed plotly package (the machine is offline: no CDN),
    # as {% static 'vendor/plotly.min.js' %}; nothing is copied into the repository.
    ("vendor", Path(find_spec("plotly").origin).parent / "package_data"),
]
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", DATA_DIR / "media"))
MEDIA_URL = "media/"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve static files from the finders in development and tests (no collectstatic).
WHITENOISE_USE_FINDERS = DEBUG or not PRODUCTION

# Uploads: refuse anything larger before it reaches a parser.
MAX_UPLOAD_BYTES = int(os.environ.get("MAX_UPLOAD_BYTES", str(50 * 1024 * 1024)))
DATA_UPLOAD_MAX_MEMORY_SIZE = int(os.environ.get("MAX_JSON_BYTES", str(2 * 1024 * 1024)))
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

# Screening: FEFF runs at once when a release is screened outside a Celery pool (the CLI or
# the demo without a broker); inside a worker they run one by one.
SCREEN_FEFF_PROCESSES = int(os.environ.get("SCREEN_FEFF_PROCESSES") or min(4, os.cpu_count() or 1))
# Where FEFF tasks make their scratch directories (default: <tmp>/screening-feff).
FEFF_SCRATCH_DIR = os.environ.get("FEFF_SCRATCH_DIR", "")
# Stage 1 parses a release in this many processes (outside Celery pools).
SCREEN_PARSE_PROCESSES = int(os.environ.get("SCREEN_PARSE_PROCESSES") or os.cpu_count() or 1)

# --- Celery -----------------------------------------------------------------------
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "")
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND", "")
# No broker configured: run tasks in-process so the default needs no server.
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = False
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# A task is acknowledged only after it finishes, and re-queued if its worker dies,
# so a kill -9 or a lost worker never drops work. Tasks are written to be re-run.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Redis redelivers an unacknowledged task after this many seconds; it must exceed
# the longest task time limit (training, 1 hour) or a running task is delivered twice.
# A task whose whole worker vanished (machine lost, kill -9) is restored once older than
# this, by the next worker to start or by a running one within ~100 s (kombu's restore
# scan); a task whose pool process died is re-queued at once (reject_on_worker_lost).
# Redis must persist (appendonly yes, as in docker-compose.yml): a Redis restarted
# without it loses every queued task. tests/test_faults.py exercises all of this.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": int(os.environ.get("CELERY_VISIBILITY_TIMEOUT", "7200"))}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# On a lost broker connection a running task carries on and finishes: its message
# stays unacknowledged and, if redelivered, finds its row done and changes nothing.
# Cancelling instead would leave the work waiting for the visibility timeout.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_TASK_DEFAULT_QUEUE = "default"
# The task modules a worker (and materials.jobs) registers; tasks are named explicitly
# ("materials.<task>") and routed by name, so moving a module breaks no route or queued message.
CELERY_IMPORTS = [
    "materials.tasks.classify",
    "materials.tasks.feff",
    "materials.tasks.ingest",
    "materials.tasks.maintenance",
    "materials.tasks.training",
]
# GPU workers consume only "train"; refresh_material_labels goes to "default".
CELERY_TASK_ROUTES = {
    "materials.ingest_mp": {"queue": "ingest"},
    "materials.import_labels": {"queue": "ingest"},
    "materials.compute_spectrum": {"queue": "feff"},
    "materials.screening_spectrum": {"queue": "feff"},
    "materials.train_model": {"queue": "train"},
    "materials.classify_all": {"queue": "classify"},
    "materials.classify_chunk": {"queue": "classify"},
    "materials.promote_model": {"queue": "classify"},
    "materials.screen_release": {"queue": "classify"},
}
CELERY_TASK_QUEUES_ALL = ["default", "ingest", "feff", "train", "classify"]

# Throttle counters live in the cache: with several gunicorn workers they must be
# shared, so REDIS_CACHE_URL (e.g. redis://127.0.0.1:6379/1) should be set in production.
REDIS_CACHE_URL = os.environ.get("REDIS_CACHE_URL", "")
if REDIS_CACHE_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_CACHE_URL}}

# --- External services ------------------------------------------------------------
MP_API_KEY = os.environ.get("MP_API_KEY", "")
MP_API_ENDPOINT = os.environ.get("MP_API_ENDPOINT", "https://api.materialsproject.org/")
# Ingestion pacing: MP allows ~25 requests/s per key; stay well below it.
MP_CHUNK_SIZE = int(os.environ.get("MP_CHUNK_SIZE", "100"))
MP_REQUESTS_PER_SECOND = float(os.environ.get("MP_REQUESTS_PER_SECOND", "10"))
MP_MAX_RETRIES = int(os.environ.get("MP_MAX_RETRIES", "5"))
MP_BACKOFF_SECONDS = float(os.environ.get("MP_BACKOFF_SECONDS", "1.0"))

# --- REST framework ---------------------------------------------------------------
API_ANONYMOUS_READ = env_bool("API_ANONYMOUS_READ", default=True)
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["materials.api.permissions.ReadPublicWriteAuthenticated"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": [
        "materials.api.renderers.FastJSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.AnonRateThrottle",
        "rest_framework.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": os.environ.get("API_THROTTLE_ANON", "600/minute"),
        "user": os.environ.get("API_THROTTLE_USER", "6000/minute"),
        "classify": os.environ.get("API_THROTTLE_CLASSIFY", "60/minute"),
        "upload": os.environ.get("API_THROTTLE_UPLOAD", "20/hour"),
        "login": os.environ.get("API_THROTTLE_LOGIN", "20/minute"),
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "XAS topology screening API",
    "DESCRIPTION": "Predictions of topological band character from K-edge XANES spectra.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The machine is offline: Swagger UI comes from the sidecar package, not a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # One name per choice set: without these the schema gets hashed names (Kind28cEnum) and
    # `manage.py check` warns (drf_spectacular.W001).
    "ENUM_NAME_OVERRIDES": {
        "BinaryClassEnum": "materials.models.BINARY_CLASSES",
        "ModelKindEnum": "materials.models.ModelVersion.Kind",
        "ModelStateEnum": "materials.models.ModelVersion.State",
        "JobKindEnum": "materials.models.Job.Kind",
        "WorkStatusEnum": "materials.models.Status",
        "MaterialSourceEnum": "materials.models.Material.Source",
        "SpectrumSourceEnum": "materials.models.Spectrum.Source",
    },
}

# --- Production hardening (DJANGO_ENV=production) ------------------------------------
if PRODUCTION:
    # Refuse to start half-configured, as for SECRET_KEY above: `manage.py check --deploy` is clean.
    if DEBUG:
        raise RuntimeError("DEBUG must be off when DJANGO_ENV=production (unset DEBUG)")
    if not ALLOWED_HOSTS:
        raise RuntimeError("ALLOWED_HOSTS must be set when DJANGO_ENV=production (comma-separated host names)")
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "31536000"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_CONTENT_TYPE_NOSNIFF = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
