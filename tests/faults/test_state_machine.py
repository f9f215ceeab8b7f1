"""Stateful property test: whatever order deliveries, redeliveries, transient failures, worker runs, fixes and
concurrent resubmits come in, nothing is lost and nothing is duplicated.

Hypothesis drives a RuleBasedStateMachine against the real stack: callbacks over HTTP to the live server, the
sandboxes over HTTP, an in-process RQ SimpleWorker and the sweeper. After every step: one record per source object
(none for an object never sent) and no duplicated downstream object per idempotency key. At the end of each
example (faults cleared, the worker run until nothing is due): every record terminal, one per source object.
"""

from __future__ import annotations

import os
import random
import threading
import time

import django_rq
import pytest
from django.db import connection
from hypothesis import HealthCheck, Phase, settings, strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition, rule,
                                 run_state_machine_as_test)
from rq import SimpleWorker

from apps.sync import services, sweeper
from apps.sync.models import AuditEntry, InboundEvent, SyncRecord

from tests.builders import user
from tests.faults.kit import check_outcome, clear_faults, configure_connections, create_hubspot_deals
from tests.worker import inject, run_worker

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]

SCENARIOS = ["good", "good", "good", "no_legal_entity", "currency_not_enabled", "duplicate_customer",
             "unknown_terms", "bad_tax_id"]
LE_FOR_CURRENCY = {"USD": "US01", "GBP": "UK01", "EUR": "DE01"}
GOOD_TAX_ID = {"US": "12-3456789", "GB": "GB123456780", "DE": "DE123456789"}


class World:
    """What the machine acts on, set up by the test (fixtures) and kept across examples: the database is not
    flushed between examples, so every example starts from the settled end of the previous one."""

    deliverer = None
    carol = None  # two integration admins: they may act on every held record
    erin = None
    source_keys: list[str] = []
    events: list[dict] = []


def fix_for(record: SyncRecord) -> dict:
    """Changes that make any payload of these scenarios pass the rules and the ERP (none for a dead letter)."""
    if record.status == "dead":
        return {}
    p = record.current_payload
    account = p.get("account") or {}
    currency = p.get("currency") if p.get("currency") in LE_FOR_CURRENCY else "USD"
    changes = {"currency": currency, "billing_terms": p.get("billing_terms") if p.get("billing_terms") in
               ("NET30", "NET45", "NET60") else "NET30", "duplicate_resolution": "new"}
    if record.reason_code in ("missing_legal_entity", "invalid_legal_entity", "currency_not_enabled"):
        changes["legal_entity"] = LE_FOR_CURRENCY[currency]
    if record.reason_code == "downstream_validation":
        changes["account.tax_id"] = GOOD_TAX_ID.get(account.get("country"), "12-3456789")
    return changes


def run_worker_briefly(rounds: int = 2) -> None:
    """An in-process SimpleWorker: whatever is queued, then the sweeper wakes up what is due, a few times."""
    queues = [django_rq.get_queue(n) for n in ("high", "default", "low")]
    worker = SimpleWorker(queues, connection=queues[0].connection)
    for _ in range(rounds):
        worker.work(burst=True, logging_level="WARNING")
        time.sleep(0.05)
        sweeper.sweep()


def new_deal(scenario: str, seed: int) -> str:
    """A closed-won deal (and its company) in the HubSpot sandbox, written directly: injected faults are for
    Handoff's calls, not for the test's set-up."""
    [deal_id], _ = create_hubspot_deals(1, seed=seed, scenarios=[scenario])
    return deal_id


class HandoffMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        clear_faults()

    # ---------------------------------------------------------------- callbacks

    def _send(self, events: list[dict]) -> int:
        return World.deliverer.send_hubspot(events).status_code

    @initialize(scenarios=st.lists(st.sampled_from(SCENARIOS), min_size=2, max_size=5),
                seed=st.integers(0, 2**32 - 1))
    def some_deals_and_a_worker_run(self, scenarios, seed):
        """Each example starts with work in flight: a few deals delivered and worked once (so some are held)."""
        for i, scenario in enumerate(scenarios):
            self.deliver_a_new_deal(scenario, seed + i)
        run_worker_briefly(1)

    @rule(scenario=st.sampled_from(SCENARIOS), seed=st.integers(0, 2**32 - 1))
    def deliver_a_new_deal(self, scenario, seed):
        deal_id = new_deal(scenario, seed)
        [event] = World.deliverer.hubspot_events([deal_id])
        assert self._send([event]) == 202
        World.source_keys.append(f"deal:{deal_id}")
        World.events.append(event)

    @precondition(lambda self: World.events)
    @rule(data=st.data())
    def redeliver_an_event(self, data):
        event = data.draw(st.sampled_from(World.events))
        deliveries = InboundEvent.objects.get(event_id=str(event["eventId"])).deliveries
        assert self._send([event]) == 200  # a duplicate: answered, stored once
        assert InboundEvent.objects.get(event_id=str(event["eventId"])).deliveries == deliveries + 1

    @rule(count=st.integers(1, 3), seed=st.integers(0, 2**32 - 1), batched=st.booleans())
    def deliver_events_in_reverse_order(self, count, seed, batched):
        """New deals, each with an older and a newer event; the newest arrive first (one request, or one each)."""
        rng = random.Random(seed)
        events = []
        for _ in range(count):
            deal_id = new_deal(rng.choice(SCENARIOS), rng.randrange(2**32))
            older, newer = World.deliverer.hubspot_events([deal_id, deal_id])
            newer["occurredAt"] = older["occurredAt"] + 1000
            events += [older, newer]
            World.source_keys.append(f"deal:{deal_id}")
        events.reverse()
        if batched:
            assert self._send(events) == 202
        else:
            assert [self._send([e]) for e in events] == [202] * len(events)
        World.events += events

    # ---------------------------------------------------------------- faults and workers

    @rule(system=st.sampled_from(["hubspot", "netsuite", "kantata"]), n=st.integers(1, 4),
          status=st.sampled_from([500, 502, 503, 429]))
    def inject_a_transient_failure_burst(self, system, n, status):
        inject(system, fail_next_count=n, fail_next_status=status, retry_after_seconds=1)

    @rule(rounds=st.integers(1, 3))
    def run_the_worker_a_bit(self, rounds):
        run_worker_briefly(rounds)

    # ---------------------------------------------------------------- people

    def _actionable(self):
        return list(SyncRecord.objects.filter(status__in=["held", "dead"]).order_by("id"))

    @precondition(lambda self: SyncRecord.objects.filter(status__in=["held", "dead"]).exists())
    @rule(data=st.data())
    def fix_and_resubmit_a_held_record(self, data):
        record = data.draw(st.sampled_from(self._actionable()))
        audits = AuditEntry.objects.filter(record=record).count()
        services.record_resubmit(record_id=record.pk, actor=World.carol, expected_version=record.version,
                                 changes=fix_for(record), reason="fixed (state machine)")
        assert AuditEntry.objects.filter(record=record).count() == audits + 1
        assert SyncRecord.objects.get(pk=record.pk).status == "pending"

    @precondition(lambda self: SyncRecord.objects.filter(status__in=["held", "dead"]).exists())
    @rule(data=st.data())
    def two_users_resubmit_at_the_same_moment(self, data):
        record = data.draw(st.sampled_from(self._actionable()))
        changes = fix_for(record)
        audits = AuditEntry.objects.filter(record=record).count()
        barrier = threading.Barrier(2)
        results = [None, None]

        def resubmit(i, actor):
            try:
                barrier.wait(10)
                services.record_resubmit(record_id=record.pk, actor=actor, expected_version=record.version,
                                         changes=changes, reason=f"fixed by {actor.username}")
                results[i] = "ok"
            except Exception as exc:
                results[i] = exc
            finally:
                connection.close()

        threads = [threading.Thread(target=resubmit, args=(i, actor))
                   for i, actor in enumerate([World.carol, World.erin])]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(map(str, results)).count("ok") == 1, results
        [loser] = [r for r in results if r != "ok"]
        assert isinstance(loser, services.Conflict), repr(loser)
        assert AuditEntry.objects.filter(record=record).count() == audits + 1
        assert SyncRecord.objects.get(pk=record.pk).version == record.version + 1

    # ---------------------------------------------------------------- invariants

    @invariant()
    def one_record_per_source_object_and_nothing_duplicated_downstream(self):
        check_outcome(World.source_keys, all_settled=False)

    def teardown(self):
        clear_faults()
        run_worker(timeout=90)  # until nothing is due (retries come due within a second or so)
        check_outcome(World.source_keys, all_settled=True)


def test_nothing_lost_nothing_duplicated_whatever_happens(deliverer, carol):
    World.deliverer, World.carol, World.erin = deliverer, carol, user("erin", "integration_admin", staff=True)
    World.source_keys, World.events = [], []
    # transient bursts must not open the circuit (records would wait 30 s) nor exhaust the retries
    configure_connections(max_attempts=12, circuit_threshold=1000, backoff_base_seconds=0.05,
                          backoff_cap_seconds=0.2)
    run_state_machine_as_test(HandoffMachine, settings=settings(
        max_examples=int(os.environ.get("HANDOFF_STATE_MACHINE_EXAMPLES", 5)),
        stateful_step_count=int(os.environ.get("HANDOFF_STATE_MACHINE_STEPS", 15)),
        deadline=None, database=None, print_blob=True,
        phases=[Phase.explicit, Phase.reuse, Phase.generate],  # no shrinking: every step is slow (real HTTP)
        suppress_health_check=list(HealthCheck)))
    assert SyncRecord.objects.count() == len(set(World.source_keys))
    assert not SyncRecord.objects.exclude(status__in=["succeeded", "held", "dead"]).exists()
