"""The KPIs page and its CSV exports: project-set-up cycle time, integration failure rate, open exceptions by age
and priority, exception resolution time, revenue at risk, reconciliation variance — each exact on small hand-made
data sets — the period and its defaults, the charts, and who may export the audit trail."""

from __future__ import annotations

import json
import re
from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from apps.console import charts, kpis
from apps.reconcile.models import ReconciliationRun
from apps.sync.models import AuditEntry

from tests.builders import attempts, audit_entry, sync_record
from tests.pages import HTMX, is_svg, parse_csv, table_rows, text_of

pytestmark = pytest.mark.django_db


def period_query(days_back=10):
    today = timezone.localdate()
    return f"from={(today - timedelta(days=days_back)).isoformat()}&to={today.isoformat()}"


# ---------------------------------------------------------------- 2. KPIs


def test_project_setup_cycle_time_p50_p90_and_average(client, dave, connections):
    now = timezone.now()
    for hours_taken, days_ago in [(2, 1), (4, 2), (10, 2)]:
        done = now - timedelta(days=days_ago)
        sync_record(connections, stage="crm_writeback", status="succeeded", completed_at=done,
            created_at=done - timedelta(hours=hours_taken))
    # not counted: completed before the period, another workflow, not succeeded
    sync_record(connections, status="succeeded", completed_at=now - timedelta(days=40),
        created_at=now - timedelta(days=41))
    sync_record(connections, workflow="time_to_billing", status="succeeded", completed_at=now,
        created_at=now - timedelta(hours=100))
    sync_record(connections, status="held", held_at=now, created_at=now - timedelta(hours=50))

    data = kpis.cycle_time(kpis.parse_period({"from": (now - timedelta(days=10)).date().isoformat(),
                                              "to": now.date().isoformat()}))
    assert data["count"] == 3
    assert data["p50_hours"] == 4.0
    assert data["p90_hours"] == 8.8  # interpolated: 4 + 0.8 × (10 − 4)
    assert data["avg_hours"] == 5.33
    daily = {d["day"]: d for d in data["daily"]}
    assert daily[(now - timedelta(days=2)).date()]["p50_hours"] == 7.0 and daily[(now - timedelta(days=2)).date()][
        "count"] == 2
    assert daily[(now - timedelta(days=1)).date()]["p50_hours"] == 2.0

    client.force_login(dave)
    html = client.get(f"/kpis/?{period_query()}").content.decode()
    assert text_of(html, "cycle-p50") == "4.0"
    assert text_of(html, "cycle-p90") == "8.8"
    assert text_of(html, "cycle-count") == "3"
    latency = {r[0]: r[1:] for r in table_rows(html, "latency")}
    assert latency["Quote to project"] == ["3", "4.0", "8.8", "5.33"]
    assert latency["Time & expense to billing"][:2] == ["1", "100.0"]


def test_integration_failure_rate(client, dave, connections):
    now = timezone.now()
    held = sync_record(connections, status="held", held_at=now)
    transient = sync_record(connections, status="succeeded", completed_at=now)
    attempts(transient, [("netsuite", "transient", now), ("netsuite", "ok", now)])
    permanent = sync_record(connections, stage="psa_project", status="held", held_at=now)
    attempts(permanent, [("kantata", "permanent", now)])
    clean = sync_record(connections, status="succeeded", completed_at=now)
    attempts(clean, [("netsuite", "ok", now), ("kantata", "started", now)])
    sync_record(connections, status="pending")
    # resolved by a resubmit (which clears held_at): still a record that failed
    resubmitted = sync_record(connections, status="succeeded", completed_at=now)
    audit_entry(resubmitted, "resubmit", now)
    # created before the period: not counted at all
    old = sync_record(connections, status="held", held_at=now, created_at=now - timedelta(days=60))
    assert old.pk and held.pk

    data = kpis.failure_rate(kpis.parse_period({}))
    assert (data["failed"], data["total"], data["rate"]) == (4, 6, 66.67)

    client.force_login(dave)
    html = client.get("/kpis/").content.decode()
    assert text_of(html, "failure-rate") == "66.67%"
    # the row of quote-to-project, wherever it stands (workflows are listed in the order they were registered,
    # which depends on which test module imported which workflow first)
    rows = {r[0]: r for r in table_rows(html, "failure-rate-table")}
    assert rows["Quote to project"] == ["Quote to project", "6", "4", "66.67%"]


def test_open_exceptions_by_age_bucket_and_priority(client, dave, connections):
    now = timezone.now()
    for age, priority, status in [(timedelta(minutes=30), 1, "held"), (timedelta(minutes=50), 2, "held"),
                                  (timedelta(hours=2), 2, "held"), (timedelta(hours=5), 1, "dead"),
                                  (timedelta(days=2), 3, "held"), (timedelta(days=5), 1, "held"),
                                  (timedelta(days=6), 1, "dead")]:
        sync_record(connections, status=status, held_at=now - age, priority=priority)
    sync_record(connections, status="succeeded", completed_at=now, priority=1)  # not an exception
    sync_record(connections, status="ignored", held_at=now - timedelta(days=9), priority=1)  # resolved

    data = kpis.open_exceptions()
    assert [(b["key"], b["counts"], b["total"]) for b in data["buckets"]] == [
        ("lt_1h", [1, 1, 0], 2), ("1h_4h", [0, 1, 0], 1), ("4h_24h", [1, 0, 0], 1), ("1d_3d", [0, 0, 1], 1),
        ("gt_3d", [2, 0, 0], 2)]
    assert data["totals"] == [4, 2, 1] and data["total"] == 7

    client.force_login(dave)
    html = client.get("/kpis/").content.decode()
    assert table_rows(html, "age-buckets") == [["< 1 h", "1", "1", "0", "2"], ["1–4 h", "0", "1", "0", "1"],
                                              ["4–24 h", "1", "0", "0", "1"], ["1–3 d", "0", "0", "1", "1"],
                                              ["> 3 d", "2", "0", "0", "2"]]


def test_exception_resolution_time_uses_the_first_resolution_after_the_hold(client, carol, dave, connections):
    now = timezone.now()
    t0 = now - timedelta(days=2)
    ignored = sync_record(connections, status="ignored", held_at=t0, priority=1)
    audit_entry(ignored, "comment", t0 + timedelta(hours=1), actor=carol)  # a comment resolves nothing
    audit_entry(ignored, "ignore", t0 + timedelta(hours=2), actor=carol)
    again = sync_record(connections, status="ignored", held_at=t0, priority=2)
    audit_entry(again, "resubmit", t0 - timedelta(hours=1), actor=carol)  # resolved an earlier hold
    audit_entry(again, "ignore", t0 + timedelta(hours=4), actor=carol)
    audit_entry(again, "ignore", t0 + timedelta(hours=9), actor=carol)  # not the first one after the hold
    third = sync_record(connections, status="ignored", held_at=t0, priority=2)
    audit_entry(third, "resubmit", t0 + timedelta(hours=6), actor=carol)
    # record_resubmit clears held_at: the hold start kept in the audit entry is used then
    resubmitted = sync_record(connections, status="succeeded", completed_at=now, priority=1)
    audit_entry(resubmitted, "resubmit", t0 + timedelta(hours=1), actor=carol, before={"held_at": t0.isoformat()})
    # resolved before the period: not counted
    early = sync_record(connections, status="ignored", held_at=now - timedelta(days=30), priority=1)
    audit_entry(early, "ignore", now - timedelta(days=29), actor=carol)

    data = kpis.resolution_time(kpis.parse_period({"from": (now - timedelta(days=5)).date().isoformat()}))
    assert data["count"] == 4
    assert data["p50_hours"] == 3.0  # of 1, 2, 4, 6 hours
    assert data["p90_hours"] == 5.4  # 4 + 0.7 × (6 − 4)
    by_priority = {r["priority"]: r for r in data["priorities"]}
    assert (by_priority[1]["count"], by_priority[1]["p50_hours"]) == (2, 1.5)
    assert (by_priority[2]["count"], by_priority[2]["p50_hours"]) == (2, 5.0)
    assert by_priority[3]["count"] == 0 and by_priority[3]["p50_hours"] is None

    client.force_login(dave)
    html = client.get(f"/kpis/?{period_query(5)}").content.decode()
    assert text_of(html, "resolution-p50") == "3.0"
    assert text_of(html, "resolution-count") == "4"


def test_revenue_at_risk_sums_billing_exceptions_per_currency(client, dave, connections):
    client.force_login(dave)
    html = client.get("/kpis/").content.decode()
    assert table_rows(html, "revenue-at-risk") == [["—", "0", "0"]]  # nothing at risk shows 0

    now = timezone.now()
    sync_record(connections, workflow="time_to_billing", status="held", held_at=now, amount=Decimal("1000.50"), currency="EUR")
    sync_record(connections, workflow="milestone_to_invoice", status="dead", held_at=now, amount=Decimal("200.00"),
        currency="EUR")
    sync_record(connections, workflow="invoice_payment_to_crm", status="held", held_at=now, amount=Decimal("300.10"),
        currency="USD")
    sync_record(connections, workflow="reconciliation", status="held", held_at=now, amount=Decimal("0.20"), currency="USD")
    # not at risk: not billing-related, or not held
    sync_record(connections, workflow="quote_to_project", status="held", held_at=now, amount=Decimal("999"), currency="USD")
    sync_record(connections, workflow="time_to_billing", status="succeeded", completed_at=now, amount=Decimal("50"),
        currency="EUR")
    sync_record(connections, workflow="time_to_billing", status="retrying", amount=Decimal("70"), currency="EUR")

    data = kpis.revenue_at_risk()
    assert [(c["currency"], c["records"], c["amount"]) for c in data["currencies"]] == [
        ("EUR", 2, Decimal("1200.50")), ("USD", 2, Decimal("300.30"))]

    html = client.get("/kpis/").content.decode()
    assert table_rows(html, "revenue-at-risk") == [["EUR", "2", "1,200.50"], ["USD", "2", "300.30"]]


def test_reconciliation_variance_says_when_there_are_no_runs_yet(client, dave, connections):
    client.force_login(dave)
    html = client.get("/kpis/").content.decode()
    assert text_of(html, "reconciliation-empty") == "No reconciliation runs yet."

    now = timezone.now()
    # a run checked 40 engagement-months, 3 above the tolerance; only those became records (one resolved since)
    ReconciliationRun.objects.create(trigger="nightly", status="completed", period_from=date(2026, 1, 1),
                                     period_to=date(2026, 10, 1), finished_at=now, lines=40, over_tolerance=3)
    sync_record(connections, workflow="reconciliation", status="succeeded", completed_at=now)
    sync_record(connections, workflow="reconciliation", status="held", held_at=now, amount=Decimal("12.34"), currency="GBP")
    html = client.get("/kpis/").content.decode()
    assert "reconciliation-empty" not in html
    assert text_of(html, "recon-checked") == "40" and text_of(html, "recon-variance") == "3"
    assert "(7.5%)" in html
    assert table_rows(html, "reconciliation-open") == [["GBP", "1", "12.34"]]


def test_the_kpi_period_defaults_to_the_last_30_days_and_survives_bad_input(client, dave, connections):
    client.force_login(dave)
    today = timezone.localdate()
    html = client.get("/kpis/").content.decode()
    assert f'data-from="{(today - timedelta(days=29)).isoformat()}" data-to="{today.isoformat()}"' in html

    html = client.get("/kpis/?from=2026-02-10&to=2026-02-01").content.decode()  # reversed: swapped
    assert 'data-from="2026-02-01" data-to="2026-02-10"' in html

    resp = client.get("/kpis/?from=yesterday&to=2026-13-45")
    assert resp.status_code == 200
    assert "is not a date" in resp.content.decode()

    # htmx (the period form) gets the KPI partial only; charts are inline SVG
    html = client.get(f"/kpis/?{period_query()}", **HTMX).content.decode()
    assert html.strip().startswith('<div id="kpis"') and "<html" not in html
    svgs = re.findall(r"<svg.*?</svg>", html, re.S)
    assert len(svgs) == 3 and all(is_svg(s) for s in svgs)


def test_charts_escape_their_labels_and_draw_gaps():
    svg = charts.line_chart([("<b>", 1.0), ("x", None), ("y", 3.0)], title='a"<script>', unit="h")
    assert "<script>" not in svg and "&lt;b&gt;" in svg
    assert is_svg(svg)
    assert is_svg(charts.bar_chart(["a", "b"], [("P1", [1, 2], "#000"), ("P2", [0, 3], "#111")]))
    assert is_svg(charts.sparkline([("held", [0] * 14, "#000")]))


# ---------------------------------------------------------------- CSV exports


def test_each_kpi_exports_as_csv(client, dave, connections):
    now = timezone.now()
    done = sync_record(connections, stage="crm_writeback", status="succeeded", completed_at=now - timedelta(hours=1),
               created_at=now - timedelta(hours=4))
    sync_record(connections, workflow="time_to_billing", status="held", held_at=now - timedelta(minutes=5),
        amount=Decimal("42.00"), currency="EUR", priority=1)
    client.force_login(dave)

    rows = parse_csv(client.get(f"/kpis/export.csv?kpi=cycle_time&{period_query()}"))
    assert rows[0] == ["record_id", "workflow", "source_key", "created_at", "completed_at", "cycle_hours"]
    assert rows[1][0] == str(done.pk) and rows[1][1] == "quote_to_project" and rows[1][5] == "3.0"
    assert len(rows) == 2

    rows = parse_csv(client.get(f"/kpis/export.csv?kpi=failure_rate&{period_query()}"))
    assert rows[0] == ["workflow", "records_created", "records_failed", "failure_rate_pct"]
    assert ["time_to_billing", "1", "1", "100.0"] in rows and rows[-1] == ["all", "2", "1", "50.0"]

    rows = parse_csv(client.get("/kpis/export.csv?kpi=open_exceptions"))
    assert ["lt_1h", "P1", "1"] in rows and len(rows) == 1 + 5 * 3

    rows = parse_csv(client.get("/kpis/export.csv?kpi=revenue_at_risk"))
    assert rows == [["currency", "records", "amount"], ["EUR", "1", "42.00"]]

    for name in ["latency", "resolution_time", "reconciliation"]:
        resp = client.get(f"/kpis/export.csv?kpi={name}&{period_query()}")
        assert len(parse_csv(resp)) >= 1, name
        assert name in resp["Content-Disposition"]

    assert client.get("/kpis/export.csv?kpi=nope").status_code == 400
    assert client.post("/kpis/export.csv?kpi=cycle_time").status_code == 405


def test_the_audit_export_is_for_auditors_and_integration_admins_only(client, alice, dave, carol, connections):
    record = sync_record(connections, status="held", held_at=timezone.now())
    AuditEntry.objects.create(actor=carol, record=record, action="resubmit", before={"legal_entity": ""},
                              after={"legal_entity": "US01"}, reason="=HYPERLINK(\"http://evil\")")
    AuditEntry.objects.create(actor=carol, record=None, action="connection_pause", before={"paused": False},
                              after={"paused": True}, reason="maintenance")
    old = AuditEntry.objects.create(actor=carol, record=record, action="comment", reason="long ago")
    AuditEntry.objects.filter(pk=old.pk).update(at=timezone.now() - timedelta(days=90))

    for user in (alice, dave):
        client.force_login(user)
        assert client.get("/audit/export.csv").status_code == 403
    client.force_login(carol)
    rows = parse_csv(client.get(f"/audit/export.csv?{period_query(5)}"))

    assert rows[0] == ["id", "at", "actor", "record_id", "action", "before", "after", "reason"]
    assert len(rows) == 3  # the 90-day-old entry is outside the period
    first, second = rows[1], rows[2]
    assert first[2:5] == ["carol", str(record.pk), "resubmit"]
    assert json.loads(first[5]) == {"legal_entity": ""} and json.loads(first[6]) == {"legal_entity": "US01"}
    assert first[7] == "'=HYPERLINK(\"http://evil\")"  # never a live formula in a spreadsheet
    assert second[2:5] == ["carol", "", "connection_pause"] and second[7] == "maintenance"
