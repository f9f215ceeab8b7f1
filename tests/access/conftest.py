"""What the access tests act on: a held PMO record whose account carries a tax id, a held time entry whose
title names its consultant, an engagement, a bulk action Alice previewed, and a HubSpot connection. The people
(alice = pmo, bob = finance_ops, carol = integration_admin, dave = viewer) come from tests/conftest.py."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import pytest

from apps.canonical.models import Customer, Engagement, LegalEntity
from apps.sync.models import BulkAction, Connection, SyncRecord
from tests.builders import held_record, opportunity_payload

TAX_ID = "98-7654321"
CONSULTANT = "Priya Raman"


def pmo_record(connections) -> SyncRecord:
    """A held quote-to-project record (the PMO's queue) whose account carries the tax id."""
    title = "Bluefin Analytics — ERP rollout"
    payload = opportunity_payload(opportunity_id="900001", deal_id="900001", opportunity_name=title,
                                  account={"id": "700001", "name": "Bluefin Analytics", "tax_id": TAX_ID})
    return held_record(connections, payload=payload, title=title,
                       message=f"No legal entity is set on “{title}” (tax id {TAX_ID}).")


def time_entry_record(connections) -> SyncRecord:
    """A held time entry (finance ops' queue) whose title names the consultant, as the time workflow writes it."""
    payload = {"entry_type": "time", "entry_id": "TE-77", "person": CONSULTANT, "minutes": 480,
               "date": "2026-11-02", "engagement_code": "ENG-ACCESS-1", "role_name": "Consultant"}
    title = f"Time 8.00 h · {CONSULTANT} · 2026-11-02 (entry TE-77)"
    return held_record(connections, owner_team="finance_ops", workflow="time_to_billing", payload=payload,
                       title=title, source="kantata", source_key="time:TE-77",
                       message=f"No legal entity is set on “{title}” (tax id {TAX_ID}).")


@dataclass
class World:
    record: SyncRecord
    time_record: SyncRecord
    connection: Connection
    engagement: Engagement
    bulk: BulkAction


@pytest.fixture
def world(connections, alice, bob, carol, dave) -> World:
    hubspot = connections["hubspot"]
    record = pmo_record(connections)
    entity = LegalEntity.objects.get(code="US01")
    customer = Customer.objects.create(name="Bluefin Analytics", tax_id=TAX_ID, country="US", legal_entity=entity)
    engagement = Engagement.objects.create(
        code="ENG-ACCESS-1", name="Bluefin ERP rollout", customer=customer, legal_entity=entity,
        contract_type="fixed_fee", currency="USD", start_date=date(2026, 4, 15),
        correlation_id=record.correlation_id)
    bulk = BulkAction.objects.create(actor=alice, action="resubmit", record_ids=[record.pk],
                                     preview={"total": 1, "allowed": 1, "versions": {str(record.pk): record.version}},
                                     total=1)
    return World(record=record, time_record=time_entry_record(connections), connection=hubspot,
                 engagement=engagement, bulk=bulk)
