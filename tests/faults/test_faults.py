"""Nothing lost, nothing duplicated: fault injection with real worker processes.

Every scenario runs real RQ workers in subprocesses (tests/faults/kit.py) against this test's PostgreSQL database
and Redis, with the sandboxes served over HTTP by the live server, injects a fault while they work, waits (with a
deadline) until every record has settled, and then checks the outcome for every source record
(kit.check_outcome): one SyncRecord, one terminal state (succeeded / held / dead), and downstream exactly one
NetSuite customer per HO-<customer key>, one Kantata workspace per engagement code, one NetSuite job per
engagement — with the ids the record holds.

Sizes are kept so that the whole file runs in a few minutes on a busy 2-core machine; set
HANDOFF_FAULTS_N_<NAME> (e.g. HANDOFF_FAULTS_N_KILL=1000) to run a scenario bigger.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from django.db import connection
from django.utils import timezone

from apps.demo.deals import make_opportunity
from apps.sandbox.models import SandboxObject
from apps.sync import engine, intake, services, sweeper
from apps.sync.bulk import bulk_confirm, bulk_preview
from apps.sync.models import Attempt, AuditEntry, BulkAction, InboundEvent, SyncRecord

from tests.callbacks import HUBSPOT_SECRET, SALESFORCE_PATH, outbound
from tests.faults.kit import (Workers, check_outcome, terminate_backends, configure_connections, create_hubspot_deals, diagnose,
                             done_count, free_port, progress, seed_hubspot, signed_hubspot_post, wait_for,
                             wait_settled)

from tests.worker import inject

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]


def size(name: str, default: int) -> int:
    return int(os.environ.get(f"HANDOFF_FAULTS_N_{name.upper()}", default))


N_KILL = size("kill", 1000)  # the issue asks for 1,000 records: ~3 min on a quiet 2-core machine, 6.5 min loaded
N_REDIS = size("redis", 90)
N_PG = size("pg", 90)
N_FLAKY = size("flaky", 50)
N_LOST = size("lost", 40)
N_REDELIVER = size("redeliver", 45)
SETTLE_TIMEOUT = float(os.environ.get("HANDOFF_FAULTS_SETTLE_TIMEOUT", 900))

# what a worker process runs in production (Procfile's worker, without the RQ scheduler), bounded in time in case
# this test process dies before it can stop it
RQWORKER = ["timeout", "-s", "KILL", "600", sys.executable, "manage.py", "rqworker", "high", "default", "low",
            "--worker-class", "rq.worker.SimpleWorker"]


@pytest.fixture
def workers(sandboxes, tmp_path):
    """Worker processes for this test; all stopped (before the database is flushed) when it ends."""
    pool = Workers(tmp_path)
    yield pool
    pool.stop_all()


def outcome(keys, workers: Workers, **kw) -> dict:
    try:
        result = check_outcome(keys, **kw)
        # an infrastructure fault costs time, never a record held for a person as "internal error"
        internal = list(SyncRecord.objects.filter(reason_code="internal_error").values_list("id", "system_message"))
        assert not internal, f"records held as internal errors: {[(i, m[-300:]) for i, m in internal[:3]]}"
        return result
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{diagnose(workers)}") from None


def deliver_hubspot_deal(deliverer, rng, scenario: str = "good") -> tuple[str, dict]:
    """A deal created in the HubSpot sandbox over HTTP; returns its source key and its (unsent) webhook event."""
    deal_id = deliverer.create_hubspot(make_opportunity(rng, scenario))
    [event] = deliverer.hubspot_events([deal_id])
    return f"deal:{deal_id}", event


# ---------------------------------------------------------------- 1. a worker SIGKILLed mid-run


def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(workers):
    n = N_KILL
    keys = seed_hubspot(n, seed=101)
    # one worker with short leases (3 s) and small claims, so a dead worker's records come back quickly
    [victim] = workers.start(1, lease=3, claim_batch=10)

    def a_third_done_and_records_in_flight():
        c = progress()
        return done_count(c) >= n // 3 and c["in_progress"] > 0

    wait_for(a_third_done_and_records_in_flight, timeout=SETTLE_TIMEOUT, every=0.05,
             what=f"a third of {n} records to finish", workers=workers)
    victim.kill(signal.SIGKILL)
    victim.proc.wait(10)
    orphans = list(SyncRecord.objects.filter(status="in_progress").values_list("id", "lease_expires_at"))
    assert orphans, "the killed worker had records in flight"

    # a new worker (two, to finish sooner) takes over, including the dead worker's records once their lease expires
    workers.start(2, lease=3, claim_batch=10)
    wait_settled(expected=n, timeout=SETTLE_TIMEOUT, workers=workers)

    result = outcome(keys, workers)
    assert result["records"] == n
    assert not SyncRecord.objects.filter(id__in=[o[0] for o in orphans]).exclude(
        status__in=["succeeded", "held", "dead"]).exists()
    assert result.get("succeeded", 0) >= n * 0.6, result


def test_a_record_whose_lease_expired_while_it_waited_in_a_batch_is_not_worked_by_two_workers(sandboxes):
    """Worker A claims a batch; while it works the first records, the lease of a later one expires and worker B
    claims it. When A reaches that record it must not call anyone for it: B owns it. (Before the engine renewed
    the lease before each record, A and B searched Kantata at the same time, found nothing, and both created the
    workspace: a duplicate.)"""
    [key] = seed_hubspot(1, seed=111, scenarios=["good"], wake=False)
    intake.process_inbox()
    inject("kantata", fail_next_count=1, fail_next_status=503)  # the record waits for a retry at psa_project
    engine.drain("default")
    record = SyncRecord.objects.get()
    assert (record.status, record.stage) == ("retrying", "psa_project")
    SyncRecord.objects.update(next_attempt_at=timezone.now())

    token_a, [stale] = engine.claim(priorities=[2], limit=10)  # worker A's batch
    SyncRecord.objects.update(lease_expires_at=timezone.now() - timedelta(seconds=1))  # A was slow
    token_b, [fresh] = engine.claim(priorities=[2], limit=10)  # worker B takes the record over
    inject("kantata", latency_ms=400)  # both would be searching Kantata at the same time

    (a, exc_a), (b, exc_b) = race(lambda: engine.process_record(stale, token_a, engine.Batch()),
                                  lambda: engine.process_record(fresh, token_b, engine.Batch()))
    assert exc_a is None and exc_b is None, (exc_a, exc_b)
    assert (a, b) == ("lost", "succeeded")
    check_outcome([key], expect_succeeded=True)
    # Kantata saw the first (failed) call, then B's search and create — nothing from A
    assert Attempt.objects.filter(record=record, system="kantata").count() == 3


# ---------------------------------------------------------------- 2. Redis restarted, and wiped, mid-run


class Valkey:
    """A throwaway Valkey (config.launcher.EmbeddedValkey) on a free port: this test kills and wipes it."""

    def __init__(self, data: Path):
        from config.launcher import EmbeddedValkey

        self.server = EmbeddedValkey(data, free_port(), durable=True)  # append-only file: a restart keeps data
        self.url = self.server.start()

    def pid(self) -> int | None:
        try:
            return int((self.server.data / "valkey.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def kill(self) -> None:
        pid = self.pid()
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        from config.launcher import port_open

        for _ in range(100):
            if not port_open(self.server.port):
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"Valkey on port {self.server.port} did not die")
        (self.server.data / "valkey.pid").unlink(missing_ok=True)

    def start(self) -> None:
        self.server.start()
        for _ in range(200):  # the port opens before the append-only file is loaded
            try:
                self.client().ping()
                return
            except (redis.BusyLoadingError, redis.ConnectionError):
                time.sleep(0.05)
        raise AssertionError("Valkey did not come back")

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5)


@pytest.fixture
def valkey(tmp_path, settings):
    server = Valkey(tmp_path / "valkey")
    settings.RQ_QUEUES = {name: {"URL": server.url, "DEFAULT_TIMEOUT": 600} for name in ("high", "default", "low")}
    settings.REDIS_URL = server.url
    yield server
    server.kill()


def test_redis_restarted_and_wiped_mid_run_loses_and_duplicates_nothing(workers, valkey, deliverer):
    n = N_REDIS
    keys = seed_hubspot(n, seed=202)
    valkey.client().set("faultkit:sentinel", "1")  # long before the crash: on disk (append-only file) by then
    workers.start(2, lease=3, claim_batch=10, redis=valkey.url)
    wait_for(lambda: done_count(progress()) >= n // 3, timeout=SETTLE_TIMEOUT, what=f"a third of {n} records",
             workers=workers)

    # 1) Redis crashes (kill -9) and comes back with its data (append-only file)
    valkey.kill()
    rng = random.Random(2)
    for _ in range(3):  # callbacks keep being accepted while Redis is down: they are rows, not jobs
        key, event = deliver_hubspot_deal(deliverer, rng)
        assert deliverer.send_hubspot([event]).status_code == 202
        keys.append(key)
    time.sleep(1.5)
    valkey.start()
    assert valkey.client().get("faultkit:sentinel") == b"1"  # this restart kept Redis's data
    wait_for(lambda: done_count(progress()) >= 2 * n // 3, timeout=SETTLE_TIMEOUT,
             what=f"two thirds of {n} records", workers=workers)

    # 2) Redis loses everything: queued jobs, wake-up keys, worker registrations; then it is restarted empty
    valkey.client().flushall()
    valkey.kill()
    for _ in range(3):
        key, event = deliver_hubspot_deal(deliverer, rng)
        assert deliverer.send_hubspot([event]).status_code == 202
        keys.append(key)
    time.sleep(1.0)
    valkey.start()
    assert valkey.client().get("faultkit:sentinel") is None  # this one came back empty

    # the sweeper (run by the workers' loop) finds the work in PostgreSQL and wakes the workers up again
    wait_settled(expected=len(keys), timeout=SETTLE_TIMEOUT, workers=workers)
    result = outcome(keys, workers)
    assert result["records"] == n + 6


# ---------------------------------------------------------------- 3. PostgreSQL connections killed mid-run


def test_postgres_connections_killed_mid_run_lose_and_duplicate_nothing(workers):
    """The workers are the production command (manage.py rqworker … SimpleWorker, not in burst mode); this test
    is their supervisor (it restarts a worker that exits) and their scheduler (it runs the sweeper)."""
    n = N_PG
    keys = seed_hubspot(n, seed=303)
    restarts = Counter()

    def supervise():
        try:
            sweeper.sweep()
        except Exception:  # our own connection is never killed, but be safe: the next tick reconnects
            connection.close()
        alive = workers.alive()
        if len(alive) < 2:
            restarts["workers"] += 2 - len(alive) if workers.procs else 0
            workers.start(2 - len(alive), argv=RQWORKER, lease=3, claim_batch=10)

    supervise()
    kills = []
    deadline = time.monotonic() + SETTLE_TIMEOUT
    last_kill = time.monotonic()
    while len(kills) < 4:
        assert time.monotonic() < deadline, f"not enough progress to kill connections\n{diagnose(workers)}"
        supervise()
        if done_count(progress()) >= (len(kills) + 1) * n // 6 and time.monotonic() - last_kill > 2.5:
            kills.append(terminate_backends())
            last_kill = time.monotonic()
        time.sleep(0.3)
    assert sum(kills) >= 4, f"connections terminated per kill: {kills}"

    wait_settled(expected=n, timeout=SETTLE_TIMEOUT, workers=workers, on_tick=supervise)
    result = outcome(keys, workers)
    assert result["records"] == n


# ---------------------------------------------------------------- 4. a flaky downstream: 500s, 429s, timeouts


def test_flaky_downstream_500_429_and_timeouts_end_in_success_without_duplicates(workers):
    n = N_FLAKY
    keys = seed_hubspot(n, seed=404, bad_share=0.1)
    # retries are many and quick; the breaker stays closed (this test is about retries, not pausing)
    configure_connections(max_attempts=60, backoff_base_seconds=0.05, backoff_cap_seconds=0.2,
                          circuit_threshold=10_000)
    inject("hubspot", "netsuite", "kantata", error_rate=0.30, rate_limit_rate=0.10, retry_after_seconds=1,
           timeout_rate=0.05, hang_ms=1500)
    # a timeout costs the client 0.5 s (the sandbox hangs 1.5 s)
    workers.start(2, lease=5, claim_batch=10, http_timeout=0.5)

    wait_settled(expected=n, timeout=SETTLE_TIMEOUT, workers=workers)
    result = outcome(keys, workers)
    statuses = Counter(SyncRecord.objects.values_list("status", flat=True))
    assert statuses["dead"] == 0, diagnose(workers)
    # held only by the business rules / the ERP's validation — never because a system was flaky
    assert not SyncRecord.objects.filter(status="held", reason_code="downstream_unavailable").exists()
    good = SyncRecord.objects.filter(status="succeeded").count()
    assert good == result["records"] - statuses["held"]
    seen = Counter(Attempt.objects.values_list("response_status", flat=True))
    # the faults did happen (a timed-out call is on record without a status: the client gave up on it)
    assert seen[500] and seen[429] and seen[None], f"answers seen: {seen}"


# ---------------------------------------------------------------- 5. the write commits, the response is lost


def test_lost_responses_are_retried_without_duplicating_anything(workers):
    n = N_LOST
    keys = seed_hubspot(n, seed=505, scenarios=["good"] * n)
    configure_connections(max_attempts=60, backoff_base_seconds=0.05, backoff_cap_seconds=0.2,
                          circuit_threshold=10_000)
    # a quarter of all calls are carried out in full (NetSuite upserts, Kantata creates, HubSpot write-backs) and
    # then answered too late: the worker sees a timeout and must retry without creating anything twice
    inject("hubspot", "netsuite", "kantata", lost_response_rate=0.25, hang_ms=1500)
    workers.start(2, lease=5, claim_batch=10, http_timeout=0.5)

    wait_settled(expected=n, timeout=SETTLE_TIMEOUT, workers=workers)
    result = outcome(keys, workers, expect_succeeded=True)
    assert result["kantata_workspaces"] == result["netsuite_jobs"] == n
    # the faults happened where they matter: a workspace created whose answer never arrived, found on retry
    lost_creates = Attempt.objects.filter(system="kantata", method="POST", response_status__isnull=True)
    assert lost_creates.exists(), "no Kantata create lost its response; raise lost_response_rate"
    assert SandboxObject.objects.filter(system="netsuite", writes__gt=1).exists()


# ---------------------------------------------------------------- 6. every callback three times, shuffled, at once


def test_callbacks_delivered_three_times_shuffled_and_concurrently_make_one_record_each(workers, deliverer,
                                                                                        live_server):
    n = N_REDELIVER
    deal_ids, events = create_hubspot_deals(n, seed=606, bad_share=0.1)
    rng = random.Random(6)
    sf = []  # Salesforce outbound messages too (SOAP, acked with 200 every time)
    for _ in range(max(3, n // 5)):
        opp_id, fields = deliverer.create_salesforce(make_opportunity(rng, "good"))
        sf.append((f"04l{opp_id[3:]}", fields, opp_id))
    deliveries = [("hubspot", e) for e in events for _ in range(3)] + [("salesforce", s) for s in sf for _ in range(3)]
    rng.shuffle(deliveries)
    workers.start(2, lease=3, claim_batch=10)  # the workers run while the callbacks arrive

    url = f"{live_server.url}/api/v1/callbacks/hubspot/"
    local = threading.local()

    def send(item):
        import requests

        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        kind, payload = item
        if kind == "hubspot":
            r = signed_hubspot_post(url, HUBSPOT_SECRET, [payload], session=session)
            return kind, str(payload["eventId"]), r.status_code
        nid, fields, _ = payload
        body = outbound([(nid, fields)])
        r = session.post(f"{live_server.url}{SALESFORCE_PATH}", data=body, timeout=30,
                         headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'})
        return kind, nid, r.status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(send, deliveries))

    by_event: dict[tuple, list[int]] = {}
    for kind, event_id, status in answers:
        by_event.setdefault((kind, event_id), []).append(status)
    for (kind, event_id), statuses in by_event.items():
        if kind == "hubspot":  # exactly one delivery was new (202); the two others were duplicates (200)
            assert sorted(statuses) == [200, 200, 202], (event_id, statuses)
        else:
            assert statuses == [200, 200, 200], (event_id, statuses)

    keys = [f"deal:{d}" for d in deal_ids] + [f"opportunity:{s[2]}" for s in sf]
    wait_settled(expected=len(keys), timeout=SETTLE_TIMEOUT, workers=workers)
    stored = InboundEvent.objects.filter(verified=True)
    assert stored.count() == len(events) + len(sf)
    assert set(stored.values_list("deliveries", flat=True)) == {3}
    assert not InboundEvent.objects.filter(status="rejected").exists()
    source_keys = set(SyncRecord.objects.values_list("source_key", flat=True))
    sf_keys = {k for k in source_keys if not k.startswith("deal:")}
    assert len(sf_keys) == len(sf), sf_keys
    keys = [f"deal:{d}" for d in deal_ids] + sorted(sf_keys)
    outcome(keys, workers)


# ---------------------------------------------------------------- 7. people racing each other, and the workers


def _in_thread(fn):
    """Run fn in a thread with its own database connection (closed after), return (result, exception)."""
    def run():
        try:
            return fn(), None
        except Exception as exc:  # the race's loser: its exception is the result
            return None, exc
        finally:
            connection.close()
    return run


def race(*fns):
    """Start all fns at the same moment (a barrier), each in its own thread; return their (result, exc)."""
    barrier = threading.Barrier(len(fns))

    def gated(fn):
        def run():
            barrier.wait(10)
            return fn()
        return _in_thread(run)

    with ThreadPoolExecutor(max_workers=len(fns)) as pool:
        futures = [pool.submit(gated(fn)) for fn in fns]
        return [f.result(timeout=60) for f in futures]


LE_FOR_CURRENCY = {"USD": "US01", "GBP": "UK01", "EUR": "DE01"}


def test_two_users_resubmitting_the_same_record_at_once_one_wins_one_conflicts(workers, alice, carol):
    n = 8
    keys = seed_hubspot(n, seed=707, scenarios=["no_legal_entity"] * n)
    workers.start(2, lease=3, claim_batch=10)
    wait_settled(expected=n, timeout=SETTLE_TIMEOUT, workers=workers)
    held = list(SyncRecord.objects.filter(status="held", reason_code="missing_legal_entity"))
    assert len(held) == n

    for record in held:
        fix = {"legal_entity": LE_FOR_CURRENCY[record.current_payload["currency"]]}

        def resubmit(actor):
            return lambda: services.record_resubmit(record_id=record.pk, actor=actor,
                                                    expected_version=record.version, changes=fix,
                                                    reason=f"fixed by {actor.username}")
        results = race(resubmit(alice), resubmit(carol))
        wins = [r for r, exc in results if exc is None]
        losses = [exc for r, exc in results if exc is not None]
        assert len(wins) == 1 and len(losses) == 1, results
        assert isinstance(losses[0], services.Conflict), repr(losses[0])
        assert AuditEntry.objects.filter(record=record, action="resubmit").count() == 1
        assert SyncRecord.objects.get(pk=record.pk).version == record.version + 1

    wait_settled(expected=n, timeout=SETTLE_TIMEOUT, workers=workers)
    outcome(keys, workers, expect_succeeded=True)


def test_bulk_actions_racing_single_resubmits_and_worker_retries_lose_no_update_and_duplicate_nothing(
        workers, alice, carol):
    held_n, dead_n = 12, 12
    held_keys = seed_hubspot(held_n, seed=708, scenarios=["no_legal_entity"] * held_n, currency="USD")
    # the PSA is down: the good records die at the project stage after 2 attempts
    configure_connections(backoff_base_seconds=0.05, backoff_cap_seconds=0.2, circuit_threshold=10_000)
    from apps.sync.models import Connection

    Connection.objects.filter(kind="kantata").update(max_attempts=2)
    inject("kantata", fail_next_count=10_000, fail_next_status=503)
    dead_keys = seed_hubspot(dead_n, seed=709, scenarios=["good"] * dead_n, shared_company_share=0.0)
    workers.start(2, lease=5, claim_batch=10, http_timeout=0.5)
    wait_settled(expected=held_n + dead_n, timeout=SETTLE_TIMEOUT, workers=workers)
    assert Counter(SyncRecord.objects.values_list("status", flat=True)) == {"held": held_n, "dead": dead_n}

    # the PSA is back, flaky: a fifth of its answers are lost after the workspace was created
    Connection.objects.filter(kind="kantata").update(max_attempts=60)
    inject("kantata", fail_next_count=0, lost_response_rate=0.2, hang_ms=1500)
    held = {r.pk: r for r in SyncRecord.objects.filter(status="held")}
    dead = {r.pk: r for r in SyncRecord.objects.filter(status="dead")}
    fix_bulk = bulk_preview(actor=carol, action="fix", record_ids=list(held), params={"changes": {
        "legal_entity": "US01"}})
    replay_bulk = bulk_preview(actor=carol, action="resubmit", record_ids=list(dead), params={})
    assert fix_bulk.preview["would_pass"]["count"] == held_n and replay_bulk.preview["would_pass"]["count"] == dead_n

    # at the same moment: Alice fixes 4 held records herself (with a different fix), Carol replays 4 dead records
    # one by one (the workers start retrying them at once), and both bulk actions are confirmed
    alice_ids, carol_ids = list(held)[:4], list(dead)[:4]

    def alice_fixes():
        out = {}
        for pk in alice_ids:
            try:
                services.record_resubmit(record_id=pk, actor=alice, expected_version=held[pk].version,
                                         changes={"legal_entity": "US01", "billing_terms": "NET60"})
                out[pk] = "done"
            except services.Conflict:
                out[pk] = "conflict"
        return out

    def carol_replays():
        out = {}
        for pk in carol_ids:
            try:
                services.record_resubmit(record_id=pk, actor=carol, expected_version=dead[pk].version)
                out[pk] = "done"
            except (services.Conflict, services.NotActionable):
                out[pk] = "conflict"
        return out

    def confirm_both():
        return bulk_confirm(bulk=fix_bulk, actor=carol), bulk_confirm(bulk=replay_bulk, actor=carol)

    (alice_out, e1), (carol_out, e2), (_, e3) = race(alice_fixes, carol_replays, confirm_both)
    assert e1 is None and e2 is None and e3 is None, (e1, e2, e3)

    wait_for(lambda: set(BulkAction.objects.values_list("status", flat=True)) <= {"done", "failed"},
             timeout=SETTLE_TIMEOUT, what="both bulk actions to run", workers=workers)
    assert set(BulkAction.objects.values_list("status", flat=True)) == {"done"}
    wait_settled(expected=held_n + dead_n, timeout=SETTLE_TIMEOUT, workers=workers)
    result = outcome(held_keys + dead_keys, workers, expect_succeeded=True)
    assert result["kantata_workspaces"] == held_n + dead_n

    # every record was resubmitted exactly once: by its user or by the bulk action, never both
    audits = Counter(AuditEntry.objects.filter(action__in=["resubmit", "bulk_fix", "bulk_resubmit"])
                     .values_list("record_id", flat=True))
    assert audits == {pk: 1 for pk in [*held, *dead]}, audits
    for pk in alice_ids:
        record = SyncRecord.objects.get(pk=pk)
        by_alice = AuditEntry.objects.filter(record_id=pk, action="resubmit", actor=alice).exists()
        assert by_alice == (alice_out[pk] == "done")
        # no lost update: Alice's own fix survives the bulk fix computed before it
        assert (record.current_payload["billing_terms"] == "NET60") == by_alice, (pk, alice_out[pk])
    for pk in carol_ids:
        assert AuditEntry.objects.filter(record_id=pk, action="resubmit").exists() == (carol_out[pk] == "done")
    for bulk in BulkAction.objects.all():
        assert bulk.succeeded + bulk.failed == bulk.total
