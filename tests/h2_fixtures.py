"""Shared set-up for the milestone-to-invoice, invoice-to-CRM and Stripe tests: engagements as quote-to-project
leaves them (linked to their PSA project, ERP customer and job, CRM account and opportunity — with the matching
sandbox objects), Kantata milestone stories, and signed callbacks."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from decimal import Decimal

from apps.canonical.models import Customer, Engagement, LegalEntity, PaymentTerms
from apps.canonical.services import external_id_link
from apps.connectors.standard_webhooks.signature import signed_headers
from apps.sandbox.credentials import INBOUND_SECRETS
from apps.sandbox.models import SandboxObject

_seq = itertools.count(1)


def make_engagement(*, contract_type="milestone", currency="USD", legal_entity="US01", contract_value="100000.00",
                    billing_schedule="on milestones", channel="erp", crm="hubspot", in_erp=True, terms="NET30",
                    workspace=None, name=None) -> Engagement:
    """A customer and engagement as quote-to-project leaves them, with sandbox objects behind every link."""
    n = next(_seq)
    le = LegalEntity.objects.get(code=legal_entity)
    customer = Customer.objects.create(name=name or f"Milestone Customer {n} {uuid.uuid4().hex[:6]}",
                                       tax_id=f"12-{1000000 + n}", country=le.country, currency=currency,
                                       legal_entity=le, payment_terms=PaymentTerms.objects.get(code=terms))
    e = Engagement(name=f"{customer.name} — rollout", customer=customer, legal_entity=le, contract_type=contract_type,
                   contract_value=Decimal(contract_value), currency=currency, billing_schedule=billing_schedule,
                   billing_channel=channel, correlation_id=uuid.uuid4(), code=f"TMP-{uuid.uuid4().hex[:20]}")
    e.save()
    e.code = f"ENG-{e.pk:06d}"
    e.save(update_fields=["code"])
    external_id_link(obj=e, system="kantata", object_type="workspace", external_id=workspace or workspace_id(e))
    if in_erp:
        ns_customer = SandboxObject.objects.create(system="netsuite", object_type="customer",
                                                   external_key=f"HO-{customer.key}",
                                                   data={"companyName": customer.name})
        external_id_link(obj=customer, system="netsuite", object_type="customer", external_id=str(ns_customer.pk))
        job = SandboxObject.objects.create(system="netsuite", object_type="job", external_key=f"HO-{e.key}",
                                           data={"entityId": e.code})
        external_id_link(obj=e, system="netsuite", object_type="job", external_id=str(job.pk))
    if crm == "hubspot":
        company = SandboxObject.objects.create(system="hubspot", object_type="companies",
                                               data={"properties": {"name": customer.name}, "associations": {}})
        deal = SandboxObject.objects.create(system="hubspot", object_type="deals",
                                            data={"properties": {"dealname": e.name},
                                                  "associations": {"companies": [str(company.pk)]}})
        external_id_link(obj=customer, system="hubspot", object_type="account", external_id=str(company.pk))
        external_id_link(obj=e, system="hubspot", object_type="opportunity", external_id=str(deal.pk))
    elif crm == "salesforce":
        acc_id, opp_id = f"001SBX{n:012d}", f"006SBX{n:012d}"
        SandboxObject.objects.create(system="salesforce", object_type="Account", external_key=acc_id,
                                     data={"fields": {"Name": customer.name}})
        SandboxObject.objects.create(system="salesforce", object_type="Opportunity", external_key=opp_id,
                                     data={"fields": {"Name": e.name, "AccountId": acc_id}})
        external_id_link(obj=customer, system="salesforce", object_type="account", external_id=acc_id)
        external_id_link(obj=e, system="salesforce", object_type="opportunity", external_id=opp_id)
    return Engagement.objects.select_related("customer", "legal_entity").get(pk=e.pk)


def workspace_id(e: Engagement) -> str:
    """The engagement's Kantata workspace id (Kantata ids are numbers)."""
    return str(700_000 + e.pk)


def story(engagement: Engagement | None = None, *, story_id=None, amount="25000.00", currency=None, title=None,
          workspace=None, **extra) -> dict:
    """A completed Kantata milestone story, as the PSA's API returns it."""
    sid = str(story_id or 9000 + next(_seq))
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    data = {"id": sid, "workspace_id": workspace or workspace_id(engagement), "title": title or f"Phase {sid} sign-off",
            "story_type": "milestone", "state": "completed", "price": amount,
            "currency": currency or (engagement.currency if engagement else "USD"), "due_date": "2026-11-30",
            "completed_at": now, "updated_at": now}
    data.update(extra)
    return data


def signed(secret: str, body: dict | bytes, msg_id: str | None = None, timestamp: int | None = None) -> tuple:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return raw, signed_headers(secret, msg_id or f"msg_{uuid.uuid4().hex}", raw, timestamp)


def drf_headers(headers: dict) -> dict:
    """requests-style headers → Django test client META keys."""
    return {("CONTENT_TYPE" if k.lower() == "content-type" else "HTTP_" + k.upper().replace("-", "_")): v
            for k, v in headers.items()}


def post_kantata(client, data: dict, *, msg_id=None, event_type="story.completed", secret=None):
    body, headers = signed(secret or INBOUND_SECRETS["kantata"],
                           {"type": event_type, "timestamp": data.get("updated_at", ""), "data": data}, msg_id)
    return client.post("/api/v1/callbacks/kantata/", data=body, content_type="application/json",
                       **{k: v for k, v in drf_headers(headers).items() if k != "CONTENT_TYPE"})
