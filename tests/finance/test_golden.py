"""The golden data set (tests/golden/): 52 engagements — T&M, milestone, fixed fee and retainer; USD, GBP and EUR;
16 of them billed by a legal entity whose base currency differs — with ~800 time entries (write-offs,
non-billable, an "Internal meeting" task, reversed lines, half-cent products), ~200 expenses (markup from the
engagement or the policy, 88 spent in another currency, some only convertible through the inverse rate), milestones,
216 invoices (void ones, ones without a period) and revenue entries.

Everything is loaded into the database and run through the code under test — pricing (apps/finance/pricing.py:
Terms / TimeLine / ExpenseLine / price_time / price_expense), conversion (apps/finance/money.py: find_rate /
convert / round_money) and the reconciliation run (apps/reconcile) — and compared with the EXPECTED literals
that tests/golden/make_golden.py computed independently (plain decimal, ROUND_HALF_UP). Exact to the cent:
Decimal equality and the same two decimals, no tolerance anywhere in the comparison.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import date
from decimal import Decimal

import pytest

from apps.canonical.models import Customer, Engagement, LegalEntity, Milestone, RateCard, RateCardLine
from apps.finance import pricing
from apps.finance.models import (ExchangeRate, ExpenseEntry, FinancePolicy, Invoice, InvoiceLine, RevenueEntry,
                                 TimeEntry)
from apps.finance.money import convert, find_rate, round_money
from apps.reconcile import services
from apps.sync.models import SyncRecord

from tests.golden import golden_data as G

pytestmark = pytest.mark.django_db
D = Decimal
BY_CODE = {e["code"]: e for e in G.ENGAGEMENTS}


def d(value: str) -> date:
    return date.fromisoformat(value)


def exact(got: Decimal, expected: str, what: str) -> None:
    """Equal as numbers AND written with the same decimals (0.5 is not 0.50 on an invoice)."""
    assert got == D(expected) and str(got) == expected, f"{what}: got {got!r}, expected {expected}"


# ---------------------------------------------------------------- hand-checked values (independent of the generator)

HAND_CHECKED = [
    # (engagement, what, expected) — the arithmetic done by hand:
    # 3.75 h × 147.50 USD = 553.125 → half up 553.13 (banker's rounding would give 553.12)
    ("GLD-001", ("time", "GLD-001-T05", "amount"), "553.13"),
    # 0.17 h × 312.50 USD = 53.125 → 53.13
    ("GLD-001", ("time", "GLD-001-T09", "amount"), "53.13"),
    # 0.33 h × 98.33 USD = 32.4489 → 32.45
    ("GLD-001", ("time", "GLD-001-T04", "amount"), "32.45"),
    # 0.08 h billable, 0.50 h written off → max(0, −0.42) = 0 h → 0.00
    ("GLD-001", ("time", "GLD-001-T15", "amount"), "0.00"),
    # task "Internal meeting" is non-billable: 4.33 h → 0.00
    ("GLD-001", ("time", "GLD-001-T11", "amount"), "0.00"),
    # UK01 bills EUR: 3.75 h × 168.75 = 632.8125 → 632.81 EUR; base GBP at the EUR→GBP rate of 2026-05-01 (the
    # latest on or before 2026-05-06) 0.85080996: 632.81 × 0.85080996 = 538.4010… → 538.40 GBP
    ("GLD-013", ("time", "GLD-013-T02", "amount"), "632.81"),
    ("GLD-013", ("time", "GLD-013-T02", "base_amount"), "538.40"),
    ("GLD-013", ("time", "GLD-013-T02", "fx_rate"), "0.85080996"),
    # 1,724.91 GBP spent on a EUR engagement: only EUR→GBP is stored (0.85252357 on 2026-06-01), so
    # GBP→EUR = 1 / 0.85252357 = 1.172988099… → 1.17298810; × 1,724.91 × (1 + 0.00 %) = 2,023.2989… → 2,023.30 EUR
    ("GLD-009", ("expense", "GLD-009-X09", "fx_in_rate"), "1.17298810"),
    ("GLD-009", ("expense", "GLD-009-X09", "amount"), "2023.30"),
    # milestones of 64,999.99 GBP at 30 % / 33.33 % / the rest: 19,499.997 → 19,500.00; 21,664.496667 → 21,664.50;
    # 64,999.99 − 19,500.00 − 21,664.50 = 23,835.49 (never recognised: September's variance)
    ("GLD-006", ("reconciliation", "2026-09", "variance"), "23835.49"),
    # T&M GBP, 2026-08: a 3.75 h × 87.45 = 327.9375 → 327.94 line priced but never posted:
    # delivered 2,149.25 − billed 1,821.31 = 327.94 → above the tolerance
    ("GLD-005", ("reconciliation", "2026-08", "variance"), "327.94"),
    ("GLD-005", ("reconciliation", "2026-08", "delivered"), "2149.25"),
    # retainer 2,750.50 EUR ended 2026-09-05, yet October was billed: expected 0.00 → variance 2,750.50; that
    # invoice in GBP at 0.85937804 (2026-10-01 ≤ issued 2026-10-02): 2,750.50 × 0.85937804 = 2,363.7193… → 2,363.72
    ("GLD-016", ("reconciliation", "2026-10", "variance"), "2750.50"),
    ("GLD-016", ("invoice", "GLD-016-INV06", "base_total"), "2363.72"),
    # exactly at the tolerance: recognised 376.18 vs delivered = billed 376.17 → 0.01, NOT an exception
    ("GLD-009", ("reconciliation", "2026-07", "variance"), "0.01"),
    # retainer billed 12,500.01 vs 12,500.00 recognised and fee → 0.01, not an exception
    ("GLD-012", ("reconciliation", "2026-08", "variance"), "0.01"),
    # one cent above it: recognised 4,234.01 vs 4,234.03 → 0.02, an exception
    ("GLD-013", ("reconciliation", "2026-07", "variance"), "0.02"),
]

# pricing only: hours with three decimals (a PSA reporting 0.333 h). TimeEntry.hours is stored with two decimals,
# so these are checked on the pure pricing function only.
PRICING_ONLY = [
    # (hours, role rate, currency, expected) — 0.333 × 147.50 = 49.1175 → 49.12
    ("0.333", "147.50", "USD", "49.12"),
    # 0.667 × 133.33 = 88.93111 → 88.93
    ("0.667", "133.33", "GBP", "88.93"),
    # 2.25 × 312.50 = 703.125 → 703.13 (half up; half-even would give 703.12)
    ("2.25", "312.50", "USD", "703.13"),
    # 0.5 × 87.45 = 43.725 → 43.73
    ("0.5", "87.45", "GBP", "43.73"),
    # 1.667 × 212.75 = 354.65425 → 354.65
    ("1.667", "212.75", "USD", "354.65"),
]


# a PSA that records minutes (Kantata's time_in_minutes) is priced from the minutes: minutes × rate ÷ 60, rounded
# once — 20 min is exactly a third of an hour, not 0.333 h
PRICING_MINUTES = [
    # 20 × 147.50 = 2,950 ÷ 60 = 49.1666… → 49.17 (0.333 h would give 49.12: a third of an hour is not 0.333 h)
    (20, 0, "147.50", "USD", "49.17"),
    # 2 × 150.15 = 300.30 ÷ 60 = 5.005 → 5.01 (exactly half a cent: rounds up)
    (2, 0, "150.15", "EUR", "5.01"),
    # 100 − 30 written off = 70 × 133.33 = 9,333.10 ÷ 60 = 155.5516… → 155.55
    (100, 30, "133.33", "GBP", "155.55"),
]


def _lookup(code: str, path: tuple) -> str:
    e = BY_CODE[code]
    kind, key, field = path
    if kind == "reconciliation":
        return e["expected_reconciliation"][key][field]
    items = {"time": e["time"], "expense": e["expenses"], "invoice": e["invoices"]}[kind]
    item = next(i for i in items if i.get("id", i.get("number")) == key)
    return item["expected"][field]


def test_the_data_set_is_what_it_claims():
    kinds = {e["contract_type"] for e in G.ENGAGEMENTS}
    currencies = {e["currency"] for e in G.ENGAGEMENTS}
    base = {"US01": "USD", "UK01": "GBP", "DE01": "EUR"}
    cross = [e for e in G.ENGAGEMENTS if base[e["legal_entity"]] != e["currency"]]
    lines = [v for e in G.ENGAGEMENTS for v in e["expected_reconciliation"].values()]
    assert len(G.ENGAGEMENTS) >= 50 and kinds == {"t_and_m", "milestone", "fixed_fee", "retainer"}
    assert currencies == {"USD", "GBP", "EUR"} and len(cross) >= 5
    assert sum(v["over_tolerance"] for v in lines) >= 10  # several exceptions …
    assert sum(1 for v in lines if v["variance"] == G.TOLERANCE) >= 5  # … several exactly at the tolerance …
    assert sum(1 for v in lines if D(v["variance"]) == D(G.TOLERANCE) + D("0.01")) >= 3  # … and one cent above


@pytest.mark.parametrize("code, path, expected", HAND_CHECKED)
def test_hand_checked_values_are_in_the_data_set(code, path, expected):
    assert _lookup(code, path) == expected


@pytest.mark.parametrize("hours, rate, currency, expected", PRICING_ONLY)
def test_pricing_rounds_half_up_once_per_line(hours, rate, currency, expected):
    terms = pricing.Terms(currency=currency, contract_type="t_and_m", rates={"Consultant": D(rate)})
    priced = pricing.price_time(pricing.TimeLine(role="Consultant", work_date=date(2026, 7, 1), hours=D(hours)), terms)
    exact(priced.amount, expected, f"{hours} h × {rate}")


@pytest.mark.parametrize("minutes, written_off, rate, currency, expected", PRICING_MINUTES)
def test_pricing_from_minutes_rounds_once(minutes, written_off, rate, currency, expected):
    terms = pricing.Terms(currency=currency, contract_type="t_and_m", rates={"Consultant": D(rate)})
    line = pricing.TimeLine.from_minutes(role="Consultant", work_date=date(2026, 7, 1), minutes=minutes,
                                         write_off_minutes=written_off)
    exact(pricing.price_time(line, terms).amount, expected, f"{minutes} min − {written_off} × {rate}")


# ---------------------------------------------------------------- load, price, convert, reconcile


def _reference():
    FinancePolicy.objects.update_or_create(pk=1, defaults={"reconciliation_tolerance": D(G.TOLERANCE),
                                                           "default_expense_markup_pct": D(G.POLICY_MARKUP_PCT)})
    ExchangeRate.objects.bulk_create([ExchangeRate(from_currency=a, to_currency=b, rate=D(r), rate_date=d(on))
                                      for a, b, r, on in G.RATES])
    cards, rates = {}, {}
    for cur, roles in G.RATE_CARDS.items():
        cards[cur] = RateCard.objects.create(name=f"Golden {cur}", currency=cur)
        RateCardLine.objects.bulk_create([RateCardLine(rate_card=cards[cur], role=role, rate=D(r))
                                          for role, r in roles.items()])
    for line in RateCardLine.objects.select_related("rate_card"):  # the rates as the database gives them back
        rates.setdefault(line.rate_card.currency, {})[line.role] = line.rate
    return cards, rates


def _terms(e: Engagement, rates: dict, policy: FinancePolicy) -> pricing.Terms:
    markup = e.expense_markup_pct if e.expense_markup_pct is not None else policy.default_expense_markup_pct
    return pricing.Terms(currency=e.currency, contract_type=e.contract_type, rates=rates[e.currency],
                         start_date=e.start_date, end_date=e.end_date, expense_markup_pct=markup,
                         non_billable_tasks=frozenset({G.NON_BILLABLE_TASK}))


def _check_base(got, exp: dict, what: str) -> None:
    exact(got.amount, exp["base_amount"] if "base_amount" in exp else exp["base_total"], f"{what} base amount")
    assert got.currency == exp["base_currency"], what
    assert got.rate == D(exp["fx_rate"]), f"{what} rate {got.rate} ≠ {exp['fx_rate']}"
    assert got.rate_date == d(exp["fx_date"]), f"{what} rate date {got.rate_date} ≠ {exp['fx_date']}"


@pytest.fixture
def golden(firm, connections):
    """The whole data set in the database, priced and converted by the code under test (and each priced value
    checked against its literal on the way in)."""
    cards, rates = _reference()
    policy = FinancePolicy.current()
    les = {le.code: le for le in LegalEntity.objects.all()}
    checked = defaultdict(int)
    times, expenses, revenue, invoice_lines = [], [], [], []
    for g in G.ENGAGEMENTS:
        le = les[g["legal_entity"]]
        customer = Customer.objects.create(name=f"Golden customer {g['code']}", legal_entity=le,
                                           currency=g["currency"])
        e = Engagement.objects.create(
            code=g["code"], name=f"Golden {g['code']}", customer=customer, legal_entity=le,
            contract_type=g["contract_type"], contract_value=D(g["contract_value"]), currency=g["currency"],
            start_date=d(g["start_date"]), end_date=d(g["end_date"]) if g["end_date"] else None,
            rate_card=cards[g["currency"]], correlation_id=uuid.uuid4(),
            retainer_fee=D(g["retainer_fee"]) if g["retainer_fee"] else None,
            expense_markup_pct=D(g["expense_markup_pct"]) if g["expense_markup_pct"] is not None else None)
        terms = _terms(e, rates, policy)
        base = le.base_currency
        for t in g["time"]:
            x = t["expected"]
            line = pricing.TimeLine(role=t["role"], work_date=d(t["work_date"]), hours=D(t["hours"]),
                                    billable=t["billable"], write_off_hours=D(t["write_off_hours"]), task=t["task"])
            priced = pricing.price_time(line, terms)
            exact(priced.amount, x["amount"], t["id"])
            assert priced.rate == D(x["rate"]) and priced.billable_quantity == D(x["billable_hours"]), t["id"]
            b = convert(priced.amount, e.currency, base, line.work_date)
            _check_base(b, x, t["id"])
            checked["time"] += 1
            times.append(TimeEntry(
                source_system="kantata", source_id=t["id"], engagement=e, person="Golden person", role=t["role"],
                task=t["task"], work_date=line.work_date, hours=line.hours, billable=t["billable"],
                write_off_hours=line.write_off_hours, rate=priced.rate, status=t["status"], currency=e.currency,
                amount=priced.amount, base_currency=b.currency, base_amount=b.amount, fx_rate=b.rate,
                fx_date=b.rate_date))
        for xp in g["expenses"]:
            x = xp["expected"]
            on = d(xp["incurred_on"])
            fx = find_rate(xp["spent_currency"], e.currency, on)
            assert fx == (D(x["fx_in_rate"]), d(x["fx_in_date"])), xp["id"]
            assert terms.expense_markup_pct == D(x["markup_pct"]), xp["id"]
            line = pricing.ExpenseLine(incurred_on=on, spent_amount=D(xp["spent_amount"]),
                                       spent_currency=xp["spent_currency"], billable=xp["billable"])
            priced = pricing.price_expense(line, terms, fx[0])
            exact(priced.amount, x["amount"], xp["id"])
            b = convert(priced.amount, e.currency, base, on)
            _check_base(b, x, xp["id"])
            checked["expense"] += 1
            expenses.append(ExpenseEntry(
                source_system="kantata", source_id=xp["id"], engagement=e, category=xp["category"], incurred_on=on,
                spent_amount=line.spent_amount, spent_currency=line.spent_currency, billable=xp["billable"],
                markup_pct=terms.expense_markup_pct, status=xp["status"], currency=e.currency, amount=priced.amount,
                base_currency=b.currency, base_amount=b.amount, fx_rate=b.rate, fx_date=b.rate_date))
        milestones = [Milestone.objects.create(engagement=e, name=m["name"], amount=D(m["amount"]),
                                               currency=e.currency, due_date=d(m["due_date"]), status=m["status"])
                      for m in g["milestones"]]
        for m, ms in zip(g["milestones"], milestones):
            exact(ms.amount, m["expected_amount"], f"{g['code']} {m['name']}")
        for inv in g["invoices"]:
            x = inv["expected"]
            amounts = [round_money(D(ln["quantity"]) * D(ln["unit_amount"]), e.currency) for ln in inv["lines"]]
            for got, ln in zip(amounts, inv["lines"]):
                exact(got, ln["expected_amount"], f"{inv['number']} {ln['description']}")
            total = sum(amounts, D("0.00"))  # a total is the sum of rounded lines, never rounded again
            exact(total, x["total"], inv["number"])
            issued = d(inv["issued_on"])
            b = convert(total, e.currency, base, issued)
            _check_base(b, x, inv["number"])
            checked["invoice"] += 1
            obj = Invoice.objects.create(
                engagement=e, customer=customer, kind=inv["kind"], source_system="netsuite",
                external_id=inv["number"], number=inv["number"], status=inv["status"],
                period=d(inv["period"]) if inv["period"] else None, issued_on=issued, currency=e.currency,
                total=total, amount_due=total, base_currency=b.currency, base_total=b.amount, fx_rate=b.rate,
                fx_date=b.rate_date,
                milestone=milestones[inv["milestone"]] if inv["milestone"] is not None else None)
            invoice_lines += [InvoiceLine(invoice=obj, description=ln["description"], quantity=D(ln["quantity"]),
                                          unit_amount=D(ln["unit_amount"]), amount=a)
                              for ln, a in zip(inv["lines"], amounts)]
        revenue += [RevenueEntry(engagement=e, period=d(r["period"]), amount=D(r["amount"]), currency=e.currency,
                                 source_system="netsuite", external_id=f"{g['code']}-REV{n}")
                    for n, r in enumerate(g["revenue"])]
    TimeEntry.objects.bulk_create(times)
    ExpenseEntry.objects.bulk_create(expenses)
    InvoiceLine.objects.bulk_create(invoice_lines)
    RevenueEntry.objects.bulk_create(revenue)
    return checked


def test_every_priced_line_invoice_and_base_amount_is_exact(golden):
    n_time = sum(len(e["time"]) for e in G.ENGAGEMENTS)
    n_exp = sum(len(e["expenses"]) for e in G.ENGAGEMENTS)
    n_inv = sum(len(e["invoices"]) for e in G.ENGAGEMENTS)
    assert dict(golden) == {"time": n_time, "expense": n_exp, "invoice": n_inv}
    # and what was stored reads back exactly (numeric columns keep the cents)
    stored = {t.source_id: t for t in TimeEntry.objects.all()}
    for g in G.ENGAGEMENTS:
        for t in g["time"]:
            exact(stored[t["id"]].amount, t["expected"]["amount"], t["id"])
            exact(stored[t["id"]].base_amount, t["expected"]["base_amount"], t["id"])
    for inv in Invoice.objects.prefetch_related("lines"):
        assert inv.total == sum(ln.amount for ln in inv.lines.all())  # total = Σ lines, to the cent


def test_reconciliation_of_the_golden_set_is_exact_to_the_cent(golden):
    run = services.run_now(trigger="command", period_from=d(G.RANGE[0]), period_to=d(G.RANGE[1]))
    expected = {(e["code"], p): v for e in G.ENGAGEMENTS for p, v in e["expected_reconciliation"].items()}
    got = {(ln.engagement_code, f"{ln.period:%Y-%m}"): ln for ln in run.line_set.all()}
    assert sorted(got) == sorted(expected)  # exactly the engagement-months expected, no more, no fewer
    for key, v in expected.items():
        ln = got[key]
        for f in ("delivered", "billed", "recognised", "variance"):
            exact(getattr(ln, f), v[f], f"{key} {f}")
        if v["expected"] is None:
            assert ln.expected is None, key
        else:
            exact(ln.expected, v["expected"], f"{key} retainer fee")
        assert ln.over_tolerance is v["over_tolerance"], key
    over = sorted(f"recon:{c}:{p}" for (c, p), v in expected.items() if v["over_tolerance"])
    assert (run.lines, run.over_tolerance, run.opened) == (len(expected), len(over), len(over))
    # one finance-ops exception per variance above the tolerance, with the same three figures
    records = {r.source_key: r for r in SyncRecord.objects.filter(workflow="reconciliation")}
    assert sorted(records) == over
    for key in over:
        code, period = key.split(":")[1:]
        v, p = expected[(code, period)], records[key].current_payload
        assert (p["delivered"], p["billed"], p["recognised"], p["variance"], p["expected"]) == (
            v["delivered"], v["billed"], v["recognised"], v["variance"], v["expected"]), key
        assert records[key].amount == D(v["variance"]) and records[key].status == "held"
    # the totals per currency
    totals = defaultdict(lambda: {"lines": 0, "over_tolerance": 0, "delivered": D("0.00"), "billed": D("0.00"),
                                  "recognised": D("0.00")})
    for ln in got.values():
        t = totals[ln.currency]
        t["lines"] += 1
        t["over_tolerance"] += ln.over_tolerance
        for f in ("delivered", "billed", "recognised"):
            t[f] += getattr(ln, f)
    assert {c: {k: str(v) if isinstance(v, Decimal) else v for k, v in t.items()} for c, t in totals.items()} == \
        G.EXPECTED_TOTALS
    # and a second run over the same data changes nothing
    again = services.run_now(trigger="command", period_from=d(G.RANGE[0]), period_to=d(G.RANGE[1]))
    assert (again.lines, again.over_tolerance, again.opened, again.updated, again.resolved) == (
        len(expected), len(over), 0, 0, 0)
