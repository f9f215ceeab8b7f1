"""Standard Webhooks (standardwebhooks.com) signing, used by the PSA (Kantata) and ERP (NetSuite) callbacks.

Neither Kantata nor NetSuite documents a signed outbound webhook of its own (NetSuite sends them from a SuiteScript
the firm deploys; Kantata through its integration platform), so both are configured to follow the open Standard
Webhooks specification:

- headers `webhook-id` (unique per message, the same on every retry), `webhook-timestamp` (Unix seconds) and
  `webhook-signature` (space-separated `v1,<base64 signature>` entries, several during a key rotation);
- signature = base64(HMAC-SHA256(secret, "<webhook-id>.<webhook-timestamp>.<raw body>")); a secret written
  `whsec_<base64>` is base64-decoded first;
- a timestamp more than 5 minutes away from now is refused (replay protection);
- the body is the specification's JSON envelope `{"type": …, "timestamp": …, "data": {…}}`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from django.conf import settings

from apps.connectors.callbacks import Rejected, json_body, signed_at

HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


def _key(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[6:])
        except ValueError:
            pass
    return secret.encode()


def sign(secret: str, msg_id: str, timestamp: int | str, body: bytes) -> str:
    mac = hmac.new(_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signed_headers(secret: str, msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sign(secret, msg_id, ts, body),
            "Content-Type": "application/json"}


def verify(secret: str, *, headers, body: bytes, max_age: int, who: str) -> str:
    """Raise Rejected(401) unless the request is signed with `secret` and fresh. Returns the webhook-id."""
    msg_id = headers.get("webhook-id", "")
    ts = headers.get("webhook-timestamp", "")
    sigs = headers.get("webhook-signature", "")
    if not msg_id or not ts or not sigs:
        raise Rejected(401, f"{who}: missing webhook-id, webhook-timestamp or webhook-signature header")
    signed_at(ts, name="webhook-timestamp", per_second=1, max_age=max_age, who=f"{who}: ")
    if not secret:
        raise Rejected(401, f"{who}: this connection has no signing secret configured")
    expected = sign(secret, msg_id, ts, body).encode()
    for candidate in sigs.split(" "):
        if hmac.compare_digest(candidate.strip().encode("utf-8", "replace"), expected):
            return msg_id
    raise Rejected(401, f"{who}: bad signature: webhook-signature does not match the body")


def verified_message(conn, *, headers, body: bytes, who: str, what: str) -> tuple[str, dict]:
    """(webhook-id, envelope) of a message signed with the connection's secret, or Rejected(4xx, why).

    `who` names the system in the refusals ("Kantata"), `what` one of its messages ("a Kantata event")."""
    msg_id = verify(conn.inbound_secret, headers=headers, body=body,
                    max_age=settings.HANDOFF_SIGNATURE_MAX_AGE_SECONDS, who=who)
    envelope = json_body(body, headers, f"{who} callbacks")
    if not isinstance(envelope, dict) or not isinstance(envelope.get("type"), str) \
            or not isinstance(envelope.get("data"), dict):
        raise Rejected(400, f'{what} must be an object with a "type" string and a "data" object')
    return msg_id, envelope
