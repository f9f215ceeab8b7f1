#!/usr/bin/env python
"""Bulk actions at scale: preview and confirm a fix for 10,000 held quote-to-project records.

    cd /work/main && .venv/bin/python bench/bench_bulk.py [--n 10000] [--rounds 3] [--no-run]

Prepares its own database: unless DATABASE_URL / REDIS_URL are set, an embedded PostgreSQL (fsync off) on
127.0.0.1:54359 and an embedded Valkey on 127.0.0.1:63829, with their data under .data/bench-bulk/, a fresh
`handoff` database, migrations, reference data and connections (to an address nothing listens on: no worker
runs, nothing is called). With DATABASE_URL / REDIS_URL set, --external is required: the records it creates are
deleted at the end, but the bulk job it enqueues goes to that Redis's "default" queue.

Creates N held records (bulk_create; 5 % also lack a tax id, 2 % duplicate an existing customer), then times:
- resolving the queue filter "reason=missing_legal_entity" to record ids (what "all matching" does),
- bulk_preview(action="fix", legal_entity=US01) — target ≤ 2 s for 10,000,
- bulk_confirm — the one RQ job enqueued after commit — target ≤ 5 s,
- and (unless --no-run) the job itself, bulk_run, in this process: chunks of 500, one UPDATE each.
Stops whatever it started, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)
os.chdir(ROOT)

from bench.common import (bench_user, refuse_external, say, setup_django, start_engines,  # noqa: E402
                          stop_engines, stop_on_sigterm)

DATA = ROOT / ".data" / "bench-bulk"
PG_PORT = int(os.environ.get("HANDOFF_BENCH_BULK_PG_PORT", 54359))
VALKEY_PORT = int(os.environ.get("HANDOFF_BENCH_BULK_VALKEY_PORT", 63829))
TARGETS = {"preview_s": 2.0, "confirm_s": 5.0}
KEY_PREFIX = "bench-bulk:"


def make_records(n: int):
    from django.db import connection
    from django.utils import timezone

    from apps.sync.models import Connection, SyncRecord

    user = bench_user("bench-bulk-pmo", "pmo")
    hubspot = Connection.objects.get(slug="hubspot")
    now = timezone.now()
    objs = []
    for i in range(n):
        name, tax_id = f"Bench Account {i}", f"BB-{i:08d}"
        if i % 50 == 7:  # 2 %: the same name and tax id as an existing customer
            name, tax_id = "Northwind Traders", "GB123456789"
        if i % 20 == 3:  # 5 %: no tax id either
            tax_id = ""
        p = {"opportunity_id": f"bb{i}", "opportunity_name": f"{name} — project {i}", "amount": "25000.00",
             "currency": "USD", "close_date": "2026-03-31", "contract_type": "fixed_fee", "start_date": "2026-04-01",
             "end_date": "2026-09-30", "service_line": "Implementation", "project_template": "",
             "billing_schedule": "", "billing_terms": "NET30", "legal_entity": "",
             "account": {"id": f"bba{i}", "name": name, "tax_id": tax_id, "country": "US", "parent_id": ""},
             "deal_id": f"bb{i}"}
        objs.append(SyncRecord(
            workflow="quote_to_project", stage="validate", status="held", reason_code="missing_legal_entity",
            message=f"No legal entity is set on “{p['opportunity_name']}”.", fault_fields=["legal_entity"],
            owner_team="pmo", priority=2, source_connection=hubspot, source_key=f"{KEY_PREFIX}deal:{i}",
            title=p["opportunity_name"], amount=p["amount"], currency="USD", original_payload=p,
            current_payload=p, context={"fetched": True}, held_at=now))
    t = time.perf_counter()
    records = SyncRecord.objects.bulk_create(objs, batch_size=2000)
    with connection.cursor() as cur:
        cur.execute("ANALYZE sync_syncrecord")
    say(f"created {n:,} held records in {time.perf_counter() - t:.2f} s")
    return user, [r.pk for r in records]


def cleanup(user) -> None:
    """Only for --external: remove what this run created."""
    from apps.sync.models import AuditEntry, BulkAction, SyncRecord

    records = SyncRecord.objects.filter(source_key__startswith=KEY_PREFIX)
    AuditEntry.objects.filter(record__in=records).delete()
    BulkAction.objects.filter(actor=user).delete()
    records.delete()
    user.delete()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3, help="previews timed (the median is held to the target)")
    parser.add_argument("--no-run", action="store_true", help="do not run the job (bulk_run) in this process")
    parser.add_argument("--external", action="store_true", help="agree to use DATABASE_URL / REDIS_URL")
    args = parser.parse_args()

    started: list = []

    stop_on_sigterm()
    user = None
    try:
        refuse_external(("DATABASE_URL", "REDIS_URL"), args.external,
                        "pass --external to use them (records are created there and deleted at the end; the bulk "
                        "job is enqueued there), or unset them.")
        started.extend(start_engines(DATA, PG_PORT, VALKEY_PORT, fresh_database=True))
        setup_django()
        import django_rq
        from django.contrib.auth.models import User

        from apps.console.bulk_views import _filtered_ids
        from apps.sync import bulk, bulk_run
        from apps.sync.models import BulkAction, SyncRecord

        if not args.external:
            django_rq.get_connection("default").flushdb()
        user, ids = make_records(args.n)
        figures: dict[str, float] = {}

        actor = User.objects.get(pk=user.pk)
        t = time.perf_counter()
        matching = _filtered_ids("reason=missing_legal_entity&team=pmo", actor)
        figures["filter_s"] = time.perf_counter() - t
        say(f"filter → ids: {len(matching):,} ids in {figures['filter_s']:.3f} s")

        times = []
        b = None
        for i in range(args.rounds):
            actor = User.objects.get(pk=user.pk)  # as a new request loads it: no permission caches
            t = time.perf_counter()
            b = bulk.bulk_preview(actor=actor, action="fix", record_ids=ids,
                                  params={"changes": {"legal_entity": "US01"}},
                                  filter_query="reason=missing_legal_entity&team=pmo")
            times.append(time.perf_counter() - t)
            say(f"preview {i + 1}: {times[-1]:.3f} s  (would pass {b.preview['would_pass']['count']:,}, still fail "
                f"{b.preview['still_fail']['count']:,}: "
                + ", ".join(f"{r['reason']} {r['count']}" for r in b.preview['still_fail']['reasons']) + ")")
        figures["preview_first_s"], figures["preview_median_s"] = times[0], statistics.median(times)

        t = time.perf_counter()
        b = bulk.bulk_confirm(bulk=b, actor=User.objects.get(pk=user.pk))
        figures["confirm_s"] = time.perf_counter() - t
        queue = django_rq.get_queue("default")
        job = queue.fetch_job(b.rq_job_id)
        assert job is not None and job.args == (b.pk,), "the bulk job is not in the queue"
        say(f"confirm (status {b.status}, job {job.id} enqueued): {figures['confirm_s']:.3f} s")

        if not args.no_run:
            job.cancel()  # run it here instead, timed (no worker listens to this Redis)
            t = time.perf_counter()
            counts = bulk_run.bulk_run(b.pk)
            figures["run_s"] = time.perf_counter() - t
            b = BulkAction.objects.get(pk=b.pk)
            pending = SyncRecord.objects.filter(pk__in=ids, status="pending", current_payload__legal_entity="US01")
            say(f"job: {counts['succeeded']:,} resubmitted, {counts['failed']:,} skipped in {figures['run_s']:.2f} s "
                f"({args.n / figures['run_s']:,.0f} records/s; {pending.count():,} pending with the fix; "
                f"status {b.status})")

        print()
        print(f"bulk, {args.n:,} held records")
        print(f"  filter → ids                 {figures['filter_s']:8.3f} s")
        print(f"  preview (fix), first         {figures['preview_first_s']:8.3f} s")
        verdict = "OK" if figures["preview_median_s"] <= TARGETS["preview_s"] else "MISSED"
        print(f"  preview (fix), median of {args.rounds}   {figures['preview_median_s']:8.3f} s   target ≤ "
              f"{TARGETS['preview_s']:.0f} s  {verdict}")
        print(f"  confirm (enqueue)            {figures['confirm_s']:8.3f} s   target ≤ {TARGETS['confirm_s']:.0f} s  "
              f"{'OK' if figures['confirm_s'] <= TARGETS['confirm_s'] else 'MISSED'}")
        if "run_s" in figures:
            print(f"  job (chunks of 500)          {figures['run_s']:8.3f} s")
        ok = figures["preview_median_s"] <= TARGETS["preview_s"] and figures["confirm_s"] <= TARGETS["confirm_s"]
        return 0 if ok else 1
    finally:
        if args.external and user is not None:
            try:
                cleanup(user)
            except Exception as exc:
                print(f"cleanup failed: {exc}", file=sys.stderr)
        stop_engines(started)
        say("stopped what was started")


if __name__ == "__main__":
    sys.exit(main())
