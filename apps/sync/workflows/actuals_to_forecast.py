"""Actuals to forecast: roll the actuals up per engagement and month and import them into the forecasting tool.

A record per refresh (apps/forecast/services.py starts them: hourly, from the board's button, after a change
order). Stages:
  export — the window's ForecastPeriod rows are brought up to date in one statement (apps/forecast/actuals.py
           has the rules), in the stage's commit; the refresh's as-of time is taken here.
  import — the CSV of those rows is uploaded to Anaplan in chunks, the import is run and its task polled until
           COMPLETE. One import runs at a time (a PostgreSQL advisory lock): every refresh writes the same
           Anaplan file, so two must not interleave upload and import.
Outcomes: Anaplan down / 5xx / 429, a task still running, or a task that failed as a whole (the model busy, the
file unreadable) → retried with backoff (a failed task: upload and import again), then a dead letter for an
integration admin; rows the model refused → held at once (`forecast_rows_rejected`, finance ops: the same data
would fail again) with the failures from the task result and its dump; Anaplan refusing a call (4xx: unknown
ids, bad token) → held (`forecast_import_error`, integration admin). The refresh row follows for the board.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from datetime import date

from django.db import connection
from django.utils import timezone

from apps.connectors.base import DownstreamError

from .base import Hold, Problem, Refusal, Stage, Workflow

# whose queue a held refresh lands in: rows the model refused are finance's data; anything else is the
# connection's (the integration admin's)
OWNER_TEAM = {"forecast_rows_rejected": "finance_ops"}
DEFAULT_TEAM = "integration_admin"
PRIORITY = 2  # reporting, not a money posting (the desk's business priority decides the rest)
IMPORT_REFUSAL = Refusal("Anaplan refused the forecast import: {message}.", reason="forecast_import_error")

LOCK_KEY = 0x48464F52  # "HFOR": one Anaplan import at a time


def validate(payload: dict, *, source_kind: str = "", ref=None) -> list[Problem]:
    """A refresh record only needs to name its refresh."""
    from apps.forecast.models import ForecastRefresh

    refresh_id = payload.get("refresh_id")
    if not isinstance(refresh_id, int) or not ForecastRefresh.objects.filter(pk=refresh_id).exists():
        return [Problem("payload_schema_invalid", f"Forecast refresh “{refresh_id}” does not exist.", ["refresh_id"])]
    return []


def summary(payload: dict) -> dict:
    return {"title": f"Forecast refresh #{payload.get('refresh_id')} ({payload.get('scope') or 'all engagements'}, "
                     f"{str(payload.get('trigger') or '').replace('_', ' ')})", "amount": None, "currency": ""}


def _refresh(ctx):
    from apps.forecast.models import ForecastRefresh

    return ForecastRefresh.objects.get(pk=ctx.context.get("refresh_id") or ctx.payload["refresh_id"])


def stage_export(ctx) -> None:
    from apps.forecast.actuals import MONTHS, Window, roll_up
    from apps.forecast.models import ForecastRefresh

    refresh = _refresh(ctx)
    now = timezone.now()
    window = Window.ending(timezone.localdate(now), int((ctx.source.settings or {}).get("months") or MONTHS))

    def apply():
        done = roll_up(window=window, refresh_id=refresh.pk, now=now, engagement_id=refresh.engagement_id)
        ForecastRefresh.objects.filter(pk=refresh.pk).update(
            status=ForecastRefresh.Status.RUNNING, started_at=refresh.started_at or now, as_of=now, rows=done.rows,
            period_from=window.first, period_to=window.last, finished_at=None, error="")
        ctx.context.update(refresh_id=refresh.pk, as_of=now.isoformat(), period_from=window.first.isoformat(),
                           period_to=window.last.isoformat(), rows=done.rows, rows_changed=done.written,
                           rows_pruned=done.pruned)
        ctx.context.pop("task_id", None)  # new figures: a new upload and import

    ctx.on_commit(apply)


@contextmanager
def import_lock():
    """Session-level advisory lock (released on error too, and by PostgreSQL if the worker dies)."""
    with connection.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
    try:
        yield
    finally:
        with connection.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])


def stage_import(ctx) -> None:
    from apps.connectors.anaplan.mapping import task_summary
    from apps.forecast.actuals import Window, csv_file
    from apps.forecast.models import ForecastRefresh

    refresh = _refresh(ctx)
    window = Window(first=date.fromisoformat(ctx.context["period_from"]),
                    last=date.fromisoformat(ctx.context["period_to"]))
    client = ctx.client_for_role("forecast")
    try:
        with IMPORT_REFUSAL.as_hold():
            with import_lock():
                task_id = ctx.context.get("task_id")
                if not task_id:  # else: a task started by an earlier attempt that was still running: poll it
                    data, rows = csv_file(window=window, engagement_id=refresh.engagement_id)
                    chunks = client.upload_file(data)
                    ctx.context.update(file_name=client.setting("file_name"), file_bytes=len(data), chunks=chunks,
                                       file_sha256=hashlib.sha256(data).hexdigest(), file_rows=rows)
                    task_id = ctx.context["task_id"] = client.start_import()
                task = client.wait_for_import(task_id)
            if task is None:
                raise DownstreamError(f"Anaplan import task {task_id} is still running; polling it again later",
                                      permanent=False, system=client.system)
            result = task_summary(task)
            dump = client.get_import_dump(task_id) if result["dump_available"] else ""
    except Hold:
        ctx.context.pop("task_id", None)  # the import is refused: a resubmission uploads and imports afresh
        raise
    ctx.context.pop("task_id", None)  # finished: a resubmission uploads and imports again
    ctx.context["last_task_id"] = task_id
    file_name = ctx.context.get("file_name", "")
    if not result["ok"]:
        ctx.context["import_result"] = result["raw"]
        if result["state"] != "COMPLETE" or result["step"] == "Failed." or not result["rows_failed"]:
            # the task itself failed (model busy, file unreadable…): retried with backoff, then a dead letter
            raise DownstreamError(f"Anaplan could not run the import of {file_name}: "
                                  f"{'; '.join(result['messages']) or result['step'] or result['state']}",
                                  permanent=False, system=client.system)
        total = result["rows_total"] if result["rows_total"] is not None else "?"
        failures = "; ".join(m for m in result["messages"][1:6]) or "see the failure dump"
        raise Hold([Problem(
            "forecast_rows_rejected",
            f"Anaplan took {result['rows_ok'] or 0} of {total} rows of {file_name} and rejected "
            f"{result['rows_failed']}: {failures}. Correct the data (or the model), then resubmit from the "
            f"start to roll the actuals up again.", [], "anaplan", (dump or "; ".join(result["messages"]))[:4000])])
    now = timezone.now()

    def apply():
        ForecastRefresh.objects.filter(pk=refresh.pk).update(
            status=ForecastRefresh.Status.SUCCEEDED, finished_at=now, task_id=task_id, error="",
            rows_imported=result["rows_ok"], file_name=file_name, file_bytes=ctx.context.get("file_bytes"),
            file_sha256=ctx.context.get("file_sha256", ""), result=result["raw"])

    ctx.on_commit(apply)


def on_hold(ctx, problems) -> None:
    """The refresh row shows the failure (the board reads it)."""
    from apps.forecast.models import ForecastRefresh

    ForecastRefresh.objects.filter(pk=ctx.context.get("refresh_id") or ctx.payload.get("refresh_id")).update(
        status=ForecastRefresh.Status.FAILED, finished_at=timezone.now(),
        error=" ".join(p.message for p in problems)[:4000], task_id=ctx.context.get("last_task_id") or "",
        result=ctx.context.get("import_result") or {})


WORKFLOW = Workflow(
    name="actuals_to_forecast",
    label="Actuals to forecast",
    stages=[
        Stage("export", "Actuals rolled up", stage_export),
        Stage("import", "Imported into Anaplan", stage_import, "forecast"),
    ],
    validate=validate,
    owner_teams=OWNER_TEAM,
    default_team=DEFAULT_TEAM,
    base_priority=PRIORITY,
    fix_fields=[],
    first_stage_on_restart="export",
    on_hold=on_hold,
    field_labels={"refresh_id": "forecast refresh"},
    summary=summary,
)
