"""Refused callbacks: how much of one is kept, and how many refusals one source address gets.

Anyone on the internet can post to the callback URLs. What a sender that never proved who it is posts (to an
unknown or disabled connection, over the size limit, without a valid signature, or to a system whose callbacks
are not signed at all) is junk until shown otherwise: only its first EXCERPT_BYTES are stored, and the reason
names the full length. A request refused after its signature was verified keeps up to FULL_BODY_BYTES, so the
admin can see what a real sender got wrong.

Each refusal counts against the source address (found as the login throttle finds it: REMOTE_ADDR unless
django-axes is told which proxies to trust). Past HANDOFF_CALLBACK_REFUSAL_LIMIT refusals in a fixed window of
HANDOFF_CALLBACK_REFUSAL_WINDOW_SECONDS, a refusal is answered 429 with Retry-After and stored nowhere; the
dropped ones are counted in Redis (DROPPED_KEY, the `handoff_callbacks_throttled_total` metric) and the first of
each window is logged. Accepted callbacks are never
counted or throttled: a misconfigured connection must not stop another one sending from the same addresses.
The counter lives in Redis; when Redis is down the limit is not applied (the request is answered as usual).
"""

from __future__ import annotations

import logging
import math
import time

from django.conf import settings
from redis.exceptions import RedisError

from .callback_secrets import PATH_SECRET_KINDS  # systems whose callbacks carry no signature

log = logging.getLogger("handoff.intake")

EXCERPT_BYTES = 2048
FULL_BODY_BYTES = 65_536
# refused before, or because, the sender proved who it is: bad or missing signature, disabled connection,
# unknown connection, oversize body, wrong media type
UNVERIFIED_STATUSES = frozenset({401, 403, 404, 413, 415})
DROPPED_KEY = "handoff:callbacks:throttled"


def kept_bytes(conn, status: int) -> int:
    """How many bytes of a refused body to store."""
    if conn is None or conn.kind in PATH_SECRET_KINDS or status in UNVERIFIED_STATUSES:
        return EXCERPT_BYTES
    return FULL_BODY_BYTES


_connections: dict = {}


def _redis():
    """One client (and connection pool) per process and Redis URL, as for the wake-ups."""
    import django_rq

    url = settings.RQ_QUEUES["high"]["URL"]
    client = _connections.get(url)
    if client is None:
        client = _connections[url] = django_rq.get_connection("high")
    return client


def count_refusal(source: str) -> int | None:
    """Count one refusal from `source`. Seconds until its window ends when the address is over its limit (the
    refusal is then not stored), else None."""
    limit = settings.HANDOFF_CALLBACK_REFUSAL_LIMIT
    window = settings.HANDOFF_CALLBACK_REFUSAL_WINDOW_SECONDS
    if not source or limit <= 0:
        return None
    now = time.time()
    start = int(now // window) * window
    key = f"handoff:refusals:{source[:64]}:{start}"
    try:
        client = _redis()
        pipe = client.pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, window + 1)
        count = pipe.execute()[0]
        if count <= limit:
            return None
        client.incr(DROPPED_KEY)
    except (RedisError, OSError) as exc:
        log.warning("refused-callback limit not applied: Redis is unreachable (%s)", exc)
        return None
    if count == limit + 1:
        log.warning("more than %s refused callbacks from %s within %s s: further refusals are answered 429 and "
                    "not stored until the window ends", limit, source[:64], window)
    return max(1, math.ceil(start + window - now))
