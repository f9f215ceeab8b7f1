"""Each role exactly its rights, behaviour by behaviour: who may comment, who may be given a record, what the
Django admin lets an integration admin change (and what it never shows back), and that a user who sees
personal data masked cannot confirm it through search. The URL × role table is test_permission_matrix.py."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import User

from apps.sync import bulk, bulk_run, desk
from apps.sync.models import AuditEntry, Connection, SyncRecord

from .conftest import CONSULTANT, TAX_ID

# ---------------------------------------------------------------- the roles


def test_only_the_integration_admin_reads_connections_callbacks_and_runs(world, alice, bob, carol, dave):
    admin_reads = ["sync.view_connection", "sync.view_inboundevent", "sync.view_syncrun"]
    for user in (alice, bob, dave):
        user = User.objects.get(pk=user.pk)
        assert not any(user.has_perm(p) for p in admin_reads), user
        assert user.has_perm("sync.view_syncrecord")
    assert all(User.objects.get(pk=carol.pk).has_perm(p) for p in admin_reads)


def test_a_viewer_is_not_offered_links_to_admin_screens(client, world, dave, carol):
    client.force_login(dave)
    html = client.get("/").content.decode()
    assert 'href="/events/' not in html and 'href="/runs/"' not in html and 'href="/connections/"' not in html
    client.force_login(carol)
    html = client.get("/").content.decode()
    assert 'href="/events/' in html and 'href="/runs/"' in html and 'href="/connections/"' in html


# ---------------------------------------------------------------- comments


def test_a_viewer_cannot_comment_and_the_roles_that_act_can(client, world, alice, bob, dave):
    record = world.record
    with pytest.raises(desk.NotAllowed):
        desk.record_comment(record=record, actor=dave, text="I think this is fine")
    client.force_login(dave)
    assert client.post(f"/records/{record.pk}/desk/", {"action": "comment", "text": "hello"}).status_code == 403
    assert 'value="comment"' not in client.get(f"/records/{record.pk}/").content.decode()
    assert not AuditEntry.objects.filter(action="comment").exists()

    desk.record_comment(record=record, actor=alice, text="calling the deal desk")
    desk.record_comment(record=record, actor=bob, text="finance agrees")  # any acting role, any team's record
    assert list(AuditEntry.objects.filter(action="comment").values_list("actor__username", flat=True)
                .order_by("id")) == ["alice", "bob"]


# ---------------------------------------------------------------- assignment


def test_a_record_goes_only_to_someone_who_can_act_on_it(world, alice, bob, carol, dave):
    record = world.record  # PMO's
    for assignee in (dave, bob):  # a viewer; finance ops, who cannot act on PMO's records
        with pytest.raises(desk.NotAllowed, match=assignee.username):
            desk.record_assign(record=record, actor=carol, assignee=assignee)
    record.refresh_from_db()
    assert record.assignee is None and record.version == 1
    assert not AuditEntry.objects.filter(action="assign").exists()

    desk.record_assign(record=record, actor=carol, assignee=alice)
    record = desk.record_assign(record=SyncRecord.objects.get(pk=record.pk), actor=alice, assignee=carol)
    assert record.assignee == carol
    assert list(AuditEntry.objects.filter(action="assign").values_list("after", flat=True).order_by("id")) == [
        {"assignee": "alice"}, {"assignee": "carol"}]


def test_the_console_refuses_to_assign_a_record_to_a_viewer(client, world, carol, dave):
    client.force_login(carol)
    resp = client.post(f"/records/{world.record.pk}/desk/", {"action": "assign", "assignee": "dave",
                                                              "version": world.record.version})
    assert resp.status_code == 403 and b"dave cannot act" in resp.content
    assert SyncRecord.objects.get(pk=world.record.pk).assignee is None


def test_bulk_assignment_follows_the_same_rule(world, alice, bob, carol, dave):
    with pytest.raises(bulk.BulkError, match="dave cannot act"):
        bulk.bulk_preview(actor=carol, action="assign", record_ids=[world.record.pk], params={"assignee": "dave"})

    # bob (finance ops) may be given the finance record, not PMO's
    ids = [world.record.pk, world.time_record.pk]
    b = bulk.bulk_preview(actor=carol, action="assign", record_ids=ids, params={"assignee": "bob"})
    assert b.preview["allowed"] == 1
    assert b.preview["not_allowed"] == {"count": 1, "examples": [world.record.pk]}
    bulk.bulk_confirm(bulk=b, actor=carol)
    assert bulk_run.bulk_run(b.pk) == {"done": 2, "succeeded": 1, "failed": 1}
    assignees = dict(SyncRecord.objects.filter(pk__in=ids).values_list("pk", "assignee__username"))
    assert assignees == {world.record.pk: None, world.time_record.pk: "bob"}


# ---------------------------------------------------------------- the Django admin


@pytest.mark.parametrize("model", ["syncrecord", "attempt", "inboundevent", "auditentry", "syncrun"])
def test_the_admin_shows_the_sync_trail_read_only(client, world, carol, model):
    client.force_login(carol)
    assert client.get(f"/admin/sync/{model}/").status_code == 200
    assert client.get(f"/admin/sync/{model}/add/").status_code == 403


def test_an_integration_admin_cannot_change_a_record_in_the_admin(client, world, carol):
    record = world.record
    client.force_login(carol)
    page = client.get(f"/admin/sync/syncrecord/{record.pk}/change/")
    assert page.status_code == 200 and b'name="status"' not in page.content and b'name="_save"' not in page.content
    resp = client.post(f"/admin/sync/syncrecord/{record.pk}/change/",
                       {"status": "succeeded", "stage": "done", "current_payload": "{}", "_save": "Save"})
    assert resp.status_code == 403
    after = SyncRecord.objects.get(pk=record.pk)
    assert (after.status, after.stage, after.version, after.current_payload) == (
        "held", "validate", 1, record.current_payload)
    assert client.post(f"/admin/sync/syncrecord/{record.pk}/delete/", {"post": "yes"}).status_code == 403


def connection_form(c: Connection, **changes) -> dict:
    """What the admin's change form posts for connection `c`, with `changes` typed over it."""
    data = {f: getattr(c, f) for f in ("slug", "name", "kind", "role", "base_url", "organization_id", "paused_reason",
                                       "paused_by", "consecutive_failures", "circuit_threshold",
                                       "circuit_cooldown_seconds", "max_attempts", "backoff_base_seconds",
                                       "backoff_cap_seconds")}
    data.update(settings=json.dumps(c.settings), enabled="on", paused_at_0="", paused_at_1="", _save="Save")
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def test_connection_secrets_are_write_only_in_the_admin(client, world, carol):
    c = world.connection
    token, secret = c.credentials["access_token"], c.inbound_secret
    client.force_login(carol)
    html = client.get(f"/admin/sync/connection/{c.pk}/change/").content.decode()
    assert token not in html and secret not in html
    assert html.count(">set<") == 2  # credentials and inbound secret: "set", never their value
    assert 'name="new_credentials"' in html and 'name="new_inbound_secret"' in html

    # saving without touching the secrets keeps them
    assert client.post(f"/admin/sync/connection/{c.pk}/change/", connection_form(c, name="HubSpot")).status_code == 302
    c.refresh_from_db()
    assert (c.name, c.credentials["access_token"], c.inbound_secret) == ("HubSpot", token, secret)

    # replacing them: stored, audited as replaced, never written into the trail
    resp = client.post(f"/admin/sync/connection/{c.pk}/change/", connection_form(
        c, new_credentials='{"access_token": "pat-new-0001"}', new_inbound_secret="whsec-new-0002"))
    assert resp.status_code == 302
    c.refresh_from_db()
    assert c.credentials == {"access_token": "pat-new-0001"} and c.inbound_secret == "whsec-new-0002"
    entry = AuditEntry.objects.filter(action="connection_change").latest("id")
    assert entry.actor == carol and entry.after["credentials"] == "replaced"
    assert entry.after["inbound_secret"] == "replaced"
    trail = json.dumps([e.before | e.after for e in AuditEntry.objects.all()])
    assert "pat-new-0001" not in trail and "whsec-new-0002" not in trail and token not in trail


def test_a_new_host_asks_for_the_credentials_again(client, world, carol):
    c = world.connection
    token, base_url = c.credentials["access_token"], c.base_url
    client.force_login(carol)
    url = f"/admin/sync/connection/{c.pk}/change/"

    resp = client.post(url, connection_form(c, base_url="https://api.elsewhere.example/hubspot"))
    assert resp.status_code == 200 and "enter the credentials for the new host" in resp.content.decode()
    c.refresh_from_db()
    assert c.base_url == base_url and c.credentials["access_token"] == token

    # the same host, another path: the credentials stay
    assert client.post(url, connection_form(c, base_url=base_url + "/v3")).status_code == 302
    c.refresh_from_db()
    assert c.credentials["access_token"] == token

    # a new host with new credentials; or with the old ones cleared
    assert client.post(url, connection_form(c, base_url="https://api.hubapi.example",
                                            new_credentials='{"access_token": "pat-0003"}')).status_code == 302
    c.refresh_from_db()
    assert c.credentials == {"access_token": "pat-0003"}
    assert client.post(url, connection_form(c, base_url="https://api.other.example",
                                            clear_credentials="on")).status_code == 302
    c.refresh_from_db()
    assert c.base_url == "https://api.other.example" and c.credentials == {}
    entry = AuditEntry.objects.filter(action="connection_change").latest("id")
    assert entry.before["base_url"] == "https://api.hubapi.example" and entry.before["credentials"] == "set"
    assert entry.after["base_url"] == "https://api.other.example" and entry.after["credentials"] == "not set"


# ---------------------------------------------------------------- personal data and search


def test_a_viewer_cannot_confirm_a_masked_tax_id_through_search(client, world, alice, dave):
    record = world.record
    client.force_login(dave)
    html = client.get(f"/records/{record.pk}/").content.decode()
    assert TAX_ID not in html and "•••" in html  # masked in the message
    for q in (TAX_ID, TAX_ID.lower(), TAX_ID[:6], f"tax id {TAX_ID}"):
        assert f"/records/{record.pk}/" not in client.get("/search/", {"q": q}).content.decode(), q
        assert f"/records/{record.pk}/" not in client.get("/exceptions/", {"q": q, "team": "any"}
                                                          ).content.decode(), q
    # the record is still found by what the viewer may see
    assert f"/records/{record.pk}/" in client.get("/search/", {"q": "Bluefin"}).content.decode()

    client.force_login(alice)
    assert f"/records/{record.pk}/" in client.get("/search/", {"q": TAX_ID}).content.decode()
    assert f"/records/{record.pk}/" in client.get("/exceptions/", {"q": TAX_ID, "team": "any"}).content.decode()


def test_consultants_names_are_masked_for_a_viewer(client, world, bob, dave):
    record = world.time_record
    client.force_login(dave)
    for url in (f"/records/{record.pk}/", "/exceptions/?team=any", "/search/?q=TE-77"):
        html = client.get(url).content.decode()
        assert CONSULTANT not in html, url
    assert f"/records/{record.pk}/" not in client.get("/search/", {"q": "Priya"}).content.decode()
    api = client.get(f"/api/v1/records/{record.pk}/").json()
    assert CONSULTANT not in api["title"] and "•••" in api["title"]

    client.force_login(bob)
    assert CONSULTANT in client.get(f"/records/{record.pk}/").content.decode()
    assert f"/records/{record.pk}/" in client.get("/search/", {"q": "Priya"}).content.decode()
