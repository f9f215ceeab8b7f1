"""Settings shared by every environment; complete on its own, driven by the environment."""

import json
import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.utils.csp import CSP

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
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "apps.core",
    "apps.canonical",
    "apps.finance",
    "apps.reconcile",
    "apps.sync",
    "apps.sla",
    "apps.connectors",
    "apps.sandbox",
    "apps.demo",
    "apps.forecast",
    "apps.api",
    "apps.console",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",  # request.user.is_verified(): the session passed its second factor
    "apps.core.sessions.SessionLimitsMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "apps.core.two_factor.TwoFactorMiddleware",  # after the login redirect: first the password, then the code
    "apps.core.inputs.InputGuardMiddleware",  # after the login redirect: anonymous requests learn nothing
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # last: it answers a locked-out login attempt (django-axes requires it after everything else)
    "axes.middleware.AxesMiddleware",
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
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Login throttling (django-axes), for the login page and the API's basic auth alike (both go through
# django.contrib.auth.authenticate): after AXES_FAILURE_LIMIT failures for one username from one address, that
# pair is refused for AXES_COOLOFF_TIME, even with the right password. Per pair, so nobody can lock a colleague
# out from elsewhere. Behind a proxy, set AXES_IPWARE_PROXY_COUNT so the client's address is the one counted.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend",
                           "apps.core.sso.RoleMappingOIDCBackend"]
AXES_FAILURE_LIMIT = int(os.environ.get("AXES_FAILURE_LIMIT", 5))
AXES_COOLOFF_TIME = timedelta(minutes=int(os.environ.get("AXES_COOLOFF_MINUTES", 15)))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
if os.environ.get("AXES_IPWARE_PROXY_COUNT"):
    AXES_IPWARE_PROXY_COUNT = int(os.environ["AXES_IPWARE_PROXY_COUNT"])
# A session lasts a working day from login, and ends sooner after HANDOFF_SESSION_IDLE_SECONDS without a request
# (apps/core/sessions.py enforces both).
SESSION_COOKIE_AGE = int(os.environ.get("SESSION_COOKIE_AGE", 10 * 3600))
HANDOFF_SESSION_IDLE_SECONDS = int(os.environ.get("HANDOFF_SESSION_IDLE_SECONDS", 2 * 3600))
SESSION_COOKIE_HTTPONLY = True
# The pages hand HTMX the token in the page (base.html's hx-headers); no script needs to read the cookie.
CSRF_COOKIE_HTTPONLY = True
# Scripts and styles only from our own static files: no inline script, no inline handler (static/js/ holds them).
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:"],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.NONE],
    "form-action": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
}
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# Single sign-on with OpenID Connect (apps/core/sso.py, mozilla-django-oidc): on when OIDC_RP_CLIENT_ID is set. The
# provider's endpoints come from its discovery document (OIDC_OP_DISCOVERY_ENDPOINT) unless set one by one. The IdP's
# groups claim maps to Handoff roles through HANDOFF_OIDC_ROLE_MAP (JSON, e.g. {"Finance": "finance_ops",
# "*": "viewer"}; "*" is the role of anyone with no mapped group, and without it they are refused).
OIDC_RP_CLIENT_ID = os.environ.get("OIDC_RP_CLIENT_ID", "")
OIDC_RP_CLIENT_SECRET = os.environ.get("OIDC_RP_CLIENT_SECRET", "")
OIDC_RP_SIGN_ALGO = os.environ.get("OIDC_RP_SIGN_ALGO", "RS256")
OIDC_RP_SCOPES = os.environ.get("OIDC_RP_SCOPES", "openid email profile")
OIDC_OP_DISCOVERY_ENDPOINT = os.environ.get("OIDC_OP_DISCOVERY_ENDPOINT", "")
OIDC_OP_ISSUER = os.environ.get("OIDC_OP_ISSUER", "")
OIDC_OP_AUTHORIZATION_ENDPOINT = os.environ.get("OIDC_OP_AUTHORIZATION_ENDPOINT", "")
OIDC_OP_TOKEN_ENDPOINT = os.environ.get("OIDC_OP_TOKEN_ENDPOINT", "")
OIDC_OP_USER_ENDPOINT = os.environ.get("OIDC_OP_USER_ENDPOINT", "")
OIDC_OP_JWKS_ENDPOINT = os.environ.get("OIDC_OP_JWKS_ENDPOINT", "")
OIDC_USE_PKCE = env_bool("OIDC_USE_PKCE", True)
OIDC_TIMEOUT = float(os.environ.get("OIDC_TIMEOUT", 10))
OIDC_CREATE_USER = True  # someone the IdP lets in with a mapped group gets a Handoff user (no usable password)
HANDOFF_SSO_NAME = os.environ.get("HANDOFF_SSO_NAME", "single sign-on")  # the button: "Sign in with <name>"
HANDOFF_OIDC_GROUPS_CLAIM = os.environ.get("HANDOFF_OIDC_GROUPS_CLAIM", "groups")
HANDOFF_OIDC_ROLE_MAP = json.loads(os.environ.get("HANDOFF_OIDC_ROLE_MAP") or "{}")
# Two-factor (TOTP, apps/core/two_factor.py) for local logins of these roles; SSO logins are left to the IdP's MFA.
HANDOFF_REQUIRE_TOTP_FOR = env_list("HANDOFF_REQUIRE_TOTP_FOR", "finance_ops,integration_admin")
OTP_TOTP_ISSUER = os.environ.get("OTP_TOTP_ISSUER", "Handoff")
OTP_ADMIN_HIDE_SENSITIVE_DATA = True  # the admin never shows a device's secret back
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "console:home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT") or BASE_DIR / "staticfiles")
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
# a rotated callback-URL secret (Salesforce) stays valid this long: Salesforce retries queued messages for 24 h
HANDOFF_CALLBACK_SECRET_GRACE_HOURS = int(os.environ.get("HANDOFF_CALLBACK_SECRET_GRACE_HOURS", "24"))
# The loopback sandboxes of the external systems (demo and tests only).
HANDOFF_SANDBOX_ENABLED = env_bool("HANDOFF_SANDBOX_ENABLED", False)
HANDOFF_SANDBOX_URL = os.environ.get("HANDOFF_SANDBOX_URL", "http://127.0.0.1:8001")
# Templates other apps add to each row of the console's connections page, so the console names none of them; the
# sandboxes' fault-injection form shows only when HANDOFF_SANDBOX_ENABLED (checked as the page renders).
HANDOFF_CONNECTION_PANELS = ["sandbox/connection_faults.html"]
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
# A worker is live while its heartbeat (every 10 s, apps/core/workers.py) is younger than this; /readyz answers 503
# while fewer than HANDOFF_MIN_LIVE_WORKERS are live.
HANDOFF_WORKER_HEARTBEAT_TTL = int(os.environ.get("HANDOFF_WORKER_HEARTBEAT_TTL", 45))
HANDOFF_MIN_LIVE_WORKERS = int(os.environ.get("HANDOFF_MIN_LIVE_WORKERS", 1))
# Rotating SECRET_KEY: put the old key here for a while, so sessions and signed values stay valid (Django docs).
SECRET_KEY_FALLBACKS = env_list("SECRET_KEY_FALLBACKS")
# Secrets at rest (connection credentials and inbound secrets, apps/core/encryption.py): Fernet keys, newest first.
# The newest encrypts, every listed key decrypts; rotation is in docs/operations.md. Production requires them.
HANDOFF_SECRET_KEYS = env_list("HANDOFF_SECRET_KEYS")
# the demo and the test suite encrypt with this fixed key when none is set (never accepted by production settings)
DEVELOPMENT_SECRET_KEYS = ["_ffxHZQ25jWl-dxDoWXf_tv9BAj59XsqgZAx81T0IbQ="]

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
