"""Time & expense to billing without a worker: the pricing rules (exact to the cent), every hold, the fix form,
and the Kantata callback's verification and parsing at /api/v1/callbacks/kantata/.

Amounts below are computed by hand in the comments; the code must match them to the cent.
"""

from __future__ import annotations

import time
from datetime import date
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from apps.canonical.models import Engagement, LegalEntity, RateCardLine
from apps.finance import money, pricing
from apps.finance.models import DimensionMapping, ExpenseEntry, FinancePolicy, TimeEntry
from apps.sandbox.kantata import time_entries as psa
from apps.sync import services
from apps.sync.intake import process_inbox
from apps.sync.models import InboundEvent, SyncRecord
from apps.sync.workflows import time_to_billing as ttb
from apps.sync.workflows.catalog import get_workflow

from tests.builders import WORKSPACE, expense_payload, psa_engagement, time_book, time_payload
from tests.callbacks import post_kantata

D = Decimal


def terms(**kw) -> pricing.Terms:
    base = dict(currency="USD", contract_type="t_and_m", rates={"Consultant": D("150.00"), "Partner": D("350.15")})
    base.update(kw)
    return pricing.Terms(**base)


def tline(minutes, role="Consultant", **kw) -> pricing.TimeLine:
    return pricing.TimeLine.from_minutes(role=role, work_date=date(2026, 11, 2), minutes=minutes, **kw)


# ------------------------------------------------------------------ pricing: pure rules


@pytest.mark.parametrize("minutes, role, expected", [
    (50, "Consultant", "125.00"),  # 50 × 150.00 / 60 = 125.00 (50/60 h alone is 0.8333…)
    (45, "Partner", "262.61"),  # 45 × 350.15 / 60 = 262.6125 → 262.61
    (15, "Partner", "87.54"),  # 15 × 350.15 / 60 = 87.5375 → 87.54
    (480, "Partner", "2801.20"),  # 8 h × 350.15
])
def test_time_is_minutes_times_rate_rounded_half_up_once_per_line(minutes, role, expected):
    assert pricing.price_time(tline(minutes, role), terms()).amount == D(expected)


def test_a_line_worth_exactly_half_a_cent_rounds_up():
    # 2 min at 150.15/h = 300.30 / 60 = 5.005 → 5.01 (half up). Dividing first (2/60 h = 0.0333…, cut to 28
    # digits) would give 5.00499… → 5.00: that is why minutes are multiplied before dividing.
    t = terms(rates={"Consultant": D("150.15")})
    assert pricing.price_time(tline(2), t).amount == D("5.01")
    naive = pricing.TimeLine(role="Consultant", work_date=date(2026, 11, 2), hours=D(2) / 60)
    assert pricing.price_time(naive, t).amount == D("5.00")


def test_written_off_minutes_are_not_billed_and_never_go_below_zero():
    # 480 − 90 = 390 min × 150 / 60 = 975.00
    priced = pricing.price_time(tline(480, write_off_minutes=90), terms())
    assert priced.amount == D("975.00") and priced.billable_quantity == D("6.5")
    assert pricing.price_time(tline(60, write_off_minutes=90), terms()).amount == D("0.00")


def test_non_billable_entries_and_tasks_price_to_zero_but_their_role_must_still_be_on_the_rate_card():
    assert pricing.price_time(tline(480, billable=False), terms()).amount == D("0.00")
    t = terms(non_billable_tasks=frozenset({"Internal training"}))
    assert pricing.price_time(tline(480, task="Internal training"), t).amount == D("0.00")
    with pytest.raises(pricing.UnknownRole):
        pricing.price_time(tline(480, role="Astronaut", billable=False), terms())


def test_yen_round_to_whole_units():
    # 7 min × 12,345 / 60 = 1,440.25 → 1,440 (JPY has no minor unit)
    assert pricing.price_time(tline(7), terms(currency="JPY", rates={"Consultant": D("12345")})).amount == D("1440")


def test_expense_is_converted_and_marked_up_with_one_rounding():
    line = pricing.ExpenseLine(incurred_on=date(2026, 10, 15), spent_amount=D("100.00"), spent_currency="EUR")
    # 100.00 × 1.08 × 1.10 = 118.80
    assert pricing.price_expense(line, terms(expense_markup_pct=D("10")), fx_rate=D("1.08")).amount == D("118.80")
    # 33.33 × 1.0857 × 1.15 = 41.61433815 → 41.61 (rounding after conversion, then again, would give 41.62)
    line = pricing.ExpenseLine(incurred_on=date(2026, 10, 15), spent_amount=D("33.33"), spent_currency="EUR")
    assert pricing.price_expense(line, terms(expense_markup_pct=D("15")), fx_rate=D("1.0857")).amount == D("41.61")
    # 10.05 × 1.5 = 15.075 → 15.08 (half up)
    line = pricing.ExpenseLine(incurred_on=date(2026, 10, 15), spent_amount=D("10.05"), spent_currency="USD")
    assert pricing.price_expense(line, terms(expense_markup_pct=D("50"))).amount == D("15.08")
    line = pricing.ExpenseLine(incurred_on=date(2026, 10, 15), spent_amount=D("10.05"), spent_currency="USD",
                               billable=False)
    assert pricing.price_expense(line, terms(expense_markup_pct=D("50"))).amount == D("0.00")


def test_the_engagement_markup_wins_over_the_policy_even_when_it_is_zero():
    assert pricing.effective_markup(None, D("12.5")) == D("12.5")
    assert pricing.effective_markup(D("0"), D("12.5")) == D("0")
    assert pricing.effective_markup(D("7"), D("12.5")) == D("7")


def test_the_cap_applies_to_capped_t_and_m_engagements_only():
    capped = terms(tm_cap=D("1000.00"))
    assert not pricing.over_cap(D("400.00"), D("600.00"), capped)  # exactly at the cap is allowed
    assert pricing.over_cap(D("400.01"), D("600.00"), capped)
    assert not pricing.over_cap(D("400.01"), D("600.00"), terms())
    assert not pricing.over_cap(D("9999"), D("600.00"), terms(contract_type="fixed_fee", tm_cap=D("1000.00")))


def test_conversion_uses_the_latest_erp_rate_on_or_before_the_date_and_keeps_it(firm):
    time_book()
    c = money.convert(D("100.00"), "EUR", "USD", date(2026, 10, 31))
    assert (c.amount, c.rate, c.rate_date) == (D("108.00"), D("1.08"), date(2026, 10, 1))
    c = money.convert(D("100.00"), "EUR", "USD", date(2026, 11, 1))
    assert (c.amount, c.rate_date) == (D("110.00"), date(2026, 11, 1))
    # the inverse pair: 1 / 0.79 = 1.26582278 (8 places, half up); 100.00 GBP → 126.582278 → 126.58 USD
    c = money.convert(D("100.00"), "GBP", "USD", date(2026, 11, 2))
    assert (c.amount, c.rate) == (D("126.58"), D("1.26582278"))
    with pytest.raises(money.MoneyError):
        money.convert(D("100.00"), "EUR", "USD", date(2026, 9, 30))


# ------------------------------------------------------------------ the workflow's rules (with the database)


@pytest.fixture
def book(firm):
    return time_book()


def problems_of(payload, **kw):
    return ttb.evaluate(payload, ref=ttb.Reference.load(), **kw)


def test_an_approved_entry_is_priced_in_engagement_and_base_currency(book):
    problems, v = problems_of(time_payload(minutes=450))
    assert problems == []
    # 450 × 150 / 60 = 1,125.00 USD; US01's base currency is USD
    assert (v.amount, v.currency, v.base_amount, v.base_currency, v.fx_rate) == (
        D("1125.00"), "USD", D("1125.00"), "USD", D(1))
    assert v.erp_billable and v.mapping.department_id == "10"


def test_a_uk_entity_keeps_the_amount_in_gbp_with_the_rate_and_its_date(book):
    eng = psa_engagement(code="ENG-UK", workspace="7002", legal_entity="UK01", rate_card=book.rate_card)
    DimensionMapping.objects.create(legal_entity=eng.legal_entity, service_code="CONSULT", department_id="10",
                                    class_id="1", location_id="2", item_id="100")
    problems, v = problems_of(time_payload(minutes=450, workspace="7002"))
    assert problems == []
    # 1,125.00 USD × 0.79 = 888.75 GBP, at the rate of 2026-10-01 (the latest on or before 2026-11-02)
    assert (v.base_amount, v.base_currency, v.fx_rate, v.fx_date) == (
        D("888.75"), "GBP", D("0.79"), date(2026, 10, 1))


def test_an_expense_is_converted_on_the_day_incurred_and_marked_up_by_policy_or_engagement(book):
    FinancePolicy.objects.update_or_create(pk=1, defaults={"default_expense_markup_pct": D("5")})
    _, v = problems_of(expense_payload(amount="100.00", currency="EUR", day="2026-10-15"))
    # 100.00 EUR × 1.08 × 1.05 = 113.40 USD
    assert (v.amount, v.spend_rate, v.spend_rate_date, v.markup_pct) == (
        D("113.40"), D("1.08"), date(2026, 10, 1), D("5"))
    Engagement.objects.filter(pk=book.engagement.pk).update(expense_markup_pct=D("10"))
    _, v = problems_of(expense_payload(amount="100.00", currency="EUR", day="2026-11-05"))
    assert v.amount == D("121.00")  # 100.00 × 1.10 × 1.10


def test_time_on_a_fixed_fee_engagement_is_valued_but_not_billed_by_the_hour(book):
    Engagement.objects.filter(pk=book.engagement.pk).update(contract_type="fixed_fee")
    _, v = problems_of(time_payload(minutes=60))
    assert v.amount == D("150.00") and not v.erp_billable


def test_a_non_billable_task_is_recorded_at_zero(book):
    _, v = problems_of(time_payload(minutes=120, task_billable=False))
    assert v.amount == D("0.00") and not v.billable and not v.erp_billable and v.minutes == 120


@pytest.mark.parametrize("change, reason, fields", [
    ({"workspace_id": "9999"}, "unknown_project", ["engagement_code"]),
    ({"engagement_code": "ENG-NOPE"}, "unknown_project", ["engagement_code"]),
    ({"role": "Astronaut"}, "unknown_rate_card_role", ["role"]),
    ({"date": "2027-01-04"}, "entry_outside_engagement_dates", ["date"]),
    ({"service_code": "UNMAPPED"}, "missing_dimension_mapping", ["service_code"]),
    ({"service_code": ""}, "missing_dimension_mapping", ["service_code"]),
    ({"date": "2 Nov 2026"}, "payload_schema_invalid", ["date"]),
    ({"write_off_minutes": "lots"}, "payload_schema_invalid", ["write_off_minutes"]),
    ({"cap_decision": "yes please"}, "payload_schema_invalid", ["cap_decision"]),
])
def test_each_rule_holds_with_its_reason_and_names_the_field(book, change, reason, fields):
    problems, v = problems_of(time_payload(**change))
    assert v is None
    assert [(p.reason, p.fields) for p in problems] == [(reason, fields)]
    assert problems[0].message


def test_a_closed_project_is_held(book):
    Engagement.objects.filter(pk=book.engagement.pk).update(status="closed")
    [p] = problems_of(time_payload())[0]
    assert p.reason == "project_closed" and "ENG-TM" in p.message and p.fields == ["engagement_code"]


def test_a_rate_card_in_another_currency_is_held(book):
    Engagement.objects.filter(pk=book.engagement.pk).update(currency="EUR")
    reasons = [p.reason for p in problems_of(time_payload())[0]]
    assert "rate_card_currency_mismatch" in reasons


def test_an_expense_in_a_currency_without_an_erp_rate_is_held(book):
    [p] = problems_of(expense_payload(currency="CHF"))[0]
    assert p.reason == "missing_exchange_rate" and p.fields == ["currency"] and "CHF→USD" in p.message


def test_a_line_that_cannot_be_kept_in_base_currency_is_held(book):
    card = book.rate_card
    psa_engagement(code="ENG-UK-EUR", workspace="7003", legal_entity="UK01", currency="EUR", rate_card=card)
    DimensionMapping.objects.create(legal_entity=LegalEntity.objects.get(code="UK01"), service_code="EXP",
                                    department_id="10", class_id="3", location_id="2", item_id="200")
    [p] = problems_of(expense_payload(workspace="7003", currency="EUR"))[0]
    assert p.reason == "missing_exchange_rate" and "EUR→GBP" in p.message


def test_every_problem_is_listed_at_once(book):
    problems, _ = problems_of(time_payload(role="Astronaut", service_code="NOPE", date="2025-06-01"))
    assert {p.reason for p in problems} == {"unknown_rate_card_role", "missing_dimension_mapping",
                                            "entry_outside_engagement_dates"}


def _entry(eng, source_id, amount, status="posted", model=TimeEntry, **kw):
    common = dict(source_system="kantata", source_id=source_id, engagement=eng, currency="USD", amount=D(amount),
                  status=status)
    if model is TimeEntry:
        return TimeEntry.objects.create(**common, person="x", role="Consultant", work_date=date(2026, 11, 1),
                                        hours=D("1"), **kw)
    return ExpenseEntry.objects.create(**common, category="Travel", incurred_on=date(2026, 11, 1),
                                       spent_amount=D(amount), spent_currency="USD", **kw)


def test_the_t_and_m_cap_counts_what_is_priced_or_posted_but_not_this_entry_or_reversed_lines(book):
    eng = book.engagement
    Engagement.objects.filter(pk=eng.pk).update(tm_cap=D("2000.00"))
    _entry(eng, "a", "1000.00")
    _entry(eng, "b", "400.00", status="priced")
    _entry(eng, "c", "300.00", model=ExpenseEntry)
    _entry(eng, "d", "5000.00", status="reversed")
    # 1,700.00 billed + 300.00 (120 min) = 2,000.00: exactly at the cap
    assert problems_of(time_payload("new", minutes=120), exclude_source=("kantata", "new"))[0] == []
    [p] = problems_of(time_payload("new", minutes=121), exclude_source=("kantata", "new"))[0]
    assert p.reason == "tm_cap_exceeded" and set(p.fields) == {"write_off_minutes", "cap_decision"}
    assert "300.00 USD left" in p.message
    # a correction of entry "a" replaces its own 1,000.00: 700.00 + 1,300.00 = 2,000.00
    assert problems_of(time_payload("a", minutes=520), exclude_source=("kantata", "a"))[0] == []
    # a person decides to bill it anyway, or writes minutes off
    assert problems_of(time_payload("new", minutes=600, cap_decision="bill_anyway"))[0] == []
    assert problems_of(time_payload("new", minutes=600, write_off_minutes="480"))[0] == []


def test_a_role_added_to_the_rate_card_counts_at_once_even_with_a_cached_rate_card(book):
    ref = ttb.Reference.load()
    assert ttb.evaluate(time_payload(), ref=ref)[0] == []  # the rate card is now cached for the batch
    RateCardLine.objects.create(rate_card=book.rate_card, role="Architect", rate=D("180.00"))
    problems, v = ttb.evaluate(time_payload(role="Architect", minutes=60), ref=ref)
    assert problems == [] and v.amount == D("180.00")


def test_a_warm_batch_prices_an_entry_without_touching_the_database(book, django_assert_max_num_queries):
    ref = ttb.Reference.load()
    with django_assert_max_num_queries(4):  # engagement, rate card, mapping, (no rate: USD→USD)
        ttb.evaluate(time_payload("1"), ref=ref)
    with django_assert_max_num_queries(0):
        problems, _ = ttb.evaluate(time_payload("2"), ref=ref)
    assert problems == []


def test_owner_team_priority_and_summary():
    assert ttb.WORKFLOW.owner_team("unknown_rate_card_role") == "pmo"
    assert ttb.WORKFLOW.owner_team("project_closed") == "pmo"
    assert ttb.WORKFLOW.owner_team("tm_cap_exceeded") == "finance_ops"
    assert ttb.WORKFLOW.owner_team("missing_dimension_mapping") == "finance_ops"
    assert ttb.WORKFLOW.owner_team("downstream_validation") == "finance_ops"
    assert ttb.WORKFLOW.owner_team("downstream_unavailable") == "integration_admin"
    assert ttb.WORKFLOW.priority(time_payload()) == 1
    # held before pricing: the PSA's own value is what is at risk (450 min × 150.00 / 60)
    s = ttb.summary(time_payload(minutes=450, psa_rate="150.00", currency="USD"))
    assert (s["amount"], s["currency"]) == (D("1125.00"), "USD") and "7.50 h" in s["title"]
    s = ttb.summary({**time_payload(), "priced": {"amount": "99.00", "currency": "GBP"}})
    assert (s["amount"], s["currency"]) == ("99.00", "GBP")
    assert ttb.summary(expense_payload(amount="12.50", currency="EUR"))["amount"] == "12.50"


def test_the_fix_form_offers_what_the_holds_name_and_a_fix_passes_the_dry_run(book, connections):
    from apps.console.forms import FixForm

    wf = get_workflow("time_to_billing")
    payload = time_payload(role="Astronaut")
    [problem] = wf.validate(payload, source_kind="kantata")
    record = SyncRecord.objects.create(
        workflow="time_to_billing", stage="price", status="held", source_connection=connections["kantata"],
        source_key="time_entry:1", original_payload=payload, current_payload=payload, priority=1,
        reason_code=problem.reason, fault_fields=problem.fields)
    form = FixForm(record=record, fix_fields=wf.fix_fields, initial={"version": 1})
    assert form.fields["role"].initial == "Astronaut"
    assert form.fields["role"].widget.attrs["class"] == "at-fault"
    assert form.fields["role"].label.startswith("Rate-card role")
    # every field a hold names is on the form
    for reason_fields in (["engagement_code"], ["role"], ["date"], ["service_code"],
                          ["write_off_minutes", "cap_decision"]):
        assert set(reason_fields) <= set(wf.fix_fields)
    dry = services.record_dry_run(record=record, changes={"role": "Senior Consultant"})
    assert dry["problems"] == [] and dry["after"] == {"role": "Senior Consultant"}
    assert [p["role"] for p in dry["plan"]] == ["ERP"]


# ------------------------------------------------------------------ the Kantata callback

def approved(entry_id=1, **kw):
    data = psa.time_entry(entry_id, WORKSPACE, date_performed="2026-11-02", minutes=450, role="Consultant",
                               service_code="CONSULT", updated_at="2026-11-03T10:00:00+01:00", **kw)
    return psa.envelope("time_entry.approved", data, "2026-11-03T09:00:01Z")


@pytest.mark.django_db
def test_a_signed_approved_time_entry_is_stored_and_becomes_one_p1_record(connections):
    r = post_kantata(APIClient(), approved(rate_in_cents=15000, currency="USD"), msg_id="msg_1")
    assert r.status_code == 202, r.content
    ev = InboundEvent.objects.get()
    assert (ev.status, ev.workflow, ev.source_key, ev.event_type) == (
        "received", "time_to_billing", "time_entry:1", "time_entry.approved")
    p = ev.payload
    assert p["source_modified_at"] == "2026-11-03T09:00:00.000000Z"  # +01:00 normalised to UTC
    assert (p["minutes"], p["role"], p["service_code"], p["date"], p["psa_rate"]) == (
        450, "Consultant", "CONSULT", "2026-11-02", "150.00")
    assert process_inbox()["records"] == 1
    record = SyncRecord.objects.get()
    assert (record.workflow, record.stage, record.priority, record.source_key) == (
        "time_to_billing", "price", 1, "time_entry:1")
    assert record.title.startswith("Time 7.50 h · Jane Doe · 2026-11-02")


@pytest.mark.django_db
def test_a_redelivered_callback_is_stored_once(connections):
    assert post_kantata(APIClient(), approved(), msg_id="msg_1").status_code == 202
    r = post_kantata(APIClient(), approved(), msg_id="msg_1")
    assert r.status_code == 200 and r.json()["duplicates"] == 1
    assert InboundEvent.objects.get().deliveries == 2


@pytest.mark.django_db
@pytest.mark.parametrize("case, status, reason", [
    ("bad_signature", 401, "bad signature"),
    ("wrong_secret", 401, "bad signature"),
    ("stale", 401, "stale timestamp"),
    ("malformed", 400, "malformed JSON"),
    ("content_type", 415, "application/json"),
    ("no_envelope", 400, '"type" string'),
    ("no_minutes", 400, "time_in_minutes is required"),
    ("bad_date", 400, "date_performed must be a date"),
    ("negative", 400, "whole number"),
    ("bad_expense_currency", 400, "ISO-4217"),
])
def test_a_bad_callback_is_refused_with_a_reason_and_stored_as_rejected(connections, case, status, reason):
    body = approved()
    kw = {}
    if case == "bad_signature":
        kw["sig"] = "v1,AAAA"
    elif case == "wrong_secret":
        kw["secret"] = "not-the-secret"
    elif case == "stale":
        kw["ts"] = int(time.time()) - 3600
    elif case == "malformed":
        body = b'{"type": "time_entry.approved", "data": {'
    elif case == "content_type":
        kw["content_type"] = "text/plain"
    elif case == "no_envelope":
        body = {"event": "time_entry.approved"}
    elif case == "no_minutes":
        del body["data"]["time_in_minutes"]
    elif case == "bad_date":
        body["data"]["date_performed"] = "11/02/2026"
    elif case == "negative":
        body["data"]["time_in_minutes"] = -30
    elif case == "bad_expense_currency":
        body = psa.envelope("expense.approved", psa.expense(
            3, WORKSPACE, date_spent="2026-11-02", amount_in_cents=1250, currency="euro", category="Travel",
            service_code="EXP"))
    r = post_kantata(APIClient(), body, msg_id="msg_1", **kw)
    assert r.status_code == status
    assert reason in r.json()["error"]
    ev = InboundEvent.objects.get()
    assert (ev.status, ev.verified, ev.http_status) == ("rejected", False, status)
    assert SyncRecord.objects.count() == 0


@pytest.mark.django_db
def test_an_unknown_event_type_or_an_unapproved_entry_is_stored_as_ignored(connections):
    r = post_kantata(APIClient(), psa.envelope("time_entry.created", {"id": "5"}), msg_id="m1")
    assert r.status_code == 200 and r.json()["ignored"] == 1
    body = approved(approved=False)
    body["type"] = "time_entry.updated"
    r = post_kantata(APIClient(), body, msg_id="m2")
    assert r.status_code == 200 and r.json()["ignored"] == 1
    assert set(InboundEvent.objects.values_list("status", flat=True)) == {"ignored"}
    assert "not approved" in InboundEvent.objects.get(event_id="m2").reason
    assert process_inbox()["records"] == 0


@pytest.mark.django_db
def test_an_expense_and_a_deletion_are_parsed(connections):
    body = psa.envelope("expense.approved", psa.expense(
        3, WORKSPACE, date_spent="2026-10-15", amount_in_cents=1250, currency="eur", category="Travel",
        service_code="EXP", updated_at="2026-11-03T09:00:00Z"))
    assert post_kantata(APIClient(), body, msg_id="e1").status_code == 202
    p = InboundEvent.objects.get(event_id="e1").payload
    assert (p["entry_type"], p["amount"], p["currency"], p["date"]) == ("expense", "12.50", "EUR", "2026-10-15")
    # a deletion carries only the id; it is newer than the approval (the event's own time)
    deletion = {"type": "expense.deleted", "timestamp": "2026-11-04T08:00:00Z", "data": {"id": 3}}
    assert post_kantata(APIClient(), deletion, msg_id="e2").status_code == 202
    ev = InboundEvent.objects.get(event_id="e2")
    assert (ev.source_key, ev.payload["action"], ev.payload["source_modified_at"]) == (
        "expense:3", "reverse", "2026-11-04T08:00:00.000000Z")
    process_inbox()
    assert SyncRecord.objects.get().source_key == "expense:3"  # both events, one record


@pytest.mark.django_db(transaction=True)
def test_two_workers_pricing_lines_of_one_capped_engagement_at_once_cannot_both_pass_the_cap(firm):
    """Worker A has priced a line under the cap and not committed yet when worker B prices another: B waits for A's
    lock and then counts A's line (without the lock it read the cap as unused and both went through)."""
    import threading

    from django.db import connection, transaction

    book = time_book()
    Engagement.objects.filter(pk=book.engagement.pk).update(tm_cap=D("2000.00"))
    FinancePolicy.current()  # the policy row exists, as it does in production (its creation would lock too)
    a_holds_lock, a_may_commit = threading.Event(), threading.Event()

    def worker_a():
        try:
            with transaction.atomic():
                # 1,500.00 (600 min at 150.00): A is inside price_under_cap's transaction, before its commit
                ttb.price_under_cap(time_payload("a", minutes=600), engagement_pk=book.engagement.pk,
                                    source_kind="kantata", ref=ttb.Reference.load(), source_role="psa", version="1",
                                    context={})
                a_holds_lock.set()
                a_may_commit.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=worker_a)
    thread.start()
    assert a_holds_lock.wait(10)
    threading.Timer(0.5, a_may_commit.set).start()  # B must still be waiting on the lock when A commits
    t0 = time.monotonic()
    with pytest.raises(ttb.Hold) as held:  # B: 1,000.00 more would be 2,500.00 > 2,000.00
        ttb.price_under_cap(time_payload("b", minutes=400), engagement_pk=book.engagement.pk, source_kind="kantata",
                            ref=ttb.Reference.load(), source_role="psa", version="1", context={})
    thread.join(10)
    assert time.monotonic() - t0 >= 0.4  # it waited for A
    assert held.value.problems[0].reason == "tm_cap_exceeded"
    assert list(TimeEntry.objects.values_list("source_id", "status")) == [("a", "priced")]
