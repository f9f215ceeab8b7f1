"""Load generation for the callback-intake benchmark.

Requests are generated up front (a new eventId and objectId each, a closed-won deal stage, a valid
X-HubSpot-Signature-v3 for the target URL) into a file of `body<TAB>timestamp<TAB>signature` lines, then
replayed at a fixed concurrency for a fixed time by wrk (preferred: a C load generator leaves the 2 cores to the
server) or, when wrk is not installed, by a thread pool of keep-alive http.client connections.

Both return the same dict: requests, seconds, rps, status counts, socket errors, a latency histogram
({microseconds: count}) and its p50/p99. wrk's histogram includes wrk's own coordinated-omission correction.
"""

from __future__ import annotations

import http.client
import itertools
import json
import shutil
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

from apps.connectors.hubspot.inbound import signature_v3

WRK_LUA = r"""
-- bench/loadgen.py: replay pre-signed HubSpot webhook requests, one new event per request
local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local path, n = args[1], tonumber(args[2])
  reqs = {}
  local i = 0
  for line in io.lines(path) do
    if i % n == tid then
      local body, ts, sig = line:match("^(.-)\t(.-)\t(.-)$")
      reqs[#reqs + 1] = wrk.format("POST", nil, {["Content-Type"] = "application/json",
        ["X-HubSpot-Signature-v3"] = sig, ["X-HubSpot-Request-Timestamp"] = ts}, body)
    end
    i = i + 1
  end
  idx = 0
  wrapped = 0
  codes = {}
end

function request()
  idx = idx + 1
  if idx > #reqs then
    idx = 1
    wrapped = wrapped + 1
  end
  return reqs[idx]
end

function response(status, headers, body)
  codes[status] = (codes[status] or 0) + 1
end

function done(summary, latency, requests)
  local out = {}
  out[#out + 1] = string.format('"requests": %d, "duration_us": %d, "bytes": %d', summary.requests,
    summary.duration, summary.bytes)
  local e = summary.errors
  out[#out + 1] = string.format('"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}',
    e.connect, e.read, e.write, e.status, e.timeout)
  local codes_all, wrapped_all = {}, 0
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("codes")) do codes_all[k] = (codes_all[k] or 0) + v end
    wrapped_all = wrapped_all + t:get("wrapped")
  end
  local cs = {}
  for k, v in pairs(codes_all) do cs[#cs + 1] = string.format('"%d": %d', k, v) end
  out[#out + 1] = '"codes": {' .. table.concat(cs, ", ") .. '}'
  out[#out + 1] = string.format('"wrapped": %d', wrapped_all)
  local h = {}
  for i = 1, #latency do
    local v, c = latency(i)
    h[#h + 1] = string.format('[%d, %d]', v, c)
  end
  out[#out + 1] = '"hist": [' .. table.concat(h, ", ") .. ']'
  io.write("\nBENCH-JSON {" .. table.concat(out, ", ") .. "}\n")
end
"""


def write_requests(path: Path, *, url: str, secret: str, n: int, first_event_id: int, first_object_id: int) -> None:
    """n signed single-event HubSpot webhook requests for `url` (timestamps are now: valid for 5 minutes)."""
    ts = str(int(time.time() * 1000))
    lines = []
    for i in range(n):
        event = [{"eventId": first_event_id + i, "subscriptionId": 1, "portalId": 62515, "appId": 1,
                  "occurredAt": int(ts), "subscriptionType": "deal.propertyChange", "attemptNumber": 0,
                  "objectId": first_object_id + i, "propertyName": "dealstage", "propertyValue": "closedwon",
                  "changeSource": "CRM"}]
        body = json.dumps(event)
        lines.append(f"{body}\t{ts}\t{signature_v3(secret, 'POST', url, body.encode(), ts)}\n")
    path.write_text("".join(lines))


def percentile(hist: dict[int, int], p: float) -> float:
    """p-th percentile (0..100) of a {value: count} histogram."""
    total = sum(hist.values())
    if not total:
        return float("nan")
    rank = max(1, int(round(total * p / 100.0 + 0.4999999)))
    seen = 0
    for v in sorted(hist):
        seen += hist[v]
        if seen >= rank:
            return float(v)
    return float(max(hist))


def summarize(runs: list[dict]) -> dict:
    """Merge several runs against the same endpoint (rounds) into one result."""
    hist: Counter = Counter()
    codes: Counter = Counter()
    errors: Counter = Counter()
    req = 0
    secs = 0.0
    wrapped = 0
    for r in runs:
        hist.update(r["hist"])
        codes.update(r["codes"])
        errors.update(r["errors"])
        req += r["requests"]
        secs += r["seconds"]
        wrapped += r["wrapped"]
    non2xx = sum(c for s, c in codes.items() if not 200 <= int(s) < 300)
    c5xx = sum(c for s, c in codes.items() if 500 <= int(s) < 600)
    return {"requests": req, "seconds": secs, "rps": req / secs if secs else 0.0,
            "p50_ms": percentile(hist, 50) / 1000, "p99_ms": percentile(hist, 99) / 1000,
            "codes": dict(sorted(codes.items())), "non2xx": non2xx, "c5xx": c5xx,
            "socket_errors": sum(errors.values()), "errors": dict(errors), "wrapped": wrapped, "hist": dict(hist)}


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(*, url: str, reqfile: Path, seconds: float, concurrency: int, threads: int, workdir: Path) -> dict:
    lua = workdir / "signed.lua"
    lua.write_text(WRK_LUA)
    cmd = ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{max(1, int(round(seconds)))}s", "--timeout", "10s",
           "-s", str(lua), url, "--", str(reqfile), str(threads)]
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         timeout=seconds + 120)
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("BENCH-JSON ")), None)
    if res.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({res.returncode}):\n{res.stdout[-3000:]}")
    data = json.loads(line[len("BENCH-JSON "):])
    secs = data["duration_us"] / 1e6
    return {"requests": data["requests"], "seconds": secs, "codes": {int(k): v for k, v in data["codes"].items()},
            "errors": data["errors"], "wrapped": data["wrapped"],
            "hist": {int(v): int(c) for v, c in data["hist"]}, "tool": "wrk"}


def run_python(*, url: str, reqfile: Path, seconds: float, concurrency: int, **_) -> dict:
    """Fallback when wrk is missing: `concurrency` threads, one keep-alive connection each."""
    parts = urlsplit(url)
    lines = reqfile.read_text().splitlines()
    reqs = []
    for ln in lines:
        body, ts, sig = ln.split("\t")
        reqs.append((body.encode(), {"Content-Type": "application/json", "X-HubSpot-Signature-v3": sig,
                                     "X-HubSpot-Request-Timestamp": ts}))
    counter = itertools.count()
    lock = threading.Lock()
    hist: Counter = Counter()
    codes: Counter = Counter()
    errors: Counter = Counter()
    wrapped = [0]
    stop_at = time.monotonic() + seconds

    def client():
        local_hist: Counter = Counter()
        local_codes: Counter = Counter()
        local_err: Counter = Counter()
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        while time.monotonic() < stop_at:
            i = next(counter)
            if i >= len(reqs):
                wrapped[0] += 1
            body, headers = reqs[i % len(reqs)]
            t0 = time.perf_counter()
            try:
                conn.request("POST", parts.path, body=body, headers=headers)
                resp = conn.getresponse()
                resp.read()
            except (OSError, http.client.HTTPException) as exc:
                local_err["timeout" if isinstance(exc, TimeoutError) else "read"] += 1
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
                continue
            local_hist[int((time.perf_counter() - t0) * 1e6)] += 1
            local_codes[resp.status] += 1
        conn.close()
        with lock:
            hist.update(local_hist)
            codes.update(local_codes)
            errors.update(local_err)

    t0 = time.monotonic()
    pool = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(seconds + 30)
    secs = time.monotonic() - t0
    return {"requests": sum(codes.values()), "seconds": secs, "codes": dict(codes), "errors": dict(errors),
            "wrapped": wrapped[0], "hist": dict(hist), "tool": "python"}
