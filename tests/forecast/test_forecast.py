"""Actuals to forecast: the roll-up rules and the CSV (exact to the cent), the Anaplan import through a real worker
against the sandbox over HTTP (chunks, polling, retries, rejected rows, dead letters), and the board's status,
staleness and "refresh now" button."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from apps.finance.models import ExpenseEntry, Invoice, InvoiceLine, RevenueEntry, TimeEntry
from apps.forecast import actuals, services
from apps.forecast.actuals import Window
from apps.forecast.models import ForecastPeriod, ForecastRefresh
from apps.sandbox.anaplan import model as anaplan_model
from apps.sandbox.models import SandboxObject, SandboxSystem
from apps.sync import services as sync_services
from apps.sync.models import Attempt, AuditEntry, Connection, SyncRecord

from tests import builders as fx
from tests.worker import inject, run_worker

NOV = date(2026, 11, 23)
WINDOW = Window.ending(NOV, 3)  # September to November 2026


def small_book():
    """Four engagements whose expected rows are worked out by hand in the test below."""
    # USD T&M, running Aug–Dec 2026
    e1 = fx.engagement(name="Acme rollout", customer_name="Acme Corp", value="10000.00", start=date(2026, 8, 10),
                       end=date(2026, 12, 31))
    fx.time_entry(e1, date(2026, 8, 20), "5.00", "750.00")  # before the window, not invoiced: billed in Aug
    fx.time_entry(e1, date(2026, 9, 3), "8.00", "1200.00")
    fx.time_entry(e1, date(2026, 9, 4), "2.50", "375.00")
    fx.invoice(e1, "1575.00", period=date(2026, 9, 1), kind="time_and_expense")  # bills September's time
    oct_time = fx.time_entry(e1, date(2026, 10, 6), "7.25", "1087.50")
    oct_inv = fx.invoice(e1, "1087.50", period=date(2026, 10, 1), kind="milestone")
    fx.invoice_line(oct_inv, time=oct_time)  # on an invoice line: counted once, by the invoice
    fx.time_entry(e1, date(2026, 10, 20), "1.00", "150.00", status="priced")  # approved, not posted: hours only
    fx.time_entry(e1, date(2026, 10, 21), "3.00", "450.00", status="reversed")  # neither
    fx.time_entry(e1, date(2026, 11, 2), "4.00", "600.00")  # posted, not invoiced yet: billed in November
    fx.expense(e1, date(2026, 11, 5), "123.45")
    fx.invoice(e1, "999.99", period=date(2026, 11, 1), status="void")  # void: never billed
    fx.revenue(e1, date(2026, 9, 1), "1575.00")
    fx.revenue(e1, date(2026, 10, 1), "1087.50")
    # EUR fixed fee from October; an invoice without a period counts in the month it was issued
    e2 = fx.engagement(name="Berlin ERP", customer_name="Berliner Werke GmbH", currency="EUR", le="DE01",
                       contract_type="fixed_fee", value="50000.00", start=date(2026, 10, 1), end=date(2027, 3, 31),
                       billing_schedule="on milestones")
    fx.invoice(e2, "12500.00", period=date(2026, 10, 1))
    fx.invoice(e2, "12500.00", issued=date(2026, 11, 15), status="paid")
    fx.time_entry(e2, date(2026, 10, 1), "6.00", "900.00")  # fixed fee: effort, not billing
    fx.revenue(e2, date(2026, 10, 1), "12500.00")
    fx.revenue(e2, date(2026, 11, 1), "12500.00")
    # JPY retainer that ended in September, billed late in November (0 decimals)
    e3 = fx.engagement(name="Tokyo retainer", customer_name="Kyoto Trading KK", currency="JPY", le="UK01",
                       contract_type="retainer", value="1200000.00", start=date(2026, 6, 1), end=date(2026, 9, 30),
                       billing_schedule="monthly in advance")
    for m in (6, 7, 8, 9):
        fx.invoice(e3, "100000.00", period=date(2026, m, 1), kind="retainer")
    fx.invoice(e3, "50000.00", period=date(2026, 11, 1), kind="retainer")
    # no dates, no activity; a customer name that needs quoting
    e4 = fx.engagement(name="Open advisory", customer_name='Smith, "Jones" & Co', value="5000.00", start=None,
                       end=None, contract_type="milestone")
    return e1, e2, e3, e4


def test_the_csv_is_exactly_the_actuals_to_the_cent(firm, django_assert_max_num_queries):
    e1, e2, e3, e4 = small_book()
    now = timezone.now()

    with django_assert_max_num_queries(2):  # set-based: one roll-up statement, one read — whatever the book
        done = actuals.roll_up(window=WINDOW, refresh_id=None, now=now)
        data, n = actuals.csv_file(window=WINDOW)

    c1, c2, c3, c4 = e1.code, e2.code, e3.code, e4.code
    expected = (
        "Engagement,Customer,Contract Type,Currency,Period,Approved Hours,Billed,Recognised Revenue,Billed To Date,"
        "Contract Value,Backlog\r\n"
        f"{c1},Acme Corp,t_and_m,USD,2026-09,10.50,1575.00,1575.00,2325.00,10000.00,7675.00\r\n"
        f"{c1},Acme Corp,t_and_m,USD,2026-10,8.25,1087.50,1087.50,3412.50,10000.00,6587.50\r\n"
        f"{c1},Acme Corp,t_and_m,USD,2026-11,4.00,723.45,0.00,4135.95,10000.00,5864.05\r\n"
        f"{c2},Berliner Werke GmbH,fixed_fee,EUR,2026-10,6.00,12500.00,12500.00,12500.00,50000.00,37500.00\r\n"
        f"{c2},Berliner Werke GmbH,fixed_fee,EUR,2026-11,0.00,12500.00,12500.00,25000.00,50000.00,25000.00\r\n"
        f"{c3},Kyoto Trading KK,retainer,JPY,2026-09,0.00,100000,0,400000,1200000,800000\r\n"
        f"{c3},Kyoto Trading KK,retainer,JPY,2026-11,0.00,50000,0,450000,1200000,750000\r\n"
        f'{c4},"Smith, ""Jones"" & Co",milestone,USD,2026-09,0.00,0.00,0.00,0.00,5000.00,5000.00\r\n'
        f'{c4},"Smith, ""Jones"" & Co",milestone,USD,2026-10,0.00,0.00,0.00,0.00,5000.00,5000.00\r\n'
        f'{c4},"Smith, ""Jones"" & Co",milestone,USD,2026-11,0.00,0.00,0.00,0.00,5000.00,5000.00\r\n'
    )
    assert data.decode("utf-8") == expected
    assert (done.rows, done.written, done.pruned, n) == (10, 10, 0, 10)
    # nothing changed since: a second roll-up rewrites nothing
    assert actuals.roll_up(window=WINDOW, refresh_id=None, now=timezone.now()) == actuals.RollUp(10, 0, 0)
    # the same rule gives the change-order check its "already invoiced"
    assert actuals.billed_to_date(e1) == Decimal("4135.95")
    assert actuals.billed_to_date(e3) == Decimal("450000.00")


def test_a_second_roll_up_updates_rows_in_place_and_drops_rows_that_no_longer_apply(firm):
    e1, *_ = small_book()
    actuals.roll_up(window=WINDOW, refresh_id=None, now=timezone.now())
    first_ids = set(ForecastPeriod.objects.filter(engagement=e1).values_list("id", flat=True))
    e1.start_date, e1.end_date = date(2026, 10, 1), date(2026, 10, 31)  # a change order narrowed it to October
    e1.contract_value = Decimal("12000.00")
    e1.save()
    refresh = ForecastRefresh.objects.create(trigger="on_demand")

    done = actuals.roll_up(window=WINDOW, refresh_id=refresh.pk, now=timezone.now(), engagement_id=e1.pk)

    rows = {r.period: r for r in ForecastPeriod.objects.filter(engagement=e1)}
    # September and November still have activity outside the dates: they stay; all rows are updated in place
    assert set(rows) == {date(2026, 9, 1), date(2026, 10, 1), date(2026, 11, 1)}
    assert {r.id for r in rows.values()} == first_ids
    assert rows[date(2026, 11, 1)].backlog == Decimal("7864.05") and rows[date(2026, 11, 1)].refresh == refresh
    assert (done.rows, done.written, done.pruned) == (3, 3, 0)  # the contract value changed every row's backlog
    # it ran August to September after all, and what was booked later is gone: its later rows go
    e1.start_date, e1.end_date = date(2026, 8, 10), date(2026, 9, 30)
    e1.save()
    InvoiceLine.objects.filter(invoice__engagement=e1).delete()
    TimeEntry.objects.filter(engagement=e1, work_date__gte=date(2026, 10, 1)).delete()
    Invoice.objects.filter(engagement=e1, period__gte=date(2026, 10, 1)).delete()
    ExpenseEntry.objects.filter(engagement=e1).delete()
    RevenueEntry.objects.filter(engagement=e1, period__gte=date(2026, 10, 1)).delete()
    assert actuals.roll_up(window=WINDOW, refresh_id=refresh.pk, now=timezone.now(),
                           engagement_id=e1.pk) == actuals.RollUp(1, 0, 2)
    assert list(ForecastPeriod.objects.filter(engagement=e1).values_list("period", flat=True)) == [date(2026, 9, 1)]
    # other engagements were not touched by a one-engagement roll-up
    assert ForecastPeriod.objects.exclude(engagement=e1).filter(refresh=refresh).count() == 0


def test_the_sandbox_rejects_rows_outside_the_model_time_range_and_a_wrong_header(db):
    good = ",".join(anaplan_model.HEADER) + "\r\nENG-1,A,t_and_m,USD,2026-10,1.00,2.00,3.00,4.00,5.00,1.00\r\n"
    out = anaplan_model.run_import((good + "ENG-2,B,t_and_m,USD,2019-03,1,2,3,4,5,1\r\n"
                                  "ENG-3,C,t_and_m,US,2026-10,1,2,3,4,5,1\r\n").encode().decode("latin-1"),
                                 {"timescale": ["2020-01", "2030-12"]})
    assert out["result"]["successful"] is False and out["result"]["failureDumpAvailable"] is True
    assert out["result"]["details"][0]["values"][:6] == ["moduleName", "Engagement actuals", "successRowCount", "1",
                                                         "failedCount", "2"]
    assert [d["localMessageText"] for d in out["result"]["details"][1:]] == [
        "Line 3: Period 2019-03 is outside the model's time range 2020-01 to 2030-12",
        "Line 4: Currency 'US' is not an ISO code"]
    assert out["dump"].splitlines()[1:] == [
        "3,Period 2019-03 is outside the model's time range 2020-01 to 2030-12,ENG-2,B,t_and_m,USD,2019-03,1,2,3,4,5,1",
        "4,Currency 'US' is not an ISO code,ENG-3,C,t_and_m,US,2026-10,1,2,3,4,5,1"]
    assert SandboxObject.objects.filter(system="anaplan", object_type="actuals_row").count() == 1

    bad = anaplan_model.run_import("Engagement,Period\r\nENG-1,2026-10\r\n", {})
    assert bad["currentStep"] == "Failed." and "missing Customer" in bad["result"]["details"][0]["localMessageText"]


# ---------------------------------------------------------------- end to end: a real worker, the sandbox over HTTP


def _this_month_book():
    today = timezone.localdate()
    first = today.replace(day=1)
    e = fx.engagement(name="Live engagement", customer_name="Globex", value="20000.00",
                      start=actuals.add_months(first, -2), end=actuals.add_months(first, 3))
    fx.time_entry(e, first, "6.00", "900.00")
    fx.invoice(e, "900.00", period=first, kind="time_and_expense")
    fx.revenue(e, first, "900.00")
    return e


def _file_content() -> bytes:
    obj = SandboxObject.objects.get(system="anaplan", object_type="file")
    return obj.data["content"].encode("latin-1")


@pytest.mark.django_db(transaction=True)
def test_a_refresh_uploads_the_csv_in_chunks_runs_the_import_and_polls_it(sandboxes):
    for i in range(6):
        _this_month_book()
    Connection.objects.filter(slug="anaplan").update(settings={"chunk_bytes": 500, "poll_seconds": 0.05})
    SandboxSystem.objects.filter(system="anaplan").update(settings={"task_polls": 2})

    refresh = services.request_refresh(trigger="on_demand")
    run_worker()

    refresh.refresh_from_db()
    record = SyncRecord.objects.get(pk=refresh.sync_record_id)
    assert record.status == "succeeded", record.message
    assert refresh.status == "succeeded" and refresh.finished_at and refresh.task_id
    window = Window(refresh.period_from, refresh.period_to)
    data, n = actuals.csv_file(window=window)
    assert _file_content() == data  # what Anaplan received is exactly the export, byte for byte
    assert refresh.rows == n == refresh.rows_imported == 6 * 3  # six engagements × three months run so far
    assert SandboxObject.objects.filter(system="anaplan", object_type="actuals_row").count() == n
    calls = list(Attempt.objects.filter(record=record, system="anaplan").values_list("method", "url"))
    chunk_puts = [u for m, u in calls if m == "PUT" and "/chunks/" in u]
    assert len(chunk_puts) == -(-len(data) // 500) > 1
    assert sum(1 for m, u in calls if m == "GET" and "/tasks/" in u) == 3  # IN_PROGRESS twice, then COMPLETE
    assert ("POST", f"/2/0/workspaces/{anaplan_model.WORKSPACE_ID}/models/{anaplan_model.MODEL_ID}/imports/"
                    f"{anaplan_model.IMPORT_ID}/tasks") in calls


@pytest.mark.django_db(transaction=True)
def test_an_unavailable_anaplan_is_retried_and_the_refresh_then_succeeds(sandboxes):
    _this_month_book()
    Connection.objects.filter(slug="anaplan").update(settings={"poll_seconds": 0.05})
    inject("anaplan", fail_next_count=2, fail_next_status=503)

    refresh = services.request_refresh(trigger="schedule")
    run_worker()

    refresh.refresh_from_db()
    assert refresh.status == "succeeded"
    record = SyncRecord.objects.get(pk=refresh.sync_record_id)
    outcomes = list(Attempt.objects.filter(record=record, system="anaplan").values_list("outcome", flat=True))
    assert outcomes.count("transient") == 2
    assert SandboxObject.objects.filter(system="anaplan", object_type="import_task").count() == 1


@pytest.mark.django_db(transaction=True)
def test_an_import_task_that_fails_as_a_whole_is_retried_with_a_new_upload_then_succeeds(sandboxes):
    _this_month_book()
    Connection.objects.filter(slug="anaplan").update(settings={"poll_seconds": 0.05})
    SandboxSystem.objects.filter(system="anaplan").update(settings={"fail_next_tasks": 2})  # the model is busy

    refresh = services.request_refresh(trigger="schedule")
    run_worker()

    refresh.refresh_from_db()
    record = SyncRecord.objects.get(pk=refresh.sync_record_id)
    assert record.status == "succeeded" and refresh.status == "succeeded"
    tasks = SandboxObject.objects.filter(system="anaplan", object_type="import_task").order_by("pk")
    assert [t.data["currentStep"] for t in tasks] == ["Failed.", "Failed.", "Complete."]
    assert refresh.task_id == tasks.last().external_key
    file = SandboxObject.objects.get(system="anaplan", object_type="file")
    assert file.data["uploads"] == 3  # each retry uploads the file again before it runs the import again


@pytest.mark.django_db(transaction=True)
def test_an_import_task_that_keeps_failing_becomes_a_dead_letter_visible_on_the_board(sandboxes, carol):
    _this_month_book()
    Connection.objects.update(circuit_threshold=100)
    Connection.objects.filter(slug="anaplan").update(settings={"poll_seconds": 0.05})
    SandboxSystem.objects.filter(system="anaplan").update(settings={"fail_next_tasks": 100})

    refresh = services.request_refresh(trigger="schedule")
    run_worker()

    record = SyncRecord.objects.get(pk=refresh.sync_record_id)
    assert (record.status, record.reason_code, record.owner_team) == ("dead", "downstream_unavailable",
                                                                     "integration_admin")
    assert "The model is locked by another process" in record.message
    assert SandboxObject.objects.filter(system="anaplan", object_type="import_task").count() == 5  # max_attempts
    client = Client()
    client.force_login(carol)
    html = client.get("/boards/").content.decode()
    assert 'data-state="failed"' in html and "The model is locked by another process" in html


@pytest.mark.django_db(transaction=True)
def test_rejected_rows_hold_the_refresh_for_finance_then_a_resubmission_succeeds(sandboxes, bob):
    _this_month_book()
    Connection.objects.filter(slug="anaplan").update(settings={"poll_seconds": 0.05})
    # the model's time range starts this month: the two earlier months of the engagement are refused
    this_month = f"{timezone.localdate():%Y-%m}"
    SandboxSystem.objects.filter(system="anaplan").update(settings={"timescale": [this_month, "2035-12"]})

    refresh = services.request_refresh(trigger="schedule")
    run_worker()

    refresh.refresh_from_db()
    record = SyncRecord.objects.get(pk=refresh.sync_record_id)
    assert record.status == "held" and record.reason_code == "forecast_rows_rejected"
    assert record.owner_team == "finance_ops" and record.failed_system == "anaplan"
    assert "rejected 2" in record.message and "outside the model's time range" in record.message
    assert "_Line_,_Error_1_" in record.system_message  # the failure dump, as Anaplan gave it
    assert refresh.status == "failed" and "rejected 2" in refresh.error
    assert refresh.result["failureDumpAvailable"] is True
    status = services.board_status()
    assert status.state == "failed" and status.stale and status.good_as_of is None
    assert services.scheduled_refresh() is None  # one open full refresh at a time: nothing new piles up
    client = Client()
    client.force_login(bob)
    assert client.get(f"/records/{record.pk}/").status_code == 200
    board = client.get("/boards/").content.decode()
    assert 'data-state="failed"' in board and "rejected 2" in board

    # the planner extends the model's time range; finance ops resubmits from the start
    SandboxSystem.objects.filter(system="anaplan").update(settings={"timescale": ["2020-01", "2035-12"]})
    sync_services.record_resubmit(record_id=record.pk, actor=bob, expected_version=record.version, from_start=True,
                                  reason="model time range extended")
    run_worker()

    refresh.refresh_from_db()
    assert SyncRecord.objects.get(pk=record.pk).status == "succeeded"
    assert refresh.status == "succeeded" and refresh.error == "" and refresh.rows_imported == refresh.rows
    assert services.board_status().state == "succeeded" and not services.board_status().stale


@pytest.mark.django_db(transaction=True)
def test_an_anaplan_that_stays_down_ends_as_a_dead_letter_shown_as_failed(sandboxes):
    _this_month_book()
    Connection.objects.update(circuit_threshold=100)
    inject("anaplan", fail_next_count=100, fail_next_status=500)

    refresh = services.request_refresh(trigger="schedule")
    run_worker()

    record = SyncRecord.objects.get(pk=refresh.sync_record_id)
    assert record.status == "dead" and record.stage == "import" and record.owner_team == "integration_admin"
    status = services.board_status()
    assert status.state == "failed" and "stayed unavailable" in status.message


@pytest.mark.django_db(transaction=True)
def test_a_wrong_token_holds_the_refresh_with_anaplans_message(sandboxes):
    _this_month_book()
    Connection.objects.filter(slug="anaplan").update(credentials={"access_token": "wrong"})

    refresh = services.request_refresh(trigger="schedule")
    run_worker()

    record = SyncRecord.objects.get(pk=refresh.sync_record_id)
    assert record.status == "held" and record.reason_code == "forecast_import_error"
    assert "Authentication credentials not found or invalid" in record.message


# ---------------------------------------------------------------- the board


def _good_refresh(hours_ago: float) -> ForecastRefresh:
    at = timezone.now() - timedelta(hours=hours_ago)
    r = ForecastRefresh.objects.create(trigger="schedule", status="succeeded", as_of=at, finished_at=at, rows=12,
                                       rows_imported=12, task_id="T1")
    ForecastRefresh.objects.filter(pk=r.pk).update(created_at=at)
    return r


def test_the_board_shows_a_stale_forecast(connections, bob, django_assert_num_queries):
    _good_refresh(hours_ago=30)  # the policy's default: stale after 26 h
    with django_assert_num_queries(1):  # the last refresh, the last good one and the policy: one query
        status = services.board_status()
    assert (status.state, status.stale, status.age_hours, status.stale_after_hours) == ("succeeded", True, 30.0, 26)
    client = Client()
    client.force_login(bob)

    html = client.get("/boards/").content.decode()

    assert 'data-testid="forecast-status" data-state="succeeded" data-stale="yes"' in html
    assert "the forecast's figures are 30.0 h old" in html and "over the 26 h" in html
    assert 'data-testid="forecast-refresh"' in html  # finance ops may refresh it now


def test_the_board_shows_a_fresh_forecast_and_hides_the_button_from_a_viewer(connections, dave):
    _good_refresh(hours_ago=2)
    client = Client()
    client.force_login(dave)

    html = client.get("/boards/").content.decode()

    assert 'data-stale="no"' in html and "Fresh: figures as of" in html and "2.0 h old" in html
    assert 'data-testid="forecast-refresh"' not in html


def test_the_board_with_no_refresh_yet_says_so(connections, bob):
    client = Client()
    client.force_login(bob)
    html = client.get("/boards/").content.decode()
    assert "No refresh has run yet." in html and "no full refresh has succeeded yet" in html


def test_refresh_now_is_post_only_permission_checked_audited_and_not_doubled(connections, bob, dave, alice):
    client = Client()
    client.force_login(dave)
    assert client.post("/forecast/refresh/").status_code == 403  # a viewer may not
    client.force_login(alice)
    assert client.post("/forecast/refresh/").status_code == 403  # PMO: not their tool
    client.force_login(bob)
    assert client.get("/forecast/refresh/").status_code == 405

    response = client.post("/forecast/refresh/", {"reason": "month-end close"})

    assert response.status_code == 302 and response["Location"] == "/boards/"
    refresh = ForecastRefresh.objects.get()
    record = SyncRecord.objects.get(pk=refresh.sync_record_id)
    assert (refresh.trigger, refresh.requested_by, record.workflow, record.status) == (
        "on_demand", bob, "actuals_to_forecast", "pending")
    entry = AuditEntry.objects.get()
    assert (entry.actor, entry.action, entry.record, entry.reason) == (bob, "forecast_refresh", record,
                                                                      "month-end close")
    # pressed again while it is queued: nothing new
    response = client.post("/forecast/refresh/", follow=True)
    assert ForecastRefresh.objects.count() == 1
    assert "already under way" in response.content.decode()
    html = client.get("/boards/").content.decode()
    assert 'data-state="queued"' in html


def test_the_scheduled_job_queues_one_refresh_and_logs_its_run(connections):
    from apps.forecast.jobs import scheduled_refresh
    from apps.sync.models import SyncRun

    assert scheduled_refresh()["queued"] == 1
    assert scheduled_refresh() == {"skipped_open_refresh": 1}
    assert ForecastRefresh.objects.count() == 1
    assert list(SyncRun.objects.values_list("kind", "status")) == [("forecast:schedule", "completed")] * 2


def test_the_schedule_starts_no_second_refresh_while_one_is_open_or_just_succeeded(connections):
    """demo_setup queues a refresh, and rqcron runs the hourly job at once when the scheduler starts: one refresh."""
    from apps.forecast.jobs import scheduled_refresh

    first = services.request_refresh(trigger="on_demand")
    assert scheduled_refresh() == {"skipped_open_refresh": 1}  # the worker has not finished it yet
    now = timezone.now()
    ForecastRefresh.objects.filter(pk=first.pk).update(status="succeeded", as_of=now, finished_at=now)
    SyncRecord.objects.filter(pk=first.sync_record_id).update(status="succeeded")
    assert scheduled_refresh() == {"skipped_fresh_refresh": 1}  # it has: the figures are fresh
    assert ForecastRefresh.objects.count() == 1

    # an hour later the schedule refreshes again
    later = now + timedelta(minutes=59)
    refresh, outcome = services.schedule(now=later)
    assert outcome == "queued" and refresh.trigger == "schedule"
    assert ForecastRefresh.objects.count() == 2


def test_without_a_forecast_connection_the_hourly_job_records_a_skip_on_the_board_and_does_not_fail(connections,
                                                                                                     bob):
    from apps.forecast.jobs import scheduled_refresh
    from apps.sync.models import SyncRun

    Connection.objects.filter(role="forecast").update(enabled=False)

    assert scheduled_refresh() == {"skipped_not_configured": 1}  # no exception: no failed RQ job
    assert scheduled_refresh() == {"skipped_not_configured": 1}
    assert list(SyncRun.objects.values_list("kind", "status")) == [("forecast:schedule", "completed")] * 2
    [skip] = ForecastRefresh.objects.all()  # one row while it lasts, brought up to date
    assert (skip.status, skip.trigger, skip.sync_record_id) == ("skipped", "schedule", None)
    assert "No enabled forecasting connection" in skip.error and skip.finished_at >= skip.started_at
    assert not SyncRecord.objects.exists()
    status = services.board_status()
    assert (status.state, status.stale) == ("skipped", True) and "No enabled forecasting" in status.message
    client = Client()
    client.force_login(bob)
    html = client.get("/boards/").content.decode()
    assert 'data-state="skipped"' in html and "No enabled forecasting connection" in html

    # once the connection is there, the next hourly run refreshes
    Connection.objects.filter(role="forecast").update(enabled=True)
    assert scheduled_refresh()["queued"] == 1
    assert services.board_status().state == "queued"
