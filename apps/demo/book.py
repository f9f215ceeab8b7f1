"""The demo firm's book of business: a few hundred engagements over the last months, with their time, expenses,
milestones, invoices, payments and recognised revenue, and the sync records that carried them — so a new user
sees boards with history, a KPI page with trends and a reconciliation report with a few variances.

History cannot be replayed live (months have to pass), so it is written straight into the canonical tables and
sync records, exactly as the workflows leave them (priced with apps/finance/pricing.py, rounded with
apps/finance/money.py). Live work on top of it — deals, time entries, milestones, payments, amendments, with
every hold reason — goes through the real callbacks and workers (`manage.py demo_traffic`).

Idempotent: a second run finds the book (engagements named "… (demo book)") and does nothing.
"""

from __future__ import annotations

import random
import uuid
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.contrib.contenttypes.models import ContentType
from django.db import connection as db, transaction
from django.utils import timezone

from apps.canonical.models import Customer, Engagement, ExternalId, LegalEntity, Milestone, PaymentTerms, RateCard
from apps.finance import pricing
from apps.finance.models import (DimensionMapping, ExchangeRate, ExpenseEntry, FinancePolicy, Invoice, Payment,
                                 RevenueEntry, TimeEntry)
from apps.finance.money import round_money
from apps.sandbox.models import SandboxObject
from apps.sync.models import Connection, SyncRecord

from .book_records import sync_records
from .book_reference import (EXPENSE_CODE, MONTHS, ROLES, SERVICE_CODES, add_months, aware, month_start,
                             setup_finance_reference)
from .deals import ADJ, NOUN, PROJECTS, Opportunity, account_fields

MARK = " (demo book)"
PEOPLE = ["Ana Silva", "Ben Carter", "Chloé Martin", "Dev Patel", "Elif Kaya", "Femi Adeyemi", "Greta Berg",
          "Hiro Tanaka", "Ines Duarte", "Jonas Weber", "Kira Novak", "Liam O'Brien", "Mara Rossi", "Nils Holm"]


def exists() -> bool:
    return Engagement.objects.filter(name__endswith=MARK).exists()


def _rate_to(rates: dict, frm: str, to: str, on: date) -> tuple[Decimal, date] | None:
    if frm == to:
        return Decimal(1), on
    pair = rates.get((frm, to))
    if pair:
        best = max((d for d in pair if d <= on), default=None)
        return (pair[best], best) if best else None
    inv = rates.get((to, frm))
    if inv:
        best = max((d for d in inv if d <= on), default=None)
        if best:
            return (Decimal(1) / inv[best]).quantize(Decimal("0.00000001")), best
    return None


class Book:
    """Builds the book in memory, then writes it with bulk inserts (a few seconds for ~300 engagements)."""

    def __init__(self, n_engagements: int, seed: int, now: datetime | None = None):
        self.n = n_engagements
        self.rng = random.Random(seed)
        self.now = now or timezone.now()  # the book ends here: nothing in it is approved, posted or done later
        self.today = timezone.localtime(self.now).date()
        self.les = {le.code: le for le in LegalEntity.objects.all()}
        self.terms = list(PaymentTerms.objects.exclude(code="DUE_ON_RECEIPT"))
        self.cards = {c.currency: c for c in RateCard.objects.filter(name__startswith="Standard ")}
        self.card_rates = {c.currency: {ln.role: ln.rate for ln in c.lines.all()} for c in self.cards.values()}
        self.mappings = {(m.legal_entity.code, m.service_code) for m in DimensionMapping.objects.select_related(
            "legal_entity")}
        self.rates: dict = {}
        for r in ExchangeRate.objects.all():
            self.rates.setdefault((r.from_currency, r.to_currency), {})[r.rate_date] = r.rate
        self.conns = {c.slug: c for c in Connection.objects.all()}
        self.policy = FinancePolicy.current()

    # ------------------------------------------------------------ engagements
    def engagements(self) -> list[Engagement]:
        rng = self.rng
        plan = [("US01", "USD"), ("US01", "USD"), ("UK01", "GBP"), ("UK01", "EUR"), ("DE01", "EUR"),
                ("UK01", "USD"), ("DE01", "EUR")]
        customers, engagements = [], []
        for i in range(self.n):
            le_code, cur = plan[i % len(plan)]
            if i % 3 == 0 or not customers:
                name = f"{rng.choice(ADJ)} {rng.choice(NOUN)} {rng.randrange(100, 999)}"
                customers.append(Customer(
                    name=name, country=self.les[le_code].country, currency=cur, legal_entity=self.les[le_code],
                    payment_terms=rng.choice(self.terms),
                    tax_id={"US01": f"{rng.randrange(10, 99)}-{rng.randrange(10**6, 10**7)}",
                            "UK01": f"GB{rng.randrange(10**8, 10**9)}",
                            "DE01": f"DE{rng.randrange(10**8, 10**9)}"}[le_code]))
            ctype = ["t_and_m", "t_and_m", "fixed_fee", "milestone", "retainer"][i % 5]
            start = month_start(self.today) - timedelta(days=rng.randrange(20, 30 * MONTHS))
            months = rng.randrange(4, 10)
            line = rng.choice(list(SERVICE_CODES))
            value = Decimal(rng.randrange(60, 600) * 1000)
            e = Engagement(
                code=f"TMP-{uuid.uuid4().hex[:20]}", name=f"{customers[-1].name} — {rng.choice(PROJECTS)}{MARK}",
                legal_entity=self.les[le_code], contract_type=ctype, contract_value=value, currency=cur,
                start_date=start, end_date=add_months(start, months) - timedelta(days=1), service_line=line,
                project_template="standard", billing_schedule={"t_and_m": "monthly in arrears",
                                                               "retainer": "monthly in advance"}.get(
                    ctype, "on milestones"),
                rate_card=self.cards[cur], correlation_id=uuid.uuid4(),
                budget_hours=(value / Decimal(200)).quantize(Decimal("1")),
                tm_cap=value if ctype == "t_and_m" and i % 4 == 0 else None,
                expense_markup_pct=Decimal("10.00") if i % 6 == 0 else None,
                retainer_fee=(value / months).quantize(Decimal("1.00")) if ctype == "retainer" else None,
                billing_channel="stripe" if i % 5 == 3 else "erp",
                status="closed" if i % 40 == 7 else "active")
            e._customer_index = len(customers) - 1
            engagements.append(e)
        Customer.objects.bulk_create(customers)
        for n, c in enumerate(customers):
            c._index = n
        for e in engagements:
            e.customer = customers[e._customer_index]
        Engagement.objects.bulk_create(engagements)
        with db.cursor() as cur:
            cur.execute("UPDATE canonical_engagement SET code = 'ENG-' || lpad(id::text, 6, '0') "
                        "WHERE id = ANY(%s)", [[e.pk for e in engagements]])
        for e in engagements:
            e.code = f"ENG-{e.pk:06d}"
        self.customers = customers
        return engagements

    def links(self, engagements: list[Engagement]) -> None:
        """External ids in every system and the sandbox objects behind them, as quote-to-project leaves them: the
        customer and job in NetSuite, the workspace in Kantata, and the won deal in the customer's CRM — a HubSpot
        company and deal, or a Salesforce Account and Opportunity (half the customers each), with the new ids
        written back to it — so that live work on a book engagement (an invoice, a payment, a change order)
        reaches objects the sandboxes serve."""
        ct_e = ContentType.objects.get_for_model(Engagement)
        ct_c = ContentType.objects.get_for_model(Customer)
        ns_customers = SandboxObject.objects.bulk_create([
            SandboxObject(system="netsuite", object_type="customer", external_key=f"HO-{c.key}",
                          data={"companyName": c.name, "vatRegNumber": c.tax_id}) for c in self.customers])
        sandbox = []
        for e in engagements:
            sandbox.append(SandboxObject(system="kantata", object_type="workspace",
                                         data={"title": f"{e.code} · {e.name}"[:255], "price": str(e.contract_value),
                                               "currency": e.currency}))
            sandbox.append(SandboxObject(system="netsuite", object_type="job", external_key=f"HO-{e.key}",
                                         data={"entityId": e.code, "companyName": e.name[:83]}))
        SandboxObject.objects.bulk_create(sandbox)
        links = []
        for c, ns in zip(self.customers, ns_customers):
            c._erp_id = str(ns.pk)
            c._crm = "hubspot" if c._index % 2 == 0 else "salesforce"
            links.append(ExternalId(content_type=ct_c, object_id=c.pk, system="netsuite", object_type="customer",
                                    external_id=c._erp_id))
        objs = iter(sandbox)
        for e in engagements:
            ws, job = next(objs), next(objs)
            e._workspace, e._job = str(ws.pk), str(job.pk)
            links += [ExternalId(content_type=ct_e, object_id=e.pk, system="kantata", object_type="workspace",
                                 external_id=e._workspace),
                      ExternalId(content_type=ct_e, object_id=e.pk, system="netsuite", object_type="job",
                                 external_id=e._job)]
        links += self.crm_objects(engagements, ct_c, ct_e)
        ExternalId.objects.bulk_create(links, ignore_conflicts=True)

    def crm_objects(self, engagements: list[Engagement], ct_c, ct_e) -> list[ExternalId]:
        """The CRM side of each won deal, in the shape the HubSpot / Salesforce sandboxes store (see deals.py),
        and the links to their ids."""

        def opportunity(e: Engagement) -> Opportunity:
            c = e.customer
            return Opportunity(scenario="good", name=e.name.removesuffix(MARK), account=c.name, tax_id=c.tax_id,
                               country=c.country, legal_entity=e.legal_entity.code, currency=e.currency,
                               amount=f"{e.contract_value:.2f}", billing_terms=c.payment_terms.code,
                               contract_type=e.contract_type, service_line=e.service_line)

        def won_on(e: Engagement) -> date:
            return e.start_date - timedelta(days=7)

        links = []
        hs_customers = [c for c in self.customers if c._crm == "hubspot"]
        companies = SandboxObject.objects.bulk_create([
            SandboxObject(system="hubspot", object_type="companies", data={"properties": {
                "name": c.name, "tax_id": c.tax_id, "country": c.country,
                "domain": c.name.lower().replace(" ", "") + ".example"}, "associations": {}})
            for c in hs_customers])
        for c, company in zip(hs_customers, companies):
            c._crm_id = str(company.pk)
        sf_customers = [c for c in self.customers if c._crm == "salesforce"]
        for c in sf_customers:
            c._crm_id = f"001SBD{c.pk:012d}"  # "D" for the demo book: never one deals.py makes
        first = {}
        for e in engagements:
            first.setdefault(e.customer.pk, e)
        SandboxObject.objects.bulk_create([
            SandboxObject(system="salesforce", object_type="Account", external_key=c._crm_id,
                          data={"fields": account_fields(c._crm_id, opportunity(first[c.pk]))})
            for c in sf_customers if c.pk in first])
        deals, opps = [], []
        for e in engagements:
            c, opp = e.customer, opportunity(e)
            e._crm = c._crm
            written_back = (e._job, e._workspace, c._erp_id, e.code)
            if e._crm == "hubspot":
                _, props = opp.as_hubspot()
                props.update(closedate=f"{won_on(e):%Y-%m-%d}T00:00:00Z", start_date=e.start_date.isoformat(),
                             end_date=e.end_date.isoformat(), billing_schedule=e.billing_schedule,
                             **dict(zip(("handoff_erp_project_id", "handoff_psa_project_id",
                                         "handoff_erp_customer_id", "handoff_engagement_code"), written_back)),
                             handoff_status="project created")
                deals.append(SandboxObject(system="hubspot", object_type="deals", data={
                    "properties": props, "associations": {"companies": [c._crm_id]}}))
            else:
                e._crm_id = f"006SBD{e.pk:012d}"
                fields = opp.as_salesforce(e._crm_id, c._crm_id)
                fields.update(CloseDate=won_on(e).isoformat(), Start_Date__c=e.start_date.isoformat(),
                              End_Date__c=e.end_date.isoformat(), Billing_Schedule__c=e.billing_schedule,
                              SystemModstamp=f"{won_on(e):%Y-%m-%d}T09:00:00.000Z",
                              **dict(zip(("ERP_Project_Id__c", "PSA_Project_Id__c", "ERP_Customer_Id__c",
                                          "Engagement_Code__c"), written_back)),
                              Handoff_Status__c="project created")
                opps.append(SandboxObject(system="salesforce", object_type="Opportunity", external_key=e._crm_id,
                                          data={"fields": fields}))
        SandboxObject.objects.bulk_create(deals + opps)
        hs = iter(deals)
        for e in engagements:
            if e._crm == "hubspot":
                e._crm_id = str(next(hs).pk)
        for c in self.customers:
            links.append(ExternalId(content_type=ct_c, object_id=c.pk, system=c._crm, object_type="account",
                                    external_id=c._crm_id))
        for e in engagements:
            links.append(ExternalId(content_type=ct_e, object_id=e.pk, system=e._crm, object_type="opportunity",
                                    external_id=e._crm_id))
        return links

    # ------------------------------------------------------------ delivery and billing
    def terms_for(self, e: Engagement) -> pricing.Terms:
        markup = e.expense_markup_pct if e.expense_markup_pct is not None else self.policy.default_expense_markup_pct
        return pricing.Terms(currency=e.currency, contract_type=e.contract_type, rates=self.card_rates[e.currency],
                             start_date=e.start_date, end_date=e.end_date, tm_cap=e.tm_cap,
                             expense_markup_pct=markup, non_billable_tasks=frozenset({"Internal meeting"}))

    def delivery(self, engagements: list[Engagement]) -> dict:
        rng, today = self.rng, self.today
        times, expenses, milestones, invoices, revenue = [], [], [], [], []
        for e in engagements:
            terms = self.terms_for(e)
            base = e.legal_entity.base_currency
            team = rng.sample(list(ROLES), k=3)
            people = rng.sample(PEOPLE, k=3)
            end = min(e.end_date, today - timedelta(days=1))
            month_delivered: dict[date, Decimal] = {}
            billed_so_far = Decimal(0)
            d = e.start_date
            n = 0
            while d <= end:
                if d.weekday() < 5 and rng.random() < 0.45:
                    k = rng.randrange(3)
                    hours = Decimal(rng.choice(["1.50", "2.00", "3.25", "4.00", "6.50", "7.75", "8.00"]))
                    task = "Internal meeting" if rng.random() < 0.05 else rng.choice(["Design", "Build", "Workshop",
                                                                                      "Analysis", "Testing"])
                    line = pricing.TimeLine(role=team[k], work_date=d, hours=hours, task=task,
                                            write_off_hours=Decimal("0.50") if rng.random() < 0.04 else Decimal(0))
                    priced = pricing.price_time(line, terms)
                    if pricing.over_cap(priced.amount, billed_so_far, terms):
                        d += timedelta(days=1)
                        continue  # the cap is reached: later time is held in the PSA, not billed
                    billed_so_far += priced.amount
                    n += 1
                    fx = _rate_to(self.rates, e.currency, base, d) or (Decimal(1), d)
                    times.append(TimeEntry(
                        source_system="kantata", source_id=f"demo-{e.pk}-{n}", source_version=d.isoformat(),
                        engagement=e, person=people[k], role=team[k], task=task,
                        service_code=SERVICE_CODES[e.service_line], work_date=d, hours=hours,
                        billable=True, write_off_hours=line.write_off_hours, rate=priced.rate,
                        approved_at=self.past(aware(d + timedelta(days=2), 9)), status=TimeEntry.Status.POSTED,
                        posted_at=self.past(aware(d + timedelta(days=2), 9, 20)), currency=e.currency,
                        amount=priced.amount,
                        base_currency=base, base_amount=round_money(priced.amount * fx[0], base), fx_rate=fx[0],
                        fx_date=fx[1]))
                    month_delivered[month_start(d)] = month_delivered.get(month_start(d), Decimal(0)) + priced.amount
                if d.day == 15 and rng.random() < 0.6:
                    spent_cur = rng.choice([e.currency, e.currency, base])
                    spent = Decimal(rng.randrange(4000, 90000)) / 100
                    fx_in = _rate_to(self.rates, spent_cur, e.currency, d) or (Decimal(1), d)
                    priced = pricing.price_expense(pricing.ExpenseLine(incurred_on=d, spent_amount=spent,
                                                                       spent_currency=spent_cur), terms, fx_in[0])
                    fx = _rate_to(self.rates, e.currency, base, d) or (Decimal(1), d)
                    n += 1
                    expenses.append(ExpenseEntry(
                        source_system="kantata", source_id=f"demo-x-{e.pk}-{n}", source_version=d.isoformat(),
                        engagement=e, person=people[0], category=rng.choice(["Travel", "Hotel", "Meals"]),
                        service_code=EXPENSE_CODE, incurred_on=d, spent_amount=spent,
                        spent_currency=spent_cur, markup_pct=terms.expense_markup_pct,
                        approved_at=self.past(aware(d + timedelta(days=3))), status=ExpenseEntry.Status.POSTED,
                        posted_at=self.past(aware(d + timedelta(days=3), 10, 5)), currency=e.currency,
                        amount=priced.amount,
                        base_currency=base, base_amount=round_money(priced.amount * fx[0], base), fx_rate=fx[0],
                        fx_date=fx[1]))
                    month_delivered[month_start(d)] = month_delivered.get(month_start(d), Decimal(0)) + priced.amount
                d += timedelta(days=1)
            self._billing(e, month_delivered, milestones, invoices, revenue)
        self.variances(engagements, revenue)
        return {"times": times, "expenses": expenses, "milestones": milestones, "invoices": invoices,
                "revenue": revenue}

    def past(self, at: datetime) -> datetime:
        """What would have happened after now (an entry worked yesterday is approved in two days) happened now."""
        return min(at, self.now)

    def variances(self, engagements: list[Engagement], revenue: list[RevenueEntry]) -> None:
        """A few deliberate gaps for the reconciliation report: for about one engagement in 40 (at least 3), the
        ERP recognised less than was billed in its last *complete* month with revenue — inside the default
        reconciliation range (the last 12 complete months), so a default run shows them. Deterministic for the
        seed (and the day)."""
        current = month_start(self.today)
        last: dict[int, RevenueEntry] = {}
        for r in revenue:  # per engagement, its latest complete month with revenue
            if r.period < current and r.amount > Decimal("1.00") and (
                    r.engagement.pk not in last or r.period >= last[r.engagement.pk].period):
                last[r.engagement.pk] = r
        candidates = [e.pk for e in engagements if e.pk in last]
        k = min(len(candidates), max(3, len(engagements) // 40))
        for pk in self.rng.sample(candidates, k):
            r = last[pk]
            gap = min(Decimal(self.rng.randrange(5, 80) * 10), (r.amount / 2).quantize(Decimal("0.01")))
            r.amount -= gap

    def _billing(self, e, delivered: dict, milestones, invoices, revenue) -> None:
        """Invoices and recognised revenue per the contract type (docs/money.md)."""
        rng, today = self.rng, self.today
        source = "stripe" if e.billing_channel == "stripe" else "netsuite"
        months = sorted(delivered) or [month_start(e.start_date)]
        current = month_start(today)

        def invoice(kind, period, amount, issued, milestone=None):
            issued = min(issued, today)  # not issued in the future (a month's invoice on the 1st of the next)
            due = issued + timedelta(days=e.customer.payment_terms.days if e.customer.payment_terms else 30)
            inv = Invoice(engagement=e, customer=e.customer, kind=kind, source_system=source, period=period,
                          external_id=(f"in_demo{e.pk}x{len(invoices)}" if source == "stripe"
                                       else f"{900000 + len(invoices)}"),
                          number=f"INV-{e.legal_entity.code}-{10000 + len(invoices)}", currency=e.currency,
                          total=amount, issued_on=issued, due_on=due, milestone=milestone,
                          idempotency_key=f"demo-{e.pk}-{kind}-{period}-{len(invoices)}")
            age = (today - due).days
            roll = rng.random()
            if age > 20 and roll < 0.85:
                inv.status, inv.amount_paid, inv.amount_due = "paid", amount, Decimal(0)
                inv.paid_at = aware(due - timedelta(days=rng.randrange(0, 10)))
            elif roll < 0.04:
                inv.status, inv.amount_due = "disputed", amount
            else:
                inv.status, inv.amount_due = "open", amount
            inv.source_updated_at = self.past(inv.paid_at or aware(issued))
            fx = _rate_to(self.rates, e.currency, e.legal_entity.base_currency, issued) or (Decimal(1), issued)
            inv.base_currency, inv.fx_rate, inv.fx_date = e.legal_entity.base_currency, fx[0], fx[1]
            inv.base_total = round_money(amount * fx[0], e.legal_entity.base_currency)
            invoices.append(inv)
            return inv

        def recognise(period, amount):
            revenue.append(RevenueEntry(engagement=e, period=period, amount=amount, currency=e.currency,
                                        source_system="netsuite", external_id=f"demo-rev-{e.pk}-{period:%Y%m}-{len(revenue)}"))

        if e.contract_type == "t_and_m":
            for m in months:
                if m >= current:
                    continue
                amount = delivered.get(m, Decimal(0))
                if not amount:
                    continue
                invoice("time_and_expense", m, amount, add_months(m, 1) + timedelta(days=2))
                recognise(m, amount)
        elif e.contract_type == "retainer":
            m = month_start(e.start_date)
            while m <= min(current, month_start(e.end_date)):
                invoice("retainer", m, e.retainer_fee, m + timedelta(days=1))
                recognise(m, e.retainer_fee)
                m = add_months(m, 1)
        else:  # milestone and fixed fee bill on milestones
            k = rng.randrange(3, 6)
            shares = [Decimal(1) / k] * (k - 1)
            amounts = [round_money(e.contract_value * s, e.currency) for s in shares]
            amounts.append(e.contract_value - sum(amounts))
            span = (e.end_date - e.start_date).days
            for j, amount in enumerate(amounts):
                due = e.start_date + timedelta(days=span * (j + 1) // k)
                ms = Milestone(engagement=e, name=f"Milestone {j + 1}", amount=amount, currency=e.currency,
                               due_date=due, source_key=f"demo-story-{e.pk}-{j + 1}")
                if due < today - timedelta(days=3):
                    ms.status, ms.completed_at = "invoiced", aware(due)
                    milestones.append(ms)
                    inv = invoice(e.contract_type, month_start(due), amount, due + timedelta(days=1), milestone=ms)
                    inv._milestone = ms
                    recognise(month_start(due), amount)
                else:
                    milestones.append(ms)

    @transaction.atomic
    def write(self) -> dict:
        engagements = self.engagements()
        self.links(engagements)
        data = self.delivery(engagements)
        TimeEntry.objects.bulk_create(data["times"], batch_size=2000)
        ExpenseEntry.objects.bulk_create(data["expenses"], batch_size=2000)
        Milestone.objects.bulk_create(data["milestones"], batch_size=2000)
        for inv in data["invoices"]:
            if getattr(inv, "_milestone", None) is not None:
                inv.milestone = inv._milestone
        Invoice.objects.bulk_create(data["invoices"], batch_size=2000)
        Payment.objects.bulk_create([
            Payment(invoice=inv, source_system=inv.source_system, external_id=f"pay-{inv.external_id}",
                    amount=inv.total, currency=inv.currency, received_at=inv.paid_at)
            for inv in data["invoices"] if inv.status == "paid"], batch_size=2000)
        RevenueEntry.objects.bulk_create(data["revenue"], batch_size=2000)
        recs = sync_records(self, engagements, data)
        SyncRecord.objects.bulk_create(recs, batch_size=2000)
        with db.cursor() as cur:  # created/completed as they happened (auto_now_add would say "now")
            cur.execute("UPDATE sync_syncrecord AS r SET created_at = v.c, updated_at = v.d, completed_at = v.d "
                        "FROM unnest(%s::bigint[], %s::timestamptz[], %s::timestamptz[]) AS v(id, c, d) "
                        "WHERE r.id = v.id", [[r.pk for r in recs], [r._created for r in recs],
                                              [r._completed for r in recs]])
        return {"engagements": len(engagements), "time entries": len(data["times"]),
                "expenses": len(data["expenses"]), "milestones": len(data["milestones"]),
                "invoices": len(data["invoices"]), "revenue entries": len(data["revenue"]), "sync records": len(recs)}


def build(n_engagements: int = 300, seed: int = 2026, now: datetime | None = None) -> dict | None:
    """Write the book (ending `now`, by default the present) unless it is there. Returns what was written (None
    when it already existed)."""
    setup_finance_reference()
    if exists():
        return None
    return Book(n_engagements, seed, now).write()
