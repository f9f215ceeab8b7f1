"""Settings shared by every environment; complete on its own, driven by the environment."""

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    return os.environ.get(name, str(default)).lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [v.strip() for v in os.environ.get(name, default).split(",") if v.strip()]


SECRET_KEY = os.environ.get("SECRET_KEY", "")
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_rq",
    "django_htmx",
    "apps.core",
    "apps.canonical",
    "apps.finance",
    "apps.reconcile",
    "apps.sync",
    "apps.sla",
    "apps.connectors",
    "apps.sandbox",
    "apps.forecast",
    "apps.api",
    "apps.console",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "apps.core.inputs.InputGuardMiddleware",  # after the login redirect: anonymous requests learn nothing
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/handoff"),
        conn_max_age=int(os.environ.get("DB_CONN_MAX_AGE", 60)),
        conn_health_checks=True,
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
# Redis only wakes workers up; PostgreSQL holds every pending piece of work (see docs/architecture.md).
RQ_QUEUES = {
    name: {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 600}
    for name in ("high", "default", "low")
}
RQ = {"COMMIT_MODE": "on_db_commit"}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "console:home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "apps.api.authentication.SafeBasicAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Handoff API",
    "DESCRIPTION": "Callbacks from CRM/PSA/ERP systems, and read access to sync records.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "REDOC_DIST": "SIDECAR",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
}

# Callback bodies above this size are refused with 413 (and recorded).
HANDOFF_MAX_CALLBACK_BYTES = int(os.environ.get("HANDOFF_MAX_CALLBACK_BYTES", 1_048_576))
DATA_UPLOAD_MAX_MEMORY_SIZE = HANDOFF_MAX_CALLBACK_BYTES + 1024
# Refused callbacks per source address (REMOTE_ADDR) in a fixed window; past it, 429 and nothing stored.
HANDOFF_CALLBACK_REFUSAL_LIMIT = int(os.environ.get("HANDOFF_CALLBACK_REFUSAL_LIMIT", 60))
HANDOFF_CALLBACK_REFUSAL_WINDOW_SECONDS = int(os.environ.get("HANDOFF_CALLBACK_REFUSAL_WINDOW_SECONDS", 60))
# HubSpot v3 signatures older than this are refused (HubSpot documents 5 minutes).
HANDOFF_SIGNATURE_MAX_AGE_SECONDS = 300
# The loopback sandboxes of the external systems (demo and tests only).
HANDOFF_SANDBOX_ENABLED = env_bool("HANDOFF_SANDBOX_ENABLED", False)
HANDOFF_SANDBOX_URL = os.environ.get("HANDOFF_SANDBOX_URL", "http://127.0.0.1:8001")
HANDOFF_PUBLIC_URL = os.environ.get("HANDOFF_PUBLIC_URL", "http://127.0.0.1:8000")
# Records a worker claims at once; a lease that expires lets the sweeper hand the record to another worker.
HANDOFF_CLAIM_BATCH = int(os.environ.get("HANDOFF_CLAIM_BATCH", 50))
HANDOFF_LEASE_SECONDS = int(os.environ.get("HANDOFF_LEASE_SECONDS", 120))
HANDOFF_HTTP_TIMEOUT = float(os.environ.get("HANDOFF_HTTP_TIMEOUT", 10))
# SLA notifications: besides e-mail to the owner team, post a Slack-compatible {"text": …} here (blank: off).
HANDOFF_SLA_WEBHOOK_URL = os.environ.get("HANDOFF_SLA_WEBHOOK_URL", "")
HANDOFF_SLA_WEBHOOK_TIMEOUT = float(os.environ.get("HANDOFF_SLA_WEBHOOK_TIMEOUT", 5))

# Prometheus scrapes /metrics with `Authorization: Bearer <token>`; several tokens (comma-separated) are accepted
# while one is being rotated. Unset: only staff users with a session may read the metrics.
HANDOFF_METRICS_TOKEN = os.environ.get("HANDOFF_METRICS_TOKEN", "")
# Rotating SECRET_KEY: put the old key here for a while, so sessions and signed values stay valid (Django docs).
SECRET_KEY_FALLBACKS = env_list("SECRET_KEY_FALLBACKS")

# Logs: one JSON object per line (LOG_FORMAT=json, the default unless DEBUG) or readable lines (LOG_FORMAT=plain),
# both carrying the correlation id / record id / RQ job id of the work being done (apps/core/logging.py).
LOG_FORMAT = os.environ.get("LOG_FORMAT", "")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"default": {"()": "apps.core.logging.make_formatter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "default"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    # RQ's worker lines ("Job OK", …) reach the root handler too: RQ adds its own only when none is configured
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
