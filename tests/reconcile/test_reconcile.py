"""Reconciliation (workflow 6): the rules per contract type and at the tolerance's edge, the set-based run, the
finance-ops exceptions it opens / refreshes / resolves / re-opens idempotently, the re-check and the accepted
variance through the real engine, the report page and its CSV (filters, query counts), and who may run it."""

from __future__ import annotations

import csv
import importlib
import io
from datetime import date
from decimal import Decimal

import psycopg
import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.finance.models import FinancePolicy
from apps.reconcile import rules, services
from apps.reconcile.figures import add_months
from apps.reconcile.models import ReconciliationLine, ReconciliationRun
from apps.sync import engine
from apps.sync import services as sync_services
from apps.sync.models import AuditEntry, SyncRecord
from apps.sync.workflows.catalog import get_workflow

from tests.builders import D, engagement, expense, invoice, revenue, time_entry
from tests.worker import run_worker

OCT, SEP, AUG = date(2026, 10, 1), date(2026, 9, 1), date(2026, 8, 1)
OPEN = {"value": "0", "start": date(2025, 1, 1), "end": None}  # open since 2025, no contract value
TOL = Decimal("0.01")


def F(ctype, **kw) -> rules.Figures:
    kw = {k: D(v) if k in ("delivered", "posted", "invoiced", "recognised", "retainer_fee") and v is not None else v
          for k, v in kw.items()}
    return rules.Figures(contract_type=ctype, currency="EUR", period=kw.pop("period", OCT), **kw)


# ---------------------------------------------------------------- 1. the rules (pure)


def test_t_and_m_delivered_billed_recognised_must_all_agree():
    ok = rules.reconcile(F("t_and_m", delivered="1200.00", posted="1200.00", invoiced="0", recognised="1200.00"), TOL)
    assert (ok.billed, ok.variance, ok.over_tolerance, ok.compared) == (
        D("1200.00"), D("0.00"), False, ("delivered", "billed", "recognised"))
    # a priced line not posted yet: delivered above billed (revenue leakage); invoices do not count for T&M
    leak = rules.reconcile(F("t_and_m", delivered="1200.00", posted="1080.00", invoiced="1200.00",
                             recognised="1080.00"), TOL)
    assert (leak.billed, leak.variance, leak.over_tolerance) == (D("1080.00"), D("120.00"), True)
    # the largest difference among the three: max − min
    spread = rules.reconcile(F("t_and_m", delivered="100.00", posted="98.00", recognised="103.00"), TOL)
    assert spread.variance == D("5.00")


@pytest.mark.parametrize("ctype", ["milestone", "fixed_fee"])
def test_milestone_and_fixed_fee_compare_billed_with_recognised_only(ctype):
    r = rules.reconcile(F(ctype, delivered="48210.55", posted="999.00", invoiced="20000.00", recognised="20000.00"),
                        TOL)
    assert (r.delivered, r.billed, r.variance, r.over_tolerance, r.compared) == (
        D("48210.55"), D("20000.00"), D("0.00"), False, ("billed", "recognised"))
    r = rules.reconcile(F(ctype, delivered="0", invoiced="20000.00", recognised="15000.00"), TOL)
    assert (r.variance, r.over_tolerance) == (D("5000.00"), True)


def test_retainer_bills_and_recognises_the_fee_each_month_inside_its_dates():
    terms = dict(retainer_fee="8000.00", start_date=date(2026, 3, 15), end_date=date(2026, 10, 10))
    ok = rules.reconcile(F("retainer", invoiced="8000.00", recognised="8000.00", **terms), TOL)
    assert (ok.expected, ok.variance, ok.over_tolerance, ok.compared) == (
        D("8000.00"), D("0.00"), False, ("billed", "recognised", "expected"))
    # partial months at both ends still expect the full fee (no proration)
    assert rules.reconcile(F("retainer", period=date(2026, 3, 1), invoiced="8000.00", recognised="8000.00",
                             **terms), TOL).over_tolerance is False
    # the month's invoice is missing: billed = recognised = 0, the fee is not
    missing = rules.reconcile(F("retainer", **terms), TOL)
    assert (missing.expected, missing.variance, missing.over_tolerance) == (D("8000.00"), D("8000.00"), True)
    # billed after the engagement ended: the month expects nothing
    after = rules.reconcile(F("retainer", period=date(2026, 11, 1), invoiced="8000.00", recognised="8000.00",
                              **terms), TOL)
    assert (after.expected, after.variance, after.over_tolerance) == (D("0.00"), D("8000.00"), True)
    # no fee set: only billed = recognised
    nofee = rules.reconcile(F("retainer", invoiced="10.00", recognised="10.00"), TOL)
    assert (nofee.expected, nofee.compared, nofee.variance) == (None, ("billed", "recognised"), D("0.00"))


def test_month_overlap_with_the_engagement_dates():
    assert rules.in_dates(date(2026, 2, 1), date(2026, 2, 28), None)  # starts on the month's last day
    assert not rules.in_dates(date(2026, 2, 1), date(2026, 3, 1), None)
    assert rules.in_dates(date(2026, 2, 1), None, date(2026, 2, 1))  # ends on the month's first day
    assert not rules.in_dates(date(2026, 2, 1), None, date(2026, 1, 31))
    assert rules.in_dates(date(2024, 2, 1), date(2024, 2, 29), date(2024, 2, 29))  # leap day


@pytest.mark.parametrize("tolerance, variance, exception", [
    ("0.01", "0.00", False), ("0.01", "0.01", False), ("0.01", "0.02", True),
    ("5.00", "5.00", False), ("5.00", "5.01", True), ("0.00", "0.01", True), ("0.00", "0.00", False),
])
def test_exactly_at_the_tolerance_is_not_an_exception_one_cent_above_is(tolerance, variance, exception):
    r = rules.reconcile(F("milestone", invoiced=D("100.00") + D(variance), recognised="100.00"), D(tolerance))
    assert r.variance == D(variance)
    assert r.over_tolerance is exception


def test_an_unknown_contract_type_compares_billed_with_recognised():
    r = rules.reconcile(F("barter", delivered="5.00", invoiced="7.00", recognised="7.00"), TOL)
    assert (r.compared, r.variance, r.over_tolerance) == (("billed", "recognised"), D("0.00"), False)
    assert "billed = recognised" in rules.describe("barter")


def test_default_range_is_the_last_twelve_complete_months():
    assert services.default_range(date(2026, 11, 23)) == (date(2025, 11, 1), date(2026, 10, 1))
    assert services.default_range(date(2026, 1, 1)) == (date(2025, 1, 1), date(2025, 12, 1))
    with pytest.raises(services.BadRange):
        services.check_range(date(2026, 10, 1), date(2026, 9, 1), date(2026, 11, 23))
    with pytest.raises(services.BadRange):
        services.check_range(date(2026, 10, 1), date(2026, 12, 1), date(2026, 11, 23))
    with pytest.raises(services.BadRange):
        services.check_range(date(2023, 1, 1), date(2026, 10, 1), date(2026, 11, 23))


# ---------------------------------------------------------------- 2. the run (database)


@pytest.fixture
def book(db, firm, connections):
    """Four engagements, October 2026 (and one retainer over three months):
    - ENG-TM1 (T&M, EUR): delivered 1,200.00 (time and a 50.00 expense; one 120.00 line priced, not posted; a
      reversed line and expense not counted), billed 1,080.00, recognised 1,080.00 → variance 120.00 (exception);
    - ENG-MS1 (milestone, GBP): invoiced 5,000.00 (+ a void one), recognised 5,000.00 → 0 (delivered shown);
    - ENG-FF1 (fixed fee, USD): invoiced 3,000.01, recognised 3,000.00 → 0.01, exactly at the tolerance;
    - ENG-RT1 (retainer 2,000.00 EUR from 2026-08-10): August and October billed and recognised, September's
      invoice missing → variance 2,000.00 for 2026-09.
    """
    tm = engagement(code="ENG-TM1", contract_type="t_and_m", currency="EUR", **OPEN)
    time_entry(tm, date(2026, 10, 5), "1", "650.00")
    expense(tm, date(2026, 10, 9), "50.00")
    expense(tm, date(2026, 10, 9), "70.00", status="reversed")
    time_entry(tm, date(2026, 10, 6), "1", "380.00")
    time_entry(tm, date(2026, 10, 7), "1", "120.00", status="priced")
    time_entry(tm, date(2026, 10, 8), "1", "999.00", status="reversed")
    time_entry(tm, date(2026, 11, 2), "1", "50.00", status="priced")  # November: outside the range
    revenue(tm, OCT, "1080.00")
    ms = engagement(code="ENG-MS1", contract_type="milestone", currency="GBP", **OPEN)
    time_entry(ms, date(2026, 10, 12), "1", "4321.00")
    invoice(ms, "5000.00", period=OCT)
    invoice(ms, "5000.00", period=OCT, status="void")
    revenue(ms, OCT, "5000.00")
    ff = engagement(code="ENG-FF1", contract_type="fixed_fee", currency="USD", **OPEN)
    invoice(ff, "3000.01", issued=date(2026, 10, 30))  # no period: the month it was issued
    revenue(ff, OCT, "3000.00")
    rt = engagement(code="ENG-RT1", contract_type="retainer", currency="EUR", fee="2000.00",
                    **{**OPEN, "start": date(2026, 8, 10)})
    for m in (AUG, OCT):
        invoice(rt, "2000.00", period=m, kind="retainer")
        revenue(rt, m, "2000.00")
    return {"tm": tm, "ms": ms, "ff": ff, "rt": rt}


def run(**kw) -> ReconciliationRun:
    return services.run_now(trigger="command", period_from=kw.pop("period_from", AUG),
                            period_to=kw.pop("period_to", OCT), **kw)


def lines(r: ReconciliationRun) -> dict:
    return {(ln.engagement_code, f"{ln.period:%Y-%m}"): ln for ln in r.line_set.all()}


def recon_records():
    return SyncRecord.objects.filter(workflow="reconciliation").order_by("source_key")


def test_run_puts_the_three_figures_side_by_side_per_engagement_and_month(book):
    r = run()
    assert (r.status, r.lines, r.over_tolerance, r.tolerance) == ("completed", 6, 2, TOL)
    got = {k: (ln.delivered, ln.billed, ln.recognised, ln.expected, ln.variance, ln.over_tolerance)
           for k, ln in lines(r).items()}
    assert got == {
        ("ENG-TM1", "2026-10"): (D("1200.00"), D("1080.00"), D("1080.00"), None, D("120.00"), True),
        ("ENG-MS1", "2026-10"): (D("4321.00"), D("5000.00"), D("5000.00"), None, D("0.00"), False),
        ("ENG-FF1", "2026-10"): (D("0.00"), D("3000.01"), D("3000.00"), None, D("0.01"), False),
        ("ENG-RT1", "2026-08"): (D("0.00"), D("2000.00"), D("2000.00"), D("2000.00"), D("0.00"), False),
        ("ENG-RT1", "2026-09"): (D("0.00"), D("0.00"), D("0.00"), D("2000.00"), D("2000.00"), True),
        ("ENG-RT1", "2026-10"): (D("0.00"), D("2000.00"), D("2000.00"), D("2000.00"), D("0.00"), False),
    }
    ln = lines(r)[("ENG-TM1", "2026-10")]
    assert (ln.contract_type, ln.currency, ln.compared) == ("t_and_m", "EUR", "delivered,billed,recognised")


def test_the_run_is_set_based_its_queries_do_not_grow_with_engagements(book, django_assert_max_num_queries):
    with CaptureQueriesContext(connection) as small:
        run()
    for i in range(40):  # ten times the engagements, each with a variance (so 40 more exception records)
        e = engagement(code=f"ENG-X{i:03d}", contract_type="t_and_m", currency="USD", **OPEN)
        time_entry(e, date(2026, 9, 3), "1", "10.00", status="priced")
    with CaptureQueriesContext(connection) as big:
        r = run()
    assert r.lines == 6 + 40 and r.over_tolerance == 2 + 40
    assert len(big.captured_queries) <= len(small.captured_queries) + 2, [q["sql"][:120] for q in
                                                                          big.captured_queries]
    with django_assert_max_num_queries(len(small.captured_queries) + 2):
        run()


def test_variances_become_held_finance_ops_exceptions_with_the_figures_side_by_side(book, connections):
    run()
    recs = list(recon_records())
    assert [r.source_key for r in recs] == ["recon:ENG-RT1:2026-09", "recon:ENG-TM1:2026-10"]
    tm = recs[1]
    assert (tm.status, tm.stage, tm.reason_code, tm.owner_team, tm.priority, tm.source_connection_id) == (
        "held", "check", "reconciliation_variance", "finance_ops", 1, connections["netsuite"].pk)
    assert tm.title == "ENG-TM1 · 2026-10 variance 120.00 EUR"
    assert (tm.amount, tm.currency, tm.target_system) == (D("120.00"), "EUR", "erp")
    assert tm.correlation_id == book["tm"].correlation_id  # the engagement's thread: the record page traces it
    assert "delivered 1200.00, billed 1080.00, recognised 1080.00 EUR" in tm.message
    assert "delivered = billed = recognised" in tm.message and "tolerance of 0.01 EUR" in tm.message
    p = tm.current_payload
    assert (p["delivered"], p["billed"], p["recognised"], p["variance"], p["tolerance"], p["expected"]) == (
        "1200.00", "1080.00", "1080.00", "120.00", "0.01", None)
    assert tm.original_payload == p and tm.held_at is not None and tm.error_signature
    assert "ENG-TM1" in tm.search_keys and tm.priority_reason.startswith("P1")
    rt = recs[0]
    assert "retainer fee 2000.00" in rt.message and rt.current_payload["expected"] == "2000.00"


def test_running_twice_gives_the_same_records_and_writes_nothing_the_second_time(book):
    first = run()
    before = list(recon_records().values("id", "version", "updated_at", "status"))
    audits = AuditEntry.objects.count()
    second = run()
    third = run()
    assert list(recon_records().values("id", "version", "updated_at", "status")) == before
    assert AuditEntry.objects.count() == audits
    assert (first.opened, second.opened, third.opened, second.updated, second.resolved) == (2, 0, 0, 0, 0)
    assert ReconciliationLine.objects.filter(run=third).count() == 6


def test_a_variance_that_is_gone_resolves_its_record_audited_and_once(book):
    run()
    revenue(book["tm"], OCT, "120.00")  # the ERP recognises the rest …
    book["tm"].time_entries.filter(status="priced").update(status="posted")  # … and the line is posted
    r = run()
    assert (r.over_tolerance, r.resolved, r.opened) == (1, 1, 0)
    rec = SyncRecord.objects.get(source_key="recon:ENG-TM1:2026-10")
    assert (rec.status, rec.reason_code, rec.completed_at is not None) == ("succeeded", "", True)
    assert rec.current_payload["variance"] == "0.00" and rec.context["resolved"]["by"] == f"reconciliation run #{r.pk}"
    audit = AuditEntry.objects.get(record=rec)
    assert (audit.actor, audit.action, audit.before, audit.after) == (
        None, "resolved", {"status": "held", "variance": "120.00"}, {"status": "succeeded", "variance": "0.00"})
    assert f"Resolved by reconciliation run #{r.pk}" in audit.reason
    again = run()
    assert (again.resolved, again.opened) == (0, 0) and AuditEntry.objects.filter(record=rec).count() == 1


def test_changed_figures_refresh_the_open_record_and_bump_its_version(book):
    run()
    rec = SyncRecord.objects.get(source_key="recon:ENG-TM1:2026-10")
    revenue(book["tm"], OCT, "20.00")
    r = run()
    rec2 = SyncRecord.objects.get(pk=rec.pk)
    assert (r.updated, rec2.version, rec2.status, rec2.held_at) == (1, rec.version + 1, "held", rec.held_at)
    assert rec2.current_payload["recognised"] == "1100.00" and rec2.title.endswith("variance 120.00 EUR")
    assert rec2.original_payload == rec.original_payload  # the first figures stay as the original


def test_a_variance_that_comes_back_reopens_the_resolved_record(book):
    run()
    rt = book["rt"]
    invoice(rt, "2000.00", period=SEP, kind="retainer")
    revenue(rt, SEP, "2000.00")
    run()
    rec = SyncRecord.objects.get(source_key="recon:ENG-RT1:2026-09")
    assert rec.status == "succeeded"
    rt.invoices.filter(period=SEP).update(status="void")  # the September invoice was voided in the ERP
    r = run()
    rec.refresh_from_db()
    assert (r.opened, rec.status, rec.reason_code, rec.current_payload["billed"]) == (
        1, "held", "reconciliation_variance", "0.00")
    assert list(AuditEntry.objects.filter(record=rec).values_list("action", flat=True)) == ["resolved", "reopened"]


def test_the_tolerance_is_the_admin_set_policy(book):
    FinancePolicy.objects.filter(pk=FinancePolicy.current().pk).update(reconciliation_tolerance=D("120.00"))
    r = run()
    assert (r.tolerance, r.over_tolerance) == (D("120.00"), 1)  # TM1's 120.00 is exactly at it; RT1's is above
    assert [x.source_key for x in recon_records()] == ["recon:ENG-RT1:2026-09"]


def test_a_run_for_other_months_leaves_records_of_months_outside_its_range_alone(book):
    run()
    revenue(book["tm"], OCT, "120.00")
    book["tm"].time_entries.filter(status="priced").update(status="posted")
    r = run(period_from=AUG, period_to=SEP)  # October is not in this run
    assert r.resolved == 0
    assert SyncRecord.objects.get(source_key="recon:ENG-TM1:2026-10").status == "held"


def test_a_run_for_some_engagements_touches_only_their_lines_and_records(book):
    run()
    revenue(book["tm"], OCT, "120.00")
    book["tm"].time_entries.filter(status="priced").update(status="posted")
    r = run(engagement_ids=[book["tm"].pk, book["ms"].pk])
    assert sorted(lines(r)) == [("ENG-MS1", "2026-10"), ("ENG-TM1", "2026-10")]
    assert r.resolved == 1
    assert SyncRecord.objects.get(source_key="recon:ENG-TM1:2026-10").status == "succeeded"
    assert SyncRecord.objects.get(source_key="recon:ENG-RT1:2026-09").status == "held"  # not in this run


def test_no_erp_connection_means_no_exceptions_but_a_warning(book, connections):
    connections["netsuite"].enabled = False
    connections["netsuite"].save()
    r = run()
    assert r.status == "completed" and r.over_tolerance == 2 and not recon_records().exists()
    assert "No enabled ERP connection: 2 variance(s)" in r.message


def test_a_second_run_while_one_is_in_progress_is_skipped(book):
    url = settings.DATABASES["default"]
    with psycopg.connect(host=url["HOST"] or "127.0.0.1", port=url["PORT"] or 5432, user=url["USER"],
                         password=url["PASSWORD"] or None, dbname=connection.settings_dict["NAME"],
                         autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [services.LOCK_KEY])
        r = run()
        other.execute("SELECT pg_advisory_unlock(%s)", [services.LOCK_KEY])
    assert (r.status, r.lines) == ("skipped", 0) and "in progress" in r.message
    assert run().status == "completed"


def test_only_the_newest_runs_keep_their_lines(book):
    runs = [run() for _ in range(3)]
    assert services.prune(keep=2) == 6
    assert [ReconciliationLine.objects.filter(run=r).count() for r in runs] == [0, 6, 6]


def test_the_reconciliation_kpi_counts_every_engagement_month_checked_not_only_the_variances(book, client, dave):
    """The KPI "reconciliation variance" (DOMAIN.md): of the engagement-months a run checked, how many were off.
    Only variances become records, so counting records said 2 checked, 2 with a variance (100 %); the run
    checked 6. Nightly runs re-check the same months: the latest run counts, not the sum of runs."""
    from apps.console import kpis

    period = kpis.parse_period({})
    assert kpis.reconciliation_variance(period)["has_runs"] is False
    first = run()
    data = kpis.reconciliation_variance(period)
    assert (data["checked"], data["with_variance"], data["rate"], data["runs"], data["run_id"]) == (
        6, 2, 33.33, 1, first.pk)
    assert [(c["currency"], c["records"], c["amount"]) for c in data["open"]] == [("EUR", 2, D("2120.00"))]

    revenue(book["tm"], OCT, "120.00")  # the T&M month is fixed (revenue recognised, the line posted) …
    book["tm"].time_entries.filter(status="priced").update(status="posted")  # … the next night finds one of six
    second = run()
    data = kpis.reconciliation_variance(period)
    assert (data["checked"], data["with_variance"], data["rate"], data["runs"], data["run_id"]) == (
        6, 1, 16.67, 2, second.pk)
    assert [(c["currency"], c["records"], c["amount"]) for c in data["open"]] == [("EUR", 1, D("2000.00"))]

    client.force_login(dave)
    html = client.get("/kpis/").content.decode()
    assert 'data-testid="recon-checked">6<' in html and 'data-testid="recon-variance">1<' in html
    rows = list(csv.reader(io.StringIO(b"".join(client.get("/kpis/export.csv?kpi=reconciliation")
                                                 .streaming_content).decode())))
    assert ["checked", "", "6", ""] in rows and ["with_variance", "", "1", ""] in rows

    # a period in which no run completed: nothing checked in it, the open variances are still shown
    old = kpis.parse_period({"from": "2020-01-01", "to": "2020-01-31"})
    data = kpis.reconciliation_variance(old)
    assert (data["has_runs"], data["checked"], data["with_variance"], data["rate"], data["runs"]) == (
        True, 0, 0, None, 0)
    assert [c["records"] for c in data["open"]] == [1]


# ---------------------------------------------------------------- 3. the workflow: re-check and acceptance


def test_workflow_is_registered_with_its_rules():
    wf = get_workflow("reconciliation")
    assert wf.fix_fields == ["accepted_variance_reason"] and wf.stage_names() == ["check"]
    assert wf.owner_team("reconciliation_variance") == "finance_ops" and wf.priority({}) == 1
    assert wf.summary({"engagement_code": "ENG-1", "period": "2026-10", "variance": "120.00", "currency": "EUR"}) == {
        "title": "ENG-1 · 2026-10 variance 120.00 EUR", "amount": "120.00", "currency": "EUR"}


def test_validate_checks_the_payload_shape(db, firm):
    wf = get_workflow("reconciliation")
    reasons = [p.message for p in wf.validate({"engagement_code": "NOPE", "period": "2026-13",
                                               "accepted_variance_reason": "x" * 301})]
    assert reasons == ["Engagement “NOPE” does not exist.", "Period “2026-13” is not a month (YYYY-MM).",
                       "The reason for accepting the variance must be text of at most 300 characters."]


def _resubmit(record, actor, **changes):
    record.refresh_from_db()
    sync_services.record_resubmit(record_id=record.pk, actor=actor, expected_version=record.version,
                                  changes=changes, reason="checked the ERP")
    engine.drain("high", max_seconds=10)
    record.refresh_from_db()
    return record


def test_resubmit_rechecks_the_month_holding_again_or_succeeding(book, bob):
    run()
    rec = SyncRecord.objects.get(source_key="recon:ENG-TM1:2026-10")
    rec = _resubmit(rec, bob)  # nothing fixed yet
    assert (rec.status, rec.reason_code, rec.current_payload["variance"]) == ("held", "reconciliation_variance",
                                                                              "120.00")
    book["tm"].time_entries.filter(status="priced").update(status="posted")
    rec = _resubmit(rec, bob)  # posted now, but the ERP still recognised 1,080.00
    assert (rec.status, rec.current_payload["billed"], rec.current_payload["variance"]) == ("held", "1200.00",
                                                                                           "120.00")
    revenue(book["tm"], OCT, "120.00")
    rec = _resubmit(rec, bob)
    assert (rec.status, rec.current_payload["variance"], rec.context["resolved"]["by"]) == ("succeeded", "0.00",
                                                                                           "re-check")


def test_accepting_the_variance_with_a_reason_closes_it_until_the_variance_changes(book, bob):
    run()
    rec = SyncRecord.objects.get(source_key="recon:ENG-TM1:2026-10")
    rec = _resubmit(rec, bob, accepted_variance_reason="Goodwill discount agreed with the client (CR-88)")
    assert rec.status == "succeeded"
    assert rec.context["accepted"] | {"at": None} == {
        "at": None, "variance": "120.00", "currency": "EUR",
        "reason": "Goodwill discount agreed with the client (CR-88)",
        "delivered": "1200.00", "billed": "1080.00", "recognised": "1080.00", "expected": None}
    audit = AuditEntry.objects.get(record=rec, action="resubmit")
    assert (audit.actor, audit.after) == (bob, {"accepted_variance_reason": "Goodwill discount agreed with the "
                                                                            "client (CR-88)"})
    r = run()  # the same variance: the acceptance holds
    rec.refresh_from_db()
    assert (r.opened, rec.status) == (0, "succeeded")
    time_entry(book["tm"], date(2026, 10, 20), "1", "30.00", status="priced")  # a different variance now
    r = run()
    rec.refresh_from_db()
    assert (r.opened, rec.status, rec.current_payload["variance"]) == (1, "held", "150.00")
    assert rec.current_payload["accepted_variance_reason"] == "" and "accepted" not in rec.context


def test_an_ignored_record_stays_closed_for_the_same_variance(book, bob):
    run()
    rec = SyncRecord.objects.get(source_key="recon:ENG-RT1:2026-09")
    sync_services.record_ignore(record_id=rec.pk, actor=bob, expected_version=rec.version,
                                reason="billed in October with the next invoice")
    assert run().opened == 0
    rt = book["rt"]
    invoice(rt, "500.00", period=SEP, kind="retainer")  # billed 500, recognised 0, fee 2,000: still 2,000 apart
    assert run().opened == 0
    invoice(rt, "2000.00", period=SEP, kind="retainer")  # billed 2,500 now: 2,500 apart
    assert run().opened == 1
    rec.refresh_from_db()
    assert (rec.status, rec.current_payload["variance"]) == ("held", "2500.00")


def test_only_finance_ops_and_admins_may_act_on_the_exceptions(book, alice, dave):
    run()
    rec = SyncRecord.objects.get(source_key="recon:ENG-TM1:2026-10")
    for user in (alice, dave):
        with pytest.raises(sync_services.NotAllowed):
            sync_services.record_resubmit(record_id=rec.pk, actor=user, expected_version=rec.version, changes={})


# ---------------------------------------------------------------- 4. the report page, its CSV, Run now


@pytest.fixture
def report_data(book):
    for i in range(60):
        e = engagement(code=f"ENG-P{i:03d}", contract_type=["t_and_m", "milestone", "fixed_fee"][i % 3],
                       currency=["USD", "GBP", "EUR"][i % 3], **OPEN)
        time_entry(e, date(2026, 9 if i % 2 else 10, 4), "1", f"{100 + i}.00", status="posted" if i % 4 else "priced")
        revenue(e, OCT if i % 2 == 0 else SEP, f"{100 + i}.00")
    return run()


def _rows(html: str) -> list[str]:
    import re

    return re.findall(r'data-testid="line-([A-Z0-9-]+-\d{4}-\d{2})"', html)


def test_report_shows_the_latest_run_with_filters_in_the_url(client, bob, report_data):
    client.force_login(bob)
    html = client.get("/reconciliation/").content.decode()
    assert 'data-testid="run-status"' in html and f"Run #{report_data.pk}" in html
    assert len(_rows(html)) == 50 and "Page 1 of 2" in html  # 66 lines, 50 per page
    html = client.get("/reconciliation/?period=2026-10&contract_type=t_and_m&over=1").content.decode()
    got = sorted(_rows(html))
    expected = sorted(f"{ln.engagement_code}-2026-10" for ln in ReconciliationLine.objects.filter(
        run=report_data, period=OCT, contract_type="t_and_m", over_tolerance=True))
    assert got == expected and "ENG-TM1-2026-10" in got and len(got) >= 2
    assert 'href="/reconciliation/export.csv?period=2026-10&amp;contract_type=t_and_m&amp;over=1"' in html
    html = client.get("/reconciliation/?currency=GBP&period=2026-10").content.decode()
    assert "ENG-MS1-2026-10" in _rows(html)
    assert all(ReconciliationLine.objects.get(run=report_data, engagement_code=c.rsplit("-", 2)[0]).currency == "GBP"
               for c in _rows(html))
    # the exception column links the record and says what became of it
    rec = SyncRecord.objects.get(source_key="recon:ENG-TM1:2026-10")
    html = client.get("/reconciliation/?period=2026-10&contract_type=t_and_m").content.decode()
    assert f'href="/records/{rec.pk}/" class="badge s-held">held</a>' in html


def test_report_queries_do_not_grow_with_the_page(client, bob, book, django_assert_max_num_queries):
    run()
    client.force_login(bob)
    with CaptureQueriesContext(connection) as few:
        assert client.get("/reconciliation/").status_code == 200
    for i in range(60):
        e = engagement(code=f"ENG-Q{i:03d}", contract_type="t_and_m", currency="EUR", **OPEN)
        time_entry(e, date(2026, 10, 4), "1", "10.00", status="priced")
    run()
    with django_assert_max_num_queries(len(few.captured_queries)):
        html = client.get("/reconciliation/?over=1").content.decode()
    assert len(_rows(html)) == 50
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert client.get("/reconciliation/?over=1", HTTP_HX_REQUEST="true").status_code == 200


def test_csv_export_streams_the_same_filter(client, dave, report_data):
    client.force_login(dave)
    response = client.get("/reconciliation/export.csv?period=2026-10&over=1")
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    expected = ReconciliationLine.objects.filter(run=report_data, period=OCT, over_tolerance=True)
    assert sorted(r["engagement"] for r in rows) == sorted(expected.values_list("engagement_code", flat=True))
    tm = next(r for r in rows if r["engagement"] == "ENG-TM1")
    rec = SyncRecord.objects.get(source_key="recon:ENG-TM1:2026-10")
    assert tm == {"run": str(report_data.pk), "engagement": "ENG-TM1", "period": "2026-10", "contract_type": "t_and_m",
                  "currency": "EUR", "delivered": "1200.00", "billed": "1080.00", "recognised": "1080.00",
                  "retainer_fee": "", "variance": "120.00", "tolerance": "0.01", "over_tolerance": "yes",
                  "compared": "delivered = billed = recognised", "exception_status": "held", "record_id": str(rec.pk)}
    all_rows = list(csv.reader(io.StringIO(b"".join(client.get("/reconciliation/export.csv").streaming_content)
                                           .decode())))
    assert len(all_rows) == 1 + report_data.lines


def test_viewer_reads_the_report_but_cannot_run_it(client, dave, report_data):
    client.force_login(dave)
    html = client.get("/reconciliation/").content.decode()
    assert 'href="/reconciliation/">Reconciliation</a>' in html  # the nav link
    assert 'data-testid="run-now"' not in html
    runs, audits = ReconciliationRun.objects.count(), AuditEntry.objects.count()
    assert client.post("/reconciliation/run/").status_code == 403
    assert client.get("/reconciliation/run/").status_code == 405  # never an action through GET
    assert (ReconciliationRun.objects.count(), AuditEntry.objects.count()) == (runs, audits)


def test_pmo_cannot_run_it_either(client, alice, book):
    client.force_login(alice)
    assert client.post("/reconciliation/run/").status_code == 403
    assert not services.can_run(alice)


def test_run_now_is_queued_audited_and_worked_by_a_real_worker(client, bob, book,
                                                               django_capture_on_commit_callbacks):
    client.force_login(bob)
    html = client.get("/reconciliation/").content.decode()
    assert 'data-testid="run-now"' in html and 'data-testid="no-runs"' in html
    with django_capture_on_commit_callbacks(execute=True):  # the job is enqueued once the run row is committed
        response = client.post("/reconciliation/run/", {"from": "2026-08", "to": "2026-10"})
    assert response.status_code == 302 and response["Location"] == "/reconciliation/"
    r = ReconciliationRun.objects.get()
    assert (r.trigger, r.status, r.requested_by, r.period_from, r.period_to) == ("manual", "queued", bob, AUG, OCT)
    audit = AuditEntry.objects.get(action="reconciliation_run")
    assert (audit.actor, audit.record, audit.after) == (bob, None, {"run": r.pk, "from": "2026-08", "to": "2026-10"})
    status = client.get("/reconciliation/?partial=status&watch=%d" % r.pk, HTTP_HX_REQUEST="true")
    assert "Queued" in status.content.decode() and "HX-Refresh" not in status  # still polling
    run_worker()
    r.refresh_from_db()
    assert (r.status, r.lines, r.over_tolerance, r.opened) == ("completed", 6, 2, 2)
    status = client.get("/reconciliation/?partial=status&watch=%d" % r.pk, HTTP_HX_REQUEST="true")
    assert status["HX-Refresh"] == "true"  # finished: the page reloads with the new lines
    from apps.sync.models import SyncRun

    assert SyncRun.objects.filter(kind="reconciliation", status="completed").count() == 1


def test_run_now_refuses_a_bad_range(client, carol, book):
    client.force_login(carol)
    response = client.post("/reconciliation/run/", {"from": "2026-10", "to": "2026-08"}, follow=True)
    assert "Not run: The first month is after the last month." in response.content.decode()
    response = client.post("/reconciliation/run/", {"from": "Oct", "to": ""}, follow=True)
    assert "Give the first and last month as YYYY-MM" in response.content.decode()
    assert not ReconciliationRun.objects.exists()


def test_the_nightly_job_is_scheduled_at_two(db):
    import rq.cron

    rq.cron._job_data_registry.clear()
    import config.cron

    importlib.reload(config.cron)
    jobs = {j["name"]: j for j in rq.cron._job_data_registry}
    rq.cron._job_data_registry.clear()
    assert jobs["reconciliation"]["cron"] == "0 2 * * *"
    assert jobs["reconciliation"]["func"].__module__ == "apps.reconcile.jobs"


def test_nightly_job_reconciles_the_last_twelve_complete_months(book):
    from apps.reconcile import jobs

    counts = jobs.nightly()
    r = ReconciliationRun.objects.get()
    this_month = timezone.localdate().replace(day=1)
    assert (r.trigger, r.period_from, r.period_to) == ("nightly", add_months(this_month, -12),
                                                       add_months(this_month, -1))
    # the book's October lines (6), and once November 2026 is a complete month, ENG-TM1's priced November entry
    # and ENG-RT1's November retainer (2 more)
    expected = 6 + (2 if add_months(this_month, -1) >= date(2026, 11, 1) else 0)
    assert counts["lines"] == r.lines == expected and counts["completed"] == 1


def test_the_record_page_offers_acceptance_and_the_console_form_accepts(client, bob, book):
    run()
    rec = SyncRecord.objects.get(source_key="recon:ENG-TM1:2026-10")
    client.force_login(bob)
    html = client.get(f"/records/{rec.pk}/").content.decode()
    assert "Accept the variance — reason" in html and "delivered 1200.00, billed 1080.00" in html
    response = client.post(f"/records/{rec.pk}/action/", {
        "version": rec.version, "action": "resubmit", "reason": "approved by the engagement partner",
        "accepted_variance_reason": "Write-down agreed in the October steering committee"})
    assert response.status_code == 302
    engine.drain("high", max_seconds=10)
    rec.refresh_from_db()
    assert rec.status == "succeeded"
    assert rec.context["accepted"]["reason"] == "Write-down agreed in the October steering committee"
    html = client.get("/reconciliation/?period=2026-10&contract_type=t_and_m").content.decode()
    assert f'href="/records/{rec.pk}/" class="badge s-succeeded">accepted</a>' in html
