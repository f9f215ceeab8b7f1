#!/usr/bin/env python
"""Handoff's benchmarks, measured in one run (this machine is small and noisy: compare ratios, not absolutes).

    cd /work/main && .venv/bin/python bench/run.py [--e2e-n 10000] [--intake-seconds 20]

1. Callback intake under gunicorn on loopback at a fixed concurrency: Handoff's real HubSpot callback endpoint
   (valid X-HubSpot-Signature-v3, a new eventId per request, closed-won deal stage: stored and a job woken)
   against a bare DRF baseline (bench/baseline.py: serializer + one INSERT + one RQ enqueue), same gunicorn,
   same settings, alternating rounds. Requests/s, p50, p99, non-2xx, 5xx, and server-side CPU per request.
2. Quote-to-project end to end for N opportunities with 1 and then 2 worker processes, against the sandboxes
   served by a separate gunicorn: records/s, and Handoff's own time per record excluding the time spent
   waiting on the sandboxes: (wall × workers − Σ Attempt.duration_ms) / records. Verifies every record is
   terminal and that each succeeded record made exactly one NetSuite customer, one NetSuite job and one
   Kantata workspace.
3. Intake to sync record: N verified, stored events → `apps.sync.intake.process_inbox()` in one process
   (events/s), measured while loading each e2e round.

Starts what it needs like `./handoff run` does: an embedded PostgreSQL and Valkey under .data/bench/ (unless
DATABASE_URL / REDIS_URL are set: then --wipe-external is required, since their data is truncated / flushed), a
fresh `handoff` database each run, migrations, reference data, connections to the sandboxes. Everything listens
on 127.0.0.1 only, every phase is bounded in time, and everything started is stopped at the end (also on
Ctrl-C, SIGTERM or failure).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from datetime import datetime, timezone as dt_tz
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The data folder belongs to the work tree the benchmark was started from (see snapshot() below).
DATA = Path(os.environ.get("HANDOFF_BENCH_DATA") or ROOT / ".data" / "bench")
LOGS = DATA / "logs"
SNAPSHOT_IGNORE = (".data", ".venv", ".git", "__pycache__", "*.pyc", "*.egg-info", "staticfiles", "test-results",
                   "node_modules", ".pytest_cache")


def snapshot(argv: list[str], script: str = "run.py") -> None:
    """Other people edit the work tree while a run lasts (models, migrations, the engine…): copy it to
    <data folder>/src and re-run `bench/<script>` from there, so that one run measures one version of the code.
    (Other benches call it too, after setting HANDOFF_BENCH_DATA to their own folder.)"""
    import shutil

    src = DATA / "src"
    if src.exists():
        shutil.rmtree(src)
    DATA.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*SNAPSHOT_IGNORE), symlinks=True)
    env = {**os.environ, "HANDOFF_BENCH_DATA": str(DATA), "HANDOFF_BENCH_ORIGIN": str(ROOT)}
    os.execve(sys.executable, [sys.executable, str(src / "bench" / script), *argv], env)


if __name__ == "__main__" and "--no-snapshot" not in sys.argv and not os.environ.get("HANDOFF_BENCH_ORIGIN"):
    snapshot(sys.argv[1:])

sys.path[0] = str(ROOT)
os.chdir(ROOT)

from bench.common import say, stop_on_sigterm  # noqa: E402

from config.launcher import EmbeddedPostgres, EmbeddedValkey  # noqa: E402

VENV_BIN = Path(sys.executable).parent
PG_PORT = int(os.environ.get("HANDOFF_BENCH_PG_PORT", 54349))
VALKEY_PORT = int(os.environ.get("HANDOFF_BENCH_VALKEY_PORT", 63819))
HUBSPOT_SECRET = "bench-hubspot-client-secret"
NOT_DONE = ("pending", "in_progress", "retrying")

TARGETS = {
    "intake_ratio": 0.7,  # Handoff req/s ≥ 0.7 × baseline req/s
    "intake_p99_ms": 100.0,
    "intake_5xx": 0,
    "own_ms_per_record": 10.0,
    "inbox_events_per_s": 1000.0,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ processes


class Procs:
    """Every process this run starts, each in its own session, stopped by its own process group id."""

    def __init__(self):
        self.procs: dict[str, subprocess.Popen] = {}
        self.rusage: dict[str, float] = {}

    def start(self, name: str, cmd: list[str], *, env: dict, **kw) -> subprocess.Popen:
        LOGS.mkdir(parents=True, exist_ok=True)
        if "stdout" not in kw:
            kw["stdout"] = open(LOGS / f"{name}.log", "w")
            kw.setdefault("stderr", subprocess.STDOUT)
        elif "stderr" not in kw:
            kw["stderr"] = open(LOGS / f"{name}.log", "w")
        p = subprocess.Popen([str(c) for c in cmd], env=env, cwd=ROOT, start_new_session=True, **kw)
        self.procs[name] = p
        return p

    def stop(self, name: str, timeout: float = 20.0) -> float | None:
        """SIGTERM the process group, wait, SIGKILL if needed. Returns the process's CPU seconds (rusage)."""
        p = self.procs.pop(name, None)
        if p is None:
            return None
        cpu = None
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                pid, _status, ru = os.wait4(p.pid, os.WNOHANG)
            except ChildProcessError:
                break
            if pid:
                p.returncode = _status
                cpu = ru.ru_utime + ru.ru_stime
                break
            time.sleep(0.05)
        else:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        for f in (p.stdin, p.stdout, p.stderr):
            if f:
                try:
                    f.close()
                except OSError:
                    pass
        return cpu

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name, timeout=10)


def tree_cpu(pid: int | None) -> float:
    """CPU seconds used so far by a process, its reaped children and its live descendants."""
    if not pid:
        return 0.0
    import psutil

    try:
        p = psutil.Process(pid)
        t = p.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for c in p.children(recursive=True):
            try:
                ct = c.cpu_times()
                total += ct.user + ct.system
            except psutil.Error:
                pass
        return total
    except psutil.Error:
        return 0.0


def pidfile(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer 200 within {timeout:.0f} s ({last})")


# ------------------------------------------------------------------ engines and database


class Engines:
    def __init__(self, args):
        self.args = args
        self.started: list = []
        self.pg_pid: int | None = None
        self.valkey_pid: int | None = None

    def start(self) -> None:
        import psycopg

        if os.environ.get("DATABASE_URL"):
            if not self.args.wipe_external:
                raise SystemExit("DATABASE_URL is set: the benchmark truncates Handoff's tables there. "
                                 "Pass --wipe-external to agree, or unset it to use an embedded PostgreSQL.")
            say("PostgreSQL from DATABASE_URL (its Handoff tables will be truncated)")
        else:
            pg = EmbeddedPostgres(DATA / "pg", PG_PORT, durable=False)
            url = pg.start()
            self.started.append(pg)
            self.pg_pid = pidfile(DATA / "pg" / "postmaster.pid")
            say(f"PostgreSQL (embedded, fsync off) on 127.0.0.1:{PG_PORT}: fresh database 'handoff'")
            with psycopg.connect(f"postgresql://postgres@127.0.0.1:{PG_PORT}/postgres", autocommit=True) as c:
                c.execute("DROP DATABASE IF EXISTS handoff WITH (FORCE)")
                c.execute("CREATE DATABASE handoff")
            os.environ["DATABASE_URL"] = url
        if os.environ.get("REDIS_URL"):
            if not self.args.wipe_external:
                raise SystemExit("REDIS_URL is set: the benchmark flushes that Redis database. Pass --wipe-external "
                                 "to agree, or unset it to use an embedded Valkey.")
            say("Redis from REDIS_URL (its database will be flushed)")
        else:
            vk = EmbeddedValkey(DATA / "valkey", VALKEY_PORT, durable=False)
            os.environ["REDIS_URL"] = vk.start()
            self.started.append(vk)
            self.valkey_pid = pidfile(DATA / "valkey" / "valkey.pid")
            say(f"Valkey (embedded) on 127.0.0.1:{VALKEY_PORT}")

    def stop(self) -> None:
        for s in reversed(self.started):
            try:
                s.stop()
            except Exception as exc:  # keep stopping the others
                print(f"could not stop {s}: {exc}", file=sys.stderr)
        self.started = []


def child_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env.update({"DJANGO_SETTINGS_MODULE": "bench.settings", "HANDOFF_SANDBOX_ENABLED": "1", "DEBUG": "0",
                "LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
                "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"})
    env.update(extra or {})
    return env


def prepare_env() -> None:
    """This process: the venv's bin first on PATH, the data folder, and an XDG_RUNTIME_DIR when there is none."""
    os.environ["PATH"] = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    DATA.mkdir(parents=True, exist_ok=True)
    if not os.environ.get("XDG_RUNTIME_DIR"):
        (DATA / "xdg").mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(DATA / "xdg")


def setup_django(sandbox_url: str, extra_env: dict | None = None) -> None:
    """After engines.start(): the environment for this process and its children, migrations (in a child, like
    the Procfile's release), Django in this process, empty tables, reference data, connections to the sandboxes."""
    os.environ.update(child_env({**(extra_env or {}), "HANDOFF_SANDBOX_URL": sandbox_url}))
    say("migrating")
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, check=True,
                   env=child_env(), timeout=300)
    import django

    django.setup()
    from apps.demo.firm import setup_connections
    from bench import baseline

    baseline.create_table()
    reset_state()  # also creates the reference data
    setup_connections(sandbox_url, hubspot_secret=HUBSPOT_SECRET)


def start_gunicorn(procs: "Procs", name: str, port: int, args) -> subprocess.Popen:
    """Handoff's WSGI app (web or sandboxes) under gunicorn on 127.0.0.1:port (--gunicorn-workers/-threads)."""
    return procs.start(name, [VENV_BIN / "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{port}",
                              "--workers", str(args.gunicorn_workers), "--threads", str(args.gunicorn_threads),
                              "--log-level", "warning", "--graceful-timeout", "5", "--chdir", ROOT],
                       env=child_env())


def flush_redis() -> None:
    import django_rq

    django_rq.get_connection("default").flushdb()


TRUNCATE_SQL = """TRUNCATE sync_attempt, sync_auditentry, sync_inboundevent, sync_syncrecord, sync_syncrun,
    canonical_externalid, canonical_milestone, canonical_engagement, canonical_customer, sandbox_sandboxobject,
    bench_baseline RESTART IDENTITY CASCADE"""


def reset_state() -> None:
    """Empty every table the benchmark fills; keep connections and sandbox settings; re-create reference data."""
    from django.db import connection

    from apps.demo.firm import setup_reference_data

    with connection.cursor() as cur:
        cur.execute(TRUNCATE_SQL)
    setup_reference_data()
    flush_redis()


def analyze(*tables: str) -> None:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("ANALYZE " + ", ".join(tables))


# ------------------------------------------------------------------ 1. callback intake


def bench_intake(args, web_url: str, web_pid: int, engines: Engines, workdir: Path) -> dict:
    from bench import loadgen
    from apps.sync.models import InboundEvent
    from django.db import connection

    tool = args.loadgen if args.loadgen != "auto" else ("wrk" if loadgen.have_wrk() else "python")
    if tool == "wrk" and not loadgen.have_wrk():
        raise SystemExit("wrk is not installed (apt-get install -y wrk), use --loadgen python")
    runner = loadgen.run_wrk if tool == "wrk" else loadgen.run_python
    urls = {"handoff": f"{web_url}/api/v1/callbacks/hubspot/", "baseline": f"{web_url}/bench/baseline/"}
    ids = {"next": 1_000_000}
    accepted = Counter()

    def one(name: str, seconds: float, n: int) -> dict:
        reqfile = workdir / f"{name}.reqs"
        loadgen.write_requests(reqfile, url=urls[name], secret=HUBSPOT_SECRET, n=n, first_event_id=ids["next"],
                               first_object_id=ids["next"])
        ids["next"] += n
        cpu0 = {"web": tree_cpu(web_pid), "pg": tree_cpu(engines.pg_pid), "valkey": tree_cpu(engines.valkey_pid),
                "loadgen": _children_cpu() if tool == "wrk" else _self_cpu(), "machine": machine_busy()}
        r = runner(url=urls[name], reqfile=reqfile, seconds=seconds, concurrency=args.concurrency,
                   threads=args.wrk_threads, workdir=workdir)
        cpu1 = {"web": tree_cpu(web_pid), "pg": tree_cpu(engines.pg_pid), "valkey": tree_cpu(engines.valkey_pid),
                "loadgen": _children_cpu() if tool == "wrk" else _self_cpu(), "machine": machine_busy()}
        r["cpu"] = {k: cpu1[k] - cpu0[k] for k in cpu0}
        r["cpu"]["others"] = max(0.0, r["cpu"].pop("machine") - sum(r["cpu"].values()))
        accepted[name] += r["codes"].get(202, 0)
        reqfile.unlink(missing_ok=True)
        return r

    say(f"intake: {tool}, {args.concurrency} concurrent connections, gunicorn --workers {args.gunicorn_workers} "
        f"--threads {args.gunicorn_threads}")
    est = {}
    for name in ("handoff", "baseline"):
        w = one(name, args.warmup_seconds, int(args.warmup_seconds * 4000))
        est[name] = w["requests"] / max(w["seconds"], 0.001)
        say(f"  warm-up {name:<8} {est[name]:7.0f} req/s")
    per_round = args.intake_seconds / args.intake_rounds
    runs: dict[str, list] = {"handoff": [], "baseline": []}
    for rnd in range(args.intake_rounds):
        order = ("baseline", "handoff") if rnd % 2 == 0 else ("handoff", "baseline")
        for name in order:
            n = int(max(est[name] * per_round * 2.5, 5000))
            r = one(name, per_round, n)
            runs[name].append(r)
            s = loadgen.summarize([r])
            say(f"  round {rnd + 1} {name:<8} {s['rps']:7.0f} req/s  p50 {s['p50_ms']:6.1f} ms  p99 "
                f"{s['p99_ms']:6.1f} ms  codes {s['codes']}  socket errors {s['socket_errors']}")
    out = {"tool": tool, "warmup_rps": est}
    for name, rs in runs.items():
        s = loadgen.summarize(rs)
        s["rounds"] = [{k: v for k, v in loadgen.summarize([r]).items() if k in ("rps", "p50_ms", "p99_ms", "requests")}
                       for r in rs]
        cpu = Counter()
        for r in rs:
            cpu.update(r["cpu"])
        s["cpu_ms_per_request"] = {k: 1000 * v / max(s["requests"], 1) for k, v in cpu.items() if k != "others"}
        s["server_cpu_ms_per_request"] = sum(v for k, v in s["cpu_ms_per_request"].items() if k != "loadgen")
        s["others_cpu_share"] = cpu["others"] / (os.cpu_count() * s["seconds"]) if s["seconds"] else 0.0
        s.pop("hist")
        out[name] = s
    out["ratio"] = out["handoff"]["rps"] / out["baseline"]["rps"] if out["baseline"]["rps"] else 0.0
    # every 202 must be a stored row (and nothing else)
    stored_events = InboundEvent.objects.filter(connection__slug="hubspot", status="received").count()
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM bench_baseline")
        stored_rows = cur.fetchone()[0]
    out["stored"] = {"handoff_202": accepted["handoff"], "handoff_events_stored": stored_events,
                     "baseline_202": accepted["baseline"], "baseline_rows": stored_rows}
    # wrk stops counting at the deadline: requests in flight then were stored but not counted (≤ one per
    # connection per run)
    in_flight = args.concurrency * (1 + args.intake_rounds)
    out["checks"] = {
        "every Handoff 202 is a stored event": 0 <= stored_events - accepted["handoff"] <= in_flight,
        "every baseline 202 is a stored row": 0 <= stored_rows - accepted["baseline"] <= in_flight,
        "no request needed a wrapped-around (duplicate) event": all(r["wrapped"] == 0 for rs in runs.values()
                                                                   for r in rs),
    }
    for name, ok in out["checks"].items():
        say(f"  {'ok  ' if ok else 'FAIL'} {name}")
    return out


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all processes, ours and everybody else's)."""
    import psutil

    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


# ------------------------------------------------------------------ 2 + 3. inbox and end to end


def load_inbox(n: int, *, bad_share: float, seed: int) -> dict:
    """n closed-won HubSpot deals (+ companies) straight into the sandbox, and their verified webhook events
    stored through the intake's own store_events (100 events per call, as HubSpot batches them)."""
    from apps.connectors.hubspot import inbound as hubspot_inbound
    from apps.demo.deals import make_opportunity, scenario_mix
    from apps.sandbox.models import SandboxObject
    from apps.sync.intake import store_events
    from apps.sync.models import Connection

    rng = random.Random(seed)
    scenarios = scenario_mix(n, rng, bad_share) if bad_share > 0 else ["good"] * n
    t0 = time.perf_counter()
    pairs = [make_opportunity(rng, s).as_hubspot() for s in scenarios]
    companies = SandboxObject.objects.bulk_create(
        [SandboxObject(system="hubspot", object_type="companies", data={"properties": c, "associations": {}})
         for c, _ in pairs], batch_size=2000)
    deals = SandboxObject.objects.bulk_create(
        [SandboxObject(system="hubspot", object_type="deals",
                       data={"properties": d, "associations": {"companies": [str(c.pk)]}})
         for c, (_, d) in zip(companies, pairs)], batch_size=2000)
    t1 = time.perf_counter()
    conn = Connection.objects.get(slug="hubspot")
    headers = {"Content-Type": "application/json", "User-Agent": "HubSpot Connect 2.0 (bench)"}
    accepted = 0
    now_ms = int(time.time() * 1000)
    for i in range(0, n, 100):
        events = [{"eventId": 5_000_000 + j, "subscriptionId": 1, "portalId": 62515, "appId": 1,
                   "occurredAt": now_ms, "subscriptionType": "deal.propertyChange", "attemptNumber": 0,
                   "objectId": deals[j].pk, "propertyName": "dealstage", "propertyValue": "closedwon",
                   "changeSource": "CRM"} for j in range(i, min(n, i + 100))]
        accepted += store_events(conn, hubspot_inbound.parse_events(conn, events), headers, 202)["accepted"]
    t2 = time.perf_counter()
    return {"scenarios": dict(Counter(scenarios)), "sandbox_objects_s": t1 - t0, "store_events_s": t2 - t1,
            "stored_events_per_s": n / (t2 - t1), "accepted": accepted}


def bench_inbox(n: int) -> dict:
    from apps.sync.intake import process_inbox

    t0 = time.perf_counter()
    counts = process_inbox()
    dt = time.perf_counter() - t0
    return {"events": counts["events"], "records": counts["records"], "seconds": dt,
            "events_per_s": counts["events"] / dt if dt else 0.0}


def failed_jobs() -> int:
    import django_rq
    from rq.registry import FailedJobRegistry

    return sum(FailedJobRegistry(queue=django_rq.get_queue(q)).count for q in ("high", "default", "low"))


def tail(path: Path, n: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def spawn_workers(procs: Procs, k: int, rnd: str) -> list[subprocess.Popen]:
    ws = []
    for i in range(k):
        ws.append(procs.start(f"worker-{rnd}-{i + 1}", [sys.executable, ROOT / "bench" / "worker.py"],
                              env=child_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
    deadline = time.monotonic() + 90
    for w in ws:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SystemExit("a worker did not get ready within 90 s; see .data/bench/logs/")
            r, _, _ = select.select([w.stdout], [], [], left)
            if r:
                line = w.stdout.readline()
                if line.strip() == "ready":
                    break
                if not line:
                    raise SystemExit("a worker died while starting; see .data/bench/logs/")
    return ws


def bench_e2e(args, procs: Procs, k: int, sandbox_pid: int, engines: Engines) -> dict:
    from django.db.models import Count, Max, Sum

    from apps.sandbox.models import SandboxObject
    from apps.sync import sweeper
    from apps.sync.models import Attempt, InboundEvent, SyncRecord

    n = args.e2e_n
    say(f"end to end, {k} worker{'s' if k > 1 else ''}: resetting and loading {n} opportunities")
    reset_state()
    load = load_inbox(n, bad_share=args.bad_share, seed=args.seed)
    analyze("sandbox_sandboxobject", "sync_inboundevent")
    say(f"  sandbox objects in {load['sandbox_objects_s']:.1f} s; {load['accepted']} events stored in "
        f"{load['store_events_s']:.1f} s ({load['stored_events_per_s']:.0f} events/s via store_events)")
    inbox = bench_inbox(n)
    say(f"  process_inbox: {inbox['events']} events → {inbox['records']} records in {inbox['seconds']:.2f} s "
        f"({inbox['events_per_s']:.0f} events/s, one process)")
    analyze("sync_syncrecord", "sync_inboundevent")
    ws = spawn_workers(procs, k, f"{k}w")
    names = [name for name, p in procs.procs.items() if p in ws]
    cpu0 = {"workers": sum(tree_cpu(w.pid) for w in ws), "sandbox": tree_cpu(sandbox_pid),
            "pg": tree_cpu(engines.pg_pid), "valkey": tree_cpu(engines.valkey_pid), "bench": _self_cpu(),
            "machine": machine_busy()}
    go_wall = time.time()
    t0 = time.monotonic()
    for w in ws:
        w.stdin.write("go\n")
        w.stdin.flush()
    last_sweep = last_note = last_progress = t0
    last_left = None
    timed_out = False
    while True:
        time.sleep(0.5)
        left = SyncRecord.objects.filter(status__in=NOT_DONE).count()
        waiting = InboundEvent.objects.filter(status="received").count()
        now = time.monotonic()
        if left == 0 and waiting == 0:
            break
        if any(w.poll() is not None for w in ws):
            raise SystemExit(f"a worker exited during the run; see {LOGS}/")
        failed = failed_jobs()
        if failed:
            raise SystemExit(f"{failed} job(s) failed during the run (see {LOGS}/worker-*.log):\n"
                             + tail(LOGS / f"{names[0]}.log"))
        if left != last_left:
            last_left, last_progress = left, now
        elif now - last_progress > args.stall_seconds:
            raise SystemExit(f"no record finished for {args.stall_seconds:.0f} s ({left} left); see {LOGS}/")
        if now - t0 > args.e2e_timeout:
            timed_out = True
            break
        if now - last_sweep >= 10:  # what the Procfile's scheduler does (config/cron.py: every 10 s)
            sweeper.sweep()
            last_sweep = now
        if now - last_note >= 15:
            say(f"  {n - left}/{n} records done after {now - t0:.0f} s")
            last_note = now
    poll_wall = time.monotonic() - t0
    cpu1 = {"workers": sum(tree_cpu(w.pid) for w in ws), "sandbox": tree_cpu(sandbox_pid),
            "pg": tree_cpu(engines.pg_pid), "valkey": tree_cpu(engines.valkey_pid), "bench": _self_cpu(),
            "machine": machine_busy()}
    for name in names:
        procs.stop(name)
    last = SyncRecord.objects.aggregate(m=Max("updated_at"))["m"]
    wall = (last.timestamp() - go_wall) if last else poll_wall
    if not 0 < wall <= poll_wall + 1:
        wall = poll_wall
    statuses = dict(Counter(SyncRecord.objects.values_list("status", flat=True)))
    held = dict(Counter(SyncRecord.objects.filter(status="held").values_list("reason_code", flat=True)))
    agg = Attempt.objects.aggregate(ms=Sum("duration_ms"), n=Count("id"))
    by_system = {row["system"]: {"calls": row["n"], "ms": row["ms"] or 0}
                 for row in Attempt.objects.values("system").annotate(n=Count("id"), ms=Sum("duration_ms"))}
    outcomes = dict(Counter(Attempt.objects.values_list("outcome", flat=True)))
    succeeded = statuses.get("succeeded", 0)
    sandbox = {f"{s}:{t}": SandboxObject.objects.filter(system=s, object_type=t).count()
               for s, t in (("netsuite", "customer"), ("netsuite", "job"), ("kantata", "workspace"))}
    ok_records = SyncRecord.objects.filter(status="succeeded")
    distinct = {key: ok_records.values_list(f"context__{key}", flat=True).distinct().count()
                for key in ("erp_customer_id", "erp_project_id", "psa_project_id")}
    patched_deals = SandboxObject.objects.filter(system="hubspot", object_type="deals", writes=2).count()
    records = sum(statuses.values())
    attempt_s = (agg["ms"] or 0) / 1000
    cpu = {key: cpu1[key] - cpu0[key] for key in cpu0}
    cpu["others"] = max(0.0, cpu.pop("machine") - sum(cpu.values()))
    result = {
        "workers": k, "records": records, "wall_s": wall, "records_per_s": records / wall if wall else 0.0,
        "timed_out": timed_out, "statuses": statuses, "held_reasons": held, "attempts": agg["n"],
        "attempt_outcomes": outcomes, "attempt_wait_s": attempt_s, "by_system": by_system,
        "own_ms_per_record": 1000 * (wall * k - attempt_s) / records if records else float("nan"),
        "cpu_s": cpu, "cpu_ms_per_record": {key: 1000 * v / max(records, 1) for key, v in cpu.items()},
        "others_cpu_share": cpu["others"] / (os.cpu_count() * poll_wall) if poll_wall else 0.0,
        "sandbox_objects": sandbox, "distinct_ids": distinct, "deals_written_back": patched_deals,
        "load": load, "inbox": inbox,
    }
    checks = {
        "every event became a record": records == n and inbox["events"] == n,
        "every record terminal": not timed_out and not any(statuses.get(s) for s in NOT_DONE),
        "one NetSuite customer per succeeded record": sandbox["netsuite:customer"] == succeeded
        and distinct["erp_customer_id"] == succeeded,
        "one NetSuite job per succeeded record": sandbox["netsuite:job"] == succeeded
        and distinct["erp_project_id"] == succeeded,
        "one Kantata workspace per succeeded record": sandbox["kantata:workspace"] == succeeded
        and distinct["psa_project_id"] == succeeded,
        "ids written back to each succeeded deal": patched_deals == succeeded,
    }
    if args.bad_share == 0:
        checks["all (good) records succeeded"] = succeeded == n
    result["checks"] = checks
    say(f"  {k} worker(s): {records} records in {wall:.1f} s = {result['records_per_s']:.1f} records/s; "
        f"{agg['n']} calls waited {attempt_s:.1f} s; own time {result['own_ms_per_record']:.1f} ms/record; "
        f"statuses {statuses}")
    for name, ok in checks.items():
        say(f"  {'ok  ' if ok else 'FAIL'} {name}")
    return result


# ------------------------------------------------------------------ report


def machine_info(args) -> dict:
    from django.db import connection

    cpu_model = ""
    try:
        cpu_model = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                         if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    with connection.cursor() as cur:
        cur.execute("SELECT version()")
        pg_version = cur.fetchone()[0].split(" on ")[0]
    wrk_version = ""
    try:
        wrk_version = subprocess.run(["wrk", "-v"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     timeout=5).stdout.split()[1]
    except (OSError, subprocess.TimeoutExpired):
        pass
    import django
    import gunicorn

    return {"nproc": os.cpu_count(), "cpu": cpu_model, "python": platform.python_version(),
            "platform": platform.platform(), "postgres": pg_version, "django": django.get_version(),
            "gunicorn": gunicorn.__version__, "wrk": wrk_version, "loadavg_at_start": os.getloadavg(),
            "command": " ".join([".venv/bin/python", "bench/run.py", *sys.argv[1:]]),
            "code": code_fingerprint(),
            "snapshot": str(ROOT) if os.environ.get("HANDOFF_BENCH_ORIGIN") else "",
            "started": datetime.now(dt_tz.utc).isoformat(timespec="seconds")}


def code_fingerprint() -> str:
    """A hash of the Python, template and migration files measured (no git: other people commit meanwhile)."""
    import hashlib

    h = hashlib.sha256()
    for p in sorted(ROOT.rglob("*")):
        if p.is_file() and p.suffix in (".py", ".html", ".toml") and not any(
                part in (".data", ".venv", ".git", "__pycache__") for part in p.relative_to(ROOT).parts):
            h.update(str(p.relative_to(ROOT)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:12]


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def report(results: dict) -> None:
    lines = ["", "=" * 100, "HANDOFF BENCHMARK RESULTS", "=" * 100]
    m = results["machine"]
    tool = results.get("intake", {}).get("tool", "-")
    lines.append(f"machine: {m['nproc']} cores ({m['cpu']}), Python {m['python']}, {m['postgres']}, "
                 f"Django {m['django']}, gunicorn {m['gunicorn']}, load generator {tool}"
                 f" {m['wrk'] if tool == 'wrk' else ''}")
    lines.append(f"command: {m['command']}   (code measured: {m['code']}"
                 f"{', snapshot of the work tree in ' + m['snapshot'] if m['snapshot'] else ''})")
    rows = []
    if "intake" in results:
        it = results["intake"]
        h, b = it["handoff"], it["baseline"]
        lines.append(f"\n1. Callback intake: {results['config']['concurrency']} concurrent connections, "
                     f"{results['config']['intake_seconds']:.0f} s per endpoint in {results['config']['intake_rounds']}"
                     f" alternating rounds, gunicorn {results['config']['gunicorn']}")
        lines.append(f"   {'endpoint':<34}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}{'5xx':>6}"
                     f"{'sock err':>9}{'server CPU ms/req':>19}")
        for name, s, label in (("baseline", b, "bare DRF baseline"),
                               ("handoff", h, "Handoff /api/v1/callbacks/hubspot/")):
            lines.append(f"   {label:<34}{s['rps']:>9.0f}{s['p50_ms']:>9.1f}{s['p99_ms']:>9.1f}{s['non2xx']:>9}"
                         f"{s['c5xx']:>6}{s['socket_errors']:>9}{s['server_cpu_ms_per_request']:>19.2f}")
        for name, s in (("baseline", b), ("handoff", h)):
            lines.append(f"   {name} per round: " + ", ".join(
                f"{r['rps']:.0f} req/s p50 {r['p50_ms']:.1f} p99 {r['p99_ms']:.1f}" for r in s["rounds"]))
            lines.append(f"   {name} CPU ms/request: " + ", ".join(
                f"{k} {v:.2f}" for k, v in s["cpu_ms_per_request"].items())
                + f"; processes not started by the benchmark used {100 * s['others_cpu_share']:.0f}% of the "
                  f"machine meanwhile")
        lines.append(f"   stored: {it['stored']}")
        for name, ok in it["checks"].items():
            lines.append(f"   {'ok  ' if ok else 'FAIL'} {name}")
        rows += [
            ("intake: Handoff req/s ÷ baseline req/s", f"{it['ratio']:.2f}", f"≥ {TARGETS['intake_ratio']}",
             it["ratio"] >= TARGETS["intake_ratio"]),
            ("intake: Handoff p99", f"{h['p99_ms']:.1f} ms", f"< {TARGETS['intake_p99_ms']:.0f} ms",
             h["p99_ms"] < TARGETS["intake_p99_ms"]),
            ("intake: Handoff 5xx", str(h["c5xx"]), "0", h["c5xx"] == 0),
            ("intake: Handoff non-2xx", str(h["non2xx"]), "(reported)", None),
            ("intake: (context) baseline req/s, p99",
             f"{b['rps']:.0f}, {b['p99_ms']:.0f} ms", "(reported)", None),
            ("intake: (context) Handoff req/s", f"{h['rps']:.0f}", "(reported)", None),
        ]
    for e in results.get("e2e", []):
        k = e["workers"]
        lines.append(f"\n2/3. {e['records']} opportunities, {k} worker process{'es' if k > 1 else ''}:")
        lines.append(f"   process_inbox (one process): {e['inbox']['events']} events → {e['inbox']['records']} "
                     f"records in {e['inbox']['seconds']:.2f} s = {e['inbox']['events_per_s']:.0f} events/s")
        per_system = ", ".join(f"{system} {v['calls']} calls {v['ms'] / max(v['calls'], 1):.1f} ms avg"
                               for system, v in sorted(e["by_system"].items()))
        lines.append(f"   workers: {e['wall_s']:.1f} s wall = {e['records_per_s']:.1f} records/s; "
                     f"{e['attempts']} calls to the sandboxes, {e['attempt_wait_s']:.1f} s waiting on them "
                     f"({per_system})")
        lines.append(f"   Handoff's own time: ({e['wall_s']:.1f} s × {k} − {e['attempt_wait_s']:.1f} s) / "
                     f"{e['records']} = {e['own_ms_per_record']:.2f} ms/record")
        c = e["cpu_ms_per_record"]
        lines.append(f"   CPU ms per record: workers {c['workers']:.1f}, sandbox gunicorn {c['sandbox']:.1f}, "
                     f"PostgreSQL {c['pg']:.1f}, Valkey {c['valkey']:.2f}, bench poller {c['bench']:.2f}; processes "
                     f"not started by the benchmark used {100 * e['others_cpu_share']:.0f}% of the machine meanwhile")
        lines.append(f"   statuses {e['statuses']}  held reasons {e['held_reasons']}  attempt outcomes "
                     f"{e['attempt_outcomes']}")
        lines.append(f"   sandbox objects {e['sandbox_objects']}  distinct ids {e['distinct_ids']}  deals written "
                     f"back {e['deals_written_back']}")
        for name, ok in e["checks"].items():
            lines.append(f"   {'ok  ' if ok else 'FAIL'} {name}")
        rows += [
            (f"e2e {k} worker(s): records/s", f"{e['records_per_s']:.1f}", "(reported)", None),
            (f"e2e {k} worker(s): Handoff's own ms/record", f"{e['own_ms_per_record']:.2f}",
             f"≤ {TARGETS['own_ms_per_record']:.0f}", e["own_ms_per_record"] <= TARGETS["own_ms_per_record"]),
            (f"e2e {k} worker(s): checks", "all pass" if all(e["checks"].values()) else "FAILED", "all pass",
             all(e["checks"].values())),
            (f"process_inbox events/s (round {k}w)", f"{e['inbox']['events_per_s']:.0f}",
             f"≥ {TARGETS['inbox_events_per_s']:.0f}", e["inbox"]["events_per_s"] >= TARGETS["inbox_events_per_s"]),
        ]
    if len(results.get("e2e", [])) >= 2:
        e1, e2 = results["e2e"][0], results["e2e"][1]
        rows.append((f"e2e scaling {e2['workers']} vs {e1['workers']} worker(s)",
                     f"{e2['records_per_s'] / e1['records_per_s']:.2f}×", "(reported)", None))
    lines.append("\nSUMMARY")
    lines.append(f"   {'figure':<48}{'value':>14}  {'target':<12}{'':<8}")
    for name, value, target, ok in rows:
        lines.append(f"   {name:<48}{value:>14}  {target:<12}{'' if ok is None else verdict(ok)}")
    lines.append("=" * 100)
    print("\n".join(lines), flush=True)


# ------------------------------------------------------------------ main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--e2e-n", type=int, default=10_000, help="opportunities per end-to-end round (default 10000)")
    p.add_argument("--e2e-workers", default="1,2", help="worker processes per round, comma-separated (default 1,2)")
    p.add_argument("--e2e-timeout", type=float, default=900, help="seconds a round may take before it is cut")
    p.add_argument("--stall-seconds", type=float, default=120,
                   help="stop a round when no record finishes for this long")
    p.add_argument("--bad-share", type=float, default=0.0,
                   help="share of opportunities with a business problem (held records); default 0: all good")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--intake-seconds", type=float, default=20, help="measured seconds per intake endpoint")
    p.add_argument("--intake-rounds", type=int, default=2, help="alternating rounds the seconds are split into")
    p.add_argument("--warmup-seconds", type=float, default=3)
    p.add_argument("--concurrency", type=int, default=16, help="concurrent client connections (default 16)")
    p.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto",
                   help="auto: wrk when installed (apt-get install -y wrk), else a Python thread pool")
    p.add_argument("--wrk-threads", type=int, default=2)
    p.add_argument("--skip-intake", action="store_true")
    p.add_argument("--skip-e2e", action="store_true")
    add_process_args(p)  # --gunicorn-workers, --gunicorn-threads, --no-snapshot, --wipe-external
    p.add_argument("--json", type=Path, default=None, help="also write the results here (default .data/bench/)")
    return p.parse_args(argv)


def add_process_args(p) -> None:
    """The options of every bench that starts gunicorn and worker processes on its own engines (run.py,
    bench_time.py)."""
    p.add_argument("--gunicorn-workers", type=int, default=2)
    p.add_argument("--gunicorn-threads", type=int, default=4)
    p.add_argument("--no-snapshot", action="store_true",
                   help="run the work tree as it is instead of a copy taken at the start")
    p.add_argument("--wipe-external", action="store_true",
                   help="allow truncating/flushing the PostgreSQL/Redis named by DATABASE_URL/REDIS_URL")


def guarded(procs: Procs, engines: Engines, work) -> int:
    """Run work() (the bench's body, returning its exit code): Ctrl-C or SIGTERM → 130; whatever happens, every
    process and engine started is stopped."""
    try:
        return work()
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        engines.stop()


def save_results(results: dict, name: str, path: Path | None = None) -> Path:
    """The results as JSON: `path`, or <data folder>/<name>-<timestamp>.json."""
    out = path or DATA / f"{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2, default=str))
    say(f"results written to {out} (total {results['total_seconds']:.0f} s)")
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    stop_on_sigterm()
    prepare_env()
    procs = Procs()
    engines = Engines(args)
    started = time.monotonic()
    results: dict = {"config": {
        "concurrency": args.concurrency, "intake_seconds": args.intake_seconds, "intake_rounds": args.intake_rounds,
        "gunicorn": f"--workers {args.gunicorn_workers} --threads {args.gunicorn_threads}"
                    f" ({'gthread' if args.gunicorn_threads > 1 else 'sync'})",
        "e2e_n": args.e2e_n, "bad_share": args.bad_share}}

    def work() -> int:
        engines.start()
        web_port, sandbox_port = free_port(), free_port()
        while sandbox_port == web_port:
            sandbox_port = free_port()
        web_url, sandbox_url = f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{sandbox_port}"
        setup_django(sandbox_url, {"HANDOFF_PUBLIC_URL": web_url})
        results["machine"] = machine_info(args)
        say(f"starting the sandboxes' gunicorn on {sandbox_url}")
        sandbox = start_gunicorn(procs, "sandbox", sandbox_port, args)
        if not args.skip_intake:
            say(f"starting Handoff's gunicorn on {web_url}")
            web = start_gunicorn(procs, "web", web_port, args)
            wait_http(f"{web_url}/readyz", 60)
            workdir = DATA / "work"
            workdir.mkdir(parents=True, exist_ok=True)
            results["intake"] = bench_intake(args, web_url, web.pid, engines, workdir)
            procs.stop("web")
        wait_http(f"{sandbox_url}/readyz", 60)
        if not args.skip_e2e:
            results["e2e"] = []
            for k in [int(x) for x in args.e2e_workers.split(",") if x.strip()]:
                results["e2e"].append(bench_e2e(args, procs, k, sandbox.pid, engines))
        results["total_seconds"] = time.monotonic() - started
        report(results)
        save_results(results, "results", args.json)
        failed = [name for e in results.get("e2e", []) for name, ok in e["checks"].items() if not ok]
        failed += [name for name, ok in results.get("intake", {}).get("checks", {}).items() if not ok]
        return 1 if failed else 0

    return guarded(procs, engines, work)


if __name__ == "__main__":
    sys.exit(main())
