"""Shared fixtures. Real PostgreSQL and Redis (from DATABASE_URL / REDIS_URL; `./handoff test` starts embedded
ones when unset). The people:

- Alice is a PMO analyst: she fixes and resubmits held project-setup records.
- Bob is in finance ops: he can fix and resubmit too.
- Carol is the integration admin: she also sees raw payloads and configures connections.
- Dave is a viewer: he reads boards and records and can change nothing.
"""

from __future__ import annotations

import django_rq
import pytest
from django.contrib.auth.models import Group, Permission
from rest_framework.test import APIClient

from apps.core.roles import define_roles
from apps.demo import firm as demo_firm
from apps.sync.models import Connection

from tests.builders import user
from tests.callbacks import HUBSPOT_SECRET


@pytest.fixture(autouse=True)
def clean_redis():
    """Each test starts with empty queues and no wake-up keys (the test Redis database only)."""
    conn = django_rq.get_connection("default")
    conn.flushdb()
    yield
    conn.flushdb()


@pytest.fixture
def api():
    """DRF's test client: what a vendor's callback or an API caller sends."""
    return APIClient()


@pytest.fixture
def roles(db):
    define_roles(Group, Permission)


@pytest.fixture
def alice(roles):
    return user("alice", "pmo")


@pytest.fixture
def bob(roles):
    return user("bob", "finance_ops")


@pytest.fixture
def carol(roles):
    return user("carol", "integration_admin", staff=True)


@pytest.fixture
def dave(roles):
    return user("dave", "viewer")


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
