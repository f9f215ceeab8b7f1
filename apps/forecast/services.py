"""Starting forecast refreshes and reading their state for the board.

A refresh is a ForecastRefresh row plus the sync record (workflow `actuals_to_forecast`) that does the work, so a
refresh gets what every record gets: retries with backoff, a hold with the tool's own message, dead letters,
resubmission from the desk, an attempt row per call. Rules:
- One full refresh is open at a time: the schedule (and the board's button) start none while an earlier full
  refresh is queued, running, retrying — or failed and waiting on the desk (a new one would fail the same way;
  resubmit or resolve that one). A change order's refresh covers one engagement and is always started.
- The schedule (hourly, config/cron.py; rqcron also runs it as soon as the scheduler starts) starts none either
  within SCHEDULE_GAP of a full refresh that succeeded: the figures are fresh (say the refresh `demo_setup` or a
  person started just before the scheduler's first run).
- With no enabled forecasting connection the schedule records a *skipped* refresh (status `skipped`, the reason
  as its error, no sync record) instead of failing its job every hour: the board shows it. While it lasts, the
  same row is brought up to date rather than a new one added each hour.
- The forecast is *stale* when its last successful full refresh took its figures (`as_of`) longer ago than
  FinancePolicy.forecast_stale_after_hours, or when there was none.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Subquery
from django.utils import timezone

from apps.finance.models import FinancePolicy
from apps.sync.desk import user_teams
from apps.sync.models import AuditEntry, Connection, SyncRecord
from apps.sync.wakeup import PRIORITY_QUEUE, wake
from apps.sync.workflows.actuals_to_forecast import WORKFLOW as REFRESH_WORKFLOW

from .models import ForecastRefresh

OPEN_STATUSES = ("pending", "in_progress", "retrying", "held", "dead")
REFRESH_TEAMS = {"finance_ops", "integration_admin"}
SCHEDULE_GAP = timedelta(minutes=30)  # well under the hourly interval, which drifts by the queue's delay
NOT_CONFIGURED = ("No enabled forecasting connection (Anaplan) is configured: the scheduled refresh was skipped. "
                  "Add a connection with role forecast (Django admin → Connections).")


class NoForecastConnection(Exception):
    """No enabled connection has the forecasting role."""


class RefreshOpen(Exception):
    """A full refresh is already open (running, or failed and waiting on the desk)."""

    def __init__(self, refresh: ForecastRefresh, record_status: str):
        super().__init__(f"Refresh #{refresh.pk} is still {record_status.replace('_', ' ')}")
        self.refresh = refresh
        self.record_status = record_status


def can_refresh(user) -> bool:
    """Finance ops and integration admins (who may act on desk records) may start a refresh."""
    if not user or not user.is_authenticated or not user.has_perm("sync.resubmit_syncrecord"):
        return False
    return user.is_superuser or bool(user_teams(user) & REFRESH_TEAMS)


def forecast_connection() -> Connection:
    conn = Connection.objects.filter(role=Connection.Role.FORECAST, enabled=True).order_by("id").first()
    if conn is None:
        raise NoForecastConnection("No enabled forecasting connection (Anaplan) is configured.")
    return conn


def open_full_refresh() -> tuple[ForecastRefresh, str] | None:
    """The full refresh still open, with its record's status (one query)."""
    ids = SyncRecord.objects.filter(workflow=REFRESH_WORKFLOW.name, status__in=OPEN_STATUSES).values("id")
    refresh = (ForecastRefresh.objects.filter(engagement__isnull=True, sync_record_id__in=ids)
               .order_by("-created_at").first())
    if refresh is None:
        return None
    return refresh, SyncRecord.objects.filter(pk=refresh.sync_record_id).values_list("status", flat=True).first()


def request_refresh(*, trigger: str, engagement=None, actor=None, reason: str = "") -> ForecastRefresh:
    """Queue a refresh (all engagements, or one): the row, its sync record and — for a person — an audit entry,
    in one transaction; a worker is woken once it commits."""
    conn = forecast_connection()
    now = timezone.now()
    with transaction.atomic():
        if engagement is None:
            # serialise "is one open?" across concurrent callers (the scheduler and the button)
            Connection.objects.select_for_update().filter(pk=conn.pk).values_list("pk").first()
            if (found := open_full_refresh()) is not None:
                raise RefreshOpen(*found)
        refresh = ForecastRefresh.objects.create(trigger=trigger, engagement=engagement, requested_by=actor)
        payload = {"refresh_id": refresh.pk, "trigger": trigger,
                   "engagement_code": engagement.code if engagement else "",
                   "scope": engagement.code if engagement else "all engagements"}
        record = SyncRecord.objects.create(
            workflow=REFRESH_WORKFLOW.name, stage=REFRESH_WORKFLOW.stages[0].name, status=SyncRecord.Status.PENDING,
            source_connection=conn, source_key=f"refresh:{refresh.pk}",
            title=REFRESH_WORKFLOW.summary(payload)["title"], original_payload=payload, current_payload=payload,
            context={"refresh_id": refresh.pk}, priority=REFRESH_WORKFLOW.priority(payload), next_attempt_at=now,
            owner_team=REFRESH_WORKFLOW.owner_team(""))
        refresh.sync_record_id = record.pk
        refresh.save(update_fields=["sync_record_id"])
        if actor is not None:
            AuditEntry.objects.create(actor=actor, record=record, action="forecast_refresh", before={},
                                      after={"refresh_id": refresh.pk, "trigger": trigger, "scope": payload["scope"]},
                                      reason=reason)
        wake(f"records:{PRIORITY_QUEUE[record.priority]}")
    return refresh


def schedule(now: datetime | None = None) -> tuple[ForecastRefresh | None, str]:
    """The scheduled full refresh: (the refresh queued, "queued"), or (None, why not): "open" (one is still
    open), "fresh" (one succeeded within SCHEDULE_GAP), "not_configured" (no forecasting connection; a skipped
    refresh is recorded for the board)."""
    now = now or timezone.now()
    try:
        forecast_connection()
    except NoForecastConnection:
        record_not_configured(now)
        return None, "not_configured"
    if ForecastRefresh.objects.filter(engagement__isnull=True, status=ForecastRefresh.Status.SUCCEEDED,
                                      finished_at__gte=now - SCHEDULE_GAP).exists():
        return None, "fresh"
    try:
        return request_refresh(trigger=ForecastRefresh.Trigger.SCHEDULE), "queued"
    except RefreshOpen:
        return None, "open"
    except NoForecastConnection:  # disabled meanwhile
        record_not_configured(now)
        return None, "not_configured"


def scheduled_refresh() -> ForecastRefresh | None:
    """The hourly full refresh; None when none was started (see schedule())."""
    return schedule()[0]


def record_not_configured(now: datetime | None = None) -> ForecastRefresh:
    """A scheduled refresh that could not start for want of a forecasting connection: the last refresh row when
    it is already such a skip (brought up to date), else a new one."""
    now = now or timezone.now()
    last = ForecastRefresh.objects.order_by("-created_at", "-id").first()
    if last is not None and last.status == ForecastRefresh.Status.SKIPPED:
        ForecastRefresh.objects.filter(pk=last.pk).update(finished_at=now, error=NOT_CONFIGURED)
        last.finished_at, last.error = now, NOT_CONFIGURED
        return last
    return ForecastRefresh.objects.create(trigger=ForecastRefresh.Trigger.SCHEDULE,
                                          status=ForecastRefresh.Status.SKIPPED, started_at=now, finished_at=now,
                                          error=NOT_CONFIGURED)


# ---------------------------------------------------------------- the board

RECORD_STATE = {"pending": "running", "in_progress": "running", "retrying": "retrying", "held": "failed",
                "dead": "failed", "succeeded": "succeeded", "ignored": "ignored"}


@dataclass
class BoardStatus:
    last: ForecastRefresh | None
    state: str  # queued / running / retrying / succeeded / failed / ignored / skipped (not configured) / none
    message: str  # the failure or retry reason, in the record's words
    record_id: int | None
    good_as_of: datetime | None  # when the last successful full refresh took its figures
    stale: bool
    age: timedelta | None  # how old those figures are
    stale_after_hours: int | None  # the finance policy's limit (None when there was never a refresh)
    can_refresh: bool = False

    @property
    def age_hours(self) -> float | None:
        return round(self.age.total_seconds() / 3600, 1) if self.age is not None else None


def board_status(now: datetime | None = None) -> BoardStatus:
    """The last refresh (any scope) and its state; the staleness of the last good full refresh.

    One query (the last refresh, with the last good one's as-of time and the policy's limit as subqueries), plus
    one for its sync record while it is not succeeded (running, retrying, failed: the record says how)."""
    now = now or timezone.now()
    good = (ForecastRefresh.objects.filter(status=ForecastRefresh.Status.SUCCEEDED, engagement__isnull=True,
                                           as_of__isnull=False).order_by("-as_of"))
    last = (ForecastRefresh.objects.select_related("engagement").order_by("-created_at", "-id")
            .annotate(good_as_of=Subquery(good.values("as_of")[:1]),
                      stale_hours=Subquery(FinancePolicy.objects.filter(pk=1)
                                           .values("forecast_stale_after_hours")[:1]))
            .first())
    if last is None:
        return BoardStatus(last=None, state="none", message="", record_id=None, good_as_of=None, stale=True,
                           age=None, stale_after_hours=None)
    hours = last.stale_hours if last.stale_hours is not None else \
        FinancePolicy._meta.get_field("forecast_stale_after_hours").default
    state, message, record_id = last.status, last.error, last.sync_record_id
    if last.status != ForecastRefresh.Status.SUCCEEDED and last.sync_record_id:  # succeeded is final
        rec = SyncRecord.objects.filter(pk=last.sync_record_id).values("status", "message").first()
        if rec is None:  # archived by retention
            record_id = None
        else:
            state = RECORD_STATE.get(rec["status"], state)
            if state == "running" and last.status == ForecastRefresh.Status.QUEUED:
                state = "queued"
            if state == "failed":
                message = last.error or rec["message"]
            elif state == "retrying":
                message = rec["message"]
    age = now - last.good_as_of if last.good_as_of else None
    return BoardStatus(last=last, state=state, message=message, record_id=record_id, good_as_of=last.good_as_of,
                       stale=age is None or age > timedelta(hours=hours), age=age, stale_after_hours=hours)
