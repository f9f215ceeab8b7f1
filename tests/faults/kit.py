"""Fault-injection helpers: real worker processes against the test database, bulk seeding, settle-and-check.

Used by tests/faults/test_faults.py and tests/faults/test_state_machine.py. Worker processes are started with
`python -m tests.faults.kit worker` (see `worker_main`): a real RQ SimpleWorker in burst mode, in a loop, with the
sweeper in between — what the Procfile's worker + scheduler do, in one process that a test can SIGKILL. They use
the *test* database (pytest-django's, passed in DATABASE_URL) and the test's Redis (REDIS_URL / TEST_REDIS_URL).

Nothing here imports Django models at module level: the worker process configures Django first.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the project, where `python -m tests.faults.kit` is run

ACTIVE = ("pending", "retrying", "in_progress")
TERMINAL_OK = ("succeeded", "held", "dead")


# ---------------------------------------------------------------- the worker process (python -m tests.faults.kit worker)


def worker_main() -> int:
    """Run RQ bursts and the sweeper until told to stop (SIGTERM), killed, idle for FAULTKIT_IDLE_EXIT seconds,
    or FAULTKIT_MAX_SECONDS passed. Any error (Redis down, a PostgreSQL connection killed) is logged and the loop
    goes on with fresh connections — like a supervisor restarting a crashed worker, only faster."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings
    from django.db import close_old_connections, connections

    # config.settings.test pins the HTTP timeout; a fault test needs a short one (a timeout costs ~that long)
    if os.environ.get("FAULTKIT_HTTP_TIMEOUT"):
        settings.HANDOFF_HTTP_TIMEOUT = float(os.environ["FAULTKIT_HTTP_TIMEOUT"])
    import django_rq
    from rq import SimpleWorker

    from apps.sync import sweeper
    from apps.sync.models import InboundEvent, SyncRecord

    name = os.environ.get("FAULTKIT_NAME", f"w{os.getpid()}")
    deadline = time.monotonic() + float(os.environ.get("FAULTKIT_MAX_SECONDS", 600))
    idle_exit = float(os.environ.get("FAULTKIT_IDLE_EXIT", 0))
    sweep_every = float(os.environ.get("FAULTKIT_SWEEP_EVERY", 0.5))
    stop = {"now": False}

    def on_term(signum, frame):
        stop["now"] = True

    def say(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')} {name}] {msg}", flush=True)

    say(f"started pid={os.getpid()} db={settings.DATABASES['default']['NAME']} "
        f"redis={settings.RQ_QUEUES['default']['URL']} lease={settings.HANDOFF_LEASE_SECONDS}s "
        f"http_timeout={settings.HANDOFF_HTTP_TIMEOUT}s")
    last_sweep = 0.0
    idle_since = None
    while not stop["now"] and time.monotonic() < deadline:
        try:
            queues = [django_rq.get_queue(n) for n in ("high", "default", "low")]
            worker = SimpleWorker(queues, connection=queues[0].connection)
            worker.work(burst=True, logging_level="WARNING")
            if worker._stop_requested:
                break
        except Exception as exc:  # Redis down, a killed DB connection…: start over with fresh connections
            say(f"worker loop error: {exc.__class__.__name__}: {str(exc)[:300]}")
            connections.close_all()
            time.sleep(0.3)
        signal.signal(signal.SIGTERM, on_term)
        close_old_connections()
        if time.monotonic() - last_sweep >= sweep_every:
            last_sweep = time.monotonic()
            try:
                sweeper.sweep()
                busy = (SyncRecord.objects.filter(status__in=ACTIVE).exists()
                        or InboundEvent.objects.filter(status="received").exists())
            except Exception as exc:
                say(f"sweep error: {exc.__class__.__name__}: {str(exc)[:300]}")
                connections.close_all()
                busy = True
            if idle_exit:
                if busy:
                    idle_since = None
                elif idle_since is None:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since >= idle_exit:
                    say("idle: exiting")
                    break
        time.sleep(0.05)
    say("stopped")
    connections.close_all()
    return 0


# ---------------------------------------------------------------- starting and stopping worker processes (test side)


def database_url_of_this_test() -> str:
    """DATABASE_URL of the database this test runs in (pytest-django's test database, not the configured one)."""
    from urllib.parse import quote

    from django.db import connection

    s = connection.settings_dict
    auth = quote(s.get("USER") or "", safe="")
    if s.get("PASSWORD"):
        auth += ":" + quote(s["PASSWORD"], safe="")
    host = quote(s.get("HOST") or "127.0.0.1", safe="")  # a socket directory is percent-encoded
    port = f":{s['PORT']}" if s.get("PORT") else ""
    return f"postgresql://{auth}@{host}{port}/{s['NAME']}"


def redis_url() -> str:
    from django.conf import settings

    return settings.RQ_QUEUES["default"]["URL"]


class WorkerProc:
    """One worker process. Its output goes to a log file, shown when a scenario fails."""

    def __init__(self, name: str, env: dict, log_dir: Path, argv: list[str] | None = None):
        self.name = name
        self.log_path = Path(log_dir) / f"{name}.log"
        self.log = open(self.log_path, "ab")
        self.argv = argv or [sys.executable, "-m", "tests.faults.kit", "worker"]
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, env={**env, "FAULTKIT_NAME": name}, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the worker's process group (its own session: the worker and, for a `timeout …` wrapper, the
        command it runs) — never anything this test did not start."""
        if self.alive():
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM (a warm stop after the current job), then SIGKILL."""
        if self.alive():
            self.kill(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self.log.close()

    def tail(self, lines: int = 12, width: int = 400) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(line if len(line) <= width else line[:width] + " …" for line in text[-lines:])


class Workers:
    """The worker processes of one test: started with the test's database and Redis, all stopped at the end."""

    def __init__(self, log_dir: Path):
        self.log_dir = Path(log_dir)
        self.procs: list[WorkerProc] = []
        self.seq = 0

    def env(self, *, lease: float = 3, http_timeout: float | None = None, redis: str | None = None,
            claim_batch: int | None = None, **extra) -> dict:
        url = redis or redis_url()
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test",
               "DATABASE_URL": database_url_of_this_test(),
               "REDIS_URL": url, "TEST_REDIS_URL": url, "PYTHONUNBUFFERED": "1",
               "HANDOFF_LEASE_SECONDS": str(int(lease)),
               "LOG_LEVEL": os.environ.get("FAULTKIT_LOG_LEVEL", "WARNING")}
        if http_timeout is not None:
            env["FAULTKIT_HTTP_TIMEOUT"] = str(http_timeout)
        if claim_batch is not None:
            env["HANDOFF_CLAIM_BATCH"] = str(claim_batch)
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def start(self, n: int = 1, *, argv: list[str] | None = None, **env_kw) -> list[WorkerProc]:
        out = []
        for _ in range(n):
            self.seq += 1
            out.append(WorkerProc(f"worker{self.seq}", self.env(**env_kw), self.log_dir, argv))
        self.procs.extend(out)
        return out

    def alive(self) -> list[WorkerProc]:
        return [p for p in self.procs if p.alive()]

    def stop_all(self) -> None:
        """At the end of a test: SIGKILL (a warm stop would wait for a drain job to finish)."""
        for p in self.procs:
            p.kill(signal.SIGKILL)
        for p in self.procs:
            p.stop(grace=0)

    def report(self) -> str:
        return "\n".join(f"--- {p.name} pid={p.pid} {'alive' if p.alive() else f'exit={p.proc.returncode}'}\n"
                         f"{p.tail()}" for p in self.procs)


# ---------------------------------------------------------------- faults


FAULT_DEFAULTS = dict(error_rate=0.0, rate_limit_rate=0.0, timeout_rate=0.0, lost_response_rate=0.0, latency_ms=0,
                      fail_next_count=0, hang_ms=0)


def clear_faults() -> None:
    from apps.sandbox.models import SandboxSystem

    SandboxSystem.objects.update(**FAULT_DEFAULTS)


def configure_connections(**fields) -> None:
    from apps.sync.models import Connection

    Connection.objects.update(**fields)


# ---------------------------------------------------------------- seeding many records fast


def create_hubspot_deals(n: int, *, seed: int = 0, bad_share: float = 0.1, shared_company_share: float = 0.1,
                         scenarios: list[str] | None = None,
                         currency: str | None = None) -> tuple[list[str], list[dict]]:
    """n closed-won deals in the HubSpot sandbox, with their companies (some shared by several deals: one customer,
    several engagements), inserted in bulk. Returns the deal ids and their (unsent) webhook events."""
    from django.db import transaction

    from apps.demo.deals import make_opportunity, scenario_mix
    from apps.sandbox.models import SandboxObject

    rng = random.Random(seed)
    scenarios = scenarios or scenario_mix(n, rng, bad_share=bad_share)
    opps = []
    for s in scenarios:
        opp = make_opportunity(rng, s)
        while currency and opp.currency != currency:
            opp = make_opportunity(rng, s)
        opps.append(opp)
    companies, deal_props = [], []
    company_of: list[int] = []  # index into companies for each deal
    for i, opp in enumerate(opps):
        company, deal = opp.as_hubspot()
        deal["dealname"] = f"{deal['dealname']} #{seed}-{i}"
        if companies and opp.scenario == "good" and rng.random() < shared_company_share:
            company_of.append(rng.randrange(len(companies)))  # another deal of an existing customer
        else:
            companies.append(company)
            company_of.append(len(companies) - 1)
        deal_props.append(deal)
    with transaction.atomic():
        company_objs = SandboxObject.objects.bulk_create(
            [SandboxObject(system="hubspot", object_type="companies", data={"properties": c, "associations": {}})
             for c in companies], batch_size=1000)
        deal_objs = SandboxObject.objects.bulk_create(
            [SandboxObject(system="hubspot", object_type="deals",
                           data={"properties": d, "associations": {"companies": [str(company_objs[ci].pk)]}})
             for d, ci in zip(deal_props, company_of)], batch_size=1000)
    global _EVENT_SEQ
    # event ids of their own (the Deliverer's start near time-in-ms × 1000): a clash would look like a redelivery
    _EVENT_SEQ = max(_EVENT_SEQ, 10**17 + int(time.time() * 1000) * 1000)
    events = []
    for d in deal_objs:
        _EVENT_SEQ += 1
        events.append({"eventId": _EVENT_SEQ, "subscriptionId": 1, "portalId": 62515, "appId": 1,
                       "occurredAt": int(time.time() * 1000), "subscriptionType": "deal.propertyChange",
                       "attemptNumber": 0, "objectId": d.pk, "propertyName": "dealstage",
                       "propertyValue": "closedwon", "changeSource": "CRM"})
    return [str(d.pk) for d in deal_objs], events


_EVENT_SEQ = 0


def store_hubspot_events(events: list[dict], *, wake: bool = True) -> None:
    """Store webhook events exactly as the callback endpoint does (intake.store_events), 100 per request."""
    from django.db import transaction

    from apps.connectors.hubspot import inbound as hubspot_inbound
    from apps.sync import intake
    from apps.sync.models import Connection
    from apps.sync.wakeup import wake as wake_up

    conn = Connection.objects.get(slug="hubspot")
    for i in range(0, len(events), 100):
        specs = hubspot_inbound.parse_events(conn, events[i:i + 100])
        with transaction.atomic():
            intake.store_events(conn, specs, {"Content-Type": "application/json"}, 202)
            if wake:
                wake_up("inbox")


def seed_hubspot(n: int, **kw) -> list[str]:
    """n deals in the HubSpot sandbox and their webhook events stored; returns the records' source keys."""
    wake = kw.pop("wake", True)
    deal_ids, events = create_hubspot_deals(n, **kw)
    store_hubspot_events(events, wake=wake)
    return [f"deal:{d}" for d in deal_ids]


def signed_hubspot_post(url: str, secret: str, events: list[dict], session=None):
    """POST webhook events to Handoff's callback URL the way HubSpot does (signature v3, fresh timestamp)."""
    import json

    import requests

    from tests.callbacks import hubspot_headers

    body = json.dumps(events).encode()
    return (session or requests).post(url, data=body, timeout=30,
                                      headers={"Content-Type": "application/json", **hubspot_headers(secret, url, body)})


def terminate_backends() -> int:
    """Kill every other connection to this test database (workers, live-server threads), as a failover would."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        return cur.fetchone()[0]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- waiting


def progress() -> Counter:
    from django.db.models import Count

    from apps.sync.models import InboundEvent, SyncRecord

    c: Counter = Counter()
    for status, n in SyncRecord.objects.values_list("status").annotate(n=Count("id")).order_by():
        c[status] = n
    c["events_received"] = InboundEvent.objects.filter(status="received").count()
    return c


def done_count(c: Counter) -> int:
    return sum(c[s] for s in TERMINAL_OK)


def wait_for(predicate, *, timeout: float, what: str, workers: Workers | None = None, every: float = 0.25,
             on_tick=None):
    """Poll predicate() until it returns a truthy value, or fail after `timeout` s with the state of things."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        if on_tick is not None:
            on_tick()
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{diagnose(workers)}")


def settled(expected: int | None = None) -> bool:
    c = progress()
    if c["events_received"] or any(c[s] for s in ACTIVE):
        return False
    return expected is None or done_count(c) >= expected


def wait_settled(*, expected: int | None, timeout: float, workers: Workers | None = None, on_tick=None) -> float:
    """Wait until no event is waiting and no record is pending/retrying/in progress. Returns the seconds taken."""
    t0 = time.monotonic()
    wait_for(lambda: settled(expected), timeout=timeout, what=f"all {expected or ''} records to settle",
             workers=workers, on_tick=on_tick)
    return time.monotonic() - t0


def diagnose(workers: Workers | None = None) -> str:
    from apps.sync.models import SyncRecord

    lines = [f"progress: {dict(progress())}"]
    stuck = SyncRecord.objects.filter(status__in=ACTIVE).order_by("id")[:10]
    for r in stuck:
        lines.append(f"  record {r.pk} {r.source_key} {r.status} stage={r.stage} attempts={r.attempts} "
                     f"next={r.next_attempt_at} lease={r.lease_expires_at} msg={r.message[:120]!r}")
    try:
        from apps.sync.models import Connection

        for c in Connection.objects.all():
            if c.paused or c.consecutive_failures:
                lines.append(f"  connection {c.slug}: paused={c.paused} by={c.paused_by} "
                             f"failures={c.consecutive_failures}")
    except Exception:
        pass
    if workers is not None:
        lines.append(workers.report())
    return "\n".join(lines)


# ---------------------------------------------------------------- the outcome: nothing lost, nothing duplicated


def check_outcome(source_keys, *, all_settled: bool = True, expect_succeeded: bool | None = None) -> dict:
    """Assert, for every source record: one SyncRecord, one terminal state (succeeded / held / dead), and downstream
    exactly one object per idempotency key — NetSuite customer per HO-<customer key>, Kantata workspace per
    engagement code, NetSuite job per HO-<engagement key> — with the ids the record holds. Returns counts.

    all_settled=False (while work is still going on): no record for an unknown source object, none twice, nothing
    duplicated downstream — but records may still be missing (not taken in yet) or in flight."""
    from apps.canonical.models import Customer, Engagement
    from apps.sandbox.models import SandboxObject
    from apps.sync.models import InboundEvent, SyncRecord

    keys = list(source_keys)
    problems: list[str] = []
    dup_keys = [k for k, n in Counter(keys).items() if n > 1]
    assert not dup_keys, f"test bug: source keys given twice: {dup_keys[:5]}"

    records = list(SyncRecord.objects.order_by("id"))
    per_key = Counter((r.workflow, r.source_connection_id, r.source_key) for r in records)
    doubled = [k for k, n in per_key.items() if n > 1]
    if doubled:
        problems.append(f"{len(doubled)} source objects have more than one record: {doubled[:5]}")
    by_key = {r.source_key: r for r in records}
    lost = [k for k in keys if k not in by_key] if all_settled else []
    if lost:
        problems.append(f"{len(lost)} source objects have no record (lost): {lost[:10]}")
    extra = sorted(set(by_key) - set(keys))
    if extra:
        problems.append(f"{len(extra)} records for source objects never sent: {extra[:10]}")
    statuses = Counter(r.status for r in records)
    if all_settled:
        not_terminal = [r for r in records if r.status not in TERMINAL_OK]
        if not_terminal:
            problems.append(f"{len(not_terminal)} records are not terminal: "
                            + ", ".join(f"{r.pk}:{r.status}@{r.stage}" for r in not_terminal[:10]))
        waiting = InboundEvent.objects.filter(status="received").count()
        if waiting:
            problems.append(f"{waiting} events were never turned into records")
        unlinked = InboundEvent.objects.filter(status="processed", record__isnull=True).count()
        if unlinked:
            problems.append(f"{unlinked} processed events are linked to no record")
    if expect_succeeded:
        failed = [r for r in records if r.status != "succeeded"]
        if failed:
            problems.append(f"{len(failed)} records did not succeed: "
                            + "; ".join(f"{r.pk}:{r.status}@{r.stage} {r.reason_code} {r.message[:100]!r}"
                                        for r in failed[:5]))

    # downstream: one object per idempotency key
    ns_customers = Counter(SandboxObject.objects.filter(system="netsuite", object_type="customer")
                           .values_list("external_key", flat=True))
    ns_jobs = Counter(SandboxObject.objects.filter(system="netsuite", object_type="job")
                      .values_list("external_key", flat=True))
    workspaces: dict[str, list[int]] = {}
    for pk, title in SandboxObject.objects.filter(system="kantata", object_type="workspace").values_list(
            "pk", "data__title"):
        workspaces.setdefault((title or "").split(" ", 1)[0], []).append(pk)
    for label, counter in (("NetSuite customer", ns_customers), ("NetSuite job", ns_jobs)):
        dups = {k: n for k, n in counter.items() if n > 1}
        if dups:
            problems.append(f"duplicated {label}s: {dict(list(dups.items())[:5])}")
    dup_ws = {code: pks for code, pks in workspaces.items() if len(pks) > 1}
    if dup_ws:
        problems.append(f"{len(dup_ws)} engagement codes have several Kantata workspaces: "
                        f"{dict(list(dup_ws.items())[:5])}")
    customer_keys = {f"HO-{k}" for k in Customer.objects.values_list("key", flat=True)}
    engagements = {e.pk: e for e in Engagement.objects.all()}
    codes = {e.code for e in engagements.values()}
    stray = [k for k in ns_customers if k not in customer_keys]
    if stray:
        problems.append(f"NetSuite customers with no Handoff customer: {stray[:5]}")
    stray = [k for k in ns_jobs if k not in {f"HO-{e.key}" for e in engagements.values()}]
    if stray:
        problems.append(f"NetSuite jobs with no Handoff engagement: {stray[:5]}")
    stray = [c for c in workspaces if c not in codes]
    if stray:
        problems.append(f"Kantata workspaces with no Handoff engagement: {stray[:5]}")
    # each succeeded record: its objects exist once, and it holds their ids
    customers = {c.pk: c for c in Customer.objects.all()}
    ns_ids = {(o.object_type, o.external_key): o.pk for o in
              SandboxObject.objects.filter(system="netsuite").only("pk", "object_type", "external_key")}
    wrong = []
    for r in records:
        if r.status != "succeeded":
            continue
        ctx = r.context
        eng = engagements.get(ctx.get("engagement_id"))
        cust = customers.get(ctx.get("customer_id"))
        if eng is None or cust is None:
            wrong.append(f"{r.pk}: no canonical customer/engagement")
            continue
        if str(ns_ids.get(("customer", f"HO-{cust.key}"))) != str(ctx.get("erp_customer_id")):
            wrong.append(f"{r.pk}: erp_customer_id {ctx.get('erp_customer_id')} is not NetSuite's HO-{cust.key}")
        if str(ns_ids.get(("job", f"HO-{eng.key}"))) != str(ctx.get("erp_project_id")):
            wrong.append(f"{r.pk}: erp_project_id {ctx.get('erp_project_id')} is not NetSuite's HO-{eng.key}")
        if [str(p) for p in workspaces.get(eng.code, [])] != [str(ctx.get("psa_project_id"))]:
            wrong.append(f"{r.pk}: psa_project_id {ctx.get('psa_project_id')} vs workspaces "
                         f"{workspaces.get(eng.code)} of {eng.code}")
    if wrong:
        problems.append(f"{len(wrong)} succeeded records disagree with downstream: {wrong[:5]}")
    # canonical: one engagement per opportunity (ExternalId links are unique), one customer per CRM account
    eng_per_opp = Counter(r.context.get("engagement_id") for r in records if r.context.get("engagement_id"))
    shared = {e: n for e, n in eng_per_opp.items() if n > 1}
    if shared:
        problems.append(f"engagements shared by several records: {dict(list(shared.items())[:5])}")

    assert not problems, "nothing lost, nothing duplicated — violated:\n  " + "\n  ".join(problems)
    return {"records": len(records), **statuses, "netsuite_customers": len(ns_customers),
            "kantata_workspaces": sum(len(v) for v in workspaces.values()), "netsuite_jobs": len(ns_jobs)}


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        sys.exit(worker_main())
    print("usage: python -m tests.faults.kit worker", file=sys.stderr)
    sys.exit(2)
