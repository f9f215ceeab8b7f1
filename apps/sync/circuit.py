"""Circuit breaker per connection: after N consecutive transient failures the connection pauses, its records
wait (they do not fail and spend no attempts), the board shows it, and it closes again by itself when a probe
call succeeds after a cool-down — or when an admin resumes it.

Counting is done with single conditional UPDATEs on the connection row (workers on several machines share it);
a success only writes when there was a failure streak to reset.
"""

from __future__ import annotations

import logging

from django.db.models import F
from django.utils import timezone

from apps.connectors.base import DownstreamError

from .models import Connection

log = logging.getLogger("handoff.circuit")


def record_failure(conn: Connection, message: str) -> None:
    Connection.objects.filter(pk=conn.pk).update(consecutive_failures=F("consecutive_failures") + 1)
    conn.consecutive_failures += 1
    opened = (Connection.objects
              .filter(pk=conn.pk, paused=False, consecutive_failures__gte=F("circuit_threshold"))
              .update(paused=True, paused_by="circuit", paused_at=timezone.now(),
                      paused_reason=f"circuit open after {conn.circuit_threshold} consecutive failures: "
                                    f"{message}"[:300]))
    if opened:
        conn.paused, conn.paused_by = True, "circuit"
        log.warning("circuit opened for %s after %s consecutive failures", conn.slug, conn.circuit_threshold)


def record_success(conn: Connection | None) -> None:
    if conn is not None and conn.consecutive_failures:
        Connection.objects.filter(pk=conn.pk, consecutive_failures__gt=0).update(consecutive_failures=0)
        conn.consecutive_failures = 0


def resume(conn: Connection) -> None:
    Connection.objects.filter(pk=conn.pk).update(paused=False, paused_by="", paused_reason="", paused_at=None,
                                                 consecutive_failures=0)


def probe_open_circuits(now=None) -> dict[str, str]:
    """Close circuits whose cool-down has passed and whose system answers a cheap read again."""
    from apps.connectors.clients import CLIENTS

    now = now or timezone.now()
    out = {}
    for conn in Connection.objects.filter(paused=True, paused_by="circuit", enabled=True):
        if conn.paused_at and (now - conn.paused_at).total_seconds() < conn.circuit_cooldown_seconds:
            continue
        try:
            CLIENTS[conn.kind](conn).probe()
        except DownstreamError as exc:
            Connection.objects.filter(pk=conn.pk).update(paused_at=now)  # wait another cool-down
            out[conn.slug] = f"still failing: {exc.message}"
            continue
        resume(conn)
        out[conn.slug] = "closed"
        log.info("circuit closed for %s: the probe succeeded", conn.slug)
    return out
