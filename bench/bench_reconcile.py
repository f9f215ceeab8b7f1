#!/usr/bin/env python
"""Reconciliation at scale: 5,000 engagements × 12 months (60,000 engagement-months) in one run.

    cd /work/main && .venv/bin/python bench/bench_reconcile.py [--engagements 5000] [--reuse]

1. Starts its own embedded PostgreSQL under .data/bench-reconcile/ (port 54371) — or uses DATABASE_URL with
   --wipe-external (its engagements, finance rows, reconciliation runs and reconciliation records are truncated)
   — migrates, and creates the reference data and connections (the ERP connection the exceptions hang on).
2. Generates the book with PostgreSQL COPY: per engagement-month, T&M (40 %) 20 time entries and 2 expenses,
   posted; milestone / fixed fee (40 %) 8 time entries and an invoice every third month; retainer (20 %) 8 time
   entries and the monthly invoice; revenue recognised accordingly — with ~3 % of months deliberately off (a
   line priced but not posted, revenue a cent or a few hundred off, a missing retainer invoice), so the run also
   opens ~2,000 exceptions. Then VACUUM ANALYZE. `--reuse` keeps a book of exactly that size.
3. Measures, in this process:
   - the set-based figures query alone (all 60,000 rows fetched);
   - run 1: lines written + exceptions opened (the first night);
   - run 2: the same data again (idempotent: no record written);
   and prints seconds and lines/s for each, plus the report page (over-tolerance filter) and the full CSV.
Everything it started is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import uuid
from datetime import date, datetime, timedelta, timezone as dt_tz
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)
os.chdir(ROOT)

from bench.common import (bench_user, refuse_external, say, setup_django, start_engines,  # noqa: E402
                          stop_engines, stop_on_sigterm)

DATA = ROOT / ".data" / "bench-reconcile"
PG_PORT = int(os.environ.get("HANDOFF_BENCH_RECONCILE_PG_PORT", 54371))
SEED = 20261123
CENT = Decimal("0.01")
RATES = {"USD": [Decimal(x) for x in ("450.00", "312.50", "212.75", "147.50", "98.33")],
         "GBP": [Decimal(x) for x in ("380.00", "265.25", "199.99", "133.33", "87.45")],
         "EUR": [Decimal(x) for x in ("420.00", "295.50", "225.25", "168.75", "112.50")]}
ROLES = ["Partner", "Manager", "Senior Consultant", "Consultant", "Analyst"]
HOURS = [Decimal(x) for x in ("7.50", "0.33", "1.67", "2.25", "0.17", "0.50", "3.75", "8.00", "1.25", "4.33")]
LE_FOR = {"USD": "US01", "GBP": "UK01", "EUR": "DE01"}


def r2(x: Decimal) -> Decimal:
    return x.quantize(CENT, rounding=ROUND_HALF_UP)


def add_months(d: date, n: int) -> date:
    y, m = divmod(d.month - 1 + n, 12)
    return date(d.year + y, m + 1, 1)


# ------------------------------------------------------------------ the book (COPY)


class Copier:
    """COPY rows of a Django model: every concrete column, Python defaults filled in (auto_now → now)."""

    def __init__(self, conn, model, with_id: bool = False):
        from django.db.models import AutoField

        self.conn, self.model = conn, model
        self.fields = [f for f in model._meta.concrete_fields if with_id or not isinstance(f, AutoField)]
        self.now = datetime.now(dt_tz.utc)

    def value(self, f, row: dict):
        if f.attname in row:
            return row[f.attname]
        if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False):
            return self.now
        return f.get_default()  # the default, "" for a text column without one, else None

    def copy(self, rows) -> int:
        cols = ", ".join(f'"{f.column}"' for f in self.fields)
        n = 0
        with self.conn.cursor() as cur:
            with cur.copy(f"COPY {self.model._meta.db_table} ({cols}) FROM STDIN") as cp:
                for row in rows:
                    cp.write_row([self.value(f, row) for f in self.fields])
                    n += 1
        return n


def generate(args, months: list[date]) -> dict:
    import psycopg
    from django.db import connection

    from apps.canonical.models import Customer, Engagement, LegalEntity
    from apps.finance.models import ExpenseEntry, Invoice, RevenueEntry, TimeEntry

    rng = random.Random(SEED)
    les = {le.code: le.pk for le in LegalEntity.objects.all()}
    connection.close()
    t0 = time.perf_counter()
    n = args.engagements
    counts = {}
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("TRUNCATE reconcile_reconciliationline, reconcile_reconciliationrun, finance_invoiceline, "
                     "finance_payment, finance_invoice, finance_revenueentry, finance_timeentry, "
                     "finance_expenseentry, canonical_milestone, canonical_engagementchange, canonical_engagement "
                     "RESTART IDENTITY CASCADE")
        conn.execute("DELETE FROM sync_auditentry WHERE record_id IN (SELECT id FROM sync_syncrecord WHERE "
                     "workflow = 'reconciliation')")
        conn.execute("DELETE FROM sync_syncrecord WHERE workflow = 'reconciliation'")
        conn.execute("DELETE FROM canonical_customer WHERE name LIKE 'Bench customer %%'")
        with conn.transaction():
            cust_ids = {}
            cur_of = [rng.choice(["USD", "USD", "EUR", "GBP"]) for _ in range(n)]
            rows = []
            for i in range(0, n, 10):
                rows.append({"name": f"Bench customer {i // 10}", "currency": cur_of[i],
                             "legal_entity_id": les[LE_FOR[cur_of[i]]], "key": uuid.uuid4()})
            Copier(conn, Customer).copy(rows)
            for k, (pk,) in enumerate(conn.execute("SELECT id FROM canonical_customer WHERE name LIKE "
                                                  "'Bench customer %%' ORDER BY id").fetchall()):
                cust_ids[k] = pk
            engagements = []
            for i in range(n):
                ctype = ["t_and_m", "t_and_m", "milestone", "fixed_fee", "retainer"][i % 5]
                cur = cur_of[i]
                engagements.append({
                    "id": i + 1, "key": uuid.uuid4(), "code": f"BEN-{i + 1:06d}", "name": f"Bench engagement {i + 1}",
                    "customer_id": cust_ids[i // 10], "legal_entity_id": les[LE_FOR[cur]], "contract_type": ctype,
                    "contract_value": Decimal("120000.00"), "currency": cur,
                    "start_date": months[0] - timedelta(days=rng.randint(0, 200)), "end_date": None,
                    "correlation_id": uuid.uuid4(),
                    "retainer_fee": Decimal(rng.choice(["8333.33", "12500.00", "4166.67"])) if ctype == "retainer"
                    else None})
            Copier(conn, Engagement, with_id=True).copy(engagements)
            conn.execute("SELECT setval(pg_get_serial_sequence('canonical_engagement', 'id'), %s)", [n])
        say(f"{n:,} engagements; COPY of time, expenses, invoices and revenue …")
        seq = {"t": 0, "x": 0, "i": 0, "r": 0}
        times, expenses, invoices, revenue = [], [], [], []
        off = 0

        def flush(force=False):
            for model, buf, key in ((TimeEntry, times, "time"), (ExpenseEntry, expenses, "expenses"),
                                    (Invoice, invoices, "invoices"), (RevenueEntry, revenue, "revenue")):
                if buf and (force or len(buf) >= 50_000):
                    with conn.transaction():
                        counts[key] = counts.get(key, 0) + Copier(conn, model).copy(buf)
                    buf.clear()

        for e in engagements:
            cur, ctype, eid = e["currency"], e["contract_type"], e["id"]
            for mi, m in enumerate(months):
                wrong = rng.random() < 0.03
                off += wrong
                posted_sum = Decimal("0.00")
                leak = wrong and ctype == "t_and_m" and rng.random() < 0.5
                for j in range(20 if ctype == "t_and_m" else 8):
                    seq["t"] += 1
                    k = rng.randrange(5)
                    hours = rng.choice(HOURS)
                    amount = r2(hours * RATES[cur][k])
                    status = "priced" if (leak and j == 0) else "posted"
                    if status == "posted":
                        posted_sum += amount
                    times.append({"source_system": "kantata", "source_id": f"b{seq['t']}", "engagement_id": eid,
                                  "person": "Bench person", "role": ROLES[k], "work_date": m + timedelta(days=j),
                                  "hours": hours, "rate": RATES[cur][k], "currency": cur, "amount": amount,
                                  "status": status, "base_currency": cur, "base_amount": amount,
                                  "fx_rate": Decimal(1), "fx_date": m + timedelta(days=j)})
                if ctype == "t_and_m":
                    for j in range(2):
                        seq["x"] += 1
                        amount = Decimal(rng.randint(1000, 90000)) / 100
                        posted_sum += amount
                        expenses.append({"source_system": "kantata", "source_id": f"bx{seq['x']}",
                                         "engagement_id": eid, "category": "Travel",
                                         "incurred_on": m + timedelta(days=14 + j),
                                         "spent_amount": amount, "spent_currency": cur, "currency": cur,
                                         "amount": amount, "status": "posted"})
                    recognised = posted_sum - (Decimal(rng.choice(["0.01", "0.02", "250.00"])) if wrong and not leak
                                               else Decimal(0))
                else:
                    billed = Decimal(0)
                    if ctype == "retainer":
                        billed = e["retainer_fee"]
                        if not wrong:  # a wrong month: the retainer invoice is missing
                            seq["i"] += 1
                            invoices.append({"engagement_id": eid, "kind": "retainer", "source_system": "netsuite",
                                             "external_id": f"bi{seq['i']}", "number": f"INV-B{seq['i']}",
                                             "status": "paid", "period": m, "issued_on": m + timedelta(days=1),
                                             "currency": cur, "total": billed})
                    elif mi % 3 == 2:
                        billed = Decimal("40000.00")
                        seq["i"] += 1
                        invoices.append({"engagement_id": eid, "kind": ctype, "source_system": "netsuite",
                                         "external_id": f"bi{seq['i']}", "number": f"INV-B{seq['i']}",
                                         "status": "open", "period": m, "issued_on": m + timedelta(days=20),
                                         "currency": cur, "total": billed})
                    recognised = billed - (Decimal("0.05") if wrong and ctype != "retainer" else Decimal(0))
                if recognised:
                    seq["r"] += 1
                    revenue.append({"engagement_id": eid, "period": m, "amount": recognised, "currency": cur,
                                    "source_system": "netsuite", "external_id": f"br{seq['r']}"})
            flush()
        flush(force=True)
        say("VACUUM ANALYZE")
        for table in ("canonical_engagement", "finance_timeentry", "finance_expenseentry", "finance_invoice",
                      "finance_revenueentry", "sync_syncrecord"):
            conn.execute(f"VACUUM ANALYZE {table}")
    counts["engagements"] = n
    counts["months_off"] = off
    counts["seconds"] = time.perf_counter() - t0
    return counts


# ------------------------------------------------------------------ measuring


def measure(user, months) -> dict:
    from django.db import connection
    from django.test import Client

    from apps.reconcile import figures, services
    from apps.reconcile.models import ReconciliationLine
    from apps.sync.models import SyncRecord

    out = {}
    t = time.perf_counter()
    rows = sum(1 for _ in figures.compute(months[0], months[-1]))
    out["query"] = (time.perf_counter() - t, rows)
    say(f"figures query alone: {rows:,} engagement-months in {out['query'][0]:.2f} s")
    for label in ("run 1 (first night: lines + exceptions)", "run 2 (same data again)"):
        t = time.perf_counter()
        run = services.run_now(trigger="command", period_from=months[0], period_to=months[-1])
        el = time.perf_counter() - t
        out[label] = (el, run)
        say(f"{label}: {run.lines:,} lines in {el:.2f} s = {run.lines / el:,.0f} lines/s; {run.over_tolerance:,} "
            f"above the tolerance, {run.opened:,} opened, {run.updated} updated, {run.resolved} resolved")
    out["records"] = SyncRecord.objects.filter(workflow="reconciliation").count()
    client = Client()
    client.force_login(user)
    timings = []
    for _ in range(6):
        t = time.perf_counter()
        assert client.get("/reconciliation/?over=1").status_code == 200
        timings.append((time.perf_counter() - t) * 1000)
    out["page_ms"] = sorted(timings[1:])[len(timings[1:]) // 2]
    t = time.perf_counter()
    body = b"".join(client.get("/reconciliation/export.csv").streaming_content)
    out["csv"] = (time.perf_counter() - t, body.count(b"\n") - 1, len(body))
    out["lines_total"] = ReconciliationLine.objects.count()
    connection.close()
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engagements", type=int, default=5000)
    p.add_argument("--reuse", action="store_true", help="keep a generated book of exactly that size")
    p.add_argument("--wipe-external", action="store_true",
                   help="allow truncating engagements and finance rows in the database named by DATABASE_URL")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    stop_on_sigterm()
    started = []
    try:
        refuse_external(("DATABASE_URL",), args.wipe_external,
                        "its engagements and finance rows would be truncated; pass --wipe-external")
        started = start_engines(DATA, PG_PORT)
        setup_django()
        user = bench_user("bench_finance", "finance_ops")
        from django.utils import timezone

        from apps.canonical.models import Engagement
        from apps.finance.models import TimeEntry
        from apps.reconcile import services

        a, b = services.default_range(timezone.localdate())
        months = [add_months(a, k) for k in range(12)]
        assert months[-1] == b
        if args.reuse and Engagement.objects.count() == args.engagements and TimeEntry.objects.exists():
            say(f"reusing the book of {args.engagements:,} engagements")
            gen = None
        else:
            gen = generate(args, months)
            say(f"generated in {gen['seconds']:.0f} s: {gen['time']:,} time entries, {gen['expenses']:,} expenses, "
                f"{gen['invoices']:,} invoices, {gen['revenue']:,} revenue entries; {gen['months_off']:,} "
                f"engagement-months deliberately off")
        res = measure(user, months)
        r1, r2_ = res["run 1 (first night: lines + exceptions)"], res["run 2 (same data again)"]
        print()
        print(f"Reconciliation of {args.engagements:,} engagements × 12 months "
              f"({months[0]:%Y-%m} … {months[-1]:%Y-%m}), {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
        print(f"  figures query (set-based, all rows fetched) {res['query'][0]:7.2f} s  {res['query'][1]:>7,} rows  "
              f"{res['query'][1] / res['query'][0]:>9,.0f} rows/s")
        for label, (el, run) in (("run 1: lines + exceptions opened", r1), ("run 2: same data, idempotent", r2_)):
            print(f"  {label:<44}{el:7.2f} s  {run.lines:>7,} lines {run.lines / el:>9,.0f} lines/s  "
                  f"opened {run.opened:,} updated {run.updated} resolved {run.resolved}")
        print(f"  exception records: {res['records']:,} (one per engagement-month above the tolerance)")
        print(f"  report page (?over=1, 50 lines): median {res['page_ms']:.0f} ms")
        print(f"  CSV export of every line: {res['csv'][1]:,} rows, {res['csv'][2] / 1e6:.1f} MB in "
              f"{res['csv'][0]:.2f} s")
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything", file=sys.stderr)
        return 130
    finally:
        stop_engines(started)


if __name__ == "__main__":
    sys.exit(main())
