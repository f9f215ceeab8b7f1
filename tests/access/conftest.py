"""What the access tests act on: a held PMO record whose account carries a tax id, a held time entry whose
title names its consultant, an engagement, a bulk action Alice previewed, and a HubSpot connection. The people
(alice = pmo, bob = finance_ops, carol = integration_admin, dave = viewer) come from tests/conftest.py."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import pytest
from django.utils import timezone

from apps.canonical.models import Customer, Engagement, LegalEntity
from apps.sync.queue_columns import search_keys
from apps.sync.models import BulkAction, Connection, SyncRecord

TAX_ID = "98-7654321"
CONSULTANT = "Priya Raman"


def held_record(connection: Connection, *, owner_team: str = "pmo", workflow: str = "quote_to_project",
                payload: dict | None = None, title: str = "Bluefin Analytics — ERP rollout",
                source_key: str = "deal:900001") -> SyncRecord:
    payload = payload or {
        "opportunity_id": "900001", "deal_id": "900001", "opportunity_name": title, "amount": "120000.00",
        "currency": "USD", "close_date": "2026-03-31", "contract_type": "fixed_fee", "legal_entity": "",
        "start_date": "2026-04-15", "end_date": "2026-10-31", "service_line": "Implementation",
        "billing_terms": "NET30", "project_template": "", "billing_schedule": "",
        "account": {"id": "700001", "name": "Bluefin Analytics", "tax_id": TAX_ID, "country": "US"},
    }
    record = SyncRecord(
        workflow=workflow, stage="validate", status="held", reason_code="missing_legal_entity",
        fault_fields=["legal_entity"], message=f"No legal entity is set on “{title}” (tax id {TAX_ID}).",
        owner_team=owner_team, source_connection=connection, source_key=source_key,
        title=title, amount=payload.get("amount"), currency=payload.get("currency", "USD"),
        original_payload=payload, current_payload=payload, context={"fetched": True}, held_at=timezone.now())
    record.search_keys = search_keys(record)
    record.save()
    return record


def time_entry_record(connection: Connection) -> SyncRecord:
    """A held time entry (finance ops' queue) whose title names the consultant, as the time workflow writes it."""
    payload = {"entry_type": "time", "entry_id": "TE-77", "person": CONSULTANT, "minutes": 480,
               "date": "2026-11-02", "engagement_code": "ENG-ACCESS-1", "role_name": "Consultant"}
    return held_record(connection, owner_team="finance_ops", workflow="time_to_billing", payload=payload,
                       title=f"Time 8.00 h · {CONSULTANT} · 2026-11-02 (entry TE-77)", source_key="time:TE-77")


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
    record = held_record(hubspot)
    entity = LegalEntity.objects.get(code="US01")
    customer = Customer.objects.create(name="Bluefin Analytics", tax_id=TAX_ID, country="US", legal_entity=entity)
    engagement = Engagement.objects.create(
        code="ENG-ACCESS-1", name="Bluefin ERP rollout", customer=customer, legal_entity=entity,
        contract_type="fixed_fee", currency="USD", start_date=date(2026, 4, 15),
        correlation_id=record.correlation_id)
    bulk = BulkAction.objects.create(actor=alice, action="resubmit", record_ids=[record.pk],
                                     preview={"total": 1, "allowed": 1, "versions": {str(record.pk): record.version}},
                                     total=1)
    return World(record=record, time_record=time_entry_record(connections["kantata"]), connection=hubspot,
                 engagement=engagement, bulk=bulk)
