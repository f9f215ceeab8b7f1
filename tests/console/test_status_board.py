"""The workflow status board: who gets into the boards' pages, the counts per stage and status (exact on small
hand-made data sets), records of a stage that no longer exists, a constant number of queries, and the htmx poll."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.console import kpis
from apps.sync.models import AuditEntry

from tests.builders import sync_records
from tests.callbacks import HUBSPOT_SECRET
from tests.pages import HTMX, is_svg, row_cells

pytestmark = pytest.mark.django_db


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
    sync_records(connections, 2, stage="validate", status="pending")
    sync_records(connections, 1, stage="validate", status="in_progress")
    sync_records(connections, 2, stage="validate", status="held", held_at=now)
    sync_records(connections, 1, stage="validate", status="held", held_at=now, sla_state="breached")
    sync_records(connections, 1, stage="validate", status="retrying")
    sync_records(connections, 1, stage="erp_customer", status="retrying", sla_state="breached")
    sync_records(connections, 2, stage="erp_customer", status="dead", held_at=now)
    sync_records(connections, 4, stage="crm_writeback", status="succeeded", completed_at=now)
    sync_records(connections, 1, stage="crm_writeback", status="succeeded", completed_at=yesterday)
    # closed records never count as SLA breaches, even if the flag was left behind
    sync_records(connections, 1, stage="crm_writeback", status="succeeded", completed_at=yesterday, sla_state="breached")
    sync_records(connections, 1, stage="validate", status="ignored", sla_state="breached")
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
    sync_records(connections, 2, stage="retired_stage", status="held", held_at=timezone.now())
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
        sync_records(connections, 1, stage=stages[i % len(stages)], status=status,
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
    sync_records(connections, 1, status="held", held_at=timezone.now())
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
