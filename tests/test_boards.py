"""The boards part of the exception desk: workflow status board, KPIs and their CSV exports, manual sync runs,
connections (health numbers and audited admin actions) and the audit export — who may see and do what, and that
the numbers are exactly right on small hand-made data sets."""

from __future__ import annotations

import csv
import html as html_lib
import io
import itertools
import json
import re
import time
import xml.etree.ElementTree as ET
from datetime import date, timedelta
from decimal import Decimal

import django_rq
import pytest
from django.db import connection as db_connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.connectors import hubspot
from apps.connectors.inbound import Rejected
from apps.console import charts, kpis
from apps.reconcile.models import ReconciliationRun
from apps.sandbox.models import SandboxSystem
from apps.sync.models import Attempt, AuditEntry, Connection, InboundEvent, SyncRecord

from .conftest import HUBSPOT_SECRET

pytestmark = pytest.mark.django_db

_seq = itertools.count(1)
HTMX = {"HTTP_HX_REQUEST": "true"}


# ---------------------------------------------------------------- helpers


def records(connections, n=1, *, workflow="quote_to_project", stage="validate", status="pending", **fields):
    """`n` records made with bulk_create. Timestamps that Django sets itself (created_at) are applied after, when
    given, since auto_now_add overrides them on insert."""
    created_at = fields.pop("created_at", None)
    objs = [SyncRecord(workflow=workflow, stage=stage, status=status, source_connection=connections["hubspot"],
                       source_key=f"obj:{next(_seq)}", title="Test record", **fields) for _ in range(n)]
    made = SyncRecord.objects.bulk_create(objs)
    if created_at is not None:
        SyncRecord.objects.filter(pk__in=[r.pk for r in made]).update(created_at=created_at)
        for r in made:
            r.created_at = created_at
    return made


def one(connections, **kw) -> SyncRecord:
    return records(connections, 1, **kw)[0]


def attempts(record, rows):
    """rows: (system, outcome, started_at) — bulk-created, then their started_at set (auto_now_add)."""
    made = Attempt.objects.bulk_create([Attempt(record=record, stage=record.stage, system=system, method="POST",
                                                url="http://x/", outcome=outcome) for system, outcome, _ in rows])
    for a, (_s, _o, at) in zip(made, rows):
        Attempt.objects.filter(pk=a.pk).update(started_at=at)
    return made


def audit(record, action, at, *, actor=None, before=None):
    entry = AuditEntry.objects.create(actor=actor, record=record, action=action, before=before or {})
    AuditEntry.objects.filter(pk=entry.pk).update(at=at)  # `at` is auto_now_add; the trail itself stays append-only
    return entry


def row_cells(html: str, testid: str) -> list[str]:
    """The text of the cells of the <tr data-testid=testid>."""
    m = re.search(rf'<tr[^>]*data-testid="{re.escape(testid)}"[^>]*>(.*?)</tr>', html, re.S)
    assert m, f"no row {testid!r}"
    cells = re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", m.group(1), re.S)
    return [html_lib.unescape(" ".join(re.sub(r"<[^>]+>", " ", c).split())) for c in cells]


def text_of(html: str, testid: str) -> str:
    m = re.search(rf'data-testid="{re.escape(testid)}"[^>]*>(.*?)<', html, re.S)
    assert m, f"no element {testid!r}"
    return m.group(1).strip()


def table_body(html: str, testid: str) -> list[list[str]]:
    table = re.search(rf'<table[^>]*data-testid="{testid}".*?</table>', html, re.S)
    assert table, f"no table {testid!r}"
    body = re.search(r"<tbody>(.*?)</tbody>", table.group(0), re.S).group(1)
    return [[html_lib.unescape(" ".join(re.sub(r"<[^>]+>", " ", c).split()))
             for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", tr, re.S)]
            for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)]


def parse_csv(response) -> list[list[str]]:
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert re.match(r'attachment; filename="handoff-[\w-]+\.csv"$', response["Content-Disposition"])
    body = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(body)))


def period_query(days_back=10):
    today = timezone.localdate()
    return f"from={(today - timedelta(days=days_back)).isoformat()}&to={today.isoformat()}"


def is_svg(fragment: str) -> bool:
    ET.fromstring(str(fragment))  # well-formed XML, or this raises
    return str(fragment).startswith("<svg")


# ---------------------------------------------------------------- who gets in


GET_PAGES = ["/boards/", "/kpis/", "/kpis/export.csv?kpi=cycle_time", "/connections/", "/audit/export.csv"]


def test_every_boards_page_sends_an_anonymous_user_to_the_login_page(client, connections):
    c = connections["hubspot"]
    for url in GET_PAGES:
        resp = client.get(url)
        assert resp.status_code == 302 and resp.url.startswith("/login/?next="), url
    for url in ["/runs/manual/", f"/connections/{c.pk}/pause/", f"/connections/{c.pk}/resume/",
                f"/connections/{c.pk}/rotate-secret/", f"/connections/{c.pk}/faults/"]:
        resp = client.post(url, {"action": "sweep", f"c{c.pk}-reason": "x"})
        assert resp.status_code == 302 and resp.url.startswith("/login/?next="), url
    c.refresh_from_db()
    assert c.paused is False and c.inbound_secret == HUBSPOT_SECRET
    assert AuditEntry.objects.count() == 0


def test_the_navigation_links_the_new_screens(client, dave, carol, connections):
    client.force_login(dave)
    html = client.get("/boards/").content.decode()
    assert 'href="/boards/"' in html and 'href="/kpis/"' in html and 'href="/connections/"' not in html
    client.force_login(carol)  # connections are the integration admin's
    html = client.get("/boards/").content.decode()
    assert 'href="/boards/"' in html and 'href="/kpis/"' in html and 'href="/connections/"' in html


# ---------------------------------------------------------------- 1. the workflow status board


def test_the_board_counts_records_per_stage_and_status(client, dave, connections):
    now = timezone.now()
    yesterday = kpis.today_start() - timedelta(hours=1)
    records(connections, 2, stage="validate", status="pending")
    records(connections, 1, stage="validate", status="in_progress")
    records(connections, 2, stage="validate", status="held", held_at=now)
    records(connections, 1, stage="validate", status="held", held_at=now, sla_state="breached")
    records(connections, 1, stage="validate", status="retrying")
    records(connections, 1, stage="erp_customer", status="retrying", sla_state="breached")
    records(connections, 2, stage="erp_customer", status="dead", held_at=now)
    records(connections, 4, stage="crm_writeback", status="succeeded", completed_at=now)
    records(connections, 1, stage="crm_writeback", status="succeeded", completed_at=yesterday)
    # closed records never count as SLA breaches, even if the flag was left behind
    records(connections, 1, stage="crm_writeback", status="succeeded", completed_at=yesterday, sla_state="breached")
    records(connections, 1, stage="validate", status="ignored", sla_state="breached")
    client.force_login(dave)

    resp = client.get("/boards/")

    assert resp.status_code == 200
    html = resp.content.decode()
    # columns: in flight, succeeded today, held, retrying, dead, SLA breached
    assert row_cells(html, "total-quote_to_project")[1:7] == ["3", "4", "3", "2", "2", "2"]
    assert row_cells(html, "stage-quote_to_project-fetch") == ["Fetch from CRM", "0", "0", "0", "0", "0", "0"]
    assert row_cells(html, "stage-quote_to_project-validate") == ["Validate", "3", "0", "3", "1", "0", "1"]
    assert row_cells(html, "stage-quote_to_project-erp_customer") == ["Customer in ERP", "0", "0", "0", "1", "2", "1"]
    assert row_cells(html, "stage-quote_to_project-crm_writeback") == ["Ids back to CRM", "0", "4", "0", "0", "0", "0"]
    # the held and dead cells open the exception list filtered to that stage
    assert "stage=validate&amp;status=held" in html and "stage=erp_customer&amp;status=dead" in html
    # the 14-day trend: held (by held_at) and succeeded (by completed_at) per day, as inline SVG
    trend = kpis.trends()["quote_to_project"]
    assert len(trend["days"]) == 14 and trend["days"][-1] == timezone.localdate()
    assert trend["held"][-1] == 5 and sum(trend["held"]) == 5
    assert trend["succeeded"][-1] == 4 and trend["succeeded"][-2] == 2
    svg = re.search(r"<svg.*?</svg>", html, re.S).group(0)
    assert is_svg(svg) and "spark-held" in svg and "spark-succeeded" in svg
    assert "<script" not in html.split("</head>", 1)[1]  # no chart library


def test_the_board_shows_records_of_an_unknown_stage_rather_than_dropping_them(client, dave, connections):
    records(connections, 2, stage="retired_stage", status="held", held_at=timezone.now())
    client.force_login(dave)
    html = client.get("/boards/").content.decode()
    assert row_cells(html, "stage-quote_to_project-retired_stage")[:4] == [
        "retired_stage (unknown stage)", "0", "0", "2"]
    assert row_cells(html, "total-quote_to_project")[3] == "2"


@pytest.mark.parametrize("n", [10, 100])
def test_the_board_runs_a_constant_number_of_queries(client, dave, connections, django_assert_max_num_queries, n):
    stages = ["fetch", "validate", "erp_customer", "psa_project", "erp_project", "crm_writeback"]
    statuses = ["pending", "in_progress", "retrying", "held", "dead", "succeeded"]
    now = timezone.now()
    for i in range(n):
        status = statuses[i % len(statuses)]
        records(connections, 1, stage=stages[i % len(stages)], status=status,
                held_at=now - timedelta(days=i % 14) if status in ("held", "dead") else None,
                completed_at=now - timedelta(days=i % 14) if status == "succeeded" else None,
                sla_state="breached" if i % 7 == 0 else "ok")
    client.force_login(dave)
    client.get("/boards/")  # warm up (session, permissions)

    with django_assert_max_num_queries(8):
        resp = client.get("/boards/")
    assert resp.status_code == 200
    with CaptureQueriesContext(db_connection) as ctx:
        client.get("/boards/", **HTMX)
    board_queries = [q for q in ctx.captured_queries if "sync_syncrecord" in q["sql"]]
    assert len(board_queries) == 3  # one GROUP BY for the grid, two for the trends — never one per cell


def test_an_htmx_poll_gets_only_the_board_partial_every_10_seconds(client, dave, connections):
    records(connections, 1, status="held", held_at=timezone.now())
    client.force_login(dave)

    resp = client.get("/boards/", **HTMX)

    html = resp.content.decode()
    assert "<html" not in html and "<header" not in html
    assert html.strip().startswith('<div id="workflow-board"')
    assert 'hx-trigger="every 10s"' in html and 'hx-get="/boards/"' in html
    assert row_cells(html, "total-quote_to_project")[3] == "1"
    # the full page has the same poller around the same partial
    full = client.get("/boards/").content.decode()
    assert '<div id="workflow-board" hx-get="/boards/" hx-trigger="every 10s"' in full


# ---------------------------------------------------------------- 2. KPIs


def test_project_setup_cycle_time_p50_p90_and_average(client, dave, connections):
    now = timezone.now()
    for hours_taken, days_ago in [(2, 1), (4, 2), (10, 2)]:
        done = now - timedelta(days=days_ago)
        one(connections, stage="crm_writeback", status="succeeded", completed_at=done,
            created_at=done - timedelta(hours=hours_taken))
    # not counted: completed before the period, another workflow, not succeeded
    one(connections, status="succeeded", completed_at=now - timedelta(days=40),
        created_at=now - timedelta(days=41))
    one(connections, workflow="time_to_billing", status="succeeded", completed_at=now,
        created_at=now - timedelta(hours=100))
    one(connections, status="held", held_at=now, created_at=now - timedelta(hours=50))

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
    latency = {r[0]: r[1:] for r in table_body(html, "latency")}
    assert latency["Quote to project"] == ["3", "4.0", "8.8", "5.33"]
    assert latency["Time & expense to billing"][:2] == ["1", "100.0"]


def test_integration_failure_rate(client, dave, connections):
    now = timezone.now()
    held = one(connections, status="held", held_at=now)
    transient = one(connections, status="succeeded", completed_at=now)
    attempts(transient, [("netsuite", "transient", now), ("netsuite", "ok", now)])
    permanent = one(connections, stage="psa_project", status="held", held_at=now)
    attempts(permanent, [("kantata", "permanent", now)])
    clean = one(connections, status="succeeded", completed_at=now)
    attempts(clean, [("netsuite", "ok", now), ("kantata", "started", now)])
    one(connections, status="pending")
    # resolved by a resubmit (which clears held_at): still a record that failed
    resubmitted = one(connections, status="succeeded", completed_at=now)
    audit(resubmitted, "resubmit", now)
    # created before the period: not counted at all
    old = one(connections, status="held", held_at=now, created_at=now - timedelta(days=60))
    assert old.pk and held.pk

    data = kpis.failure_rate(kpis.parse_period({}))
    assert (data["failed"], data["total"], data["rate"]) == (4, 6, 66.67)

    client.force_login(dave)
    html = client.get("/kpis/").content.decode()
    assert text_of(html, "failure-rate") == "66.67%"
    # the row of quote-to-project, wherever it stands (workflows are listed in the order they were registered,
    # which depends on which test module imported which workflow first)
    rows = {r[0]: r for r in table_body(html, "failure-rate-table")}
    assert rows["Quote to project"] == ["Quote to project", "6", "4", "66.67%"]


def test_open_exceptions_by_age_bucket_and_priority(client, dave, connections):
    now = timezone.now()
    for age, priority, status in [(timedelta(minutes=30), 1, "held"), (timedelta(minutes=50), 2, "held"),
                                  (timedelta(hours=2), 2, "held"), (timedelta(hours=5), 1, "dead"),
                                  (timedelta(days=2), 3, "held"), (timedelta(days=5), 1, "held"),
                                  (timedelta(days=6), 1, "dead")]:
        one(connections, status=status, held_at=now - age, priority=priority)
    one(connections, status="succeeded", completed_at=now, priority=1)  # not an exception
    one(connections, status="ignored", held_at=now - timedelta(days=9), priority=1)  # resolved

    data = kpis.open_exceptions()
    assert [(b["key"], b["counts"], b["total"]) for b in data["buckets"]] == [
        ("lt_1h", [1, 1, 0], 2), ("1h_4h", [0, 1, 0], 1), ("4h_24h", [1, 0, 0], 1), ("1d_3d", [0, 0, 1], 1),
        ("gt_3d", [2, 0, 0], 2)]
    assert data["totals"] == [4, 2, 1] and data["total"] == 7

    client.force_login(dave)
    html = client.get("/kpis/").content.decode()
    assert table_body(html, "age-buckets") == [["< 1 h", "1", "1", "0", "2"], ["1–4 h", "0", "1", "0", "1"],
                                              ["4–24 h", "1", "0", "0", "1"], ["1–3 d", "0", "0", "1", "1"],
                                              ["> 3 d", "2", "0", "0", "2"]]


def test_exception_resolution_time_uses_the_first_resolution_after_the_hold(client, carol, dave, connections):
    now = timezone.now()
    t0 = now - timedelta(days=2)
    ignored = one(connections, status="ignored", held_at=t0, priority=1)
    audit(ignored, "comment", t0 + timedelta(hours=1), actor=carol)  # a comment resolves nothing
    audit(ignored, "ignore", t0 + timedelta(hours=2), actor=carol)
    again = one(connections, status="ignored", held_at=t0, priority=2)
    audit(again, "resubmit", t0 - timedelta(hours=1), actor=carol)  # resolved an earlier hold
    audit(again, "ignore", t0 + timedelta(hours=4), actor=carol)
    audit(again, "ignore", t0 + timedelta(hours=9), actor=carol)  # not the first one after the hold
    third = one(connections, status="ignored", held_at=t0, priority=2)
    audit(third, "resubmit", t0 + timedelta(hours=6), actor=carol)
    # record_resubmit clears held_at: the hold start kept in the audit entry is used then
    resubmitted = one(connections, status="succeeded", completed_at=now, priority=1)
    audit(resubmitted, "resubmit", t0 + timedelta(hours=1), actor=carol, before={"held_at": t0.isoformat()})
    # resolved before the period: not counted
    early = one(connections, status="ignored", held_at=now - timedelta(days=30), priority=1)
    audit(early, "ignore", now - timedelta(days=29), actor=carol)

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
    assert table_body(html, "revenue-at-risk") == [["—", "0", "0"]]  # nothing at risk shows 0

    now = timezone.now()
    one(connections, workflow="time_to_billing", status="held", held_at=now, amount=Decimal("1000.50"), currency="EUR")
    one(connections, workflow="milestone_to_invoice", status="dead", held_at=now, amount=Decimal("200.00"),
        currency="EUR")
    one(connections, workflow="invoice_payment_to_crm", status="held", held_at=now, amount=Decimal("300.10"),
        currency="USD")
    one(connections, workflow="reconciliation", status="held", held_at=now, amount=Decimal("0.20"), currency="USD")
    # not at risk: not billing-related, or not held
    one(connections, workflow="quote_to_project", status="held", held_at=now, amount=Decimal("999"), currency="USD")
    one(connections, workflow="time_to_billing", status="succeeded", completed_at=now, amount=Decimal("50"),
        currency="EUR")
    one(connections, workflow="time_to_billing", status="retrying", amount=Decimal("70"), currency="EUR")

    data = kpis.revenue_at_risk()
    assert [(c["currency"], c["records"], c["amount"]) for c in data["currencies"]] == [
        ("EUR", 2, Decimal("1200.50")), ("USD", 2, Decimal("300.30"))]

    html = client.get("/kpis/").content.decode()
    assert table_body(html, "revenue-at-risk") == [["EUR", "2", "1,200.50"], ["USD", "2", "300.30"]]


def test_reconciliation_variance_says_when_there_are_no_runs_yet(client, dave, connections):
    client.force_login(dave)
    html = client.get("/kpis/").content.decode()
    assert text_of(html, "reconciliation-empty") == "No reconciliation runs yet."

    now = timezone.now()
    # a run checked 40 engagement-months, 3 above the tolerance; only those became records (one resolved since)
    ReconciliationRun.objects.create(trigger="nightly", status="completed", period_from=date(2026, 1, 1),
                                     period_to=date(2026, 10, 1), finished_at=now, lines=40, over_tolerance=3)
    one(connections, workflow="reconciliation", status="succeeded", completed_at=now)
    one(connections, workflow="reconciliation", status="held", held_at=now, amount=Decimal("12.34"), currency="GBP")
    html = client.get("/kpis/").content.decode()
    assert "reconciliation-empty" not in html
    assert text_of(html, "recon-checked") == "40" and text_of(html, "recon-variance") == "3"
    assert "(7.5%)" in html
    assert table_body(html, "reconciliation-open") == [["GBP", "1", "12.34"]]


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
    done = one(connections, stage="crm_writeback", status="succeeded", completed_at=now - timedelta(hours=1),
               created_at=now - timedelta(hours=4))
    one(connections, workflow="time_to_billing", status="held", held_at=now - timedelta(minutes=5),
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
    record = one(connections, status="held", held_at=timezone.now())
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


# ---------------------------------------------------------------- 3. manual sync runs


def test_manual_runs_are_for_integration_admins_only_and_post_only(client, alice, dave, carol, connections):
    for user in (alice, dave):
        client.force_login(user)
        assert client.post("/runs/manual/", {"action": "sweep"}).status_code == 403
        assert client.post("/runs/manual/", {"action": "drain", "queue": "high"}).status_code == 403
    client.force_login(carol)
    assert client.get("/runs/manual/").status_code == 405
    assert client.get("/runs/manual/?action=sweep").status_code == 405
    assert AuditEntry.objects.count() == 0
    assert django_rq.get_queue("high").count == 0


def test_run_the_sweeper_now(client, carol, connections):
    one(connections, status="pending", priority=1, next_attempt_at=timezone.now() - timedelta(seconds=5))
    client.force_login(carol)

    resp = client.post("/runs/manual/", {"action": "sweep"}, follow=True)

    assert resp.redirect_chain == [("/runs/", 302)]
    assert "Sweeper ran: woke records:high." in resp.content.decode()
    assert django_rq.get_queue("high").count == 1
    entry = AuditEntry.objects.get(action="manual_run")
    assert entry.actor == carol and entry.record is None and entry.after == {
        "run": "sweep", "woken": {"records:high": True}}


def test_run_the_sweeper_when_nothing_is_due(client, carol, connections):
    one(connections, status="held", held_at=timezone.now())
    client.force_login(carol)

    resp = client.post("/runs/manual/", {"action": "sweep"}, follow=True)

    assert "Sweeper ran: nothing was due" in resp.content.decode()
    assert all(django_rq.get_queue(q).count == 0 for q in ("high", "default", "low"))
    assert AuditEntry.objects.get(action="manual_run").after == {"run": "sweep", "woken": {}}


def test_drain_a_queue_now(client, carol, connections):
    client.force_login(carol)

    resp = client.post("/runs/manual/", {"action": "drain", "queue": "low"})

    assert resp.status_code == 302 and resp.url == "/runs/"
    queue = django_rq.get_queue("low")
    assert queue.count == 1 and queue.jobs[0].func_name == "apps.sync.jobs.drain_records"
    assert queue.jobs[0].kwargs == {"queue_name": "low"}
    assert AuditEntry.objects.get(action="manual_run").after == {"run": "drain", "queue": "low", "enqueued": True}
    assert client.post("/runs/manual/", {"action": "drain", "queue": "nope"}).status_code == 400
    assert client.post("/runs/manual/", {"action": "explode"}).status_code == 400


def test_a_manual_run_needs_the_csrf_token(carol, connections):
    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(carol)
    assert csrf_client.post("/runs/manual/", {"action": "sweep"}).status_code == 403
    assert AuditEntry.objects.count() == 0


# ---------------------------------------------------------------- 4. connections


def test_connection_health_numbers(client, carol, connections, django_assert_num_queries):
    now = timezone.now()
    record = one(connections, status="held", held_at=now)
    attempts(record, [
        ("netsuite", "ok", now - timedelta(hours=3)),
        ("netsuite", "transient", now - timedelta(minutes=40)),
        ("netsuite", "permanent", now - timedelta(minutes=20)),
        ("netsuite", "started", now - timedelta(minutes=1)),  # still running: left out
        ("hubspot", "transient", now - timedelta(minutes=50)),
        ("hubspot", "ok", now - timedelta(minutes=30)),
        ("hubspot", "transient", now - timedelta(minutes=10)),
        ("salesforce", "permanent", now - timedelta(hours=5)),  # never an ok call
        ("salesforce", "transient", now - timedelta(hours=4)),
    ])
    hub = connections["hubspot"]
    events = InboundEvent.objects.bulk_create([
        InboundEvent(connection=hub, connection_slug="hubspot", status=s, http_status=202, verified=True,
                     event_id=f"e{i}") for i, s in enumerate(["processed", "processed", "rejected", "ignored",
                                                               "processed"])])
    InboundEvent.objects.filter(pk=events[-1].pk).update(received_at=now - timedelta(hours=30))

    with django_assert_num_queries(5):  # one per measure, whatever the number of connections and calls
        rows = {r["connection"].slug: r for r in kpis.connection_health()}

    assert rows["netsuite"]["last_ok_at"] == now - timedelta(hours=3)
    assert (rows["netsuite"]["error_rate"], rows["netsuite"]["consecutive_failures"]) == (100.0, 2)
    assert rows["hubspot"]["last_ok_at"] == now - timedelta(minutes=30)
    assert (rows["hubspot"]["error_rate"], rows["hubspot"]["consecutive_failures"]) == (66.67, 1)
    assert rows["hubspot"]["events"] == {"received": 0, "processed": 2, "ignored": 1, "rejected": 1}
    assert rows["salesforce"]["last_ok_at"] is None and rows["salesforce"]["error_rate"] is None
    assert rows["salesforce"]["consecutive_failures"] == 2
    assert rows["kantata"]["consecutive_failures"] == 0 and rows["kantata"]["events_total"] == 0

    client.force_login(carol)
    html = client.get("/connections/").content.decode()
    cells = row_cells(html, "conn-netsuite")
    assert cells[1] == "NetSuite · ERP" and cells[3] == "enabled"
    assert cells[5] == "100.0% 2 of 2" and cells[6] == "2"
    assert row_cells(html, "conn-kantata")[4] == "never"
    assert "2 processed" in row_cells(html, "conn-hubspot")[7]


def test_the_connections_page_never_shows_stored_secrets(client, alice, dave, carol, connections):
    client.force_login(carol)
    html = client.get("/connections/").content.decode()
    assert HUBSPOT_SECRET not in html
    assert "sandbox-netsuite-token" not in html and "access_token" not in html
    # the other roles do not see the list at all (hosts, secrets' state, health are the admin's)
    for user in (alice, dave):
        client.force_login(user)
        resp = client.get("/connections/")
        assert resp.status_code == 403
        assert HUBSPOT_SECRET.encode() not in resp.content and b"actions-hubspot" not in resp.content


def test_the_connections_page_needs_view_connection(client, carol, connections):
    from django.contrib.auth.models import Permission

    carol.groups.first().permissions.remove(Permission.objects.get(codename="view_connection"))
    client.force_login(carol)
    assert client.get("/connections/").status_code == 403


def _action_urls(c):
    return {"pause": f"/connections/{c.pk}/pause/", "resume": f"/connections/{c.pk}/resume/",
            "rotate": f"/connections/{c.pk}/rotate-secret/", "faults": f"/connections/{c.pk}/faults/"}


def test_connection_actions_are_refused_to_pmo_and_viewers_and_are_post_only(client, alice, dave, carol, connections):
    hub = connections["hubspot"]
    urls = _action_urls(hub)
    data = {f"c{hub.pk}-reason": "x", f"c{hub.pk}-error_rate": "0.5", f"c{hub.pk}-rate_limit_rate": "0",
            f"c{hub.pk}-latency_ms": "0", f"c{hub.pk}-fail_next_count": "0", f"c{hub.pk}-fail_next_status": "503",
            f"c{hub.pk}-retry_after_seconds": "1"}
    for user in (alice, dave):
        client.force_login(user)
        for name, url in urls.items():
            assert client.post(url, data).status_code == 403, (user, name)
    client.force_login(carol)
    for name, url in urls.items():
        assert client.get(url).status_code == 405, name
    hub.refresh_from_db()
    assert hub.paused is False and hub.inbound_secret == HUBSPOT_SECRET
    assert SandboxSystem.objects.get(system="hubspot").error_rate == 0
    assert AuditEntry.objects.count() == 0


def test_pause_and_resume_a_connection(client, carol, connections):
    net = connections["netsuite"]
    client.force_login(carol)

    resp = client.post(f"/connections/{net.pk}/pause/", {f"c{net.pk}-reason": ""})
    assert resp.status_code == 400 and "Say why it is paused." in resp.content.decode()
    net.refresh_from_db()
    assert net.paused is False

    resp = client.post(f"/connections/{net.pk}/pause/", {f"c{net.pk}-reason": "NetSuite maintenance window"},
                       follow=True)
    assert resp.redirect_chain == [("/connections/", 302)]
    net.refresh_from_db()
    assert net.paused is True and net.paused_reason == "NetSuite maintenance window" and net.paused_at
    cells = row_cells(resp.content.decode(), "conn-netsuite")
    assert cells[3].startswith("paused NetSuite maintenance window · since")
    entry = AuditEntry.objects.get(action="connection_pause")
    assert entry.actor == carol and entry.record is None and entry.reason == "NetSuite maintenance window"
    assert entry.before == {"connection": "netsuite", "paused": False, "paused_reason": "", "paused_at": None}
    assert entry.after["paused"] is True and entry.after["paused_reason"] == "NetSuite maintenance window"

    resp = client.post(f"/connections/{net.pk}/resume/", {f"c{net.pk}-reason": "window over"})
    assert resp.status_code == 302
    net.refresh_from_db()
    assert net.paused is False and net.paused_reason == "" and net.paused_at is None
    entry = AuditEntry.objects.get(action="connection_resume")
    assert entry.before["paused"] is True and entry.after["paused"] is False and entry.reason == "window over"


def _post_webhook(secret: str):
    body = json.dumps([{"eventId": next(_seq), "subscriptionId": 7, "portalId": 62515, "appId": 1,
                        "occurredAt": int(time.time() * 1000), "subscriptionType": "deal.propertyChange",
                        "attemptNumber": 0, "objectId": 123, "propertyName": "dealstage",
                        "propertyValue": "closedwon", "changeSource": "CRM"}]).encode()
    ts = str(int(time.time() * 1000))
    sig = hubspot.signature_v3(secret, "POST", "http://testserver/api/v1/callbacks/hubspot/", body, ts)
    return Client().post("/api/v1/callbacks/hubspot/", data=body, content_type="application/json",
                         HTTP_X_HUBSPOT_SIGNATURE_V3=sig, HTTP_X_HUBSPOT_REQUEST_TIMESTAMP=ts), body, ts, sig


def test_rotating_the_hubspot_secret_shows_it_once_and_the_old_signature_stops_verifying(client, carol, connections):
    hub = connections["hubspot"]
    assert _post_webhook(HUBSPOT_SECRET)[0].status_code == 202
    _, body, ts, old_sig = _post_webhook(HUBSPOT_SECRET)
    client.force_login(carol)

    resp = client.post(f"/connections/{hub.pk}/rotate-secret/")

    assert resp.status_code == 200 and resp["Cache-Control"] == "no-store"
    hub.refresh_from_db()
    new = hub.inbound_secret
    assert new != HUBSPOT_SECRET and len(new) >= 43
    html = resp.content.decode()
    assert 'data-testid="new-secret"' in html and html.count(new) == 1
    # the old signature no longer verifies; the new secret does
    headers = {"X-HubSpot-Signature-v3": old_sig, "X-HubSpot-Request-Timestamp": ts}
    with pytest.raises(Rejected):
        hubspot.verify(hub, method="POST", uris=["http://testserver/api/v1/callbacks/hubspot/"], body=body,
                       headers=headers, max_age=300)
    assert _post_webhook(HUBSPOT_SECRET)[0].status_code == 401
    assert _post_webhook(new)[0].status_code == 202
    # shown once: never again on the page, never in the audit trail
    assert new not in client.get("/connections/").content.decode()
    entry = AuditEntry.objects.get(action="rotate_secret")
    assert entry.actor == carol and entry.record is None
    assert entry.before == {"connection": "hubspot", "inbound_secret": "set"}
    assert entry.after == {"connection": "hubspot", "inbound_secret": "rotated"}
    assert new not in json.dumps([entry.before, entry.after, entry.reason])
    # a second rotation makes yet another secret
    client.post(f"/connections/{hub.pk}/rotate-secret/")
    hub.refresh_from_db()
    assert hub.inbound_secret not in (new, HUBSPOT_SECRET)


def test_a_connection_that_receives_no_callbacks_has_no_secret_to_rotate(client, carol, connections):
    net = connections["anaplan"]
    net.inbound_secret = ""
    net.save()
    client.force_login(carol)
    assert client.post(f"/connections/{net.pk}/rotate-secret/").status_code == 400
    net.refresh_from_db()
    assert net.inbound_secret == ""
    assert not AuditEntry.objects.exists()


def _faults(pk, **values):
    data = {"error_rate": "0", "rate_limit_rate": "0", "timeout_rate": "0", "lost_response_rate": "0",
            "hang_ms": "1500", "latency_ms": "0", "fail_next_count": "0",
            "fail_next_status": "503", "retry_after_seconds": "1", **{k: str(v) for k, v in values.items()}}
    return {f"c{pk}-{k}": v for k, v in data.items()}


def test_sandbox_fault_injection_settings_are_saved_and_audited(client, carol, connections):
    kan = connections["kantata"]
    client.force_login(carol)

    resp = client.post(f"/connections/{kan.pk}/faults/", _faults(kan.pk, error_rate=0.25, rate_limit_rate=0.1,
                                                                 latency_ms=150, fail_next_count=3,
                                                                 fail_next_status=502, retry_after_seconds=7,
                                                                 lost_response_rate=0.2))

    assert resp.status_code == 302 and resp.url == "/connections/"
    s = SandboxSystem.objects.get(system="kantata")
    assert (s.error_rate, s.rate_limit_rate, s.latency_ms, s.fail_next_count, s.fail_next_status,
            s.retry_after_seconds, s.lost_response_rate) == (0.25, 0.1, 150, 3, 502, 7, 0.2)
    assert s.token == "sandbox-kantata-token"  # untouched
    entry = AuditEntry.objects.get(action="fault_injection")
    assert entry.before["error_rate"] == 0 and entry.after["error_rate"] == 0.25
    assert entry.after["connection"] == "kantata" and entry.actor == carol

    resp = client.post(f"/connections/{kan.pk}/faults/", _faults(kan.pk, error_rate=1.5, fail_next_status=200))
    assert resp.status_code == 400
    assert SandboxSystem.objects.get(system="kantata").error_rate == 0.25
    assert AuditEntry.objects.filter(action="fault_injection").count() == 1


def test_the_connections_page_shows_each_sandboxs_fault_form_and_a_refused_one_with_its_errors(client, carol,
                                                                                               connections):
    kan = connections["kantata"]
    client.force_login(carol)
    html = client.get("/connections/").content.decode()
    assert f'action="/connections/{kan.pk}/faults/"' in html and "Sandbox fault injection (kantata)" in html

    resp = client.post(f"/connections/{kan.pk}/faults/", _faults(kan.pk, error_rate=1.5))

    html = resp.content.decode()
    assert resp.status_code == 400 and 'class="errorlist' in html
    assert f'name="c{kan.pk}-error_rate" value="1.5"' in html  # the posted form, in its own row
    assert html.count("<details open>") == 1


def test_fault_injection_is_off_without_the_sandboxes(client, carol, connections, settings):
    settings.HANDOFF_SANDBOX_ENABLED = False
    kan = connections["kantata"]
    client.force_login(carol)
    assert client.post(f"/connections/{kan.pk}/faults/", _faults(kan.pk, error_rate=0.5)).status_code == 404
    assert SandboxSystem.objects.get(system="kantata").error_rate == 0
    assert "/faults/" not in client.get("/connections/").content.decode()


def test_actions_on_an_unknown_connection_are_404(client, carol, connections):
    client.force_login(carol)
    missing = Connection.objects.order_by("-pk").first().pk + 100
    for url in _action_urls(type("C", (), {"pk": missing})).values():
        assert client.post(url, {f"c{missing}-reason": "x"}).status_code == 404, url
