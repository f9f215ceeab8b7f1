#!/usr/bin/env python
"""Load, burst and scale-out (issue 5), measured in one run on loopback.

    cd /work/main && .venv/bin/python bench/load.py [--sustained-seconds 30] [--burst 50000] [--scale-n 1500]

1. Sustained callback load: wrk (bench/loadgen.py's Python generator if wrk is missing) against Handoff's HubSpot
   callback endpoint under gunicorn (2 workers × 4 threads), pre-signed single-event requests, each a unique
   eventId except a share (--redelivery-share, 10 %) of exact redeliveries of an earlier request (same body,
   timestamp and signature). Verifies InboundEvent rows == distinct event ids sent and that redeliveries only
   bumped `deliveries`.
2. Burst: --burst events stored through the HTTP endpoint in signed batches of 100 events per request (HubSpot's
   batch size), 8 concurrent connections, then drained by 2 worker processes (the Procfile's rqworker): time to
   empty the inbox (events → records), then records → terminal (end to end against the sandbox gunicorn) for at
   most --burst-e2e-seconds, extrapolated to the whole burst if it does not finish. Each worker's RSS is sampled
   every second (psutil).
3. Scale-out: bench/run.py's end-to-end round (--scale-n records) with 1, 2 and 4 worker processes: records/s,
   speed-up vs 1 worker, and CPU use of workers / PostgreSQL / sandbox gunicorn (psutil process-tree CPU time).

Reuses bench/run.py's helpers (engines, gunicorn, workers, snapshot idea); uses its own data folder
(.data/load/) and ports so it does not collide with a bench/run.py run. Every loop is bounded in time and every
process started is stopped at the end (also on Ctrl-C / SIGTERM / failure).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HANDOFF_BENCH_DATA", str(ROOT / ".data" / "load"))
os.environ.setdefault("HANDOFF_BENCH_PG_PORT", "54359")
os.environ.setdefault("HANDOFF_BENCH_VALKEY_PORT", "63829")
DATA = Path(os.environ["HANDOFF_BENCH_DATA"])


def snapshot(argv: list[str]) -> None:
    """Measure one version of the code: copy the work tree to .data/load/src and re-run from there."""
    src = DATA / "src"
    if src.exists():
        shutil.rmtree(src)
    DATA.mkdir(parents=True, exist_ok=True)
    ignore = (".data", ".venv", ".git", "__pycache__", "*.pyc", "*.egg-info", "staticfiles", "test-results",
              "node_modules", ".pytest_cache")
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*ignore), symlinks=True)
    env = {**os.environ, "HANDOFF_BENCH_ORIGIN": str(ROOT)}
    os.execve(sys.executable, [sys.executable, str(src / "bench" / "load.py"), *argv], env)


if __name__ == "__main__" and "--no-snapshot" not in sys.argv and not os.environ.get("HANDOFF_BENCH_ORIGIN"):
    snapshot(sys.argv[1:])

sys.path[0] = str(ROOT)
os.chdir(ROOT)

from bench import run as R  # noqa: E402  (engines, Procs, workers, e2e round, CPU helpers)

say = R.say


# ------------------------------------------------------------------ helpers

class RssSampler(threading.Thread):
    """Every second: RSS (process + descendants) and CPU time of each named process."""

    def __init__(self, pids: dict[str, int], interval: float = 1.0):
        super().__init__(daemon=True)
        self.pids, self.interval = pids, interval
        self.rss: dict[str, list[int]] = {k: [] for k in pids}
        self._halt = threading.Event()

    def run(self):
        import psutil

        while not self._halt.is_set():
            for name, pid in self.pids.items():
                try:
                    p = psutil.Process(pid)
                    rss = p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))
                    self.rss[name].append(rss)
                except psutil.Error:
                    pass
            self._halt.wait(self.interval)

    def stop(self) -> dict:
        self._halt.set()
        self.join(5)
        return {k: {"min_mb": min(v) / 2**20, "max_mb": max(v) / 2**20, "samples": len(v)}
                for k, v in self.rss.items() if v}


WRK_LUA_EXTRA = r"""
local _done = done
function done(summary, latency, requests)
  local sent = {}
  for _, t in ipairs(threads) do
    sent[#sent + 1] = string.format('[%d, %d, %d]', t:get("tid"), t:get("idx"), #t:get("reqs"))
  end
  io.write("\nBENCH-SENT [" .. table.concat(sent, ", ") .. "]\n")
  _done(summary, latency, requests)
end
"""


def sustained(args, web_url: str, web_pid: int, engines, workdir: Path) -> dict:
    """wrk, `--sustained-seconds` at `--concurrency` connections; a share of exact redeliveries."""
    import subprocess

    from django.db import connection as db

    from apps.connectors.hubspot.inbound import signature_v3
    from bench import loadgen

    url = f"{web_url}/api/v1/callbacks/hubspot/"
    use_wrk = loadgen.have_wrk() and args.loadgen != "python"
    rng = random.Random(args.seed)

    def write(path: Path, n: int, first: int) -> list[int]:
        """n signed requests; line i is an exact copy of line i-2·k (same wrk thread, sent earlier) with
        probability --redelivery-share. Returns the event id of each line."""
        ts = str(int(time.time() * 1000))
        lines, ids = [], []
        nxt = first
        for i in range(n):
            if i >= 40 and rng.random() < args.redelivery_share:
                j = i - 2 * rng.randint(5, 20)  # same parity → same wrk thread, already sent
                lines.append(lines[j])
                ids.append(ids[j])
                continue
            event = [{"eventId": nxt, "subscriptionId": 1, "portalId": 62515, "appId": 1, "occurredAt": int(ts),
                      "subscriptionType": "deal.propertyChange", "attemptNumber": 0, "objectId": nxt,
                      "propertyName": "dealstage", "propertyValue": "closedwon", "changeSource": "CRM"}]
            body = json.dumps(event)
            lines.append(f"{body}\t{ts}\t{signature_v3(R.HUBSPOT_SECRET, 'POST', url, body.encode(), ts)}\n")
            ids.append(nxt)
            nxt += 1
        path.write_text("".join(lines))
        return ids

    def go(seconds: float, n: int, first: int) -> tuple[dict, list[int]]:
        reqfile = workdir / "sustained.reqs"
        ids = write(reqfile, n, first)
        if use_wrk:
            lua = workdir / "load.lua"
            lua.write_text(loadgen.WRK_LUA + WRK_LUA_EXTRA)
            t = args.wrk_threads
            cmd = ["wrk", f"-t{t}", f"-c{args.concurrency}", f"-d{max(1, int(round(seconds)))}s", "--timeout",
                   "10s", "-s", str(lua), url, "--", str(reqfile), str(t)]
            res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 timeout=seconds + 120)
            out = res.stdout.splitlines()
            js = next((ln for ln in out if ln.startswith("BENCH-JSON ")), None)
            sent_ln = next((ln for ln in out if ln.startswith("BENCH-SENT ")), None)
            if res.returncode != 0 or js is None or sent_ln is None:
                raise RuntimeError(f"wrk failed ({res.returncode}):\n{res.stdout[-3000:]}")
            data = json.loads(js[len("BENCH-JSON "):])
            r = {"requests": data["requests"], "seconds": data["duration_us"] / 1e6,
                 "codes": {int(k): v for k, v in data["codes"].items()}, "errors": data["errors"],
                 "wrapped": data["wrapped"], "hist": {int(v): int(c) for v, c in data["hist"]}}
            # lines each thread handed to wrk (request() called): thread tid owns lines i with i % t == tid
            sent_ids = []
            for tid, idx, _nreq in json.loads(sent_ln[len("BENCH-SENT "):]):
                own = [ids[i] for i in range(tid, len(ids), t)]
                sent_ids += own[:min(idx, len(own))]
        else:
            r = loadgen.run_python(url=url, reqfile=reqfile, seconds=seconds, concurrency=args.concurrency)
            sent_ids = ids[:min(r["requests"] + args.concurrency, len(ids))]  # approximate: a shared counter
        reqfile.unlink(missing_ok=True)
        return r, sent_ids

    say(f"1. sustained: {'wrk' if use_wrk else 'python'} {args.concurrency} connections, {args.sustained_seconds:.0f}"
        f" s, {100 * args.redelivery_share:.0f} % exact redeliveries")
    w, _ = go(3, 20_000, 1)  # warm-up (its rows are counted apart)
    rps0 = w["requests"] / max(w["seconds"], 0.001)
    with db.cursor() as cur:
        cur.execute("SELECT count(*), coalesce(max(event_id::bigint), 0) FROM sync_inboundevent WHERE verified")
        warm_rows, warm_max = cur.fetchone()
    first = warm_max + 1_000_000
    n = int(max(rps0 * args.sustained_seconds * 3, 20_000))
    cpu0 = {"web": R.tree_cpu(web_pid), "pg": R.tree_cpu(engines.pg_pid), "machine": R.machine_busy()}
    r, sent_ids = go(args.sustained_seconds, n, first)
    cpu1 = {"web": R.tree_cpu(web_pid), "pg": R.tree_cpu(engines.pg_pid), "machine": R.machine_busy()}
    time.sleep(1.0)  # let the last in-flight requests finish
    s = loadgen.summarize([r])
    s.pop("hist")
    distinct = set(sent_ids)
    with db.cursor() as cur:
        cur.execute("SELECT event_id::bigint, deliveries FROM sync_inboundevent WHERE verified AND event_id::bigint >= %s",
                    [first])
        rows = dict(cur.fetchall())
        cur.execute("SELECT count(*) FROM sync_inboundevent WHERE NOT verified")
        rejected = cur.fetchone()[0]
    redeliveries_sent = len(sent_ids) - len(distinct)
    stray = set(rows) - distinct
    missing = distinct - set(rows)
    extra_deliveries = sum(v - 1 for v in rows.values())
    s.update({
        "tool": "wrk" if use_wrk else "python", "warmup_rps": rps0, "requests_issued": len(sent_ids),
        "distinct_events_issued": len(distinct), "redeliveries_issued": redeliveries_sent, "inbox_rows": len(rows),
        "rows_not_issued": len(stray), "issued_not_stored": len(missing), "extra_deliveries_recorded": extra_deliveries,
        "rejected_rows": rejected, "wrapped": r["wrapped"],
        "cpu_s": {k: cpu1[k] - cpu0[k] for k in cpu0},
    })
    # wrk stops at the deadline: ≤ one request per connection was handed to wrk but maybe never sent/answered
    s["checks"] = {
        "zero 5xx": s["c5xx"] == 0,
        "inbox rows == distinct events sent (± requests in flight at the deadline)":
            not stray and len(missing) <= args.concurrency,
        "redeliveries added no rows (each only bumped deliveries)":
            not stray and redeliveries_sent - args.concurrency <= extra_deliveries <= redeliveries_sent,
        "no request file wrap-around": r["wrapped"] == 0,
        "no rejected (unverified) rows": rejected == 0,
    }
    say(f"  {s['rps']:.0f} callbacks/s  p50 {s['p50_ms']:.1f} ms  p99 {s['p99_ms']:.1f} ms  codes {s['codes']}  "
        f"socket errors {s['socket_errors']}")
    say(f"  issued {len(sent_ids)} requests = {len(distinct)} distinct events + {redeliveries_sent} redeliveries; "
        f"inbox rows {len(rows)} (missing {len(missing)}, stray {len(stray)}); extra deliveries recorded "
        f"{extra_deliveries}")
    for name, ok in s["checks"].items():
        say(f"  {'ok  ' if ok else 'FAIL'} {name}")
    return s


def make_deals(n: int, seed: int) -> list[int]:
    """n good closed-won HubSpot deals (+ companies) in the sandbox; returns the deals' ids (objectIds)."""
    from apps.demo.deals import make_opportunity
    from apps.sandbox.models import SandboxObject

    rng = random.Random(seed)
    pairs = [make_opportunity(rng, "good").as_hubspot() for _ in range(n)]
    companies = SandboxObject.objects.bulk_create(
        [SandboxObject(system="hubspot", object_type="companies", data={"properties": c, "associations": {}})
         for c, _ in pairs], batch_size=2000)
    deals = SandboxObject.objects.bulk_create(
        [SandboxObject(system="hubspot", object_type="deals",
                       data={"properties": d, "associations": {"companies": [str(c.pk)]}})
         for c, (_, d) in zip(companies, pairs)], batch_size=2000)
    return [d.pk for d in deals]


def post_batches(url: str, deal_ids: list[int], *, batch: int, concurrency: int, first_event: int,
                 timeout_s: float) -> dict:
    """Signed HubSpot batches of up to `batch` events per request, `concurrency` keep-alive connections."""
    import http.client
    from urllib.parse import urlsplit

    from apps.connectors.hubspot.inbound import signature_v3

    parts = urlsplit(url)
    now_ms = int(time.time() * 1000)
    bodies = []
    for i in range(0, len(deal_ids), batch):
        events = [{"eventId": first_event + j, "subscriptionId": 1, "portalId": 62515, "appId": 1,
                   "occurredAt": now_ms, "subscriptionType": "deal.propertyChange", "attemptNumber": 0,
                   "objectId": deal_ids[j], "propertyName": "dealstage", "propertyValue": "closedwon",
                   "changeSource": "CRM"} for j in range(i, min(len(deal_ids), i + batch))]
        bodies.append(json.dumps(events).encode())
    queue = list(range(len(bodies)))
    lock = threading.Lock()
    codes: Counter = Counter()
    lat: list[float] = []
    errors = Counter()
    deadline = time.monotonic() + timeout_s

    def client():
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        while time.monotonic() < deadline:
            with lock:
                if not queue:
                    break
                k = queue.pop(0)
            body = bodies[k]
            ts = str(int(time.time() * 1000))
            headers = {"Content-Type": "application/json", "X-HubSpot-Request-Timestamp": ts,
                       "X-HubSpot-Signature-v3": signature_v3(R.HUBSPOT_SECRET, "POST", url, body, ts)}
            t0 = time.perf_counter()
            try:
                conn.request("POST", parts.path, body=body, headers=headers)
                resp = conn.getresponse()
                resp.read()
                with lock:
                    codes[resp.status] += 1
                    lat.append(time.perf_counter() - t0)
            except (OSError, http.client.HTTPException):
                with lock:
                    errors["socket"] += 1
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        conn.close()

    t0 = time.perf_counter()
    ts_ = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for t in ts_:
        t.start()
    for t in ts_:
        t.join(max(1.0, deadline - time.monotonic() + 5))
    dt = time.perf_counter() - t0
    lat.sort()
    pct = (lambda p: 1000 * lat[min(len(lat) - 1, int(len(lat) * p))] if lat else float("nan"))
    return {"requests": len(bodies), "events": len(deal_ids), "seconds": dt, "codes": dict(codes),
            "socket_errors": sum(errors.values()), "unsent": len(queue),
            "c5xx": sum(v for k, v in codes.items() if k >= 500),
            "non2xx": sum(v for k, v in codes.items() if not 200 <= k < 300),
            "events_per_s": len(deal_ids) / dt if dt else 0.0, "p50_ms": pct(0.5), "p99_ms": pct(0.99)}


def burst(args, procs, web_url: str, sandbox_pid: int, engines) -> dict:
    from django.db.models import Count

    from apps.sync import sweeper
    from apps.sync.models import InboundEvent, SyncRecord

    n = args.burst
    say(f"2. burst: resetting; {n} deals in the sandbox")
    R.reset_state()
    t0 = time.perf_counter()
    deal_ids = make_deals(n, args.seed)
    say(f"  sandbox deals in {time.perf_counter() - t0:.1f} s; posting {n} events in batches of {args.batch} "
        f"over HTTP ({args.burst_concurrency} connections)")
    post = post_batches(f"{web_url}/api/v1/callbacks/hubspot/", deal_ids, batch=args.batch,
                        concurrency=args.burst_concurrency, first_event=50_000_000, timeout_s=args.burst_timeout)
    stored = InboundEvent.objects.filter(verified=True).count()
    post["stored_rows"] = stored
    say(f"  {post['requests']} requests in {post['seconds']:.1f} s = {post['events_per_s']:.0f} events/s stored; "
        f"codes {post['codes']} socket errors {post['socket_errors']}; p50 {post['p50_ms']:.0f} ms p99 "
        f"{post['p99_ms']:.0f} ms; {stored} rows")
    R.analyze("sandbox_sandboxobject", "sync_inboundevent")
    k = args.burst_workers
    ws = R.spawn_workers(procs, k, "burst")
    names = [nm for nm, p in procs.procs.items() if p in ws]
    sampler = RssSampler({f"worker {i + 1}": w.pid for i, w in enumerate(ws)})
    sampler.start()
    cpu0 = {"workers": sum(R.tree_cpu(w.pid) for w in ws), "sandbox": R.tree_cpu(sandbox_pid),
            "pg": R.tree_cpu(engines.pg_pid), "machine": R.machine_busy()}
    t0 = time.monotonic()
    for w in ws:
        w.stdin.write("go\n")
        w.stdin.flush()
    inbox_s = None
    records_at_inbox = done_at_inbox = 0
    last_sweep = last_note = t0
    timeline = []
    while True:
        time.sleep(0.5)
        now = time.monotonic()
        if any(w.poll() is not None for w in ws):
            raise SystemExit(f"a worker exited during the burst; see {R.LOGS}/")
        if inbox_s is None:
            waiting = InboundEvent.objects.filter(status="received").count()
            if waiting == 0:
                inbox_s = now - t0
                records_at_inbox = SyncRecord.objects.count()
                done_at_inbox = SyncRecord.objects.exclude(status__in=R.NOT_DONE).count()
                say(f"  inbox empty after {inbox_s:.1f} s: {records_at_inbox} records, {done_at_inbox} already "
                    f"terminal")
                t_e2e0 = now
        if inbox_s is not None:
            left = SyncRecord.objects.filter(status__in=R.NOT_DONE).count()
            if left == 0 or now - t_e2e0 >= args.burst_e2e_seconds:
                break
        if now - t0 > args.burst_inbox_timeout and inbox_s is None:
            say("  inbox not empty within the time limit")
            break
        if now - last_sweep >= 10:
            sweeper.sweep()
            last_sweep = now
        if now - last_note >= 10:
            st = dict(SyncRecord.objects.values_list("status").annotate(c=Count("id")))
            timeline.append((round(now - t0, 1), st))
            say(f"  t={now - t0:.0f} s: records {st}")
            last_note = now
    wall = time.monotonic() - t0
    cpu1 = {"workers": sum(R.tree_cpu(w.pid) for w in ws), "sandbox": R.tree_cpu(sandbox_pid),
            "pg": R.tree_cpu(engines.pg_pid), "machine": R.machine_busy()}
    statuses = dict(SyncRecord.objects.values_list("status").annotate(c=Count("id")))
    rss = sampler.stop()
    for nm in names:
        procs.stop(nm)
    terminal = sum(v for s, v in statuses.items() if s not in R.NOT_DONE)
    e2e_s = wall - (inbox_s or wall)
    done_after_inbox = terminal - done_at_inbox
    rate = done_after_inbox / e2e_s if e2e_s > 0 else 0.0
    records = sum(statuses.values())
    out = {"post": post, "workers": k, "inbox_drain_s": inbox_s,
           "inbox_events_per_s": (stored / inbox_s) if inbox_s else None, "records": records,
           "terminal_at_inbox_empty": done_at_inbox, "e2e_window_s": e2e_s, "terminal": terminal,
           "statuses": statuses, "e2e_records_per_s_after_inbox": rate,
           "e2e_total_extrapolated_s": (inbox_s or 0) + (records - done_at_inbox) / rate if rate else None,
           "finished": terminal == records, "rss": rss, "wall_s": wall,
           "cpu_s": {kk: cpu1[kk] - cpu0[kk] for kk in cpu0}, "timeline": timeline}
    out["checks"] = {"burst absorbed without 5xx": post["c5xx"] == 0 and post["socket_errors"] == 0
                     and post["unsent"] == 0,
                     "inbox rows == events sent": stored == n,
                     "every event became a record": records == n}
    say(f"  records → terminal: {terminal}/{records} after {wall:.0f} s; {rate:.1f} records/s after the inbox "
        f"emptied; RSS {', '.join(f'{k2} {v['min_mb']:.0f}–{v['max_mb']:.0f} MB' for k2, v in rss.items())}")
    for name, ok in out["checks"].items():
        say(f"  {'ok  ' if ok else 'FAIL'} {name}")
    return out


def scale(args, procs, sandbox_pid: int, engines) -> list[dict]:
    e2e_args = argparse.Namespace(e2e_n=args.scale_n, bad_share=0.0, seed=args.seed, stall_seconds=120,
                                  e2e_timeout=args.scale_timeout)
    out = []
    for k in [int(x) for x in args.scale_workers.split(",") if x.strip()]:
        say(f"3. scale-out: {args.scale_n} records, {k} worker(s)")
        e = R.bench_e2e(e2e_args, procs, k, sandbox_pid, engines)
        util = {name: e["cpu_s"][name] / e["wall_s"] for name in ("workers", "sandbox", "pg", "valkey", "others")
                if name in e["cpu_s"]}
        out.append({"workers": k, "records": e["records"], "wall_s": e["wall_s"], "records_per_s": e["records_per_s"],
                    "cores_used": util, "cpu_ms_per_record": e["cpu_ms_per_record"], "statuses": e["statuses"],
                    "checks": e["checks"], "own_ms_per_record": e["own_ms_per_record"],
                    "attempt_wait_s": e["attempt_wait_s"]})
        say("  cores used: " + ", ".join(f"{a} {b:.2f}" for a, b in util.items()))
    base = out[0]["records_per_s"] if out else 0
    for o in out:
        o["speedup"] = o["records_per_s"] / base if base else 0.0
    return out


def report(res: dict) -> None:
    m = res["machine"]
    L = ["", "=" * 100, "HANDOFF LOAD / BURST / SCALE-OUT RESULTS", "=" * 100,
         f"machine: {m['nproc']} cores ({m['cpu']}), Python {m['python']}, {m['postgres']}, gunicorn {m['gunicorn']},"
         f" wrk {m['wrk']}; code {m['code']}", f"command: {m['command']}"]
    if "sustained" in res:
        s = res["sustained"]
        L.append(f"\n1. sustained: {s['tool']}, {res['config']['concurrency']} conn., {s['seconds']:.1f} s: "
                 f"{s['rps']:.0f} callbacks/s, p50 {s['p50_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms, non-2xx "
                 f"{s['non2xx']}, 5xx {s['c5xx']}, socket errors {s['socket_errors']}, codes {s['codes']}")
        L.append(f"   issued {s['requests_issued']} = {s['distinct_events_issued']} distinct + "
                 f"{s['redeliveries_issued']} redeliveries; inbox rows {s['inbox_rows']} (issued but not stored "
                 f"{s['issued_not_stored']}, stored but not issued {s['rows_not_issued']}); extra deliveries "
                 f"{s['extra_deliveries_recorded']}; CPU s {s['cpu_s']}")
        L += [f"   {'ok  ' if ok else 'FAIL'} {k}" for k, ok in s["checks"].items()]
    if "burst" in res:
        b = res["burst"]
        p = b["post"]
        L.append(f"\n2. burst: {p['events']} events in {p['requests']} HTTP requests of ≤ {res['config']['batch']} in "
                 f"{p['seconds']:.1f} s = {p['events_per_s']:.0f} events/s; codes {p['codes']}, 5xx {p['c5xx']}, "
                 f"socket errors {p['socket_errors']}, p50 {p['p50_ms']:.0f} ms p99 {p['p99_ms']:.0f} ms per request")
        L.append(f"   {b['workers']} workers: inbox drained in {b['inbox_drain_s'] or float('nan'):.1f} s "
                 f"({b['inbox_events_per_s'] or 0:.0f} events/s); then {b['e2e_records_per_s_after_inbox']:.1f} "
                 f"records/s to terminal over {b['e2e_window_s']:.0f} s; {b['terminal']}/{b['records']} terminal; "
                 f"extrapolated full end-to-end drain {b['e2e_total_extrapolated_s'] or float('nan'):.0f} s")
        L.append("   RSS: " + ", ".join(f"{k} {v['min_mb']:.0f}–{v['max_mb']:.0f} MB ({v['samples']} samples)"
                                       for k, v in b["rss"].items()) + f"; CPU s {b['cpu_s']}")
        L += [f"   {'ok  ' if ok else 'FAIL'} {k}" for k, ok in b["checks"].items()]
    if res.get("scale"):
        L.append(f"\n3. scale-out ({res['config']['scale_n']} records): workers, records/s, speed-up, cores used "
                 f"(workers / sandbox / PostgreSQL / others)")
        for o in res["scale"]:
            c = o["cores_used"]
            L.append(f"   {o['workers']}  {o['records_per_s']:6.1f}  {o['speedup']:.2f}×  {c.get('workers', 0):.2f} / "
                     f"{c.get('sandbox', 0):.2f} / {c.get('pg', 0):.2f} / {c.get('others', 0):.2f}   checks "
                     f"{'all pass' if all(o['checks'].values()) else 'FAILED'}")
    L.append("=" * 100)
    print("\n".join(L), flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sustained-seconds", type=float, default=30)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--wrk-threads", type=int, default=2)
    p.add_argument("--redelivery-share", type=float, default=0.10)
    p.add_argument("--loadgen", choices=["auto", "python"], default="auto")
    p.add_argument("--burst", type=int, default=50_000)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--burst-concurrency", type=int, default=8)
    p.add_argument("--burst-timeout", type=float, default=600)
    p.add_argument("--burst-workers", type=int, default=2)
    p.add_argument("--burst-inbox-timeout", type=float, default=600)
    p.add_argument("--burst-e2e-seconds", type=float, default=90,
                   help="how long to watch records → terminal after the inbox is empty (then extrapolate)")
    p.add_argument("--scale-n", type=int, default=1500)
    p.add_argument("--scale-workers", default="1,2,4")
    p.add_argument("--scale-timeout", type=float, default=600)
    p.add_argument("--gunicorn-workers", type=int, default=2)
    p.add_argument("--gunicorn-threads", type=int, default=4)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--skip", default="", help="comma-separated phases to skip: sustained,burst,scale")
    p.add_argument("--no-snapshot", action="store_true")
    p.add_argument("--wipe-external", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    R.stop_on_sigterm()
    os.environ["PATH"] = f"{R.VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    DATA.mkdir(parents=True, exist_ok=True)
    if not os.environ.get("XDG_RUNTIME_DIR"):
        (DATA / "xdg").mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(DATA / "xdg")
    procs, engines = R.Procs(), R.Engines(args)
    started = time.monotonic()
    res: dict = {"config": {k: v for k, v in vars(args).items()}}
    try:
        engines.start()
        web_port, sandbox_port = R.free_port(), R.free_port()
        while sandbox_port == web_port:
            sandbox_port = R.free_port()
        web_url, sandbox_url = f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{sandbox_port}"
        os.environ.update(R.child_env({"HANDOFF_PUBLIC_URL": web_url, "HANDOFF_SANDBOX_URL": sandbox_url}))
        say("migrating")
        import subprocess

        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, check=True,
                       env=R.child_env(), timeout=300)
        import django

        django.setup()
        from apps.demo.firm import setup_connections
        from bench import baseline

        baseline.create_table()
        R.reset_state()
        setup_connections(sandbox_url, hubspot_secret=R.HUBSPOT_SECRET)
        res["machine"] = R.machine_info(args)
        res["machine"]["command"] = " ".join([".venv/bin/python", "bench/load.py", *sys.argv[1:]])
        gargs = ["--workers", str(args.gunicorn_workers), "--threads", str(args.gunicorn_threads),
                 "--log-level", "warning", "--graceful-timeout", "5", "--chdir", ROOT]
        sandbox = procs.start("sandbox", [R.VENV_BIN / "gunicorn", "config.wsgi", "--bind",
                                          f"127.0.0.1:{sandbox_port}", *gargs], env=R.child_env())
        web = procs.start("web", [R.VENV_BIN / "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{web_port}",
                                  *gargs], env=R.child_env())
        R.wait_http(f"{web_url}/readyz", 60)
        R.wait_http(f"{sandbox_url}/readyz", 60)
        workdir = DATA / "work"
        workdir.mkdir(parents=True, exist_ok=True)
        if "sustained" not in skip:
            res["sustained"] = sustained(args, web_url, web.pid, engines, workdir)
        if "burst" not in skip:
            res["burst"] = burst(args, procs, web_url, sandbox.pid, engines)
        procs.stop("web")
        if "scale" not in skip:
            res["scale"] = scale(args, procs, sandbox.pid, engines)
        res["total_seconds"] = time.monotonic() - started
        report(res)
        out = DATA / f"load-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
        out.write_text(json.dumps(res, indent=2, default=str))
        say(f"results written to {out} (total {res['total_seconds']:.0f} s)")
        failed = [k for ph in ("sustained", "burst") for k, ok in res.get(ph, {}).get("checks", {}).items() if not ok]
        failed += [k for o in res.get("scale", []) for k, ok in o["checks"].items() if not ok]
        return 1 if failed else 0
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        engines.stop()


if __name__ == "__main__":
    sys.exit(main())
