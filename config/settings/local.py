"""Development and the demo (`./handoff run`)."""

import os

from .base import *  # noqa: F401,F403
from .base import env_bool

DEBUG = env_bool("DEBUG", True)
SECRET_KEY = os.environ.get("SECRET_KEY") or "local-development-only-not-secret"
HANDOFF_SECRET_KEYS = HANDOFF_SECRET_KEYS or DEVELOPMENT_SECRET_KEYS  # noqa: F405
ALLOWED_HOSTS = ["*"]
HANDOFF_SANDBOX_ENABLED = env_bool("HANDOFF_SANDBOX_ENABLED", True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
HANDOFF_REQUIRE_TOTP_FOR = []  # the demo keeps simple logins (production asks finance and admins for a code)
