"""What the demo's delivery-to-cash traffic (finance_traffic.py) works with: the five engagements it wins and
bills (PLAN, Target), the codes and limits its entries carry, how it waits for Handoff to finish a step (Sent,
settled, poll_settle), and the CRM amendments it sends (HubSpot webhook, Salesforce Outbound Message)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timezone as dt_tz
from decimal import Decimal
from typing import Callable

from apps.sync.models import InboundEvent, SyncRecord

from .book_reference import EXPENSE_CODE as BOOK_EXPENSE_CODE, SERVICE_CODES

log = logging.getLogger("handoff.demo")

# the PSA service codes the live entries carry: the demo firm's own (book_reference.py: consulting time and
# billable expenses, mapped there to the sandbox ERP's segments), and one no legal entity maps
TIME_CODE, EXPENSE_CODE, UNMAPPED_CODE = SERVICE_CODES["Consulting"], BOOK_EXPENSE_CODE, "TRAINING"
ROLES = ["Partner", "Manager", "Senior Consultant", "Consultant", "Analyst"]  # the "Standard … 2026" rate cards
UNKNOWN_ROLE = "Principal Architect"
UNKNOWN_WORKSPACE = "999999999"
CAP = Decimal("2000.00")
FINANCE_WORKFLOWS = ("time_to_billing", "milestone_to_invoice", "invoice_payment_to_crm", "change_order")
OPEN = ("pending", "in_progress", "retrying")
TERMINAL = ("succeeded", "held", "dead", "ignored")

# what the demo's five engagements are: key → (contract type, legal entity, CRM)
PLAN = {
    "tm": ("t_and_m", "US01", "hubspot"),
    "capped": ("t_and_m", "US01", "salesforce"),
    "milestone": ("milestone", "UK01", "salesforce"),
    "stripe": ("milestone", "US01", "hubspot"),
    "closed": ("fixed_fee", "DE01", "hubspot"),
}


@dataclass
class Target:
    """One of the demo's engagements, from its deal in the CRM to its project in the PSA."""

    key: str
    contract_type: str
    legal_entity: str
    crm: str
    opportunity_id: str = ""
    record_key: str = ""  # the quote-to-project record's source key
    engagement_id: int | None = None
    code: str = ""
    workspace: str = ""
    currency: str = ""
    contract_value: Decimal = Decimal(0)
    start: date | None = None
    end: date | None = None
    milestones: list[str] = field(default_factory=list)  # completed story ids


@dataclass
class Sent:
    """What one step sent: the records (workflow, source key) Handoff must finish before the next step."""

    keys: list[tuple[str, str]] = field(default_factory=list)
    since: float = field(default_factory=time.time)

    def add(self, workflow: str, key: str) -> None:
        self.keys.append((workflow, key))


def settled(sent: Sent) -> bool:
    """Every record the step sent is there and finished, and no finance record or callback is still open."""
    since = datetime.fromtimestamp(sent.since - 1, tz=dt_tz.utc)
    if InboundEvent.objects.filter(status="received", received_at__gte=since).exists():
        return False
    if SyncRecord.objects.filter(workflow__in=FINANCE_WORKFLOWS, status__in=OPEN, updated_at__gte=since).exists():
        return False
    for workflow, key in sent.keys:
        if not SyncRecord.objects.filter(workflow=workflow, source_key=key, status__in=TERMINAL).exists():
            return False
    return True


def poll_settle(timeout: float = 120.0, interval: float = 0.5,
                say: Callable[[str], None] | None = None) -> Callable[[Sent, str], bool]:
    """The demo's settle: wait (polling PostgreSQL) until the workers have finished a step, at most `timeout` s."""

    def settle(sent: Sent, what: str) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if settled(sent):
                return True
            time.sleep(interval)
        (say or log.warning)(f"demo traffic: {what} not finished after {timeout:.0f} s; carrying on")
        return False

    return settle


def amendment_event(event_id: int, deal_id: str | int, value: str = "approved") -> dict:
    """HubSpot's webhook for a change of the deal's amendment_status (the amendment itself is on the deal)."""
    return {"eventId": event_id, "subscriptionId": 9, "portalId": 62515, "appId": 1,
            "occurredAt": int(time.time() * 1000), "subscriptionType": "deal.propertyChange", "attemptNumber": 0,
            "objectId": int(deal_id), "propertyName": "amendment_status", "propertyValue": value,
            "changeSource": "CRM"}


def amendment_fields(amendment_id: str, opportunity_id: str, *, amended_amount: str = "",
                     amended_start_date: str = "", amended_end_date: str = "", amended_rate_card: str = "",
                     amended_billing_schedule: str = "", status: str = "Approved") -> dict:
    """A Salesforce Contract_Amendment__c as its Outbound Message carries it."""
    return {"Id": amendment_id, "Opportunity__c": opportunity_id, "Status__c": status,
            "New_Contract_Value__c": amended_amount, "New_Start_Date__c": amended_start_date,
            "New_End_Date__c": amended_end_date, "Rate_Card__c": amended_rate_card,
            "Billing_Schedule__c": amended_billing_schedule,
            "SystemModstamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())}

