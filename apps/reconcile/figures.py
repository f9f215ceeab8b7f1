"""The figures of rules.py for every engagement and month of a period range, in ONE set-based query.

Each source contributes rows (engagement, month, amounts) through UNION ALL — time entries, expense entries,
invoices, revenue entries, and one zero row per month of each retainer inside its dates (so a month whose
retainer invoice is missing still gets a line) — which are summed with a single GROUP BY (engagement, month) and
joined to the engagement's terms. No per-engagement loop: 5,000 engagements × 12 months is one statement.

Which engagement-months get a line: every month in the range with any time, expense, invoice or revenue entry,
plus every month of a retainer that overlaps its dates (from its start date; open-ended to the range's end).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from django.db import connection

from apps.canonical.models import Engagement
from apps.finance.models import ExpenseEntry, Invoice, RevenueEntry, TimeEntry

from .rules import ZERO, Figures


def add_months(d: date, n: int) -> date:
    y, m = divmod(d.month - 1 + n, 12)
    return date(d.year + y, m + 1, 1)


@dataclass(frozen=True)
class Row:
    engagement_id: int
    engagement_code: str
    figures: Figures


SQL = """
WITH src AS (
    SELECT t.engagement_id, date_trunc('month', t.work_date)::date AS period,
           t.amount AS delivered, CASE WHEN t.status = 'posted' THEN t.amount ELSE 0 END AS posted,
           0::numeric AS invoiced, 0::numeric AS recognised
      FROM {time} t
     WHERE t.work_date >= %(start)s AND t.work_date < %(end)s AND t.status <> 'reversed' {eng_t}
    UNION ALL
    SELECT x.engagement_id, date_trunc('month', x.incurred_on)::date,
           x.amount, CASE WHEN x.status = 'posted' THEN x.amount ELSE 0 END, 0, 0
      FROM {expense} x
     WHERE x.incurred_on >= %(start)s AND x.incurred_on < %(end)s AND x.status <> 'reversed' {eng_x}
    UNION ALL
    SELECT i.engagement_id, COALESCE(i.period, date_trunc('month', i.issued_on)::date), 0, 0, i.total, 0
      FROM {invoice} i
     WHERE i.engagement_id IS NOT NULL AND i.status <> 'void'
       AND COALESCE(i.period, date_trunc('month', i.issued_on)::date) >= %(start)s
       AND COALESCE(i.period, date_trunc('month', i.issued_on)::date) < %(end)s {eng_i}
    UNION ALL
    SELECT r.engagement_id, date_trunc('month', r.period)::date, 0, 0, 0, r.amount
      FROM {revenue} r
     WHERE r.period >= %(start)s AND r.period < %(end)s {eng_r}
    UNION ALL
    SELECT e.id, m::date, 0, 0, 0, 0
      FROM {engagement} e
     CROSS JOIN LATERAL generate_series(
           GREATEST(date_trunc('month', e.start_date), %(start)s::date),
           LEAST(date_trunc('month', COALESCE(e.end_date, %(last)s::date)), %(last)s::date),
           interval '1 month') AS m
     WHERE e.contract_type = 'retainer' AND e.start_date IS NOT NULL {eng_e}
), agg AS (
    SELECT engagement_id, period, SUM(delivered) AS delivered, SUM(posted) AS posted,
           SUM(invoiced) AS invoiced, SUM(recognised) AS recognised
      FROM src
     GROUP BY engagement_id, period
)
SELECT e.id, e.code, e.contract_type, e.currency, e.retainer_fee, e.start_date, e.end_date,
       agg.period, agg.delivered, agg.posted, agg.invoiced, agg.recognised
  FROM agg JOIN {engagement} e ON e.id = agg.engagement_id
 ORDER BY agg.period, e.code
"""


def _sql(scoped: bool) -> str:
    def cond(alias, column="engagement_id"):
        return f"AND {alias}.{column} = ANY(%(engagements)s)" if scoped else ""

    return SQL.format(time=TimeEntry._meta.db_table, expense=ExpenseEntry._meta.db_table,
                      invoice=Invoice._meta.db_table, revenue=RevenueEntry._meta.db_table,
                      engagement=Engagement._meta.db_table, eng_t=cond("t"), eng_x=cond("x"), eng_i=cond("i"),
                      eng_r=cond("r"), eng_e=cond("e", "id"))


def _money(value: Decimal | None) -> Decimal:
    """A sum of numeric(18, 2) amounts, always shown with its two decimals (0 → 0.00; nothing is rounded: the
    summed amounts have two decimals already)."""
    return ZERO if value is None else value.quantize(ZERO)


def compute(period_from: date, period_to: date, engagement_ids: list[int] | None = None):
    """Yield a Row per engagement-month from the month of `period_from` through the month of `period_to`
    (both first days of months), optionally for some engagements only. Streams from a server-side cursor."""
    start, last = period_from.replace(day=1), period_to.replace(day=1)
    params = {"start": start, "end": add_months(last, 1), "last": last}
    if engagement_ids is not None:
        params["engagements"] = list(engagement_ids)
    sql = _sql(engagement_ids is not None)
    with connection.chunked_cursor() as cur:
        cur.execute(sql, params)
        while True:
            batch = cur.fetchmany(5000)
            if not batch:
                break
            for (eid, code, ctype, currency, fee, start_date, end_date, period, delivered, posted, invoiced,
                 recognised) in batch:
                yield Row(eid, code, Figures(
                    contract_type=ctype, currency=currency, period=period, delivered=_money(delivered),
                    posted=_money(posted), invoiced=_money(invoiced), recognised=_money(recognised),
                    retainer_fee=fee, start_date=start_date, end_date=end_date))


def compute_one(engagement_id: int, period: date) -> Row | None:
    """The figures of one engagement-month (the re-check of one exception), or None when nothing is there."""
    rows = list(compute(period, period, [engagement_id]))
    return rows[0] if rows else None
