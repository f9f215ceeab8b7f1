"""Production: everything from the environment; `manage.py check --deploy` passes with no warning."""

import os

from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F401,F403
from .base import DEVELOPMENT_SECRET_KEYS, HANDOFF_SECRET_KEYS, env_bool, env_list

SECRET_KEY = os.environ["SECRET_KEY"]
if not HANDOFF_SECRET_KEYS:
    raise ImproperlyConfigured(
        "HANDOFF_SECRET_KEYS is not set: connection secrets are encrypted at rest with it. Generate a key with "
        "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'` "
        "(docs/operations.md, Rotating secrets)")
for _key in HANDOFF_SECRET_KEYS:
    try:
        Fernet(_key)
    except ValueError:
        raise ImproperlyConfigured("HANDOFF_SECRET_KEYS holds a value that is not a Fernet key "
                                   "(32 url-safe base64-encoded bytes)") from None
    if _key in DEVELOPMENT_SECRET_KEYS:
        raise ImproperlyConfigured("HANDOFF_SECRET_KEYS holds the published development key: generate your own")
DEBUG = False
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", 31536000))
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
HANDOFF_SANDBOX_ENABLED = env_bool("HANDOFF_SANDBOX_ENABLED", False)
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
