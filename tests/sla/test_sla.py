"""SLAs: business-time arithmetic (exact), the default policies, evaluation of flow and exception clocks with a
frozen `now`, legal-entity calendars with holidays, notifications sent exactly once per threshold crossed, the
board selectors, and a bounded number of queries whatever the number of records."""

from __future__ import annotations

import itertools
import json
import threading
from datetime import UTC, date, datetime, time, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth.models import Group, User
from django.core import mail
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.canonical.models import LegalEntity
from apps.sla import clock, selectors, services
from apps.sla.clock import Calendar, add_business_time, business_minutes_between
from apps.sla.models import BusinessCalendar, EntityCalendar, Holiday, SlaPolicy
from apps.sync.models import SyncRecord

BERLIN = ZoneInfo("Europe/Berlin")
_seq = itertools.count(1)


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def berlin(*args) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


# ----------------------------------------------------------------------------------------------- the clock


WEEKDAY = Calendar()  # Mon–Fri 09:00–17:00 UTC


def test_friday_afternoon_plus_two_business_hours_is_monday_ten():
    # 2025-03-14 is a Friday
    assert add_business_time(utc(2025, 3, 14, 16, 0), 120, WEEKDAY) == utc(2025, 3, 17, 10, 0)


@pytest.mark.parametrize("start, minutes, expected", [
    (utc(2025, 3, 17, 7, 0), 60, utc(2025, 3, 17, 10, 0)),  # before hours: the clock starts at 09:00
    (utc(2025, 3, 17, 18, 30), 30, utc(2025, 3, 18, 9, 30)),  # after hours: next morning
    (utc(2025, 3, 15, 12, 0), 30, utc(2025, 3, 17, 9, 30)),  # Saturday: Monday morning
    (utc(2025, 3, 14, 16, 0), 60, utc(2025, 3, 14, 17, 0)),  # ends exactly at closing: that closing time
    (utc(2025, 3, 17, 9, 0), 480, utc(2025, 3, 17, 17, 0)),  # one business day
    (utc(2025, 3, 14, 12, 0), 3 * 480, utc(2025, 3, 19, 12, 0)),  # three business days over a weekend
    (utc(2025, 3, 17, 9, 0), 0.5, utc(2025, 3, 17, 9, 0, 30)),  # fractions of a minute
    (utc(2025, 3, 15, 12, 0), 0, utc(2025, 3, 15, 12, 0)),  # adding nothing changes nothing
    (utc(2025, 3, 14, 16, 0), timedelta(hours=2), utc(2025, 3, 17, 10, 0)),  # a timedelta works too
])
def test_add_business_time(start, minutes, expected):
    assert add_business_time(start, minutes, WEEKDAY) == expected


def test_holiday_is_skipped():
    cal = Calendar(holidays=frozenset({date(2025, 3, 17)}))  # Monday off
    assert add_business_time(utc(2025, 3, 14, 16, 0), 120, cal) == utc(2025, 3, 18, 10, 0)
    assert business_minutes_between(utc(2025, 3, 14, 16, 0), utc(2025, 3, 18, 10, 0), cal) == 120


def test_input_in_another_timezone_gives_the_same_instant():
    start = datetime(2025, 3, 14, 12, 0, tzinfo=ZoneInfo("America/New_York"))  # 16:00 UTC (EDT since 9 March)
    assert add_business_time(start, 120, WEEKDAY) == utc(2025, 3, 17, 10, 0)


def test_dst_spring_forward_in_berlin():
    cal = Calendar(timezone="Europe/Berlin")
    # Friday 28 March 2025 16:00 CET (UTC+1); the clocks go forward on Sunday 30 March
    start = berlin(2025, 3, 28, 16, 0)
    assert start == utc(2025, 3, 28, 15, 0)
    due = add_business_time(start, 120, cal)
    assert due == berlin(2025, 3, 31, 10, 0) == utc(2025, 3, 31, 8, 0)  # Monday 10:00 CEST (UTC+2)
    assert business_minutes_between(start, due, cal) == 120
    # the working day after the change still has its 8 hours
    assert add_business_time(berlin(2025, 3, 31, 9, 0), 480, cal) == utc(2025, 3, 31, 15, 0)


def test_dst_fall_back_in_berlin():
    cal = Calendar(timezone="Europe/Berlin")
    start = berlin(2025, 10, 24, 16, 0)  # Friday, CEST
    assert start == utc(2025, 10, 24, 14, 0)
    assert add_business_time(start, 120, cal) == utc(2025, 10, 27, 9, 0)  # Monday 10:00 CET (UTC+1)


def test_all_day_calendar_counts_real_hours_on_dst_days():
    cal = Calendar(timezone="Europe/Berlin", work_start=time(0), work_end=time(0), weekdays=frozenset(range(7)))
    assert business_minutes_between(berlin(2025, 3, 30), berlin(2025, 3, 31), cal) == 23 * 60
    assert business_minutes_between(berlin(2025, 10, 26), berlin(2025, 10, 27), cal) == 25 * 60
    assert add_business_time(berlin(2025, 3, 30), 23 * 60, cal) == berlin(2025, 3, 31)


def test_business_minutes_between():
    assert business_minutes_between(utc(2025, 3, 14, 16, 0), utc(2025, 3, 17, 10, 0), WEEKDAY) == 120
    assert business_minutes_between(utc(2025, 3, 17, 10, 0), utc(2025, 3, 14, 16, 0), WEEKDAY) == -120
    assert business_minutes_between(utc(2025, 3, 15, 0, 0), utc(2025, 3, 16, 23, 0), WEEKDAY) == 0  # weekend
    assert business_minutes_between(utc(2025, 3, 17, 9, 0), utc(2025, 3, 17, 9, 0, 30), WEEKDAY) == 0.5
    assert business_minutes_between(utc(2025, 3, 10, 0, 0), utc(2025, 3, 24, 0, 0), WEEKDAY) == 10 * 480


@pytest.mark.parametrize("minutes", [1, 59, 60, 61, 239, 240, 479, 480, 481, 1440, 4321])
@pytest.mark.parametrize("start", [utc(2025, 3, 14, 16, 59), utc(2025, 3, 15, 3, 0), utc(2025, 3, 17, 12, 30)])
def test_add_and_between_agree(start, minutes):
    cal = Calendar(timezone="Europe/Berlin", holidays=frozenset({date(2025, 3, 19)}))
    assert business_minutes_between(start, add_business_time(start, minutes, cal), cal) == minutes


def test_clock_refuses_nonsense():
    with pytest.raises(ValueError):
        add_business_time(datetime(2025, 3, 14, 16, 0), 60, WEEKDAY)  # naive
    with pytest.raises(ValueError):
        add_business_time(utc(2025, 3, 14, 16, 0), -1, WEEKDAY)
    with pytest.raises(ValueError):
        Calendar(weekdays=frozenset())
    with pytest.raises(ValueError):
        Calendar(work_start=time(17), work_end=time(9))
    with pytest.raises(Exception):
        Calendar(timezone="Mars/Olympus_Mons")


# ------------------------------------------------------------------------------------ defaults, admin rights


def test_default_policies_and_calendar_exist(db):
    rows = {(p.kind, p.workflow, p.stage, p.priority): (p.duration_minutes, p.business_time, p.due_soon_percent)
            for p in SlaPolicy.objects.filter(active=True)}
    assert rows == {
        ("flow", "quote_to_project", "psa_project", 0): (240, True, 75),
        ("flow", "time_to_billing", "", 0): (960, True, 75),
        ("flow", "milestone_to_invoice", "", 0): (480, True, 75),
        ("flow", "invoice_payment_to_crm", "", 0): (60, False, 75),
        ("exception", "", "", 1): (240, False, 75),
        ("exception", "", "", 2): (480, True, 75),
        ("exception", "", "", 3): (1440, True, 75),
    }
    default = BusinessCalendar.objects.get(is_default=True)
    assert (default.timezone, default.work_start, default.work_end, default.working_weekdays) == \
        ("UTC", time(9), time(17), [0, 1, 2, 3, 4])


def test_integration_admin_may_edit_sla_policies(db):
    group = Group.objects.get(name="integration_admin")
    codes = set(group.permissions.filter(content_type__app_label="sla").values_list("codename", flat=True))
    assert {"add_slapolicy", "change_slapolicy", "view_slapolicy"} <= codes
    user = User.objects.create_user("ian", is_staff=True)
    user.groups.add(group)
    assert user.has_perms(["sla.add_slapolicy", "sla.change_slapolicy", "sla.view_slapolicy"])


def test_policy_validation(db):
    bad = SlaPolicy(name="x", kind="flow", workflow="quote_to_project", stage="no_such_stage", duration_minutes=60)
    with pytest.raises(ValidationError):
        bad.full_clean()
    with pytest.raises(ValidationError):
        SlaPolicy(name="x", kind="exception", stage="validate", duration_minutes=60).full_clean()
    cal = BusinessCalendar(name="Bad", timezone="Nowhere/Nope", work_start=time(9), work_end=time(8),
                           working_weekdays=[0])
    with pytest.raises(ValidationError) as exc:
        cal.full_clean()
    assert {"timezone", "work_end"} <= set(exc.value.message_dict)


def test_admin_pages_render(firm, client):
    admin = User.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(admin)
    for path in ["/admin/sla/slapolicy/", "/admin/sla/slapolicy/add/", "/admin/sla/businesscalendar/",
                 "/admin/sla/businesscalendar/add/", "/admin/sla/holiday/", "/admin/sla/entitycalendar/",
                 f"/admin/sla/businesscalendar/{BusinessCalendar.objects.get(is_default=True).pk}/change/"]:
        assert client.get(path).status_code == 200, path
    de01 = LegalEntity.objects.get(code="DE01")
    resp = client.post("/admin/sla/businesscalendar/add/", {
        "name": "Germany", "timezone": "Europe/Berlin", "work_start": "08:30", "work_end": "17:30",
        "working_weekdays": ["0", "1", "2", "3", "4"], "description": "",
        "holidays-TOTAL_FORMS": "1", "holidays-INITIAL_FORMS": "0",
        "holidays-0-date": "2025-12-25", "holidays-0-name": "1. Weihnachtstag",
        "entities-TOTAL_FORMS": "1", "entities-INITIAL_FORMS": "0", "entities-0-legal_entity": str(de01.pk),
    })
    assert resp.status_code == 302, resp.content.decode()[:2000]
    cal = BusinessCalendar.objects.get(name="Germany")
    assert (cal.working_weekdays, cal.work_start, cal.is_default) == ([0, 1, 2, 3, 4], time(8, 30), False)
    assert list(cal.holidays.values_list("date", flat=True)) == [date(2025, 12, 25)]
    assert EntityCalendar.objects.get(legal_entity=de01).calendar == cal


# ------------------------------------------------------------------------------------------------ evaluate


def make(connections, *, workflow="quote_to_project", stage="validate", status="pending", priority=2,
         created_at, held_at=None, legal_entity="US01", owner_team="pmo", title="", **extra) -> SyncRecord:
    n = next(_seq)
    record = SyncRecord.objects.create(
        workflow=workflow, stage=stage, status=status, priority=priority, owner_team=owner_team,
        source_connection=connections["hubspot"], source_key=f"deal:{n}", title=title or f"Deal {n}",
        current_payload={"legal_entity": legal_entity} if legal_entity is not None else {}, **extra)
    SyncRecord.objects.filter(pk=record.pk).update(created_at=created_at, held_at=held_at,
                                                   updated_at=held_at or created_at)
    record.refresh_from_db()
    return record


def sla(record) -> tuple:
    record.refresh_from_db()
    return record.sla_due_at, record.sla_state


MON = utc(2025, 3, 17, 9, 0)  # Monday 09:00 UTC


def test_flow_clock_ok_due_soon_breached(connections):
    r = make(connections, stage="validate", created_at=MON)
    services.evaluate(now=MON + timedelta(hours=2, minutes=59))
    assert sla(r) == (utc(2025, 3, 17, 13, 0), "ok")
    services.evaluate(now=MON + timedelta(hours=3))  # 75 % of 4 h
    assert sla(r) == (utc(2025, 3, 17, 13, 0), "due_soon")
    services.evaluate(now=utc(2025, 3, 17, 13, 0))
    assert sla(r) == (utc(2025, 3, 17, 13, 0), "breached")


def test_closed_won_without_psa_project_after_four_business_hours(connections):
    """Nothing errored: the record is still pending / retrying at the PSA stage; the SLA still shows it."""
    fri = utc(2025, 3, 14, 15, 0)
    pending = make(connections, stage="psa_project", status="pending", created_at=fri)
    retrying = make(connections, stage="erp_customer", status="retrying", created_at=fri)
    in_progress = make(connections, stage="psa_project", status="in_progress", created_at=fri)
    done = make(connections, stage="erp_project", status="in_progress", created_at=fri)  # PSA project exists
    succeeded = make(connections, stage="crm_writeback", status="succeeded", created_at=fri)
    result = services.evaluate(now=utc(2025, 3, 17, 11, 0))  # Friday 15:00 + 4 business hours = Monday 11:00
    for r in (pending, retrying, in_progress):
        assert sla(r) == (utc(2025, 3, 17, 11, 0), "breached")
    assert sla(done) == (None, "ok")
    assert sla(succeeded) == (None, "ok")
    assert result["breached"] == 3 and result["open"] == 4


def test_exception_clocks_by_priority(connections):
    fri16 = utc(2025, 3, 14, 16, 0)
    old = utc(2025, 3, 1, 9, 0)
    # past the PSA stage: only the exception clock runs
    p1 = make(connections, stage="crm_writeback", status="held", priority=1, created_at=old, held_at=fri16)
    p2 = make(connections, stage="crm_writeback", status="held", priority=2, created_at=old, held_at=fri16)
    p3 = make(connections, stage="crm_writeback", status="dead", priority=3, created_at=old, held_at=fri16)
    services.evaluate(now=utc(2025, 3, 14, 19, 0))
    assert sla(p1) == (utc(2025, 3, 14, 20, 0), "due_soon")  # P1: 4 clock hours
    assert sla(p2) == (utc(2025, 3, 17, 16, 0), "ok")  # P2: 1 business day
    assert sla(p3) == (utc(2025, 3, 19, 16, 0), "ok")  # P3: 3 business days
    services.evaluate(now=utc(2025, 3, 17, 16, 0))
    assert sla(p1)[1] == "breached" and sla(p2)[1] == "breached" and sla(p3)[1] == "ok"


def test_held_record_takes_the_earliest_of_flow_and_exception_clock(connections):
    # held before the PSA project exists: flow clock (due 13:00) and P2 exception clock (due Tuesday 11:00)
    a = make(connections, stage="psa_project", status="held", priority=2, created_at=MON,
             held_at=utc(2025, 3, 17, 11, 0))
    services.evaluate(now=utc(2025, 3, 17, 12, 0))
    assert sla(a) == (utc(2025, 3, 17, 13, 0), "due_soon")  # flow: 3 of 4 hours gone
    # a 30-minute policy for quote_to_project P1 is more specific than the generic P1 one (4 clock hours)
    SlaPolicy.objects.create(name="Q2P P1", kind="exception", workflow="quote_to_project", priority=1,
                             duration_minutes=30, business_time=False)
    b = make(connections, stage="validate", status="held", priority=1, created_at=MON,
             held_at=utc(2025, 3, 17, 9, 10))
    services.evaluate(now=utc(2025, 3, 17, 9, 35))
    assert sla(b) == (utc(2025, 3, 17, 9, 40), "due_soon")  # exception: 25 of 30 minutes gone; flow is ok
    clocks = services.assess_record(b, now=utc(2025, 3, 17, 9, 35))
    assert [(c.policy.name, c.due_at, c.state) for c in clocks] == [
        ("Closed-won → project created in PSA", utc(2025, 3, 17, 13, 0), "ok"),
        ("Q2P P1", utc(2025, 3, 17, 9, 40), "due_soon")]


def test_dead_letter_without_hold_time_uses_its_last_change(connections):
    r = make(connections, stage="crm_writeback", status="dead", priority=1, created_at=utc(2025, 3, 1, 9, 0))
    SyncRecord.objects.filter(pk=r.pk).update(updated_at=utc(2025, 3, 17, 10, 0))
    services.evaluate(now=utc(2025, 3, 17, 11, 0))
    assert sla(r) == (utc(2025, 3, 17, 14, 0), "ok")


def test_other_workflows_run_until_the_record_succeeds(connections):
    t = make(connections, workflow="time_to_billing", stage="post", created_at=MON)
    i = make(connections, workflow="invoice_payment_to_crm", stage="crm_update", created_at=utc(2025, 3, 15, 10, 0))
    unknown = make(connections, workflow="no_policy_for_this", stage="x", created_at=MON)
    services.evaluate(now=utc(2025, 3, 18, 9, 0))
    assert sla(t) == (utc(2025, 3, 18, 17, 0), "ok")  # 2 business days, half of it gone
    assert sla(i) == (utc(2025, 3, 15, 11, 0), "breached")  # 1 clock hour, weekends count
    assert sla(unknown) == (None, "ok")


def test_legal_entity_calendar_with_holidays(connections):
    germany = BusinessCalendar.objects.create(name="Germany", timezone="Europe/Berlin")
    Holiday.objects.create(calendar=germany, date=date(2025, 4, 18), name="Karfreitag")
    Holiday.objects.create(calendar=germany, date=date(2025, 4, 21), name="Ostermontag")
    EntityCalendar.objects.create(legal_entity=LegalEntity.objects.get(code="DE01"), calendar=germany)
    thu = berlin(2025, 4, 17, 16, 0)  # 14:00 UTC, Maundy Thursday
    de = make(connections, stage="validate", created_at=thu, legal_entity="DE01")
    us = make(connections, stage="validate", created_at=thu, legal_entity="US01")  # no calendar: default (UTC)
    nobody = make(connections, stage="validate", created_at=thu, legal_entity=None)
    stranger = make(connections, stage="validate", created_at=thu, legal_entity="XX99")
    services.evaluate(now=utc(2025, 4, 22, 9, 30))
    # DE01: Thu 16–17 (1 h), Good Friday and Easter Monday off, Tuesday 09:00–12:00 Berlin (3 h) → 12:00 CEST
    assert sla(de) == (berlin(2025, 4, 22, 12, 0), "due_soon")
    assert sla(de)[0] == utc(2025, 4, 22, 10, 0)
    # the default calendar knows no German holiday: Thu 14–17 UTC (3 h) + Friday 09–10 UTC
    for r in (us, nobody, stranger):
        assert sla(r) == (utc(2025, 4, 18, 10, 0), "breached")


def test_only_changed_rows_are_written_and_closed_records_are_reset(connections):
    r = make(connections, stage="validate", created_at=MON)
    closed = make(connections, stage="crm_writeback", status="succeeded", created_at=MON)
    SyncRecord.objects.filter(pk=closed.pk).update(sla_state="breached", sla_due_at=MON, sla_notified_state="breached")
    first = services.evaluate(now=MON + timedelta(hours=1))
    assert (first["changed"], first["reset"]) == (1, 1)
    assert (closed.__class__.objects.values_list("sla_state", "sla_due_at", "sla_notified_state").get(pk=closed.pk)
            == ("ok", None, ""))
    again = services.evaluate(now=MON + timedelta(hours=1, minutes=1))
    assert (again["changed"], again["reset"]) == (0, 0)
    SyncRecord.objects.filter(pk=r.pk).update(status="succeeded", stage="crm_writeback")
    last = services.evaluate(now=MON + timedelta(hours=2))
    assert (last["changed"], last["reset"]) == (0, 1)
    assert sla(r) == (None, "ok")


def test_policy_changes_apply_at_the_next_run(connections):
    r = make(connections, stage="validate", created_at=MON)
    services.evaluate(now=MON + timedelta(hours=5))
    assert sla(r)[1] == "breached"
    SlaPolicy.objects.filter(workflow="quote_to_project").update(duration_minutes=480)
    services.evaluate(now=MON + timedelta(hours=5))
    assert sla(r) == (utc(2025, 3, 17, 17, 0), "ok")
    SlaPolicy.objects.filter(workflow="quote_to_project").update(active=False)
    services.evaluate(now=MON + timedelta(hours=5))
    assert sla(r) == (None, "ok")


def test_a_record_a_worker_moved_on_meanwhile_is_not_overwritten(connections):
    r = make(connections, stage="validate", created_at=MON)
    changes = [(r.pk, "pending", "validate", None, MON, "breached", "", "breached", True)]
    SyncRecord.objects.filter(pk=r.pk).update(status="succeeded")  # the worker got there first
    assert services._write(changes) == (0, [])
    assert sla(r) == (None, "ok")


# ------------------------------------------------------------------------------------------- notifications


@pytest.fixture
def team_members(roles):
    def user(name, group, email, active=True):
        u = User.objects.create_user(name, email=email, is_active=active)
        u.groups.add(Group.objects.get(name=group))
        return u

    user("alice", "pmo", "alice@example.com")
    user("anna", "pmo", "")  # no e-mail: cannot be told
    user("arno", "pmo", "arno@example.com", active=False)  # left the firm
    user("bob", "finance_ops", "bob@example.com")


@pytest.fixture
def webhook():
    """A Slack-like incoming webhook on 127.0.0.1 that records what it is sent."""
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, self.headers["Content-Type"], json.loads(body)))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/sla", received
    server.shutdown()
    server.server_close()


def test_notified_once_per_transition_per_team(connections, team_members, settings, webhook):
    url, received = webhook
    settings.HANDOFF_SLA_WEBHOOK_URL = url
    a = make(connections, stage="validate", created_at=MON, title="Acme rollout")  # breached at 13:00
    b = make(connections, stage="validate", created_at=MON + timedelta(hours=1), title="Bluefin")  # soon at 13:00
    c = make(connections, stage="crm_writeback", status="held", priority=1, created_at=MON, held_at=MON,
             owner_team="finance_ops", title="Contoso invoice")  # P1 4 h: breached at 13:00
    ok = make(connections, stage="validate", created_at=MON + timedelta(hours=3), title="Fresh")

    result = services.evaluate(now=utc(2025, 3, 17, 13, 0))
    assert (result["notified"], result["emails"], result["webhooks"]) == (3, 2, 1)
    by_to = {tuple(m.to): m for m in mail.outbox}
    assert set(by_to) == {("alice@example.com",), ("bob@example.com",)}
    pmo = by_to[("alice@example.com",)]
    assert pmo.subject == "[Handoff] SLA: 1 breached and 1 due soon — PMO"
    assert f"#{a.pk} Acme rollout" in pmo.body and f"#{b.pk} Bluefin" in pmo.body
    assert pmo.body.index("Acme") < pmo.body.index("Bluefin")  # breached first
    assert "Contoso" not in pmo.body and "Fresh" not in pmo.body
    assert f"/records/{a.pk}/" in pmo.body
    fin = by_to[("bob@example.com",)]
    assert fin.subject == "[Handoff] SLA: 1 breached — Finance ops" and f"#{c.pk} Contoso invoice" in fin.body
    path, ctype, payload = received[0]
    assert path == "/hooks/sla" and ctype == "application/json" and set(payload) == {"text"}
    assert "Acme rollout" in payload["text"] and "Contoso invoice" in payload["text"]
    assert {r.pk: r.sla_notified_state for r in SyncRecord.objects.filter(pk__in=[a.pk, b.pk, c.pk, ok.pk])} == \
        {a.pk: "breached", b.pk: "due_soon", c.pk: "breached", ok.pk: ""}

    # the same states again: nothing new to say
    again = services.evaluate(now=utc(2025, 3, 17, 13, 1))
    assert again["notified"] == 0 and len(mail.outbox) == 2 and len(received) == 1

    # Bluefin now breaches, Fresh becomes due soon: one PMO e-mail listing just those two
    services.evaluate(now=utc(2025, 3, 17, 15, 0))
    assert len(mail.outbox) == 3 and len(received) == 2
    third = mail.outbox[2]
    assert third.to == ["alice@example.com"] and third.subject == "[Handoff] SLA: 1 breached and 1 due soon — PMO"
    assert "Bluefin" in third.body and "Fresh" in third.body and "Acme" not in third.body
    services.evaluate(now=utc(2025, 3, 17, 15, 0))
    assert len(mail.outbox) == 3

    # the held record is resolved and held again later: a new clock, notified afresh when it crosses
    SyncRecord.objects.filter(pk=c.pk).update(status="pending")
    services.evaluate(now=utc(2025, 3, 17, 15, 1))
    c.refresh_from_db()
    assert (c.sla_state, c.sla_notified_state) == ("ok", "")
    SyncRecord.objects.filter(pk=c.pk).update(status="held", held_at=utc(2025, 3, 17, 15, 2))
    services.evaluate(now=utc(2025, 3, 17, 18, 2))  # 3 of 4 hours: due soon (and Fresh breaches meanwhile)
    latest = {m.to[0]: m.subject for m in mail.outbox[3:]}
    assert latest == {"bob@example.com": "[Handoff] SLA: 1 due soon — Finance ops",
                      "alice@example.com": "[Handoff] SLA: 1 breached — PMO"}


def test_webhook_failure_is_logged_not_raised(connections, team_members, settings):
    settings.HANDOFF_SLA_WEBHOOK_URL = "http://127.0.0.1:9/nothing-listens-here"
    make(connections, stage="validate", created_at=MON)
    result = services.evaluate(now=utc(2025, 3, 17, 14, 0))
    assert (result["notified"], result["emails"], result["webhooks"]) == (1, 1, 0)
    assert services.evaluate(now=utc(2025, 3, 17, 14, 1))["notified"] == 0  # still: once


def test_no_webhook_configured_and_team_without_address(connections, roles, settings):
    settings.HANDOFF_SLA_WEBHOOK_URL = ""
    r = make(connections, stage="validate", created_at=MON)
    result = services.evaluate(now=utc(2025, 3, 17, 14, 0))
    assert (result["notified"], result["emails"], result["webhooks"]) == (1, 0, 0)
    assert mail.outbox == []
    r.refresh_from_db()
    assert r.sla_notified_state == "breached"


def test_notified_state_is_claimed_once_even_by_concurrent_runs(connections):
    r = make(connections, stage="validate", created_at=MON)
    change = [(r.pk, "pending", "validate", None, MON, "breached", "", "breached", True)]
    assert services._write(change) == (1, [r.pk])
    assert services._write(change) == (0, [])  # a second run with the same reading claims nothing


# --------------------------------------------------------------------------------- selectors, cost, the job


def test_selectors(connections, django_assert_num_queries):
    for stage in ("validate", "validate", "psa_project"):
        make(connections, stage=stage, created_at=MON)
    make(connections, stage="validate", created_at=MON + timedelta(hours=3))
    make(connections, stage="crm_writeback", status="held", priority=3, created_at=MON, held_at=MON)
    make(connections, stage="validate", status="succeeded", created_at=MON)
    services.evaluate(now=utc(2025, 3, 17, 15, 0))
    with django_assert_num_queries(1):
        assert selectors.sla_counts() == {"ok": 1, "due_soon": 1, "breached": 3}
    with django_assert_num_queries(1):
        assert selectors.breaches_by_workflow_stage() == {("quote_to_project", "validate"): 2,
                                                          ("quote_to_project", "psa_project"): 1}
    assert selectors.sla_counts(SyncRecord.objects.filter(stage="psa_project")) == \
        {"ok": 0, "due_soon": 0, "breached": 1}


def _population(connections, n):
    statuses = ["pending", "in_progress", "retrying", "held", "dead", "succeeded"]
    stages = ["validate", "psa_project", "erp_project", "crm_writeback"]
    for i in range(n):
        status = statuses[i % len(statuses)]
        make(connections, workflow="time_to_billing" if i % 7 == 0 else "quote_to_project", stage=stages[i % 4],
             status=status, priority=1 + i % 3, created_at=MON + timedelta(minutes=i),
             held_at=MON + timedelta(minutes=i) if status in ("held", "dead") else None,
             legal_entity=["US01", "DE01", "UK01", None][i % 4], owner_team=["pmo", "finance_ops"][i % 2])


def test_evaluate_uses_a_bounded_number_of_queries(connections, team_members):
    germany = BusinessCalendar.objects.create(name="Germany", timezone="Europe/Berlin")
    Holiday.objects.create(calendar=germany, date=date(2025, 3, 18), name="Feiertag")
    EntityCalendar.objects.create(legal_entity=LegalEntity.objects.get(code="DE01"), calendar=germany)
    counts = {}
    for n in (20, 200):
        SyncRecord.objects.all().delete()
        mail.outbox.clear()
        _population(connections, n)
        with CaptureQueriesContext(connection) as ctx:
            result = services.evaluate(now=utc(2025, 3, 19, 12, 0))
        assert result["breached"] > 0 and result["notified"] > 0 and len(mail.outbox) == 2
        counts[n] = len(ctx.captured_queries)
    assert counts[20] == counts[200] <= 15, counts


def test_job_and_schedule(connections):
    from rq import cron as rq_cron

    import importlib

    import config.cron  # registers the scheduled jobs

    importlib.reload(config.cron)  # another test may have cleared rq's registry since the first import
    from apps.sla.jobs import evaluate_sla

    entries = [e for e in rq_cron._job_data_registry if e["name"] == "sla"]
    assert entries and entries[-1]["func"] is evaluate_sla
    assert (entries[-1]["queue_name"], entries[-1]["interval"]) == ("default", 60)
    make(connections, stage="validate", created_at=utc(2020, 1, 6, 9, 0))
    assert evaluate_sla()["breached"] == 1


def test_a_calendar_without_working_time_skips_its_records_not_the_run(connections):
    mondays_only = BusinessCalendar.objects.create(name="Mondays", working_weekdays=[0])
    Holiday.objects.bulk_create([Holiday(calendar=mondays_only, date=date(2025, 3, 17) + timedelta(weeks=w),
                                         name="closed") for w in range(600)])
    EntityCalendar.objects.create(legal_entity=LegalEntity.objects.get(code="UK01"), calendar=mondays_only)
    broken = make(connections, stage="validate", created_at=MON, legal_entity="UK01")
    fine = make(connections, stage="validate", created_at=MON, legal_entity="US01")
    result = services.evaluate(now=utc(2025, 3, 17, 14, 0))
    assert result["errors"] == 1 and result["breached"] == 1
    assert sla(fine) == (utc(2025, 3, 17, 13, 0), "breached") and sla(broken) == (None, "ok")


def test_default_calendar_fallback_when_none_is_marked_default(connections):
    BusinessCalendar.objects.update(is_default=False)
    ev = services.Evaluator.load()
    assert ev.default_calendar == clock.DEFAULT_CALENDAR
