#!/usr/bin/env python
"""Actuals to forecast at scale: roll up 5,000 engagements × 12 months and write the Anaplan CSV.

    cd /work/main && DATABASE_URL=postgresql://postgres@127.0.0.1:5432/handoff_bench_forecast \\
        .venv/bin/python bench/bench_forecast.py [--engagements 5000] [--months 12] [--rounds 3]

DATABASE_URL names a database this script owns: it is dropped and created afresh, migrated, and filled with
N engagements (four contract types, three currencies), each with per month of the window: 6 approved time
entries (posted), one expense, one invoice and one revenue entry. Then, per round, times:
- roll_up(): the ForecastPeriod rows of every engagement and month (one statement: upsert of what changed + prune),
- csv_file(): the CSV Anaplan imports (one streamed query),
- the Anaplan sandbox's import of that file (parse, validate, write the module's rows), in-process,
and counts the SQL statements of the first two (constant, whatever N).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)
os.chdir(ROOT)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")

from bench.common import say  # noqa: E402


def fresh_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    if not name.startswith("handoff_bench"):
        raise SystemExit(f"refusing to drop {name!r}: use a database named handoff_bench…")
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        c.execute(f'CREATE DATABASE "{name}"')


def build(n: int, months: int, today: date) -> None:
    from django.db import connection

    from apps.canonical.models import Customer, Engagement, LegalEntity, PaymentTerms
    from apps.demo import firm
    from apps.finance.models import ExpenseEntry, Invoice, RevenueEntry, TimeEntry
    from apps.forecast.actuals import Window, add_months

    firm.setup_reference_data()
    les = {le.code: le for le in LegalEntity.objects.all()}
    terms = PaymentTerms.objects.get(code="NET30")
    plan = [("US01", "USD"), ("UK01", "GBP"), ("DE01", "EUR")]
    types = ["t_and_m", "fixed_fee", "milestone", "retainer"]
    window = Window.ending(today, months)
    customers = [Customer(name=f"Bench customer {i}", tax_id=f"BT{i:07d}", currency=plan[i % 3][1],
                          legal_entity=les[plan[i % 3][0]], payment_terms=terms) for i in range(n // 3 + 1)]
    Customer.objects.bulk_create(customers, batch_size=5000)
    engagements = []
    for i in range(n):
        le, cur = plan[i % 3]
        engagements.append(Engagement(
            code=f"ENG-B{i:07d}", name=f"Bench engagement {i}", customer=customers[i // 3], legal_entity=les[le],
            contract_type=types[i % 4], contract_value=Decimal(100000 + i), currency=cur,
            start_date=add_months(window.first, -(i % 3)), end_date=add_months(window.last, 2 + i % 5),
            correlation_id=uuid.uuid4()))
    Engagement.objects.bulk_create(engagements, batch_size=5000)
    say(f"{n} engagements")
    t_seq = 0
    times, expenses, invoices, revenue = [], [], [], []

    def flush():
        TimeEntry.objects.bulk_create(times, batch_size=10000)
        ExpenseEntry.objects.bulk_create(expenses, batch_size=10000)
        Invoice.objects.bulk_create(invoices, batch_size=10000)
        RevenueEntry.objects.bulk_create(revenue, batch_size=10000)
        for rows in (times, expenses, invoices, revenue):
            rows.clear()

    for e in engagements:
        for m in range(months):
            month = add_months(window.first, m)
            for k in range(6):
                t_seq += 1
                times.append(TimeEntry(source_system="bench", source_id=str(t_seq), engagement=e, person="P",
                                       role="Consultant", work_date=month + timedelta(days=k * 4),
                                       hours=Decimal("7.50"), rate=Decimal("150.00"), amount=Decimal("1125.00"),
                                       currency=e.currency, status="posted"))
            expenses.append(ExpenseEntry(source_system="bench", source_id=str(t_seq), engagement=e, category="Travel",
                                         incurred_on=month + timedelta(days=14), spent_amount=Decimal("212.34"),
                                         spent_currency=e.currency, amount=Decimal("212.34"), currency=e.currency,
                                         status="posted"))
            if e.contract_type != "t_and_m" or m < months - 1:  # T&M: the current month is not invoiced yet
                invoices.append(Invoice(engagement=e, customer=e.customer, source_system="netsuite",
                                        external_id=f"B{t_seq}", kind="time_and_expense" if e.contract_type ==
                                        "t_and_m" else "milestone", status="open", period=month, currency=e.currency,
                                        total=Decimal("6962.34"), amount_due=Decimal("6962.34")))
            revenue.append(RevenueEntry(engagement=e, period=month, amount=Decimal("6962.34"), currency=e.currency,
                                        source_system="netsuite", external_id=f"R{t_seq}"))
        if len(times) > 50000:
            flush()
    flush()
    with connection.cursor() as cur:
        cur.execute("ANALYZE")
    say(f"{TimeEntry.objects.count()} time entries, {ExpenseEntry.objects.count()} expenses, "
        f"{Invoice.objects.count()} invoices, {RevenueEntry.objects.count()} revenue entries")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engagements", type=int, default=5000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("set DATABASE_URL to a database this script may drop and create (handoff_bench…)")
    fresh_database(url)

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from apps.forecast import actuals
    from apps.forecast.models import ForecastRefresh
    from apps.sandbox.anaplan import model as anaplan_model

    call_command("migrate", verbosity=0)
    today = timezone.localdate()
    t0 = time.perf_counter()
    build(args.engagements, args.months, today)
    say(f"data built in {time.perf_counter() - t0:.1f} s")
    window = actuals.Window.ending(today, args.months)
    for r in range(1, args.rounds + 1):
        refresh = ForecastRefresh.objects.create(trigger="on_demand")
        with CaptureQueriesContext(connection) as q:
            t0 = time.perf_counter()
            done = actuals.roll_up(window=window, refresh_id=refresh.pk, now=timezone.now())
            t1 = time.perf_counter()
            data, n = actuals.csv_file(window=window)
            t2 = time.perf_counter()
        t3 = time.perf_counter()
        result = anaplan_model.run_import(data.decode("latin-1"), {})  # the sandbox keeps bytes 1:1
        t4 = time.perf_counter()
        ok = result["result"]["successful"]
        say(f"round {r}: roll-up {done.rows} rows ({done.written} written) in {t1 - t0:.2f} s · CSV {n} rows, "
            f"{len(data) / 1e6:.1f} MB in {t2 - t1:.2f} s · {len(q.captured_queries)} SQL statements · sandbox import {t4 - t3:.2f} s "
            f"({'all rows taken' if ok else 'FAILED'})")


if __name__ == "__main__":
    main()
