"""The test suite (`./handoff test`): real PostgreSQL and Redis, from DATABASE_URL / REDIS_URL."""

import os

from .base import *  # noqa: F401,F403
from .base import REDIS_URL

DEBUG = False
SECRET_KEY = "test-only-not-secret"
HANDOFF_SECRET_KEYS = HANDOFF_SECRET_KEYS or DEVELOPMENT_SECRET_KEYS  # noqa: F405
ALLOWED_HOSTS = ["*"]
HANDOFF_SANDBOX_ENABLED = True
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed; tests only
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
# Tests use their own Redis database so they never touch a running demo's queues.
_test_redis = os.environ.get("TEST_REDIS_URL") or REDIS_URL.rsplit("/", 1)[0] + "/9"
RQ_QUEUES = {name: {"URL": _test_redis, "DEFAULT_TIMEOUT": 600} for name in ("high", "default", "low")}
REDIS_URL = _test_redis
HANDOFF_HTTP_TIMEOUT = 5
# tests that send many refused callbacks in one test (schemathesis, the fuzz test) check the refusals themselves;
# the limit's own tests (tests/security/test_refused_callbacks.py) set it low
HANDOFF_CALLBACK_REFUSAL_LIMIT = 1000
DATABASES["default"]["CONN_MAX_AGE"] = 0  # noqa: F405  (live-server threads must not keep connections open)
# No worker runs beside most tests: readiness must not depend on one here (tests/platform starts real ones)
HANDOFF_MIN_LIVE_WORKERS = 0
# Login throttling off for the suite: the test client's login() passes no request (django-axes refuses that) and
# the API fuzz tests send thousands of wrong basic-auth pairs. tests/platform/test_login_security.py turns it on.
AXES_ENABLED = False
# No second factor for the suite (force_login has none); tests/platform/test_two_factor.py turns it on.
HANDOFF_REQUIRE_TOTP_FOR = []
