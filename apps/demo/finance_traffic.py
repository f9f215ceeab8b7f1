"""The delivery-to-cash side of the demo traffic: what the sandbox PSA, billing engine, ERP and CRMs send to
Handoff once deals are won — approved time and expenses, completed milestones, payments, failed payments,
disputes and change orders — through the real signed callbacks over HTTP, exactly as the tests send them
(apps/sandbox/kantata/time_entries.publish for Kantata time and expenses, the Kantata sandbox's story API for
milestones, the Stripe sandbox's invoice API and event redelivery, apps/sandbox/netsuite/invoices.pay_invoice for
NetSuite payments, the HubSpot / Salesforce sandboxes for amendments).

The engagements it bills are its own, won through the real quote-to-project path at start-up (closed-won deals in
the CRM sandboxes → customer and job in NetSuite, workspace in Kantata, ids back to the CRM), so every system
behind them knows them: the invoices and payments reach real CRM deals. Then:

1. `won`: five deals (T&M, capped T&M, milestone, Stripe-billed milestone, fixed fee) are delivered and worked.
2. `configure`: the engagement terms no CRM field carries, set as a finance admin sets them in the admin
   (billing channel Stripe, a T&M cap, one engagement closed).
3. `amend`: an approved amendment per engagement (HubSpot deal properties + webhook, or a Salesforce
   Contract_Amendment__c Outbound Message) gives it a rate card, dates and a billing schedule (change orders).
4. `deliver`: approved time and expenses (most go through; one of each hold reason: unknown project, closed
   project, unknown rate-card role, entry outside the engagement dates, T&M cap exceeded, missing dimension
   mapping; one entry delivered twice), and completed milestones (NetSuite- and Stripe-billed ones; held by the
   readiness check: a milestone on a T&M contract, one above the remaining contract value).
5. `collect`: an approved entry corrected in the PSA (the posted ERP line is updated, not duplicated), Stripe
   payments (paid, a duplicate delivery of invoice.paid, declined then paid, paid then disputed), a NetSuite
   payment, and a change order below what is already invoiced (held for finance ops).
6. `out_of_order`: Stripe's invoice.paid delivered before the invoice's invoice.finalized.

After each step the traffic waits for Handoff to work what it sent (`settle`: the demo polls the database, the
tests run a worker), because the next step builds on it. `tick()` then sends one more item at a time (the slow
trickle). Used by `manage.py demo_traffic` and tests/test_demo_traffic_finance.py.
"""

from __future__ import annotations

import itertools
import random
import time
from datetime import date, timedelta
from decimal import Decimal
from typing import Callable

import requests
from django.utils import timezone

from apps.connectors.ids import salesforce_id18
from apps.sandbox.credentials import DEFAULT_TOKENS
from apps.sandbox.kantata import time_entries as psa
from apps.sandbox.models import SandboxObject
from apps.sandbox.netsuite.invoices import pay_invoice
from apps.sandbox.stripe import webhooks as stripe_webhooks

from .book_reference import setup_finance_reference
from .deals import ENTITIES, Deliverer, make_opportunity
from .finance_plan import (CAP, EXPENSE_CODE, PLAN, ROLES, TIME_CODE, UNKNOWN_ROLE, UNKNOWN_WORKSPACE, UNMAPPED_CODE,
                           Sent, Target, amendment_event, amendment_fields)

class FinanceTraffic:
    """The delivery-to-cash traffic of one demo run (see the module's docstring): `burst()`, then `tick()`s."""

    def __init__(self, deliverer: Deliverer, *, handoff_url: str, sandbox_url: str,
                 settle: Callable[[Sent, str], bool], rng: random.Random | None = None,
                 say: Callable[[str], None] = print):
        self.d = deliverer
        self.handoff_url = handoff_url.rstrip("/")
        self.sandbox_url = sandbox_url.rstrip("/")
        self.settle = settle
        self.rng = rng or random.Random()
        self.say = say
        self.http = requests.Session()
        self.targets: dict[str, Target] = {}
        self.seq = itertools.count(int(time.time() * 1000) % 10**12 * 100)
        self.posted: list[dict] = []  # the time entries sent approved (what a correction may change)
        self.unpaid: list[tuple[str, str]] = []  # (channel, story id) invoiced milestones nobody paid yet
        self.corrected: dict | None = None  # the entry the burst corrects after it was posted
        self.stripe_stories: list[str] = []  # the burst's Stripe-billed milestones (paid, declined, disputed)
        self.ticks = 0

    # ------------------------------------------------------------ the systems' sides

    def _sandbox(self, system: str, method: str, path: str, **kw) -> requests.Response:
        headers = {"Authorization": f"Bearer {DEFAULT_TOKENS[system]}", **kw.pop("headers", {})}
        r = self.http.request(method, f"{self.sandbox_url}/sandbox/{system}{path}", headers=headers, timeout=15,
                              **kw)
        return r

    def _publish(self, event_type: str, data: dict, times: int = 1) -> list[int]:
        """Kantata's signed webhook (Standard Webhooks) for a time entry or expense."""
        rs = psa.publish(event_type, data, handoff_url=self.handoff_url, session=self.http, times=times)
        return [r.status_code for r in rs]

    def next_id(self) -> str:
        return str(next(self.seq))

    # ------------------------------------------------------------ 1. deals won

    def won(self) -> dict[str, Target]:
        from apps.canonical.models import Engagement, ExternalId

        sent = Sent()
        for key, (ctype, le, crm) in PLAN.items():
            opp = make_opportunity(self.rng, "good")
            country, taxer, currency = ENTITIES[le]
            opp.legal_entity, opp.country, opp.currency, opp.tax_id = le, country, currency, taxer(self.rng)
            opp.contract_type = ctype
            opp.amount = f"{self.rng.randrange(80, 400) * 1000}.00"
            t = Target(key=key, contract_type=ctype, legal_entity=le, crm=crm, currency=currency)
            if crm == "hubspot":
                t.opportunity_id = self.d.create_hubspot(opp)
                status = self.d.send_hubspot(self.d.hubspot_events([t.opportunity_id])).status_code
                t.record_key = f"deal:{t.opportunity_id}"
            else:
                t.opportunity_id, fields = self.d.create_salesforce(opp)  # and its Account
                status = self.d.send_salesforce([(f"04l{t.opportunity_id[3:]}", fields)]).status_code
                t.record_key = f"opportunity:{t.opportunity_id}"
            sent.add("quote_to_project", t.record_key)
            self.say(f"finance: won {key:<9} {ctype:<9} {le} via {crm:<10} → {status}")
            self.targets[key] = t
        self.settle(sent, "the demo's deals")
        for key, t in list(self.targets.items()):
            link = ExternalId.objects.filter(system=t.crm, object_type="opportunity",
                                             external_id=t.opportunity_id).first()
            e = Engagement.objects.filter(pk=link.object_id).first() if link else None
            ws = ExternalId.objects.filter(system="kantata", object_type="workspace", object_id=e.pk).first() if e \
                else None
            if e is None or ws is None:
                self.say(f"finance: deal {t.opportunity_id} ({key}) has no project yet; its traffic is skipped")
                del self.targets[key]
                continue
            t.engagement_id, t.code, t.workspace = e.pk, e.code, ws.external_id
            t.contract_value = e.contract_value
        return self.targets

    # ------------------------------------------------------------ 2. terms set by a finance admin

    def configure(self) -> None:
        """What no CRM field carries and a finance admin sets on the engagement in Handoff's admin."""
        from apps.canonical.models import Engagement

        changes = {"stripe": {"billing_channel": "stripe"}, "capped": {"tm_cap": CAP}, "closed": {"status": "closed"}}
        for key, values in changes.items():
            t = self.targets.get(key)
            if t:
                Engagement.objects.filter(pk=t.engagement_id).update(**values, updated_at=timezone.now())

    # ------------------------------------------------------------ 3. change orders

    def _amend(self, t: Target, *, amount: Decimal | None, start: date | None = None, end: date | None = None,
               rate_card: str = "", schedule: str = "") -> str:
        """An amendment approved in the CRM: HubSpot deal properties + webhook, or a Salesforce Outbound Message."""
        amendment = f"AMD-{self.next_id()}"
        values = {"amended_amount": f"{amount:.2f}" if amount is not None else "",
                  "amended_start_date": start.isoformat() if start else "",
                  "amended_end_date": end.isoformat() if end else "",
                  "amended_rate_card": rate_card, "amended_billing_schedule": schedule}
        if t.crm == "hubspot":
            self.d._sandbox("hubspot", "PATCH", f"/crm/v3/objects/deals/{t.opportunity_id}", {"properties": {
                "amendment_status": "approved", "amendment_id": amendment, **values}})
            self.d.event_seq += 1
            status = self.d.send_hubspot([amendment_event(self.d.event_seq, t.opportunity_id)]).status_code
            key = f"amendment:deal-{t.opportunity_id}"
        else:
            amendment = salesforce_id18(f"a0ASB{int(amendment[4:]) % 10**10:010d}")
            fields = amendment_fields(amendment, t.opportunity_id, **values)
            self.d.store_salesforce("Contract_Amendment__c", fields)  # what Handoff reads once notified
            status = self.d.send_salesforce([(f"04l{amendment[3:]}", fields)],
                                            sobject_type="Contract_Amendment__c").status_code
            key = f"amendment:{amendment}"
        self.say(f"finance: change order {amendment} on {t.code} ({t.key}) via {t.crm} → {status}")
        return key

    def amend(self) -> None:
        today = timezone.localdate()
        sent = Sent()
        for key in ("tm", "capped", "milestone", "stripe"):
            t = self.targets.get(key)
            if not t:
                continue
            t.start, t.end = today - timedelta(days=42), today + timedelta(days=120)
            t.contract_value = (t.contract_value * Decimal("1.10")).quantize(Decimal("1.00"))
            schedule = "monthly in arrears" if t.contract_type == "t_and_m" else "on milestones"
            sent.add("change_order", self._amend(t, amount=t.contract_value, start=t.start, end=t.end,
                                                 rate_card=f"Standard {t.currency} 2026", schedule=schedule))
        self.settle(sent, "the change orders")

    # ------------------------------------------------------------ 4. time, expenses, milestones

    def _workday(self, t: Target) -> date:
        today = timezone.localdate()
        start = max(t.start or today - timedelta(days=21), today - timedelta(days=21))
        days = [start + timedelta(days=i) for i in range((today - start).days)]
        days = [d for d in days if d.weekday() < 5] or [today]
        return self.rng.choice(days)

    def time_entry(self, t: Target | None, *, minutes: int | None = None, role: str | None = None,
                   day: date | None = None, service_code: str = TIME_CODE, workspace: str | None = None,
                   times: int = 1, what: str = "good", entry_id: str | None = None,
                   event_type: str = "time_entry.approved", sent: Sent | None = None) -> dict:
        entry_id = entry_id or self.next_id()
        minutes = minutes if minutes is not None else self.rng.choice([90, 120, 195, 240, 390, 465, 480])
        role = role or self.rng.choice(ROLES)
        day = day or (self._workday(t) if t else timezone.localdate() - timedelta(days=1))
        data = psa.time_entry(entry_id, workspace or t.workspace, date_performed=day.isoformat(),
                                   minutes=minutes, role=role, service_code=service_code,
                                   user_id=500 + self.rng.randrange(20), user_name=self.rng.choice(PEOPLE),
                                   story_title=self.rng.choice(TASKS), updated_at=psa.iso())
        codes = self._publish(event_type, data, times=times)
        self.say(f"finance: time {entry_id} {minutes / 60:.2f} h {role} on {t.code if t else workspace} "
                 f"[{what}] → {codes}")
        if sent is not None:
            sent.add("time_to_billing", f"time_entry:{entry_id}")
        return data

    def expense(self, t: Target, *, cents: int | None = None, currency: str | None = None,
                sent: Sent | None = None) -> dict:
        entry_id = self.next_id()
        data = psa.expense(entry_id, t.workspace, date_spent=self._workday(t).isoformat(),
                                amount_in_cents=cents or self.rng.randrange(2500, 60000),
                                currency=currency or t.currency, category=self.rng.choice(["Travel", "Hotel", "Meals"]),
                                service_code=EXPENSE_CODE, user_name=self.rng.choice(PEOPLE),
                                updated_at=psa.iso())
        codes = self._publish("expense.approved", data)
        self.say(f"finance: expense {entry_id} {data['amount_in_cents'] / 100:.2f} {data['currency']} on {t.code} "
                 f"→ {codes}")
        if sent is not None:
            sent.add("time_to_billing", f"expense:{entry_id}")
        return data

    def milestone(self, t: Target, amount: Decimal, *, what: str = "good", sent: Sent | None = None) -> str:
        """A project manager adds a milestone to the Kantata project and completes it: the PSA sandbox sends its
        signed story.completed callback to Handoff."""
        r = self._sandbox("kantata", "POST", "/api/v1/stories.json", json={"story": {
            "title": self.rng.choice(MILESTONES), "workspace_id": t.workspace, "story_type": "milestone",
            "price": f"{amount:.2f}", "currency": t.currency,
            "due_date": (timezone.localdate() + timedelta(days=3)).isoformat()}})
        r.raise_for_status()
        story_id = r.json()["results"][0]["id"]
        self._sandbox("kantata", "PUT", f"/api/v1/stories/{story_id}.json",
                      json={"story": {"state": "completed"}}).raise_for_status()
        self.say(f"finance: milestone {story_id} {amount:.2f} {t.currency} completed on {t.code} ({t.key}) [{what}]")
        t.milestones.append(story_id)
        if sent is not None:
            sent.add("milestone_to_invoice", f"story:{story_id}")
        return story_id

    def _share(self, t: Target, pct: str) -> Decimal:
        return (t.contract_value * Decimal(pct)).quantize(Decimal("1.00"))

    def deliver(self) -> None:
        T = self.targets
        sent = Sent()
        tm = T.get("tm")
        if tm:
            for i in range(6):
                data = self.time_entry(tm, times=2 if i == 0 else 1, what="delivered twice" if i == 0 else "good",
                                       sent=sent)
                self.posted.append(data)
            self.corrected = self.time_entry(tm, minutes=480, role="Consultant", what="to be corrected", sent=sent)
            self.expense(tm, sent=sent)
            self.expense(tm, currency="EUR", sent=sent)
            # held: one of each reason
            self.time_entry(tm, role=UNKNOWN_ROLE, what="unknown rate-card role", sent=sent)
            self.time_entry(tm, day=tm.start - timedelta(days=7), what="outside the engagement dates", sent=sent)
            self.time_entry(tm, service_code=UNMAPPED_CODE, what="missing dimension mapping", sent=sent)
        self.time_entry(None, workspace=UNKNOWN_WORKSPACE, what="unknown project", sent=sent)
        if T.get("closed"):
            self.time_entry(T["closed"], what="closed project", sent=sent)
        if T.get("capped"):
            self.time_entry(T["capped"], minutes=240, role="Consultant", what="within the T&M cap", sent=sent)
            self.time_entry(T["capped"], minutes=480, role="Partner", what="T&M cap exceeded", sent=sent)
        if T.get("milestone"):
            m = T["milestone"]
            self.unpaid.append(("erp", self.milestone(m, self._share(m, "0.30"), sent=sent)))
            self.milestone(m, m.contract_value + Decimal("5000.00"), what="above the remaining contract value",
                           sent=sent)
        if T.get("stripe"):
            s = T["stripe"]
            self.stripe_stories = [self.milestone(s, self._share(s, "0.10"), sent=sent) for _ in range(3)]
        if tm:
            self.milestone(tm, self._share(tm, "0.05"), what="milestone on a T&M contract", sent=sent)
        self.settle(sent, "the time, expenses and milestones")

    # ------------------------------------------------------------ 5. corrections, payments, a held change order

    def stripe_invoice(self, story_id: str) -> SandboxObject | None:
        return SandboxObject.objects.filter(system="stripe", object_type="invoice",
                                            data__metadata__handoff_milestone=story_id).first()

    def netsuite_invoice(self, story_id: str) -> SandboxObject | None:
        return SandboxObject.objects.filter(system="netsuite", object_type="invoice",
                                            external_key=f"HO-MS-{story_id}").first()

    def stripe_pay(self, invoice_id: str, payment_method: str = "pm_card_visa") -> int:
        """The customer pays the invoice in Stripe (the billing engine emits its events to Handoff)."""
        r = self._sandbox("stripe", "POST", f"/v1/invoices/{invoice_id}/pay", data={"payment_method": payment_method},
                          headers={"Idempotency-Key": f"demo-pay-{invoice_id}-{payment_method}-{self.next_id()}"})
        self.say(f"finance: Stripe invoice {invoice_id} paid with {payment_method} → {r.status_code}")
        return r.status_code

    def collect(self) -> None:
        T = self.targets
        sent = Sent()
        if self.corrected:
            c = self.corrected
            c2 = {**c, "time_in_minutes": 360, "role_name": "Senior Consultant", "updated_at": psa.iso(),
                  "notes": "corrected after approval: 6 h, senior rate"}
            codes = self._publish("time_entry.updated", c2)
            self.say(f"finance: time {c['id']} corrected in the PSA (8 h → 6 h, Senior Consultant) → {codes}")
            self.posted.append(c2)
            sent.add("time_to_billing", f"time_entry:{c['id']}")
        for n, story_id in enumerate(self.stripe_stories):
            inv = self.stripe_invoice(story_id)
            if inv is None:
                continue
            if n == 0:  # paid, and Stripe delivers invoice.paid twice
                self.stripe_pay(inv.external_key)
                for event in stripe_webhooks.events_for(inv.external_key, "invoice.paid"):
                    resp = stripe_webhooks.deliver_event(event["id"])
                    self.say(f"finance: Stripe redelivers {event['id']} (invoice.paid) → "
                             f"{resp.status_code if resp is not None else 'not delivered'}")
            elif n == 1:  # the card is declined, then the customer pays with another
                self.stripe_pay(inv.external_key, "pm_card_chargeDeclined")
                self.stripe_pay(inv.external_key, "pm_card_visa")
            else:  # paid, then the customer's bank disputes the charge
                self.stripe_pay(inv.external_key, "pm_card_createDispute")
            sent.add("invoice_payment_to_crm", f"invoice:{inv.external_key}")
        m = T.get("milestone")
        if m and m.milestones:
            ns = self.netsuite_invoice(m.milestones[0])
            if ns is not None:
                part = (Decimal(ns.data["amountRemaining"]) / 2).quantize(Decimal("1.00"))
                payment = pay_invoice(ns.pk, part)
                self.say(f"finance: NetSuite payment {payment.data.get('tranId')} of {part} on {ns.data['tranId']}")
                sent.add("invoice_payment_to_crm", f"invoice:{ns.pk}")
                # a change order that would drop the contract value below what is invoiced: held for finance ops
                invoiced = Decimal(ns.data["total"])
                sent.add("change_order", self._amend(m, amount=(invoiced / 2).quantize(Decimal("1.00"))))
        self.unpaid = [(ch, s) for ch, s in self.unpaid if not (m and m.milestones and s == m.milestones[0])]
        self.settle(sent, "the corrections, payments and the change order")

    # ------------------------------------------------------------ 6. Stripe events out of order

    def out_of_order(self) -> None:
        s = self.targets.get("stripe")
        if not s:
            return
        mode = stripe_webhooks.webhook_config()["mode"]
        inv = None
        stripe_webhooks.configure_webhooks(mode="hold")  # Stripe's deliveries are late for this invoice
        try:
            sent = Sent()
            story_id = self.milestone(s, self._share(s, "0.10"), what="its events delivered out of order", sent=sent)
            self.settle(sent, "the out-of-order milestone")
            inv = self.stripe_invoice(story_id)
            if inv is not None:
                self.stripe_pay(inv.external_key)
                paid = stripe_webhooks.events_for(inv.external_key, "invoice.paid")
                finalized = stripe_webhooks.events_for(inv.external_key, "invoice.finalized")
                for event in paid + finalized:  # the newer state first, the invoice's finalization after it
                    resp = stripe_webhooks.deliver_event(event["id"])
                    self.say(f"finance: Stripe delivers {event['type']} of {inv.external_key} late → "
                             f"{resp.status_code if resp is not None else 'not delivered'}")
        finally:
            stripe_webhooks.configure_webhooks(mode=mode)
            for event in stripe_webhooks.undelivered_events():  # anything else held meanwhile goes out now
                stripe_webhooks.deliver_event(event["id"])
        sent = Sent()
        if inv is not None:
            sent.add("invoice_payment_to_crm", f"invoice:{inv.external_key}")
        self.settle(sent, "the out-of-order Stripe events")

    # ------------------------------------------------------------ the burst and the trickle

    def burst(self) -> dict[str, Target]:
        setup_finance_reference()
        self.won()
        self.configure()
        self.amend()
        self.deliver()
        self.collect()
        self.out_of_order()
        return self.targets

    def tick(self) -> None:
        """One more item of traffic (the slow trickle after the burst), mostly good, now and then held."""
        T = self.targets
        kind = TRICKLE[self.ticks % len(TRICKLE)]
        self.ticks += 1
        tm, ms, st = T.get("tm"), T.get("milestone"), T.get("stripe")
        if kind == "time" and tm:
            twice = self.ticks % 3 == 0
            self.posted.append(self.time_entry(tm, times=2 if twice else 1,
                                               what="delivered twice" if twice else "good"))
        elif kind == "expense" and tm:
            self.expense(tm)
        elif kind == "correction" and self.posted:
            old = self.rng.choice(self.posted)
            new = {**old, "time_in_minutes": max(30, old["time_in_minutes"] - 60), "updated_at": psa.iso(),
                   "notes": "corrected in the PSA"}
            codes = self._publish("time_entry.updated", new)
            self.say(f"finance: time {old['id']} corrected ({old['time_in_minutes']} → {new['time_in_minutes']} "
                     f"min) → {codes}")
            self.posted = [new if p["id"] == old["id"] else p for p in self.posted]
        elif kind == "milestone" and ms:
            self.unpaid.append(("erp", self.milestone(ms, self._share(ms, "0.03"))))
        elif kind == "stripe_milestone" and st:
            self.unpaid.append(("stripe", self.milestone(st, self._share(st, "0.04"))))
        elif kind == "payment" and self.unpaid:
            channel, story_id = self.unpaid.pop(0)
            if channel == "stripe":
                inv = self.stripe_invoice(story_id)
                if inv is not None and inv.data.get("status") == "open":
                    if self.rng.random() < 0.25:
                        self.stripe_pay(inv.external_key, "pm_card_chargeDeclined")
                    self.stripe_pay(inv.external_key, "pm_card_visa")
            else:
                inv = self.netsuite_invoice(story_id)
                if inv is not None and Decimal(inv.data.get("amountRemaining") or 0) > 0:
                    payment = pay_invoice(inv.pk)
                    self.say(f"finance: NetSuite payment {payment.data.get('tranId')} on {inv.data['tranId']}")
        elif kind == "held" and tm:
            reason = self.rng.choice(["role", "mapping", "dates"])
            if reason == "role":
                self.time_entry(tm, role=UNKNOWN_ROLE, what="unknown rate-card role")
            elif reason == "mapping":
                self.time_entry(tm, service_code=UNMAPPED_CODE, what="missing dimension mapping")
            else:
                self.time_entry(tm, day=(tm.end or timezone.localdate()) + timedelta(days=14),
                                what="outside the engagement dates")


TRICKLE = ["time", "milestone", "expense", "payment", "time", "correction", "stripe_milestone", "held", "payment"]
PEOPLE = ["Ana Silva", "Ben Carter", "Chloé Martin", "Dev Patel", "Elif Kaya", "Femi Adeyemi", "Greta Berg",
          "Hiro Tanaka", "Ines Duarte", "Jonas Weber"]
TASKS = ["Design", "Build", "Workshop", "Analysis", "Testing", "Data migration", "Training"]
MILESTONES = ["Discovery sign-off", "Design approved", "Build complete", "User acceptance", "Go-live",
              "Hypercare exit", "Phase 1 sign-off", "Phase 2 sign-off"]
