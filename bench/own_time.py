#!/usr/bin/env python
"""Where a record's time goes: quote-to-project for N opportunities worked in this one process, profiled.

    cd /work/main && .venv/bin/python bench/own_time.py [--n 500] [--profile 30 [--sort tottime] [--dump F]]

A quick, in-process companion to bench/run.py's end-to-end rounds (which run real RQ worker processes): the
sandboxes run in a gunicorn of their own, the records are worked by `engine.drain()` here, and the script prints
records/s, Handoff's own time per record (wall − Σ Attempt.duration_ms, i.e. not waiting on the sandboxes), SQL
statements per record and, with --profile K, the K most expensive functions. Without DATABASE_URL / REDIS_URL it
starts an embedded PostgreSQL (fsync off, as bench/run.py) and Valkey under .data/bench-own-time/; with them it
(re)creates the database DATABASE_URL names, so point it at a scratch database.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)
os.chdir(ROOT)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
os.environ.setdefault("HANDOFF_SANDBOX_ENABLED", "1")
os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("LOG_LEVEL", "WARNING")


def backend_cpu(pid: int) -> float:
    """CPU seconds (user + system) a local PostgreSQL backend has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--profile", type=int, default=0, help="print the K most expensive functions")
    p.add_argument("--sort", default="cumulative", help="the profile's order: cumulative (default), tottime, …")
    p.add_argument("--dump", default="", help="also write the profile to this file (for snakeviz, pstats)")
    p.add_argument("--port", type=int, default=18111, help="the sandboxes' gunicorn port")
    args = p.parse_args()
    started = []
    try:
        if not os.environ.get("DATABASE_URL") or not os.environ.get("REDIS_URL"):
            from config.launcher import EmbeddedPostgres, EmbeddedValkey

            data = ROOT / ".data" / "bench-own-time"
            pg = EmbeddedPostgres(data / "pg", int(os.environ.get("HANDOFF_OWN_TIME_PG_PORT", 54389)), durable=False)
            vk = EmbeddedValkey(data / "valkey", int(os.environ.get("HANDOFF_OWN_TIME_VALKEY_PORT", 63859)),
                                durable=False)
            os.environ["DATABASE_URL"] = pg.start()
            started.append(pg)
            os.environ["REDIS_URL"] = vk.start()
            started.append(vk)
        return measure(args)
    finally:
        for engine_ in reversed(started):
            engine_.stop()


def measure(args) -> int:
    import psycopg

    url = os.environ["DATABASE_URL"]
    base, dbname = url.rsplit("/", 1)
    with psycopg.connect(base + "/postgres", autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        c.execute(f'CREATE DATABASE "{dbname}"')

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.db.models import Sum

    call_command("migrate", verbosity=0)
    from apps.demo.firm import setup_connections, setup_reference_data
    from apps.sync import engine
    from apps.sync.intake import process_inbox
    from apps.sync.models import Attempt, SyncRecord
    from bench.run import flush_redis, load_inbox, wait_http

    setup_reference_data()
    sandbox_url = f"http://127.0.0.1:{args.port}"
    setup_connections(sandbox_url)
    flush_redis()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    gunicorn = subprocess.Popen([sys.executable, "-m", "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{args.port}",
                                 "--workers", "2", "--threads", "4", "--log-level", "warning"], env=env,
                                start_new_session=True)
    try:
        wait_http(sandbox_url + "/healthz", 60)
        load_inbox(args.n, bad_share=0.0, seed=7)
        process_inbox()
        statements = [0]

        def count(execute, sql, params, many, context):
            statements[0] += 1
            return execute(sql, params, many, context)

        import requests

        http_cpu, http_wall = [0.0], [0.0]
        plain_request = requests.Session.request

        def timed_request(self, *a, **kw):  # CPU this process spends in the HTTP client (inside the calls' time)
            c0, w0 = time.process_time(), time.perf_counter()
            try:
                return plain_request(self, *a, **kw)
            finally:
                http_cpu[0] += time.process_time() - c0
                http_wall[0] += time.perf_counter() - w0

        requests.Session.request = timed_request
        prof = cProfile.Profile(time.process_time) if args.profile else None  # CPU time, not wall
        with connection.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            backend = cur.fetchone()[0]
        with connection.execute_wrapper(count):
            pg0, cpu0 = backend_cpu(backend), time.process_time()
            t0 = time.perf_counter()
            if prof:
                prof.enable()
            counts = engine.drain("default", max_seconds=3600)
            if prof:
                prof.disable()
            wall = time.perf_counter() - t0
            cpu, pg_cpu = time.process_time() - cpu0, backend_cpu(backend) - pg0
        waited = (Attempt.objects.aggregate(s=Sum("duration_ms"))["s"] or 0) / 1000
        n = SyncRecord.objects.filter(status="succeeded").count()
        print(f"records: {dict(counts)}; succeeded {n} of {args.n}")
        print(f"wall {wall:.2f} s → {args.n / wall:.1f} records/s; waiting on the sandboxes {waited:.2f} s "
              f"({Attempt.objects.count()} calls; Σ Attempt.duration_ms, each rounded to the ms; measured here "
              f"to the µs around the HTTP client: {http_wall[0]:.2f} s)")
        print(f"Handoff's own time per record: {(wall - waited) / args.n * 1000:.2f} ms; "
              f"SQL statements per record: {statements[0] / args.n:.1f}")
        print(f"CPU per record (what a busy machine does not inflate): this worker {cpu / args.n * 1000:.2f} ms "
              f"(HTTP client included) + its PostgreSQL backend {pg_cpu / args.n * 1000:.2f} ms = "
              f"{(cpu + pg_cpu) / args.n * 1000:.2f} ms; of the worker's, in the HTTP client (part of the calls' "
              f"time): {http_cpu[0] / args.n * 1000:.2f} ms")
        if prof:
            if args.dump:
                prof.dump_stats(args.dump)
            pstats.Stats(prof).sort_stats(args.sort).print_stats(args.profile)
        return 0 if n == args.n else 1
    finally:
        os.killpg(gunicorn.pid, 15)
        gunicorn.wait(20)

if __name__ == "__main__":
    sys.exit(main())
