"""Manual sync runs (the sweeper and a queue drained now, integration admins only, POST with CSRF) and the
connections page: health numbers, no stored secret shown, pause / resume, rotating the HubSpot secret, sandbox
fault injection — every admin action audited and refused to PMO analysts and viewers."""

from __future__ import annotations

import json
from datetime import timedelta

import django_rq
import pytest
from django.test import Client
from django.utils import timezone

from apps.connectors.hubspot import inbound as hubspot_inbound
from apps.connectors.callbacks import Rejected
from apps.console import kpis
from apps.sandbox.models import SandboxSystem
from apps.sync.models import AuditEntry, Connection, InboundEvent

from tests.builders import attempts, sync_record
from tests.callbacks import HUBSPOT_SECRET, HUBSPOT_URI, deal_event, hubspot_headers, now_ms, post_hubspot
from tests.pages import row_cells

pytestmark = pytest.mark.django_db


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
    sync_record(connections, status="pending", priority=1, next_attempt_at=timezone.now() - timedelta(seconds=5))
    client.force_login(carol)

    resp = client.post("/runs/manual/", {"action": "sweep"}, follow=True)

    assert resp.redirect_chain == [("/runs/", 302)]
    assert "Sweeper ran: woke records:high." in resp.content.decode()
    assert django_rq.get_queue("high").count == 1
    entry = AuditEntry.objects.get(action="manual_run")
    assert entry.actor == carol and entry.record is None and entry.after == {
        "run": "sweep", "woken": {"records:high": True}}


def test_run_the_sweeper_when_nothing_is_due(client, carol, connections):
    sync_record(connections, status="held", held_at=timezone.now())
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
    record = sync_record(connections, status="held", held_at=now)
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


def test_rotating_the_hubspot_secret_shows_it_once_and_the_old_signature_stops_verifying(client, carol, connections):
    hub = connections["hubspot"]
    assert post_hubspot(Client(), [deal_event(event_id=1)]).status_code == 202
    body, ts = json.dumps([deal_event(event_id=2)]).encode(), now_ms()
    assert post_hubspot(Client(), body, ts=ts).status_code == 202
    client.force_login(carol)

    resp = client.post(f"/connections/{hub.pk}/rotate-secret/")

    assert resp.status_code == 200 and resp["Cache-Control"] == "no-store"
    hub.refresh_from_db()
    new = hub.inbound_secret
    assert new != HUBSPOT_SECRET and len(new) >= 43
    html = resp.content.decode()
    assert 'data-testid="new-secret"' in html and html.count(new) == 1
    # the old signature no longer verifies; the new secret does
    with pytest.raises(Rejected):
        hubspot_inbound.verify(hub, method="POST", uris=[HUBSPOT_URI], body=body,
                       headers=hubspot_headers(HUBSPOT_SECRET, HUBSPOT_URI, body, ts), max_age=300)
    assert post_hubspot(Client(), [deal_event(event_id=3)]).status_code == 401
    assert post_hubspot(Client(), [deal_event(event_id=4)], secret=new).status_code == 202
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
