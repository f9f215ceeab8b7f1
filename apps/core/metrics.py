"""Prometheus metrics, computed at scrape time from PostgreSQL (the truth) and Redis (the wake-up queues).

Work is rows, so the backlog is measured on rows: `handoff_due_records` and `handoff_oldest_due_seconds` say how
much is due and how long the oldest due record has waited, whatever Redis holds. Every scrape costs a constant
number of queries (seven SQL statements and three Redis round trips), however much data there is.

Written by hand in the text exposition format 0.0.4 (no client library: the values are computed, not counted in
the process, so several web processes all report the same numbers).

Windowed values (attempts and their durations) cover the last hour and are gauges, not counters: read them
directly (`handoff_attempts_total{outcome="transient"} > 50`), do not `rate()` them.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from datetime import timedelta

from django.db import connection as db
from django.db.models import Case, Count, F, Min, Q, When
from django.utils import timezone

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
WINDOW = timedelta(hours=1)
QUANTILES = (0.5, 0.9, 0.99)
UNKNOWN_CONNECTION = "_unknown"  # callbacks to a slug no connection has: one label, not one per guess


def _escape(value) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value) -> str:
    if value is None:
        return "NaN"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(round(value, 6))


class Exposition:
    """Metric families in the order they were declared, each with its HELP, TYPE and samples."""

    def __init__(self):
        self._families: dict[str, tuple[str, str, list[str]]] = {}

    def family(self, name: str, kind: str, help_text: str) -> None:
        self._families.setdefault(name, (kind, help_text, []))

    def add(self, name: str, value, labels: dict | None = None, *, suffix: str = "") -> None:
        label_text = ""
        if labels:
            label_text = "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"
        self._families[name][2].append(f"{name}{suffix}{label_text} {_number(value)}")

    def render(self) -> str:
        out = []
        for name, (kind, help_text, samples) in self._families.items():
            out.append(f"# HELP {name} {_escape_help(help_text)}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(samples)
        return "\n".join(out) + "\n"


def _age(now, then) -> float:
    return max(0.0, (now - then).total_seconds()) if then else 0.0


def collect(now=None) -> str:
    from apps.sync.engine import due_filter
    from apps.sync.wakeup import PRIORITY_QUEUE, QUEUE_PRIORITIES
    from apps.sync.models import Attempt, Connection, InboundEvent, SyncRecord
    from apps.sync.workflows.catalog import all_workflows

    started = time.monotonic()
    now = now or timezone.now()
    m = Exposition()

    # 1. callbacks, by connection and status (the connections, then one GROUP BY); zeros included, so that an
    # alert sees 0 rather than no data
    m.family("handoff_callbacks_total", "gauge",
             "Inbound callback events stored, by connection and status (received, processed, ignored, rejected); "
             "received ones move to processed, so use delta() rather than rate()")
    conns = list(Connection.objects.order_by("slug").values("slug", "kind", "paused", "paused_by",
                                                             "consecutive_failures"))
    callbacks = {(c["slug"], status): 0 for c in conns for status in InboundEvent.Status.values}
    for row in InboundEvent.objects.order_by().values("connection__slug", "status").annotate(n=Count("id")):
        callbacks[(row["connection__slug"] or UNKNOWN_CONNECTION, row["status"])] = row["n"]
    for (slug, status), n in sorted(callbacks.items()):
        m.add("handoff_callbacks_total", n, {"connection": slug, "status": status})

    # 2. records by workflow and status, open SLA breaches, dead letters (one GROUP BY)
    counts: dict[tuple[str, str], int] = defaultdict(int)
    breaches: dict[str, int] = defaultdict(int)
    dead = 0
    open_statuses = {s for s in SyncRecord.Status.values if s not in SyncRecord.TERMINAL}
    for row in (SyncRecord.objects.order_by().values("workflow", "status")
                .annotate(n=Count("id"), breached=Count("id", filter=Q(sla_state="breached")))):
        counts[(row["workflow"], row["status"])] += row["n"]
        if row["status"] in open_statuses:
            breaches[row["workflow"]] += row["breached"]
        if row["status"] == SyncRecord.Status.DEAD:
            dead += row["n"]
    workflows = sorted({wf.name for wf in all_workflows()} | {w for w, _ in counts})
    m.family("handoff_records", "gauge", "Sync records by workflow and status")
    for wf in workflows:
        for status in SyncRecord.Status.values:
            m.add("handoff_records", counts.get((wf, status), 0), {"workflow": wf, "status": status})
    m.family("handoff_sla_breaches", "gauge", "Open records whose SLA is breached (sla_state=breached)")
    for wf in workflows:
        m.add("handoff_sla_breaches", breaches.get(wf, 0), {"workflow": wf})
    m.family("handoff_dead_letters", "gauge", "Records in the dead-letter state, waiting for a person")
    m.add("handoff_dead_letters", dead)

    # 3. the real backlog: due records per queue and the age of the oldest (one GROUP BY over the due rows)
    due_at = Case(When(status=SyncRecord.Status.IN_PROGRESS, then=F("lease_expires_at")),
                  default=F("next_attempt_at"))
    due: dict[str, list] = {q: [0, None] for q in QUEUE_PRIORITIES}
    for row in (SyncRecord.objects.order_by().filter(due_filter(now)).values("priority")
                .annotate(n=Count("id"), oldest=Min(due_at))):
        slot = due.setdefault(PRIORITY_QUEUE.get(row["priority"], "low"), [0, None])
        slot[0] += row["n"]
        if row["oldest"] and (slot[1] is None or row["oldest"] < slot[1]):
            slot[1] = row["oldest"]
    m.family("handoff_due_records", "gauge",
             "Records due for work now (pending/retrying past their time, or in progress with an expired lease)")
    m.family("handoff_oldest_due_seconds", "gauge", "How long the oldest due record of the queue has waited")
    for queue, (n, oldest) in due.items():
        m.add("handoff_due_records", n, {"queue": queue})
    for queue, (n, oldest) in due.items():
        m.add("handoff_oldest_due_seconds", _age(now, oldest), {"queue": queue})

    # 4. the inbox: verified events not yet turned into records (one aggregate)
    inbox = InboundEvent.objects.filter(status=InboundEvent.Status.RECEIVED).aggregate(
        n=Count("id"), oldest=Min("received_at"))
    m.family("handoff_inbox_pending", "gauge", "Verified callback events waiting for the inbox job")
    m.add("handoff_inbox_pending", inbox["n"])
    m.family("handoff_inbox_oldest_seconds", "gauge", "Age of the oldest event waiting in the inbox")
    m.add("handoff_inbox_oldest_seconds", _age(now, inbox["oldest"]))

    # 5. calls to external systems over the last hour (two GROUP BYs)
    since = now - WINDOW
    with db.cursor() as cur:
        cur.execute("SELECT system, outcome, count(*) FROM sync_attempt WHERE started_at >= %s "
                    "GROUP BY system, outcome ORDER BY system, outcome", [since])
        outcomes = cur.fetchall()
        cur.execute("SELECT system, percentile_cont(%s::float8[]) WITHIN GROUP (ORDER BY duration_ms), count(*), "
                    "coalesce(sum(duration_ms), 0) FROM sync_attempt WHERE started_at >= %s "
                    "AND duration_ms IS NOT NULL GROUP BY system ORDER BY system", [list(QUANTILES), since])
        durations = cur.fetchall()
    m.family("handoff_attempts_total", "gauge",
             "Calls to external systems in the last hour by system and outcome (ok, transient, permanent, started)")
    attempts = {(c["kind"], outcome): 0 for c in conns for outcome in Attempt.Outcome.values}
    attempts.update({(system, outcome): n for system, outcome, n in outcomes})
    for (system, outcome), n in sorted(attempts.items()):
        m.add("handoff_attempts_total", n, {"system": system, "outcome": outcome})
    m.family("handoff_attempt_duration_seconds", "summary",
             "Duration of completed calls to external systems over the last hour, by system")
    for system, quantiles, n, total_ms in durations:
        for q, value in zip(QUANTILES, quantiles or []):
            m.add("handoff_attempt_duration_seconds", None if value is None else value / 1000,
                  {"system": system, "quantile": q})
        m.add("handoff_attempt_duration_seconds", total_ms / 1000, {"system": system}, suffix="_sum")
        m.add("handoff_attempt_duration_seconds", n, {"system": system}, suffix="_count")

    # 6. connections (queried above): paused (by an admin or by the circuit breaker) and failure streaks
    m.family("handoff_connection_paused", "gauge", "1 when the connection is paused (its records wait)")
    m.family("handoff_connection_circuit_open", "gauge",
             "1 when the connection was paused by its circuit breaker (consecutive transient failures)")
    m.family("handoff_connection_consecutive_failures", "gauge", "Transient failures in a row")
    for c in conns:
        m.add("handoff_connection_paused", c["paused"], {"connection": c["slug"]})
    for c in conns:
        m.add("handoff_connection_circuit_open", c["paused"] and c["paused_by"] == "circuit",
              {"connection": c["slug"]})
    for c in conns:
        m.add("handoff_connection_consecutive_failures", c["consecutive_failures"], {"connection": c["slug"]})

    # 7. Redis: queue lengths, failed jobs, workers (one pipelined round trip)
    _redis(m, list(QUEUE_PRIORITIES))

    m.family("handoff_metrics_scrape_seconds", "gauge", "Time taken to compute these metrics")
    m.add("handoff_metrics_scrape_seconds", time.monotonic() - started)
    return m.render()


def _redis(m: Exposition, queue_names: list[str]) -> None:
    import django_rq
    from redis.exceptions import RedisError

    from apps.sync.refusals import DROPPED_KEY

    from .workers import worker_liveness

    m.family("handoff_redis_up", "gauge", "1 when Redis answered this scrape")
    try:
        queues = [django_rq.get_queue(name) for name in queue_names]
        pipe = queues[0].connection.pipeline(transaction=False)
        for q in queues:
            pipe.llen(q.key)
            pipe.zcard(q.failed_job_registry.key)
        pipe.get(DROPPED_KEY)
        *values, dropped = pipe.execute()
        live, dead = worker_liveness(queues[0].connection)
    except (RedisError, OSError):
        m.add("handoff_redis_up", 0)
        return
    m.add("handoff_redis_up", 1)
    m.family("handoff_queue_depth", "gauge", "Jobs waiting in the RQ queue (wake-ups; the work itself is rows)")
    m.family("handoff_rq_failed_jobs", "gauge", "Jobs in the RQ failed-job registry of the queue")
    for i, q in enumerate(queues):
        m.add("handoff_queue_depth", values[2 * i], {"queue": q.name})
    for i, q in enumerate(queues):
        m.add("handoff_rq_failed_jobs", values[2 * i + 1], {"queue": q.name})
    m.family("handoff_rq_workers", "gauge", "RQ workers with a live heartbeat (HANDOFF_WORKER_HEARTBEAT_TTL)")
    m.add("handoff_rq_workers", len(live))
    m.family("handoff_rq_workers_dead", "gauge",
             "RQ workers still registered whose heartbeat stopped (killed, or wedged): not working")
    m.add("handoff_rq_workers_dead", len(dead))
    m.family("handoff_callbacks_throttled_total", "counter",
             "Refused callbacks answered 429 and not stored: their address was over its limit of refusals")
    m.add("handoff_callbacks_throttled_total", int(dropped or 0))
