#!/usr/bin/env python
"""Approved time entries priced and posted per second (issue 4), with one and then two worker processes.

    cd /work/main && .venv/bin/python bench/bench_time.py [--n 100000] [--workers 1,2] [--profile 500]

Each round: a fresh engagement book (--engagements, default 120, across US01/USD, UK01/GBP and USD, DE01/EUR,
T&M half of them capped far above what they bill, so the cap query runs; rate cards in each currency; ERP
dimension mappings; exchange rates; each engagement's NetSuite job in the sandbox) → --n approved Kantata time
entries (random roles, 15–600 minutes, some non-billable, some written off) parsed by Handoff's own Kantata
parser and stored through the intake's store_events (as the callback would, 500 per statement) →
process_inbox() → time_to_billing records → `--workers` worker processes (bench/worker.py: the Procfile's
rqworker) price and post them to the NetSuite sandbox served by its own gunicorn over loopback.

Figures: entries/s from "go" to the last record's commit; Handoff's own time per entry, (wall × workers −
time spent waiting on NetSuite) / entries; CPU per entry of workers, sandbox gunicorn and PostgreSQL. Checks:
every record succeeded, exactly one NetSuite timebill per entry, every canonical TimeEntry POSTED, and the sum
of the posted amounts equals the sum computed independently here (per line: billable minutes × rate ÷ 60,
rounded half up in the engagement currency).

--profile N additionally drains N more entries in this process under cProfile and prints where the time goes.

Reuses bench/run.py's helpers (the snapshot of the work tree, embedded PostgreSQL/Valkey, Django set-up, gunicorn
and worker processes, CPU accounting, the common options); its own data folder (.data/bench_time/) and ports
(HANDOFF_BENCH_DATA, HANDOFF_BENCH_PG_PORT, HANDOFF_BENCH_VALKEY_PORT), so it does not collide with bench/run.py
or bench/load.py. Every loop is bounded in time; everything started is stopped at the end (also on Ctrl-C,
SIGTERM or failure).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections import Counter
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# its own data folder and ports (HANDOFF_BENCH_* may override them), read by bench/run.py when it is imported
os.environ.setdefault("HANDOFF_BENCH_DATA", str(ROOT / ".data" / "bench_time"))
os.environ.setdefault("HANDOFF_BENCH_PG_PORT", "54369")
os.environ.setdefault("HANDOFF_BENCH_VALKEY_PORT", "63839")
sys.path[0] = str(ROOT)

from bench import run as R  # noqa: E402  (snapshot, engines, Procs, workers, CPU helpers, common options)

if __name__ == "__main__" and "--no-snapshot" not in sys.argv and not os.environ.get("HANDOFF_BENCH_ORIGIN"):
    R.snapshot(sys.argv[1:], "bench_time.py")  # measure one version of the code: a copy under <data folder>/src

say = R.say
CHUNK = 500
TRUNCATE_SQL = """TRUNCATE finance_timeentry, finance_expenseentry, finance_dimensionmapping, finance_exchangerate,
    canonical_ratecardline, canonical_ratecard RESTART IDENTITY CASCADE"""
# (legal entity, engagement currency, rate card rates)
BOOK = [
    ("US01", "USD", {"Analyst": "95.00", "Consultant": "150.00", "Senior Consultant": "200.00", "Partner": "350.15"}),
    ("UK01", "GBP", {"Analyst": "75.00", "Consultant": "120.50", "Senior Consultant": "165.00", "Partner": "290.10"}),
    ("UK01", "USD", {"Analyst": "95.00", "Consultant": "150.00", "Senior Consultant": "200.00", "Partner": "350.15"}),
    ("DE01", "EUR", {"Analyst": "85.00", "Consultant": "135.00", "Senior Consultant": "185.00", "Partner": "320.05"}),
]


# ------------------------------------------------------------------ data


def setup_book(n_engagements: int, seed: int) -> list[dict]:
    """Engagements (each linked to a Kantata workspace and a NetSuite job), rate cards, mappings, rates."""
    import uuid

    from django.contrib.contenttypes.models import ContentType

    from apps.canonical.models import Customer, Engagement, ExternalId, LegalEntity, PaymentTerms, RateCard, \
        RateCardLine
    from apps.finance.models import DimensionMapping, ExchangeRate
    from apps.sandbox.models import SandboxObject

    rng = random.Random(seed)
    entities = {le.code: le for le in LegalEntity.objects.all()}
    net30 = PaymentTerms.objects.get(code="NET30")
    cards = {}
    for code, currency, rates in BOOK:
        if currency not in cards:
            card = RateCard.objects.create(name=f"Bench {currency}", currency=currency)
            RateCardLine.objects.bulk_create([RateCardLine(rate_card=card, role=r, rate=Decimal(v))
                                              for r, v in rates.items()])
            cards[currency] = card
    for le in entities.values():
        DimensionMapping.objects.bulk_create([
            DimensionMapping(legal_entity=le, service_code="CONSULT", department_id="10", class_id="1",
                             location_id=le.erp_subsidiary_id, item_id="100"),
            DimensionMapping(legal_entity=le, service_code="ENGINEER", department_id="20", class_id="1",
                             location_id=le.erp_subsidiary_id, item_id="101")])
    ExchangeRate.objects.bulk_create([
        ExchangeRate(from_currency="USD", to_currency="GBP", rate=Decimal("0.79"), rate_date=date(2026, 10, 1)),
        ExchangeRate(from_currency="USD", to_currency="GBP", rate=Decimal("0.7875"), rate_date=date(2026, 11, 1))])
    customers = Customer.objects.bulk_create([
        Customer(name=f"Bench customer {i}", tax_id=f"{i:09d}", currency=BOOK[i % len(BOOK)][1],
                 legal_entity=entities[BOOK[i % len(BOOK)][0]], payment_terms=net30) for i in range(n_engagements)])
    engagements = Engagement.objects.bulk_create([
        Engagement(code=f"ENG-B{i:05d}", name=f"Bench engagement {i}", customer=customers[i],
                   legal_entity=entities[BOOK[i % len(BOOK)][0]], contract_type="t_and_m",
                   contract_value=Decimal("1000000"), currency=BOOK[i % len(BOOK)][1], start_date=date(2026, 1, 1),
                   end_date=date(2026, 12, 31), rate_card=cards[BOOK[i % len(BOOK)][1]],
                   tm_cap=Decimal("900000000.00") if rng.random() < 0.5 else None, correlation_id=uuid.uuid4())
        for i in range(n_engagements)])
    ct = ContentType.objects.get_for_model(Engagement)
    ExternalId.objects.bulk_create([ExternalId(content_type=ct, object_id=e.pk, system="kantata",
                                               object_type="workspace", external_id=str(80000 + i))
                                    for i, e in enumerate(engagements)])
    SandboxObject.objects.bulk_create([SandboxObject(system="netsuite", object_type="job", external_key=f"HO-{e.key}",
                                                     data={"entityId": e.code}) for e in engagements])
    return [{"workspace": str(80000 + i), "currency": e.currency, "rates": BOOK[i % len(BOOK)][2]}
            for i, e in enumerate(engagements)]


def expected_amount(minutes: int, write_off: int, billable: bool, rate: str, currency: str) -> Decimal:
    """The rule, computed here independently of apps.finance.pricing: half up, once per line."""
    billed = max(0, minutes - write_off) if billable else 0
    q = Decimal(1) if currency == "JPY" else Decimal("0.01")
    return (Decimal(billed) * Decimal(rate) / Decimal(60)).quantize(q, rounding=ROUND_HALF_UP)


def load_entries(n: int, book: list[dict], *, first_id: int, seed: int) -> dict:
    """n approved time entries as Kantata webhooks, through Handoff's parser and store_events."""
    from apps.connectors.kantata.inbound import parse_time_entry
    from apps.sandbox.kantata.time_entries import envelope, time_entry
    from apps.sync.intake import store_events
    from apps.sync.models import Connection

    rng = random.Random(seed)
    conn = Connection.objects.get(slug="kantata")
    headers = {"Content-Type": "application/json", "User-Agent": "Kantata webhooks (bench)"}
    expected = Counter()
    accepted = 0
    t0 = time.perf_counter()
    base = datetime(2026, 11, 20, 8, 0, 0)
    for start in range(0, n, CHUNK):
        specs = []
        for i in range(start, min(n, start + CHUNK)):
            eng = book[rng.randrange(len(book))]
            role = rng.choice(list(eng["rates"]))
            minutes = rng.choice([15, 30, 45, 60, 90, 120, 240, 360, 450, 480, 600]) + rng.choice([0, 0, 0, 7, 50])
            write_off = rng.choice([30, 60]) if rng.random() < 0.05 else 0
            billable = rng.random() >= 0.1
            entry_id = first_id + i
            stamp = (base + timedelta(seconds=i)).isoformat() + "Z"
            data = time_entry(entry_id, eng["workspace"], date_performed=f"2026-11-{1 + i % 19:02d}",
                              minutes=minutes, role=role, service_code=rng.choice(["CONSULT", "ENGINEER"]),
                              user_id=1000 + i % 300, user_name=f"Consultant {i % 300}", billable=billable,
                              write_off_minutes=write_off, updated_at=stamp)
            specs.append(parse_time_entry(conn, f"bench-{entry_id}", envelope("time_entry.approved", data, stamp)))
            expected[eng["currency"]] += expected_amount(minutes, write_off, billable, eng["rates"][role],
                                                         eng["currency"])
        accepted += store_events(conn, specs, headers, 202)["accepted"]
    return {"accepted": accepted, "store_s": time.perf_counter() - t0, "expected": dict(expected)}


# ------------------------------------------------------------------ one round


def round_(args, procs, k: int, sandbox_pid: int, engines) -> dict:
    from django.db import connection
    from django.db.models import Count, Max, Sum

    from apps.finance.models import TimeEntry
    from apps.sandbox.models import SandboxObject
    from apps.sync import sweeper
    from apps.sync.intake import process_inbox
    from apps.sync.models import Attempt, InboundEvent, SyncRecord

    n = args.n
    say(f"{k} worker{'s' if k > 1 else ''}: resetting, {args.engagements} engagements, {n} approved time entries")
    R.reset_state()
    with connection.cursor() as cur:
        cur.execute(TRUNCATE_SQL)
    book = setup_book(args.engagements, args.seed)
    load = load_entries(n, book, first_id=1, seed=args.seed)
    say(f"  {load['accepted']} events stored in {load['store_s']:.1f} s")
    t0 = time.perf_counter()
    inbox = process_inbox()
    inbox_s = time.perf_counter() - t0
    say(f"  process_inbox: {inbox['events']} events → {inbox['records']} records in {inbox_s:.1f} s")
    R.analyze("sync_syncrecord", "sync_inboundevent", "canonical_externalid", "sandbox_sandboxobject")
    ws = R.spawn_workers(procs, k, f"time-{k}w")
    names = [name for name, p in procs.procs.items() if p in ws]
    cpu0 = {"workers": sum(R.tree_cpu(w.pid) for w in ws), "sandbox": R.tree_cpu(sandbox_pid),
            "pg": R.tree_cpu(engines.pg_pid), "valkey": R.tree_cpu(engines.valkey_pid), "machine": R.machine_busy()}
    go_wall, t0 = time.time(), time.monotonic()
    for w in ws:
        w.stdin.write("go\n")
        w.stdin.flush()
    last_sweep = last_note = last_progress = t0
    last_left, timed_out = None, False
    while True:
        time.sleep(0.5)
        left = SyncRecord.objects.filter(status__in=R.NOT_DONE).count()
        now = time.monotonic()
        if left == 0 and not InboundEvent.objects.filter(status="received").exists():
            break
        if any(w.poll() is not None for w in ws):
            raise SystemExit(f"a worker exited during the run; see {R.LOGS}/")
        if R.failed_jobs():
            raise SystemExit(f"a job failed during the run:\n{R.tail(R.LOGS / f'{names[0]}.log')}")
        if left != last_left:
            last_left, last_progress = left, now
        elif now - last_progress > args.stall_seconds:
            raise SystemExit(f"no record finished for {args.stall_seconds:.0f} s ({left} left); see {R.LOGS}/")
        if now - t0 > args.timeout:
            timed_out = True
            break
        if now - last_sweep >= 10:  # the Procfile's scheduler (config/cron.py): every 10 s
            sweeper.sweep()
            last_sweep = now
        if now - last_note >= 15:
            say(f"  {n - left}/{n} entries done after {now - t0:.0f} s")
            last_note = now
    poll_wall = time.monotonic() - t0
    cpu1 = {"workers": sum(R.tree_cpu(w.pid) for w in ws), "sandbox": R.tree_cpu(sandbox_pid),
            "pg": R.tree_cpu(engines.pg_pid), "valkey": R.tree_cpu(engines.valkey_pid), "machine": R.machine_busy()}
    for name in names:
        procs.stop(name)
    last = SyncRecord.objects.aggregate(m=Max("updated_at"))["m"]
    wall = (last.timestamp() - go_wall) if last else poll_wall
    if not 0 < wall <= poll_wall + 1:
        wall = poll_wall
    statuses = dict(Counter(SyncRecord.objects.values_list("status", flat=True)))
    held = dict(Counter(SyncRecord.objects.filter(status="held").values_list("reason_code", flat=True)))
    agg = Attempt.objects.aggregate(ms=Sum("duration_ms"), n=Count("id"))
    outcomes = dict(Counter(Attempt.objects.values_list("outcome", flat=True)))
    timebills = SandboxObject.objects.filter(system="netsuite", object_type="timebill")
    posted = TimeEntry.objects.filter(status="posted")
    sums = {row["currency"]: row["s"] for row in posted.values("currency").annotate(s=Sum("amount"))}
    cpu = {key: cpu1[key] - cpu0[key] for key in cpu0}
    cpu["others"] = max(0.0, cpu.pop("machine") - sum(cpu.values()))
    attempt_s = (agg["ms"] or 0) / 1000
    out = {
        "workers": k, "entries": n, "wall_s": wall, "entries_per_s": n / wall if wall else 0.0,
        "timed_out": timed_out, "statuses": statuses, "held": held, "calls": agg["n"], "outcomes": outcomes,
        "netsuite_wait_s": attempt_s, "own_ms_per_entry": 1000 * (wall * k - attempt_s) / n,
        "cpu_ms_per_entry": {key: 1000 * v / n for key, v in cpu.items()},
        "inbox_s": inbox_s, "store_s": load["store_s"], "sums": {c: str(s) for c, s in sums.items()},
        "expected": {c: str(s) for c, s in load["expected"].items()},
    }
    out["checks"] = {
        "every entry became one record": inbox["records"] == n == sum(statuses.values()),
        "every record succeeded": statuses.get("succeeded", 0) == n and not timed_out,
        "one NetSuite timebill per entry": timebills.count() == n
        and timebills.values("external_key").distinct().count() == n and not timebills.filter(writes__gt=1).exists(),
        "every TimeEntry posted": posted.count() == n,
        "posted amounts = independent sum, to the cent": sums == load["expected"],
    }
    say(f"  {k} worker(s): {n} entries in {wall:.1f} s = {out['entries_per_s']:.1f} entries/s; {agg['n']} NetSuite "
        f"calls waited {attempt_s:.1f} s; own time {out['own_ms_per_entry']:.1f} ms/entry; statuses {statuses}")
    for name, ok in out["checks"].items():
        say(f"  {'ok  ' if ok else 'FAIL'} {name}")
    return out


def profile(args) -> str:
    """Drain --profile more entries in this process under cProfile: where does a record's time go?"""
    import cProfile
    import io
    import pstats

    from apps.sync import engine
    from apps.sync.intake import process_inbox
    from apps.sync.models import SyncRecord

    book_rows = setup_book_for_profile()
    load_entries(args.profile, book_rows, first_id=10_000_000, seed=args.seed + 1)
    process_inbox()
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    counts = Counter()
    while SyncRecord.objects.filter(status__in=R.NOT_DONE).exists():
        counts.update(engine.drain("high", max_seconds=60))
    prof.disable()
    wall = time.perf_counter() - t0
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("cumulative").print_stats(45)
    head = f"profile: {args.profile} entries drained in-process in {wall:.1f} s ({dict(counts)})\n"
    return head + buf.getvalue()


def setup_book_for_profile() -> list[dict]:
    """The book of the last round is still there: read its workspaces back."""
    from apps.canonical.models import Engagement, ExternalId

    rates = {cur: r for _, cur, r in BOOK}
    links = dict(ExternalId.objects.filter(system="kantata", object_type="workspace")
                 .values_list("object_id", "external_id"))
    return [{"workspace": links[e.pk], "currency": e.currency, "rates": rates[e.currency]}
            for e in Engagement.objects.filter(pk__in=links)]


# ------------------------------------------------------------------ report and main


def report(res: dict) -> None:
    lines = ["", "=" * 100, "HANDOFF TIME & EXPENSE BENCHMARK (approved time entries priced and posted)", "=" * 100]
    m = res["machine"]
    lines.append(f"machine: {m['nproc']} cores ({m['cpu']}), Python {m['python']}, {m['postgres']}; "
                 f"code {m['code']}; command {m['command']}")
    lines.append(f"{'workers':>8}{'entries':>9}{'wall s':>9}{'entries/s':>11}{'own ms/entry':>14}"
                 f"{'NetSuite ms/call':>18}{'CPU ms/entry: workers / sandbox / PG / others':>48}")
    for r in res["rounds"]:
        c = r["cpu_ms_per_entry"]
        lines.append(f"{r['workers']:>8}{r['entries']:>9}{r['wall_s']:>9.1f}{r['entries_per_s']:>11.1f}"
                     f"{r['own_ms_per_entry']:>14.2f}{1000 * r['netsuite_wait_s'] / max(r['calls'], 1):>18.1f}"
                     f"{c['workers']:>17.2f} / {c['sandbox']:.2f} / {c['pg']:.2f} / {c['others']:.2f}")
        lines.append(f"         statuses {r['statuses']}  held {r['held']}  calls {r['calls']} {r['outcomes']}  "
                     f"store_events {r['store_s']:.1f} s, process_inbox {r['inbox_s']:.1f} s")
        lines.append(f"         posted sums {r['sums']}  expected {r['expected']}")
        for name, ok in r["checks"].items():
            lines.append(f"         {'ok  ' if ok else 'FAIL'} {name}")
    if res["rounds"]:
        best = max(r["entries_per_s"] for r in res["rounds"])
        lines.append(f"100,000 entries at {best:.1f} entries/s: {100_000 / best / 60:.1f} minutes")
        if len(res["rounds"]) >= 2:
            lines.append(f"scaling {res['rounds'][1]['workers']} vs {res['rounds'][0]['workers']} worker(s): "
                         f"{res['rounds'][1]['entries_per_s'] / res['rounds'][0]['entries_per_s']:.2f}×")
    lines.append("=" * 100)
    print("\n".join(lines), flush=True)
    if res.get("profile"):
        print(res["profile"], flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000, help="approved time entries per round (default 100000)")
    p.add_argument("--workers", default="1,2", help="worker processes per round, comma-separated (default 1,2)")
    p.add_argument("--engagements", type=int, default=120)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--timeout", type=float, default=3600, help="seconds a round may take before it is cut")
    p.add_argument("--stall-seconds", type=float, default=120)
    p.add_argument("--profile", type=int, default=0, help="then profile draining this many entries in-process")
    R.add_process_args(p)  # --gunicorn-workers, --gunicorn-threads, --no-snapshot, --wipe-external
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    R.stop_on_sigterm()
    R.prepare_env()
    procs, engines = R.Procs(), R.Engines(args)
    started = time.monotonic()
    res: dict = {"config": vars(args), "rounds": []}

    def work() -> int:
        engines.start()
        sandbox_port = R.free_port()
        sandbox_url = f"http://127.0.0.1:{sandbox_port}"
        R.setup_django(sandbox_url)
        res["machine"] = R.machine_info(args)
        res["machine"]["command"] = " ".join([".venv/bin/python", "bench/bench_time.py", *sys.argv[1:]])
        say(f"starting the sandboxes' gunicorn on {sandbox_url}")
        sandbox = R.start_gunicorn(procs, "sandbox", sandbox_port, args)
        R.wait_http(f"{sandbox_url}/readyz", 60)
        for k in [int(x) for x in args.workers.split(",") if x.strip()]:
            res["rounds"].append(round_(args, procs, k, sandbox.pid, engines))
        if args.profile:
            res["profile"] = profile(args)
        res["total_seconds"] = time.monotonic() - started
        report(res)
        R.save_results(res, "time")
        return 1 if any(not ok for r in res["rounds"] for ok in r["checks"].values()) else 0

    return R.guarded(procs, engines, work)


if __name__ == "__main__":
    sys.exit(main())
