"""Shared fixtures. Real PostgreSQL and Redis (from DATABASE_URL / REDIS_URL; `./handoff test` starts embedded
ones when unset). The people:

- Alice is a PMO analyst: she fixes and resubmits held project-setup records.
- Bob is in finance ops: he can fix and resubmit too.
- Carol is the integration admin: she also sees raw payloads and configures connections.
- Dave is a viewer: he reads boards and records and can change nothing.
"""

from __future__ import annotations

import time

import django_rq
import pytest
from django.contrib.auth.models import Group, Permission, User
from rq import SimpleWorker

from apps.connectors.ids import salesforce_id18
from apps.core.roles import define_roles
from apps.demo import firm as demo_firm
from apps.sandbox.credentials import CALLBACK_URL_SECRETS
from apps.sandbox.models import SandboxObject, SandboxSystem
from apps.sync import sweeper
from apps.sync.models import Connection, SyncRecord

HUBSPOT_SECRET = "test-hubspot-client-secret"
# the demo Salesforce connection's callback URL, with its secret (Salesforce does not sign its messages)
SALESFORCE_CALLBACK = f"/api/v1/callbacks/salesforce/{CALLBACK_URL_SECRETS['salesforce']}/"


def salesforce_id(stem: str) -> str:
    """A valid 18-character Salesforce id (its case-safe checksum included) from a readable stem, zero-padded to
    15 characters: salesforce_id("006SAME") == "006SAME00000000" + its 3-character suffix."""
    return salesforce_id18(stem.ljust(15, "0"))


@pytest.fixture(autouse=True)
def clean_redis():
    """Each test starts with empty queues and no wake-up keys (the test Redis database only)."""
    conn = django_rq.get_connection("default")
    conn.flushdb()
    yield
    conn.flushdb()


@pytest.fixture
def roles(db):
    define_roles(Group, Permission)


def _user(username: str, group: str, staff: bool = False) -> User:
    user = User.objects.create_user(username, password="pw-" + username, is_staff=staff)
    user.groups.add(Group.objects.get(name=group))
    return user


@pytest.fixture
def alice(roles):
    return _user("alice", "pmo")


@pytest.fixture
def bob(roles):
    return _user("bob", "finance_ops")


@pytest.fixture
def carol(roles):
    return _user("carol", "integration_admin", staff=True)


@pytest.fixture
def dave(roles):
    return _user("dave", "viewer")


@pytest.fixture
def firm(db):
    """Legal entities US01/UK01/DE01, payment terms, and the existing customer Northwind Traders."""
    demo_firm.setup_reference_data()


@pytest.fixture
def connections(firm):
    """Connections to the sandboxes at an address nothing listens on (for tests that make no calls)."""
    return demo_firm.setup_connections("http://127.0.0.1:9", hubspot_secret=HUBSPOT_SECRET)


@pytest.fixture
def sandboxes(transactional_db, live_server, firm):
    """Connections pointed at the sandboxes served over real HTTP by the live server. Backoff is shortened so
    retries happen within the test."""
    conns = demo_firm.setup_connections(live_server.url, hubspot_secret=HUBSPOT_SECRET)
    Connection.objects.update(backoff_base_seconds=0.05, backoff_cap_seconds=0.2)
    for c in conns.values():
        c.refresh_from_db()
    return conns


@pytest.fixture
def deliverer(sandboxes, live_server):
    from apps.demo.deals import Deliverer

    return Deliverer(handoff_url=live_server.url, sandbox_url=live_server.url, hubspot_secret=HUBSPOT_SECRET,
                     salesforce_org=demo_firm.SALESFORCE_ORG)


def run_worker(timeout: float = 60.0) -> None:
    """Run a real RQ worker (non-forking SimpleWorker, so it shares the test's database) until no work is due.
    The sweeper is what wakes up retries whose backoff has passed, as in production."""
    queues = [django_rq.get_queue(n) for n in ("high", "default", "low")]
    worker = SimpleWorker(queues, connection=queues[0].connection)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        worker.work(burst=True)
        busy = SyncRecord.objects.filter(status__in=["pending", "retrying", "in_progress"]).exists()
        from apps.sync.models import InboundEvent

        busy = busy or InboundEvent.objects.filter(status="received").exists()
        if not busy:
            return
        time.sleep(0.05)
        sweeper.sweep()
    raise AssertionError("work still pending after %.0f s" % timeout)


def sandbox_count(system: str, object_type: str) -> int:
    return SandboxObject.objects.filter(system=system, object_type=object_type).count()


def inject(system: str, **faults) -> None:
    SandboxSystem.objects.filter(system=system).update(**faults)
