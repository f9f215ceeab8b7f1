"""The numbers the boards and the KPI page show, as plain functions over the database.

Every function here runs a fixed number of aggregate queries (GROUP BY in PostgreSQL, percentiles with
PERCENTILE_CONT), whatever the number of records, workflows, stages or connections. Nothing here renders.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal

from django.db.models import (Aggregate, Avg, Case, Count, DateTimeField, Exists, F, FloatField, Func, IntegerField,
                              Max, OuterRef, Q, Sum, Value, When)
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Coalesce, TruncDate
from django.utils import timezone

from apps.core.inputs import param_date
from apps.sync.models import Attempt, AuditEntry, Connection, InboundEvent, SyncRecord
from apps.sync.workflows.catalog import all_workflows

BILLING_WORKFLOWS = ("time_to_billing", "milestone_to_invoice", "invoice_payment_to_crm", "reconciliation")
RECONCILIATION_WORKFLOW = "reconciliation"
PROJECT_SETUP_WORKFLOW = "quote_to_project"
RESOLUTION_ACTIONS = ("resubmit", "ignore")
FAILED_OUTCOMES = (Attempt.Outcome.TRANSIENT, Attempt.Outcome.PERMANENT)
# an SLA breach counts while the record is still open: neither done nor deliberately resolved
CLOSED_STATUSES = (SyncRecord.Status.SUCCEEDED, SyncRecord.Status.IGNORED)
PRIORITIES = (1, 2, 3)
AGE_BUCKETS = [  # (key, label, lower bound inclusive, upper bound exclusive)
    ("lt_1h", "< 1 h", timedelta(0), timedelta(hours=1)),
    ("1h_4h", "1–4 h", timedelta(hours=1), timedelta(hours=4)),
    ("4h_24h", "4–24 h", timedelta(hours=4), timedelta(hours=24)),
    ("1d_3d", "1–3 d", timedelta(days=1), timedelta(days=3)),
    ("gt_3d", "> 3 d", timedelta(days=3), None),
]
TREND_DAYS = 14
DEFAULT_PERIOD_DAYS = 30
MAX_PERIOD_DAYS = 731


# ---------------------------------------------------------------- SQL helpers


class Percentile(Aggregate):
    """PERCENTILE_CONT(fraction) WITHIN GROUP (ORDER BY expression) — PostgreSQL's interpolated percentile."""

    function = "PERCENTILE_CONT"
    name = "Percentile"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)%(filter)s"
    output_field = FloatField()

    def __init__(self, expression, fraction: float, **extra):
        fraction = float(fraction)
        if not 0 <= fraction <= 1:
            raise ValueError("a percentile is between 0 and 1")
        super().__init__(expression, fraction=repr(fraction), **extra)


def seconds_between(start: str, end: str) -> Func:
    """EXTRACT(EPOCH FROM end - start) as double precision seconds (two field or annotation names)."""
    return Func(F(end) - F(start), template="EXTRACT(EPOCH FROM %(expressions)s)::double precision",
                output_field=FloatField())


def hours(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 3600, 2)


def day_start(d: date) -> datetime:
    return timezone.make_aware(datetime.combine(d, time.min))


def today_start() -> datetime:
    return day_start(timezone.localdate())


# ---------------------------------------------------------------- the period


@dataclass
class Period:
    """Whole days, both ends included: [start_date 00:00, end_date + 1 day 00:00)."""

    start_date: date
    end_date: date
    errors: list[str] = field(default_factory=list)

    @property
    def start(self) -> datetime:
        return day_start(self.start_date)

    @property
    def end(self) -> datetime:
        return day_start(self.end_date + timedelta(days=1))

    @property
    def days(self) -> list[date]:
        return [self.start_date + timedelta(days=i) for i in range((self.end_date - self.start_date).days + 1)]

    @property
    def query(self) -> str:
        return f"from={self.start_date.isoformat()}&to={self.end_date.isoformat()}"


def parse_period(params, default_days: int = DEFAULT_PERIOD_DAYS, today: date | None = None) -> Period:
    """`from`/`to` (YYYY-MM-DD) from a query dict; the last `default_days` days by default. A bad date falls back
    to its default and says so; a date is clamped into the years param_date allows; a reversed range is swapped;
    a range is capped at MAX_PERIOD_DAYS."""
    today = today or timezone.localdate()
    errors = []
    end = start = None
    if raw := (params.get("to") or "").strip():
        end = param_date(params, "to")
        if end is None:
            errors.append(f"“{raw}” is not a date (YYYY-MM-DD); showing up to today.")
    end = end or today
    if raw := (params.get("from") or "").strip():
        start = param_date(params, "from")
        if start is None:
            errors.append(f"“{raw}” is not a date (YYYY-MM-DD); showing the {default_days} days before.")
    start = start or end - timedelta(days=default_days - 1)
    if start > end:
        start, end = end, start
    if (end - start).days + 1 > MAX_PERIOD_DAYS:
        start = end - timedelta(days=MAX_PERIOD_DAYS - 1)
        errors.append(f"A period is at most {MAX_PERIOD_DAYS} days; showing the last {MAX_PERIOD_DAYS}.")
    return Period(start, end, errors)


# ---------------------------------------------------------------- 1. the workflow status board


def board(now: datetime | None = None) -> list[dict]:
    """Per workflow and stage: in flight, succeeded today, held, retrying, dead, SLA breaches; per workflow a
    14-day trend (held per day, succeeded per day). Three queries, whatever the data."""
    now = now or timezone.now()
    today = day_start(timezone.localdate(now))
    open_q = ~Q(status__in=CLOSED_STATUSES)
    rows = (SyncRecord.objects
            .filter(open_q | Q(status=SyncRecord.Status.SUCCEEDED, completed_at__gte=today))
            .values("workflow", "stage")
            .annotate(in_flight=Count("id", filter=Q(status__in=["pending", "in_progress"])),
                      succeeded_today=Count("id", filter=Q(status="succeeded", completed_at__gte=today)),
                      held=Count("id", filter=Q(status="held")),
                      retrying=Count("id", filter=Q(status="retrying")),
                      dead=Count("id", filter=Q(status="dead")),
                      sla_breached=Count("id", filter=open_q & Q(sla_state="breached")))
            .order_by())
    cells: dict[str, dict[str, dict]] = defaultdict(dict)
    for row in rows:
        cells[row["workflow"]][row["stage"]] = row
    trend = trends(now=now)

    out = []
    known = {wf.name: wf for wf in all_workflows()}
    names = list(known) + sorted(set(cells) - set(known))  # records of a workflow no longer registered still show
    for name in names:
        wf = known.get(name)
        stage_defs = [(s.name, s.label) for s in wf.stages] if wf else []
        unknown = sorted(set(cells.get(name, {})) - {n for n, _ in stage_defs})
        stage_defs += [(s, f"{s} (unknown stage)") for s in unknown]
        stages = []
        for stage_name, label in stage_defs:
            c = cells.get(name, {}).get(stage_name, {})
            values = {k: c.get(k, 0) for k in BOARD_COLUMNS}
            stages.append({"name": stage_name, "label": label, **values,
                           "cells": [(k, values[k]) for k in BOARD_COLUMNS]})
        totals = {k: sum(s[k] for s in stages) for k in BOARD_COLUMNS}
        out.append({"name": name, "label": wf.label if wf else name, "stages": stages, "totals": totals,
                    "total_cells": [(k, totals[k]) for k in BOARD_COLUMNS],
                    "trend": trend.get(name, _empty_trend(now))})
    return out


BOARD_COLUMNS = ["in_flight", "succeeded_today", "held", "retrying", "dead", "sla_breached"]
BOARD_COLUMN_LABELS = ["In flight", "Succeeded today", "Held", "Retrying", "Dead", "SLA breached"]


def _trend_days(now: datetime) -> list[date]:
    last = timezone.localdate(now)
    return [last - timedelta(days=TREND_DAYS - 1 - i) for i in range(TREND_DAYS)]


def _empty_trend(now: datetime) -> dict:
    days = _trend_days(now)
    return {"days": days, "held": [0] * len(days), "succeeded": [0] * len(days)}


def trends(now: datetime | None = None) -> dict[str, dict]:
    """Per workflow, for each of the last 14 days (today included): records held that day (by held_at) and
    records that succeeded that day (by completed_at). Two queries."""
    now = now or timezone.now()
    days = _trend_days(now)
    since = day_start(days[0])
    index = {d: i for i, d in enumerate(days)}
    out: dict[str, dict] = defaultdict(lambda: _empty_trend(now))
    held = (SyncRecord.objects.filter(held_at__gte=since).values("workflow", day=TruncDate("held_at"))
            .annotate(n=Count("id")).order_by())
    done = (SyncRecord.objects.filter(status=SyncRecord.Status.SUCCEEDED, completed_at__gte=since)
            .values("workflow", day=TruncDate("completed_at")).annotate(n=Count("id")).order_by())
    for series, rows in (("held", held), ("succeeded", done)):
        for row in rows:
            if row["day"] in index:
                out[row["workflow"]][series][index[row["day"]]] = row["n"]
    return dict(out)


# ---------------------------------------------------------------- 2. KPIs


def cycle_time(period: Period, workflow: str = PROJECT_SETUP_WORKFLOW) -> dict:
    """Project setup cycle time: records of `workflow` that succeeded in the period, created_at → completed_at.
    p50 / p90 / average in hours, and the median per day. Two queries."""
    qs = SyncRecord.objects.filter(workflow=workflow, status=SyncRecord.Status.SUCCEEDED,
                                   completed_at__gte=period.start, completed_at__lt=period.end)
    secs = seconds_between("created_at", "completed_at")
    summary = qs.aggregate(n=Count("id"), p50=Percentile(secs, 0.5), p90=Percentile(secs, 0.9), avg=Avg(secs))
    daily = {row["day"]: (row["n"], row["p50"]) for row in
             qs.values(day=TruncDate("completed_at")).annotate(n=Count("id"), p50=Percentile(secs, 0.5)).order_by()}
    return {
        "workflow": workflow, "count": summary["n"], "p50_hours": hours(summary["p50"]),
        "p90_hours": hours(summary["p90"]), "avg_hours": hours(summary["avg"]),
        "daily": [{"day": d, "count": daily.get(d, (0, None))[0], "p50_hours": hours(daily.get(d, (0, None))[1])}
                  for d in period.days],
    }


def cycle_time_rows(period: Period, workflow: str = PROJECT_SETUP_WORKFLOW):
    """The records behind cycle_time(), for the CSV export (streamed)."""
    return (SyncRecord.objects.filter(workflow=workflow, status=SyncRecord.Status.SUCCEEDED,
                                      completed_at__gte=period.start, completed_at__lt=period.end)
            .annotate(seconds=seconds_between("created_at", "completed_at"))
            .order_by("completed_at", "id")
            .values_list("id", "workflow", "source_key", "created_at", "completed_at", "seconds"))


def latency(period: Period) -> list[dict]:
    """Created → completed latency of every workflow (records that succeeded in the period): approved time to
    invoice, milestone to invoice, … One query."""
    secs = seconds_between("created_at", "completed_at")
    rows = {r["workflow"]: r for r in
            SyncRecord.objects.filter(status=SyncRecord.Status.SUCCEEDED, completed_at__gte=period.start,
                                      completed_at__lt=period.end)
            .values("workflow").annotate(n=Count("id"), p50=Percentile(secs, 0.5), p90=Percentile(secs, 0.9),
                                         avg=Avg(secs)).order_by()}
    labels = {wf.name: wf.label for wf in all_workflows()}
    out = []
    for name in list(labels) + sorted(set(rows) - set(labels)):
        r = rows.get(name, {})
        out.append({"workflow": name, "label": labels.get(name, name), "count": r.get("n", 0),
                    "p50_hours": hours(r.get("p50")), "p90_hours": hours(r.get("p90")),
                    "avg_hours": hours(r.get("avg"))})
    return out


def _failed_q() -> Q:
    """A record failed at least once: it was held (held_at is kept until a resubmit clears it; a resolution in
    the audit trail proves an earlier hold), or a call for it failed."""
    return (Q(held_at__isnull=False)
            | Q(Exists(Attempt.objects.filter(record=OuterRef("pk"), outcome__in=FAILED_OUTCOMES)))
            | Q(Exists(AuditEntry.objects.filter(record=OuterRef("pk"), action__in=RESOLUTION_ACTIONS))))


def failure_rate(period: Period) -> dict:
    """Integration failure rate: records created in the period that ever failed / all records created in it, per
    workflow, overall, and per day. Two queries."""
    qs = SyncRecord.objects.filter(created_at__gte=period.start, created_at__lt=period.end)
    failed = _failed_q()
    per_wf = {r["workflow"]: r for r in
              qs.values("workflow").annotate(total=Count("id"), failed=Count("id", filter=failed)).order_by()}
    per_day = {r["day"]: r for r in
               qs.values(day=TruncDate("created_at")).annotate(total=Count("id"), failed=Count("id", filter=failed))
               .order_by()}
    labels = {wf.name: wf.label for wf in all_workflows()}
    rows = []
    for name in list(labels) + sorted(set(per_wf) - set(labels)):
        r = per_wf.get(name, {})
        rows.append({"workflow": name, "label": labels.get(name, name), "total": r.get("total", 0),
                     "failed": r.get("failed", 0), "rate": _rate(r.get("failed", 0), r.get("total", 0))})
    total = sum(r["total"] for r in rows)
    failed_n = sum(r["failed"] for r in rows)
    return {
        "total": total, "failed": failed_n, "rate": _rate(failed_n, total), "workflows": rows,
        "daily": [{"day": d, "total": per_day.get(d, {}).get("total", 0), "failed": per_day.get(d, {}).get("failed", 0),
                   "rate": _rate(per_day.get(d, {}).get("failed", 0), per_day.get(d, {}).get("total", 0))}
                  for d in period.days],
    }


def _rate(part: int, whole: int) -> float | None:
    """A percentage with two decimals, None when there is nothing to divide by."""
    return None if not whole else round(100.0 * part / whole, 2)


def open_exceptions(now: datetime | None = None) -> dict:
    """Open exceptions (held and dead letters, right now) by age since they were held × priority. One query."""
    now = now or timezone.now()
    held_since = Coalesce("held_at", "created_at")
    whens = []
    for i, (_key, _label, low, high) in enumerate(AGE_BUCKETS):
        cond = Q(held_since__lte=now - low)
        if high is not None:
            cond &= Q(held_since__gt=now - high)
        whens.append(When(cond, then=Value(i)))
    rows = (SyncRecord.objects.filter(status__in=SyncRecord.ACTIONABLE)
            .annotate(held_since=held_since)
            .annotate(bucket=Case(*whens, default=Value(0), output_field=IntegerField()))
            .values("bucket", "priority").annotate(n=Count("id")).order_by())
    matrix = [[0] * len(PRIORITIES) for _ in AGE_BUCKETS]
    extra = defaultdict(int)  # priorities outside 1..3, should someone set one
    for r in rows:
        if r["priority"] in PRIORITIES:
            matrix[r["bucket"]][PRIORITIES.index(r["priority"])] += r["n"]
        else:
            extra[r["bucket"]] += r["n"]
    buckets = [{"key": key, "label": label, "counts": matrix[i], "other": extra.get(i, 0),
                "total": sum(matrix[i]) + extra.get(i, 0)} for i, (key, label, _l, _h) in enumerate(AGE_BUCKETS)]
    return {"buckets": buckets, "priorities": list(PRIORITIES),
            "totals": [sum(b["counts"][j] for b in buckets) for j in range(len(PRIORITIES))],
            "total": sum(b["total"] for b in buckets)}


def _resolutions(period: Period):
    """One row per resolved hold: the first resubmit/ignore after the hold began, if it falls in the period.

    The hold began at the audit entry's before.held_at when the service recorded it there, else at the record's
    held_at (record_resubmit clears held_at, so a resubmitted record counts only if its audit entry kept it)."""
    recorded = Case(When(before__held_at__regex=r"^\d{4}-\d{2}-\d{2}[T ]\d",
                         then=Cast(KT("before__held_at"), DateTimeField())), default=None,
                    output_field=DateTimeField())
    earlier = AuditEntry.objects.filter(record=OuterRef("record"), action__in=RESOLUTION_ACTIONS,
                                        at__gte=OuterRef("hold_start"), at__lt=OuterRef("at"))
    return (AuditEntry.objects
            .filter(action__in=RESOLUTION_ACTIONS, record__isnull=False, at__gte=period.start, at__lt=period.end)
            .annotate(hold_start=Coalesce(recorded, F("record__held_at")))
            .filter(hold_start__isnull=False, hold_start__lte=F("at"))
            .filter(~Exists(earlier))
            .annotate(seconds=seconds_between("hold_start", "at"), priority=F("record__priority")))


def resolution_time(period: Period) -> dict:
    """Exception resolution time: held records resolved in the period, hold → first resubmit/ignore; p50/p90
    in hours overall and per priority. Two queries."""
    qs = _resolutions(period)
    secs = F("seconds")
    summary = qs.aggregate(n=Count("id"), p50=Percentile(secs, 0.5), p90=Percentile(secs, 0.9))
    per = {r["priority"]: r for r in qs.values("priority").annotate(n=Count("id"), p50=Percentile(secs, 0.5),
                                                                     p90=Percentile(secs, 0.9)).order_by()}
    return {
        "count": summary["n"], "p50_hours": hours(summary["p50"]), "p90_hours": hours(summary["p90"]),
        "priorities": [{"priority": p, "count": per.get(p, {}).get("n", 0),
                        "p50_hours": hours(per.get(p, {}).get("p50")), "p90_hours": hours(per.get(p, {}).get("p90"))}
                       for p in sorted(set(PRIORITIES) | set(per))],
    }


def resolution_rows(period: Period):
    return (_resolutions(period).order_by("at", "id")
            .values_list("record_id", "record__workflow", "priority", "hold_start", "at", "action", "seconds"))


def revenue_at_risk() -> dict:
    """Sum of amounts per currency held in billing-related exceptions (held and dead letters, right now). One
    query. An empty list means nothing is at risk."""
    rows = (SyncRecord.objects.filter(status__in=SyncRecord.ACTIONABLE, workflow__in=BILLING_WORKFLOWS)
            .values("currency").annotate(n=Count("id"), amount=Coalesce(Sum("amount"), Decimal("0")))
            .order_by("currency"))
    currencies = [{"currency": r["currency"] or "—", "records": r["n"], "amount": r["amount"]} for r in rows]
    return {"currencies": currencies, "records": sum(c["records"] for c in currencies),
            "workflows": list(BILLING_WORKFLOWS)}


def reconciliation_variance(period: Period) -> dict:
    """Reconciliation variance, from the reconciliation runs (apps/reconcile): a run checks every engagement-month
    of its range and writes one line each, but only the lines above the tolerance become exception records — so
    the records alone would count nothing but variances. Nightly runs re-check the same months, so the figures
    are those of the latest run completed in the period (not a sum over runs): engagement-months checked (its
    lines), how many had a variance above the tolerance, and their share; plus `runs` completed in the period and
    the variances still open right now per currency (held/dead exception records, their variance amounts).
    `has_runs` is False when no run ever completed and the workflow never produced a record. Four queries."""
    from apps.reconcile.models import ReconciliationRun

    completed = ReconciliationRun.objects.filter(status=ReconciliationRun.Status.COMPLETED)
    in_period = completed.filter(finished_at__gte=period.start, finished_at__lt=period.end)
    latest = in_period.order_by("-finished_at", "-id").only("id", "finished_at", "lines", "over_tolerance").first()
    qs = SyncRecord.objects.filter(workflow=RECONCILIATION_WORKFLOW)
    if latest is None and not completed.exists() and not qs.exists():
        return {"has_runs": False, "checked": 0, "with_variance": 0, "rate": None, "runs": 0, "run_id": None,
                "run_finished_at": None, "open": []}
    checked = latest.lines if latest else 0
    with_variance = latest.over_tolerance if latest else 0
    open_rows = (qs.filter(status__in=SyncRecord.ACTIONABLE).values("currency")
                 .annotate(n=Count("id"), amount=Coalesce(Sum("amount"), Decimal("0"))).order_by("currency"))
    return {"has_runs": True, "checked": checked, "with_variance": with_variance,
            "rate": _rate(with_variance, checked), "runs": in_period.count() if latest else 0,
            "run_id": latest.pk if latest else None, "run_finished_at": latest.finished_at if latest else None,
            "open": [{"currency": r["currency"] or "—", "records": r["n"], "amount": r["amount"]} for r in open_rows]}


# ---------------------------------------------------------------- 4. connections health


def connection_health(now: datetime | None = None) -> list[dict]:
    """Every connection with: last successful call, error rate over the last hour, consecutive failures, inbound
    callbacks in the last 24 h by status. One query per measure for the whole list (grouped by system)."""
    now = now or timezone.now()
    connections = list(Connection.objects.defer("credentials").order_by("slug"))
    kinds = sorted({c.kind for c in connections})
    last_ok = dict(Attempt.objects.filter(outcome=Attempt.Outcome.OK, system__in=kinds).values("system")
                   .annotate(at=Max("started_at")).order_by().values_list("system", "at"))
    hour = {r["system"]: r for r in
            Attempt.objects.filter(started_at__gte=now - timedelta(hours=1), system__in=kinds)
            .exclude(outcome=Attempt.Outcome.STARTED)
            .values("system").annotate(total=Count("id"), failed=Count("id", filter=~Q(outcome="ok"))).order_by()}
    # consecutive failures: failed calls after the system's last successful one (all of them if it never had one)
    streak = Q(pk__in=[])
    for kind in kinds:
        streak |= Q(system=kind, started_at__gt=last_ok[kind]) if kind in last_ok else Q(system=kind)
    consecutive = dict(Attempt.objects.filter(streak, outcome__in=FAILED_OUTCOMES).values("system")
                       .annotate(n=Count("id")).order_by().values_list("system", "n")) if kinds else {}
    events: dict[int, dict] = defaultdict(dict)
    for r in (InboundEvent.objects.filter(received_at__gte=now - timedelta(hours=24), connection__isnull=False)
              .values("connection_id", "status").annotate(n=Count("id")).order_by()):
        events[r["connection_id"]][r["status"]] = r["n"]
    out = []
    for c in connections:
        h = hour.get(c.kind, {})
        ev = events.get(c.pk, {})
        out.append({
            "connection": c, "last_ok_at": last_ok.get(c.kind),
            "calls_last_hour": h.get("total", 0), "failed_last_hour": h.get("failed", 0),
            "error_rate": _rate(h.get("failed", 0), h.get("total", 0)),
            "consecutive_failures": consecutive.get(c.kind, 0),
            "events": {s: ev.get(s, 0) for s in InboundEvent.Status.values}, "events_total": sum(ev.values()),
        })
    return out
