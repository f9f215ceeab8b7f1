"""The secret in the callback URL of a system that does not sign its callbacks (Salesforce Outbound Messages carry
only the org id, which is not a secret): `/api/v1/callbacks/<slug>/<secret>/`.

Only a SHA-256 of the secret is stored (it is 32 random bytes, so a plain hash cannot be reversed or guessed), and
the presented one is compared with `hmac.compare_digest`. Rotating it keeps the previous secret valid for
HANDOFF_CALLBACK_SECRET_GRACE_HOURS, so messages Salesforce queued (and retries for up to 24 hours) with the old
URL are still taken in while the admin updates the Outbound Message.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

# connection kinds whose callbacks carry no signature: the URL must carry the connection's secret
PATH_SECRET_KINDS = frozenset({"salesforce"})


def callback_secret_digest(secret: str) -> str:
    """What is stored of a URL secret."""
    return hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()


def callback_secret_matches(connection, presented: str) -> bool:
    """True when `presented` is the connection's callback secret, or the previous one within its grace period."""
    if not presented or not connection.callback_secret_hash:
        return False
    digest = callback_secret_digest(presented).encode()
    current = hmac.compare_digest(digest, connection.callback_secret_hash.encode())
    until = connection.callback_secret_previous_until
    in_grace = bool(connection.callback_secret_previous_hash) and until is not None and until > timezone.now()
    previous = in_grace and hmac.compare_digest(digest, connection.callback_secret_previous_hash.encode())
    return current or previous


def callback_secret_rotate(connection) -> str:
    """A new secret for the connection's callback URL (returned once, stored only as its hash). The current one
    stays valid for the grace period; the caller saves the connection and audits the change."""
    secret = secrets.token_urlsafe(32)
    if connection.callback_secret_hash:
        connection.callback_secret_previous_hash = connection.callback_secret_hash
        connection.callback_secret_previous_until = timezone.now() + timedelta(
            hours=settings.HANDOFF_CALLBACK_SECRET_GRACE_HOURS)
    connection.callback_secret_hash = callback_secret_digest(secret)
    return secret
