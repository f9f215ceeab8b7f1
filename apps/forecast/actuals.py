"""Actuals per engagement and month, rolled up in PostgreSQL (set-based: a few statements, whatever the number
of engagements), and the CSV file the forecasting tool imports.

The rules, written down once (the change-order check uses the same "billed"):

- **Approved hours** of a month: the hours of the engagement's time entries worked that month that are not
  reversed (a TimeEntry exists only once the PSA approved it), billable or not.
- **Billed** of a month: the totals of the engagement's invoices that are not void, in the month they bill
  (`Invoice.period`, else the month of `issued_on`, else of `created_at`); plus, on a T&M engagement, the amounts
  of time entries and expenses posted to the ERP as billable transactions (status `posted`) in the month they
  were worked / incurred — unless an invoice that is not void already bills them (then the invoice counts them,
  never twice): they are a line of it, or it is the engagement's time & expense invoice for that month.
- **Recognised revenue** of a month: the ERP's revenue entries for that month.
- **Billed to date** at a month: everything billed up to the end of that month (months before the export window
  included). **Backlog** = contract value − billed to date (negative when billed beyond the contract).
- All amounts are in the engagement currency (invoices, priced lines and revenue are kept in it) and are sums of
  amounts already rounded to the minor unit, so nothing is rounded again; the CSV writes them with the currency's
  minor unit (2 decimals; 0 for JPY).
- Rows: one per engagement and month of the window in which the engagement runs (from the month of its start
  date to the month of its end date; open ends count as running), plus any month of the window with hours,
  billing or revenue outside those dates.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from django.db import connection

from apps.finance.money import round_money

from .models import ForecastPeriod

MONTHS = 12  # the export window: this many months, ending with the current month

CSV_HEADER = ["Engagement", "Customer", "Contract Type", "Currency", "Period", "Approved Hours", "Billed",
              "Recognised Revenue", "Billed To Date", "Contract Value", "Backlog"]


def add_months(d: date, n: int) -> date:
    y, m = divmod(d.year * 12 + d.month - 1 + n, 12)
    return date(y, m + 1, 1)


@dataclass(frozen=True)
class Window:
    first: date  # first day of the first month
    last: date  # first day of the last month

    @classmethod
    def ending(cls, today: date, months: int = MONTHS) -> "Window":
        last = today.replace(day=1)
        return cls(first=add_months(last, -(months - 1)), last=last)

    @property
    def months(self) -> list[date]:
        out, m = [], self.first
        while m <= self.last:
            out.append(m)
            m = add_months(m, 1)
        return out

    @property
    def after(self) -> date:
        """The first day after the window."""
        return add_months(self.last, 1)


# "Billed" rows of one engagement set (the `eng` CTE), by month, over all history up to the end of the window.
BILLED_SQL = """
    SELECT engagement_id, period, SUM(amount) AS amount FROM (
        SELECT i.engagement_id,
               date_trunc('month', COALESCE(i.period, i.issued_on, i.created_at::date))::date AS period,
               i.total AS amount
        FROM finance_invoice i JOIN eng ON eng.id = i.engagement_id
        WHERE i.status <> 'void'
        UNION ALL
        SELECT t.engagement_id, date_trunc('month', t.work_date)::date, t.amount
        FROM finance_timeentry t JOIN eng ON eng.id = t.engagement_id
        WHERE eng.contract_type = 't_and_m' AND t.status = 'posted'
          AND NOT EXISTS (SELECT 1 FROM finance_invoiceline l JOIN finance_invoice li ON li.id = l.invoice_id
                          WHERE l.time_entry_id = t.id AND li.status <> 'void')
          AND NOT EXISTS (SELECT 1 FROM finance_invoice ti
                          WHERE ti.engagement_id = t.engagement_id AND ti.kind = 'time_and_expense'
                            AND ti.status <> 'void' AND ti.period = date_trunc('month', t.work_date)::date)
        UNION ALL
        SELECT x.engagement_id, date_trunc('month', x.incurred_on)::date, x.amount
        FROM finance_expenseentry x JOIN eng ON eng.id = x.engagement_id
        WHERE eng.contract_type = 't_and_m' AND x.status = 'posted'
          AND NOT EXISTS (SELECT 1 FROM finance_invoiceline l JOIN finance_invoice li ON li.id = l.invoice_id
                          WHERE l.expense_id = x.id AND li.status <> 'void')
          AND NOT EXISTS (SELECT 1 FROM finance_invoice ti
                          WHERE ti.engagement_id = x.engagement_id AND ti.kind = 'time_and_expense'
                            AND ti.status <> 'void' AND ti.period = date_trunc('month', x.incurred_on)::date)
    ) b
    WHERE period < %(after)s
    GROUP BY 1, 2
"""

ENGAGEMENTS_SQL = """
    SELECT id, currency, contract_value, contract_type,
           date_trunc('month', start_date)::date AS first_month, date_trunc('month', end_date)::date AS last_month
    FROM canonical_engagement
    WHERE (%(engagement)s::bigint IS NULL OR id = %(engagement)s::bigint)
"""

ROLL_UP_SQL = f"""
WITH eng AS ({ENGAGEMENTS_SQL}),
months AS (SELECT unnest(%(months)s::date[]) AS period),  -- a literal list: the planner knows its size
hours AS (
    SELECT t.engagement_id, date_trunc('month', t.work_date)::date AS period, SUM(t.hours) AS hours
    FROM finance_timeentry t JOIN eng ON eng.id = t.engagement_id
    WHERE t.status <> 'reversed' AND t.work_date >= %(first)s AND t.work_date < %(after)s
    GROUP BY 1, 2
),
billed AS ({BILLED_SQL}),
billed_before AS (
    SELECT engagement_id, SUM(amount) AS amount FROM billed WHERE period < %(first)s GROUP BY 1
),
revenue AS (
    SELECT r.engagement_id, date_trunc('month', r.period)::date AS period, SUM(r.amount) AS amount
    FROM finance_revenueentry r JOIN eng ON eng.id = r.engagement_id
    WHERE r.period >= %(first)s AND r.period < %(after)s
    GROUP BY 1, 2
),
grid AS (
    SELECT eng.id AS engagement_id, m.period, eng.currency, eng.contract_value,
           COALESCE(h.hours, 0) AS hours, COALESCE(b.amount, 0) AS billed, COALESCE(r.amount, 0) AS revenue,
           (h.hours IS NOT NULL OR b.amount IS NOT NULL OR r.amount IS NOT NULL) AS active,
           (m.period >= COALESCE(eng.first_month, m.period) AND m.period <= COALESCE(eng.last_month, m.period))
               AS running,
           COALESCE(bb.amount, 0)
               + SUM(COALESCE(b.amount, 0)) OVER (PARTITION BY eng.id ORDER BY m.period) AS billed_to_date
    FROM eng CROSS JOIN months m
    LEFT JOIN hours h ON h.engagement_id = eng.id AND h.period = m.period
    LEFT JOIN billed b ON b.engagement_id = eng.id AND b.period = m.period
    LEFT JOIN revenue r ON r.engagement_id = eng.id AND r.period = m.period
    LEFT JOIN billed_before bb ON bb.engagement_id = eng.id
),
fresh AS (
    SELECT engagement_id, period, currency, hours, billed, revenue, billed_to_date, contract_value,
           contract_value - billed_to_date AS backlog
    FROM grid WHERE running OR active
),
-- rows are written only where a figure changed (an hourly refresh rewrites little): `refresh` and `updated_at`
-- say which refresh last changed a row
written AS (
    INSERT INTO forecast_forecastperiod
        (engagement_id, period, currency, approved_hours, billed, recognised_revenue, billed_to_date,
         contract_value, backlog, refresh_id, updated_at)
    SELECT engagement_id, period, currency, hours, billed, revenue, billed_to_date, contract_value, backlog,
           %(refresh)s, %(now)s
    FROM fresh
    ON CONFLICT (engagement_id, period) DO UPDATE SET
        currency = EXCLUDED.currency, approved_hours = EXCLUDED.approved_hours, billed = EXCLUDED.billed,
        recognised_revenue = EXCLUDED.recognised_revenue, billed_to_date = EXCLUDED.billed_to_date,
        contract_value = EXCLUDED.contract_value, backlog = EXCLUDED.backlog, refresh_id = EXCLUDED.refresh_id,
        updated_at = EXCLUDED.updated_at
    WHERE (forecast_forecastperiod.currency, forecast_forecastperiod.approved_hours, forecast_forecastperiod.billed,
           forecast_forecastperiod.recognised_revenue, forecast_forecastperiod.billed_to_date,
           forecast_forecastperiod.contract_value, forecast_forecastperiod.backlog)
          IS DISTINCT FROM (EXCLUDED.currency, EXCLUDED.approved_hours, EXCLUDED.billed, EXCLUDED.recognised_revenue,
                            EXCLUDED.billed_to_date, EXCLUDED.contract_value, EXCLUDED.backlog)
    RETURNING 1
),
-- rows of the window (and scope) that no longer apply (e.g. a change order moved the engagement's dates)
pruned AS (
    DELETE FROM forecast_forecastperiod f
    WHERE f.period >= %(first)s AND f.period <= %(last)s
      AND (%(engagement)s::bigint IS NULL OR f.engagement_id = %(engagement)s::bigint)
      AND NOT EXISTS (SELECT 1 FROM fresh WHERE fresh.engagement_id = f.engagement_id AND fresh.period = f.period)
    RETURNING 1
)
SELECT (SELECT count(*) FROM fresh), (SELECT count(*) FROM written), (SELECT count(*) FROM pruned)
"""


@dataclass(frozen=True)
class RollUp:
    rows: int  # rows of the window (and scope) now
    written: int  # new or changed
    pruned: int  # no longer applying, deleted


def roll_up(*, window: Window, refresh_id: int | None, now, engagement_id: int | None = None) -> RollUp:
    """Bring the window's ForecastPeriod rows (all engagements, or one) up to date in one statement."""
    params = {"first": window.first, "last": window.last, "after": window.after, "engagement": engagement_id,
              "refresh": refresh_id, "now": now, "months": window.months}
    with connection.cursor() as cur:
        cur.execute(ROLL_UP_SQL, params)
        return RollUp(*cur.fetchone())


def billed_to_date(engagement) -> Decimal:
    """Everything billed on one engagement so far (the module's rule; months in the future included)."""
    sql = f"WITH eng AS ({ENGAGEMENTS_SQL}) SELECT COALESCE(SUM(amount), 0) FROM ({BILLED_SQL}) x"
    with connection.cursor() as cur:
        cur.execute(sql, {"engagement": engagement.pk, "after": date(9999, 12, 1)})
        return Decimal(cur.fetchone()[0])


def _amount(value: Decimal, currency: str) -> str:
    return str(round_money(value, currency))


def csv_rows(*, window: Window, engagement_id: int | None = None):
    """The export's rows (header first), ordered by engagement code and month: one query, streamed."""
    yield CSV_HEADER
    qs = (ForecastPeriod.objects.filter(period__gte=window.first, period__lte=window.last)
          .order_by("engagement__code", "period")
          .values_list("engagement__code", "engagement__customer__name", "engagement__contract_type", "currency",
                       "period", "approved_hours", "billed", "recognised_revenue", "billed_to_date",
                       "contract_value", "backlog"))
    if engagement_id is not None:
        qs = qs.filter(engagement_id=engagement_id)
    for code, customer, ctype, cur, period, hours, billed, revenue, to_date, value, backlog in qs.iterator(
            chunk_size=5000):
        yield [code, customer, ctype, cur, f"{period:%Y-%m}", str(hours), _amount(billed, cur),
               _amount(revenue, cur), _amount(to_date, cur), _amount(value, cur), _amount(backlog, cur)]


def csv_file(*, window: Window, engagement_id: int | None = None) -> tuple[bytes, int]:
    """(UTF-8 CSV bytes, data rows). RFC 4180: comma-separated, CRLF line ends, quotes where needed."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    n = -1
    for row in csv_rows(window=window, engagement_id=engagement_id):
        writer.writerow(row)
        n += 1
    return out.getvalue().encode("utf-8"), n
