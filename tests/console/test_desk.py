"""The exception desk: the queue's filters, facets, sorting, grouping and search; claim/assign/comment/priority;
who may do what (the permission matrix); a page that notices someone else's change; paused connections."""

from __future__ import annotations

import random
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.console import queue
from apps.demo.deals import make_opportunity
from apps.sandbox.models import SandboxObject
from apps.sync import desk, queue_columns
from apps.sync.models import AuditEntry, Connection, SyncRecord

from tests.builders import fix_post, held_record, opportunity_payload
from tests.pages import linked_record_ids
from tests.worker import run_worker


@pytest.fixture
def desk_records(connections, alice, bob):
    """Six held records across teams, reasons, priorities, SLA states, ages and amounts."""
    now = timezone.now()
    specs = [
        # title, team, reason, priority, sla, held hours ago, amount, currency, assignee
        ("Acme rollout", "pmo", "missing_legal_entity", 2, "breached", 30, "120000.00", "EUR", alice),
        ("Beta audit", "pmo", "missing_legal_entity", 2, "ok", 2, "5000.00", "EUR", None),
        ("Gamma CX", "pmo", "currency_not_enabled", 2, "due_soon", 5, "90000.00", "USD", None),
        ("Delta billing", "finance_ops", "unknown_billing_terms", 1, "ok", 1, "48200.00", "EUR", bob),
        ("Epsilon tax", "finance_ops", "downstream_validation", 2, "breached", 80, "700.00", "GBP", None),
        ("Zeta crash", "integration_admin", "internal_error", 3, "ok", 0.5, None, "", None),
    ]
    out = {}
    for i, (title, team, reason, prio, sla, hours, amount, cur, who) in enumerate(specs):
        payload = opportunity_payload(deal_id=str(900 + i), opportunity_name=title, amount=amount or "0",
                                    currency=cur, account={"name": f"{title} Corp", "tax_id": f"DE99988877{i}",
                                                           "id": str(500 + i), "country": "DE"})
        r = held_record(connections, reason_code=reason, owner_team=team, title=title, payload=payload,
                        message=f"{reason} on “{title}”")
        SyncRecord.objects.filter(pk=r.pk).update(
            priority=prio, sla_state=sla, held_at=now - timedelta(hours=hours), assignee=who,
            amount=Decimal(amount) if amount else None, sla_due_at=now + timedelta(hours=i - 2),
            target_system="netsuite" if reason == "downstream_validation" else "")
        out[title] = SyncRecord.objects.get(pk=r.pk)
    return out


def q(params: dict, user) -> set[str]:
    return set(queue.held_queryset(params, user).values_list("title", flat=True))


# ---------------------------------------------------------------- filters


@pytest.mark.django_db
def test_the_queue_defaults_to_the_users_team(desk_records, alice, bob, carol, dave):
    assert q({}, alice) == {"Acme rollout", "Beta audit", "Gamma CX"}
    assert q({}, bob) == {"Delta billing", "Epsilon tax"}
    assert len(q({}, carol)) == 6  # integration admins see everything
    assert len(q({}, dave)) == 6  # viewers read everything
    assert len(q({"team": "any"}, alice)) == 6


@pytest.mark.django_db
def test_filters_compose(desk_records, alice):
    assert q({"team": "any", "reason": "missing_legal_entity"}, alice) == {"Acme rollout", "Beta audit"}
    assert q({"team": "any", "assignee": "me"}, alice) == {"Acme rollout"}
    assert q({"team": "pmo", "assignee": "unassigned"}, alice) == {"Beta audit", "Gamma CX"}
    assert q({"team": "any", "priority": "1"}, alice) == {"Delta billing"}
    assert q({"team": "any", "sla": "breached"}, alice) == {"Acme rollout", "Epsilon tax"}
    assert q({"team": "any", "age": "24h"}, alice) == {"Acme rollout", "Epsilon tax"}
    assert q({"team": "any", "amount_min": "50000"}, alice) == {"Acme rollout", "Gamma CX"}
    assert q({"team": "any", "amount_min": "1000", "amount_max": "60000"}, alice) == {"Beta audit", "Delta billing"}
    assert q({"team": "any", "target": "netsuite"}, alice) == {"Epsilon tax"}
    assert q({"team": "any", "source": "hubspot", "stage": "validate", "sla": "breached",
              "reason": "missing_legal_entity"}, alice) == {"Acme rollout"}
    assert q({"team": "any", "amount_min": "not a number"}, alice) == q({"team": "any"}, alice)


@pytest.mark.django_db
def test_search_finds_a_record_by_any_id_or_part_of_its_name(desk_records, alice):
    acme = desk_records["Acme rollout"]
    assert q({"team": "any", "q": "DE999888770"}, alice) == {"Acme rollout"}  # tax id
    assert q({"team": "any", "q": "900"}, alice) == {"Acme rollout"}  # the bare deal id
    assert q({"team": "any", "q": str(acme.correlation_id)}, alice) == {"Acme rollout"}
    assert q({"team": "any", "q": "acme rollout corp"}, alice) == {"Acme rollout"}  # account name, any case
    assert q({"team": "any", "q": "rollo"}, alice) == {"Acme rollout"}  # part of the title
    SyncRecord.objects.filter(pk=acme.pk).update(
        search_keys=queue_columns.search_keys({**acme.__dict__, "context": {"erp_customer_id": "NS-4711"}}))
    assert q({"team": "any", "q": "ns-4711"}, alice) == {"Acme rollout"}  # an external id


@pytest.mark.django_db
def test_the_global_search_finds_records_in_any_status(client, desk_records, alice, connections):
    done = held_record(connections, status="succeeded", title="Omega done",
                       payload=opportunity_payload(deal_id="4242", opportunity_name="Omega done"))
    client.force_login(alice)
    html = client.get("/search/?q=4242").content.decode()
    assert linked_record_ids(html) == {done.pk}
    assert client.get("/search/?q=4242&go=1")["Location"] == f"/records/{done.pk}/"
    assert "No record is known by" in client.get("/search/?q=nothing-like-this").content.decode()


@pytest.mark.django_db
def test_facets_count_the_filtered_rows_in_one_query(desk_records, alice):
    qs = queue.held_queryset({"team": "any"}, alice)
    with CaptureQueriesContext(connection) as ctx:
        facets = queue.facet_counts(qs)
    assert len(ctx) == 1
    assert dict(facets["reason_code"]) == {"missing_legal_entity": 2, "currency_not_enabled": 1,
                                           "unknown_billing_terms": 1, "downstream_validation": 1,
                                           "internal_error": 1}
    assert dict(facets["priority"]) == {1: 1, 2: 4, 3: 1}
    assert dict(facets["sla_state"]) == {"ok": 3, "breached": 2, "due_soon": 1}
    assert dict(facets["owner_team"]) == {"pmo": 3, "finance_ops": 2, "integration_admin": 1}


@pytest.mark.django_db
def test_the_grouped_view_counts_its_facets_and_groups_in_one_pass(desk_records, alice):
    for params in ({"team": "any"}, {"team": "pmo"}, {"team": "any", "q": "acme"}, {"team": "any", "sla": "breached"}):
        qs = queue.held_queryset(params, alice)
        with CaptureQueriesContext(connection) as ctx:
            facets, groups = queue.facets_and_groups(qs)
        reads = [q["sql"] for q in ctx.captured_queries if "sync_syncrecord" in q["sql"]]
        assert len(reads) == 2, params  # one pass for facets and groups, then the groups' sample messages
        assert "GROUPING SETS" in reads[0] and reads[0].count("FROM \"sync_syncrecord\"") == 1
        assert facets == queue.facet_counts(qs), params  # the same counts as the list view's own facet query
        assert sum(g["n"] for g in groups) == qs.exclude(error_signature="").count(), params
        assert [g["n"] for g in groups] == sorted((g["n"] for g in groups), reverse=True)
    with connection.cursor() as cur:  # its planner setting was for that one statement
        cur.execute("SHOW parallel_tuple_cost")
        assert cur.fetchone()[0] == "0.1"


@pytest.mark.django_db
def test_sorting(desk_records, alice):
    def order(sort):
        return [r.title for r in queue.sorted_page(queue.held_queryset({"team": "any"}, alice), sort, 1)]

    assert order("priority")[0] == "Delta billing" and order("priority")[-1] == "Zeta crash"
    assert order("age")[0] == "Epsilon tax"
    assert order("-age")[0] == "Zeta crash"
    assert order("amount")[:2] == ["Acme rollout", "Gamma CX"]
    assert order("sla")[0] == "Acme rollout"


@pytest.mark.django_db
def test_the_grouped_view_groups_alike_errors(client, desk_records, alice):
    client.force_login(alice)
    html = client.get("/exceptions/?team=any&view=groups").content.decode()
    assert 'data-testid="groups"' in html
    groups = queue.groups(queue.held_queryset({"team": "any"}, alice))
    top = groups[0]
    assert (top["reason_code"], top["n"]) == ("missing_legal_entity", 2)
    assert top["amount"] == Decimal("125000.00") and top["currency"] == "EUR"
    assert top["oldest"] == desk_records["Acme rollout"].held_at
    assert "<value>" in top["message"]  # the titles are taken out: one signature for both
    # one click to the group's records
    link = f"/exceptions/?team=any&signature={top['error_signature']}&view=rows"
    assert linked_record_ids(client.get(link).content.decode()) == {desk_records["Acme rollout"].pk,
                                                        desk_records["Beta audit"].pk}


@pytest.mark.django_db
def test_the_queue_page_uses_the_same_queries_for_any_page_size(client, connections, alice):
    client.force_login(alice)
    for i in range(3):
        held_record(connections, payload=opportunity_payload(deal_id=str(i), opportunity_name=f"R{i}"))
    client.get("/exceptions/")
    with CaptureQueriesContext(connection) as few:
        client.get("/exceptions/?view=groups")
    for i in range(3, 60):
        held_record(connections, payload=opportunity_payload(deal_id=str(i), opportunity_name=f"R{i}"),
                    reason_code=f"reason_{i % 7}", message=f"problem {i % 7}")
    with CaptureQueriesContext(connection) as many:
        client.get("/exceptions/?view=groups")
    assert len(few) == len(many)


def _plan(qs) -> str:
    """EXPLAIN of a queryset with sequential scans off: which index PostgreSQL can use for it (the test tables
    are too small for the planner to prefer an index on its own)."""
    sql, params = qs.query.sql_with_params()
    with connection.cursor() as cur:
        cur.execute("SET LOCAL enable_seqscan = off")
        cur.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cur.fetchall())
        cur.execute("RESET enable_seqscan")
    return plan


@pytest.mark.django_db
def test_the_queue_title_search_uses_the_partial_trigram_index(connections, alice):
    """Part of a title, in the queue (held/dead only): the planner picks desk_title_trgm, which indexes only the
    actionable rows, so the search does not grow with the whole table (syncrecord_title_trgm does: 40 ms at 10M
    records)."""
    brands = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Wonka"]
    SyncRecord.objects.bulk_create([
        SyncRecord(workflow="quote_to_project", stage="validate" if i % 2 == 0 else "crm_writeback",
                   status="held" if i % 2 == 0 else "succeeded", owner_team="pmo",
                   source_connection=connections["hubspot"], source_key=f"deal:{i}",
                   title=f"{brands[i % 8]} {i} — ERP rollout", reason_code="missing_legal_entity" if i % 2 == 0 else "")
        for i in range(6000)])
    with connection.cursor() as cur:  # as autovacuum would: GIN pending lists merged, statistics taken
        for index in ("desk_title_trgm", "syncrecord_title_trgm", "syncrecord_search_keys"):
            # the earlier tests' rolled-back rows leave dead entries that only VACUUM reclaims, which never runs
            # in a test session; they make the indexes look bigger than a maintained database's to the planner
            cur.execute(f"REINDEX INDEX {index}")
            cur.execute("SELECT gin_clean_pending_list(%s::regclass)", [index])
        cur.execute("ANALYZE sync_syncrecord")
    for params in ({"team": "any", "q": "Acme 12"}, {"team": "pmo", "q": "wonka 3"}, {"status": "held", "q": "hooli"}):
        qs = queue.held_queryset(params, alice)
        plan = _plan(qs.order_by().values("id"))
        assert "desk_title_trgm" in plan and "syncrecord_title_trgm" not in plan, (params, plan)
    # …and the global search's first half (held and dead letters) as well
    first = queue.with_title_upper(SyncRecord.objects.filter(status__in=SyncRecord.ACTIONABLE)).filter(
        queue.search_filter("acme 12"))
    assert "desk_title_trgm" in _plan(first.values("id"))
    assert q({"team": "any", "q": "Acme 12"}, alice) == {f"Acme {i} — ERP rollout" for i in range(6000)
                                                         if i % 8 == 0 and f"Acme {i}".startswith("Acme 12")}


@pytest.mark.django_db
def test_the_global_search_lists_actionable_records_first(client, desk_records, alice, connections):
    older_held = desk_records["Acme rollout"]
    SyncRecord.objects.filter(pk=older_held.pk).update(updated_at=timezone.now() - timedelta(days=3))
    done = held_record(connections, status="succeeded", title="Acme done",
                       payload=opportunity_payload(deal_id="4243", opportunity_name="Acme done"))
    results = queue.global_search("acme")
    assert [r.pk for r in results] == [older_held.pk, done.pk]  # held first although older, then the rest
    assert len(queue.global_search("acme", limit=1)) == 1
    assert queue.global_search("   ") == []


@pytest.mark.django_db
def test_search_uses_the_same_queries_for_few_and_many_results(client, connections, alice):
    client.force_login(alice)
    for i in range(2):
        held_record(connections, payload=opportunity_payload(deal_id=str(7000 + i), opportunity_name=f"Wonka {i}"))
    client.get("/search/?q=Wonka")
    with CaptureQueriesContext(connection) as few_global:
        assert client.get("/search/?q=Wonka").status_code == 200
    with CaptureQueriesContext(connection) as few_queue:
        client.get("/exceptions/?team=any&q=Wonka")
    for i in range(2, 70):
        held_record(connections, payload=opportunity_payload(deal_id=str(7000 + i), opportunity_name=f"Wonka {i}"),
                    status="held" if i % 2 else "succeeded")
    with CaptureQueriesContext(connection) as many_global:
        html = client.get("/search/?q=Wonka").content.decode()
    assert len(linked_record_ids(html)) == 50
    with CaptureQueriesContext(connection) as many_queue:
        client.get("/exceptions/?team=any&q=Wonka")
    assert len(few_global) == len(many_global)
    assert len(few_queue) == len(many_queue)


@pytest.mark.django_db
def test_groups_leave_out_records_without_a_signature_and_keep_the_limit(desk_records, alice):
    SyncRecord.objects.filter(pk=desk_records["Zeta crash"].pk).update(error_signature="")
    qs = queue.held_queryset({"team": "any"}, alice)
    groups = queue.groups(qs)
    assert all(g["error_signature"] for g in groups)
    assert sum(g["n"] for g in groups) == 5  # six held, one without a signature
    assert len(queue.groups(qs, limit=2)) == 2
    with CaptureQueriesContext(connection) as ctx:
        queue.groups(qs)
    reads = [q["sql"] for q in ctx.captured_queries if "sync_syncrecord" in q["sql"]]
    assert len(reads) == 2  # the groups, then one sample message per group in one query


# ---------------------------------------------------------------- actions and the permission matrix


def post_desk(client, record, **data):
    return client.post(f"/records/{record.pk}/desk/", data)


@pytest.mark.django_db
def test_claim_assign_unassign_are_audited(client, desk_records, alice, carol):
    beta = desk_records["Beta audit"]
    client.force_login(alice)
    assert post_desk(client, beta, action="claim", version=beta.version).status_code == 302
    beta.refresh_from_db()
    assert beta.assignee == alice and beta.version == 2
    assert post_desk(client, beta, action="assign", assignee="carol", version=beta.version).status_code == 302
    beta.refresh_from_db()
    assert beta.assignee == carol
    post_desk(client, beta, action="unassign", version=beta.version)
    beta.refresh_from_db()
    assert beta.assignee is None
    assert list(AuditEntry.objects.filter(record=beta).values_list("action", flat=True)) == [
        "claim", "assign", "unassign"]
    assert AuditEntry.objects.get(record=beta, action="assign").after == {"assignee": "carol"}


@pytest.mark.django_db
def test_a_stale_claim_is_refused(client, desk_records, alice):
    beta = desk_records["Beta audit"]
    client.force_login(alice)
    post_desk(client, beta, action="claim", version=beta.version)
    resp = client.post(f"/records/{beta.pk}/desk/", {"action": "unassign", "version": beta.version}, follow=True)
    assert "changed by someone else" in resp.content.decode()
    beta.refresh_from_db()
    assert beta.assignee == alice  # the second (stale) action changed nothing


@pytest.mark.django_db
def test_priority_override_needs_a_reason_and_explains_itself(client, desk_records, alice):
    beta = desk_records["Beta audit"]
    client.force_login(alice)
    post_desk(client, beta, action="priority", priority="1", reason="", version=beta.version)
    beta.refresh_from_db()
    assert beta.priority == 2
    post_desk(client, beta, action="priority", priority="1", reason="CEO's customer", version=beta.version)
    beta.refresh_from_db()
    assert beta.priority == 1 and beta.priority_overridden
    assert "CEO's customer" in beta.priority_reason and "alice" in beta.priority_reason


@pytest.mark.django_db
def test_comments_land_in_the_timeline(client, desk_records, bob):
    delta = desk_records["Delta billing"]
    client.force_login(bob)
    post_desk(client, delta, action="comment", text="Asked sales for the signed terms")
    html = client.get(f"/records/{delta.pk}/").content.decode()
    assert "Asked sales for the signed terms" in html and "comment by bob" in html


@pytest.mark.django_db
@pytest.mark.parametrize("who, record, expected", [
    ("alice", "Beta audit", 302), ("alice", "Delta billing", 403), ("alice", "Zeta crash", 403),
    ("bob", "Delta billing", 302), ("bob", "Beta audit", 403),
    ("carol", "Beta audit", 302), ("carol", "Delta billing", 302), ("carol", "Zeta crash", 302),
    ("dave", "Beta audit", 403), ("dave", "Delta billing", 403),
])
def test_the_permission_matrix_for_claiming(client, desk_records, alice, bob, carol, dave, who, record, expected):
    user = {"alice": alice, "bob": bob, "carol": carol, "dave": dave}[who]
    r = desk_records[record]
    client.force_login(user)
    assert post_desk(client, r, action="claim", version=r.version).status_code == expected
    r.refresh_from_db()
    assert (r.assignee == user) == (expected == 302)


@pytest.mark.django_db
@pytest.mark.parametrize("who, record, expected", [
    ("alice", "Beta audit", 302), ("alice", "Delta billing", 403), ("bob", "Beta audit", 403),
    ("carol", "Zeta crash", 302), ("dave", "Beta audit", 403),
])
def test_the_permission_matrix_for_resubmitting(client, desk_records, alice, bob, carol, dave, who, record, expected):
    user = {"alice": alice, "bob": bob, "carol": carol, "dave": dave}[who]
    r = desk_records[record]
    client.force_login(user)
    resp = client.post(f"/records/{r.pk}/action/", fix_post(r, "resubmit", legal_entity="DE01",
                                                            billing_terms="NET30", currency="EUR"))
    assert resp.status_code in ((expected,) if expected == 403 else (302, 422))
    r.refresh_from_db()
    if expected == 403:
        assert r.status == "held" and r.version == 1


@pytest.mark.django_db
def test_no_action_through_get_and_csrf_is_enforced(desk_records, alice):
    beta = desk_records["Beta audit"]
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.get(f"/records/{beta.pk}/desk/?action=claim").status_code == 405
    assert client.post(f"/records/{beta.pk}/desk/", {"action": "claim"}).status_code == 403
    beta.refresh_from_db()
    assert beta.assignee is None


@pytest.mark.django_db
def test_an_open_page_notices_another_users_change(client, desk_records, alice, carol):
    beta = desk_records["Beta audit"]
    client.force_login(alice)
    url = f"/records/{beta.pk}/freshness/?v={beta.version}"
    assert 'data-testid="stale"' not in client.get(url, HTTP_HX_REQUEST="true").content.decode()
    desk.record_assign(record=beta, actor=carol, assignee=carol)
    html = client.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert 'data-testid="stale"' in html and "claim by carol" in html
    assert 'id="fix-actions" hx-swap-oob="true"' in html  # the page's actions are disabled


# ---------------------------------------------------------------- engine: paused systems, status back to the CRM


@pytest.mark.django_db(transaction=True)
def test_a_paused_system_makes_records_wait_and_resume_without_spending_attempts(deliverer):
    Connection.objects.filter(kind="kantata").update(paused=True, paused_reason="maintenance window")
    deliverer.deliver(make_opportunity(random.Random(21), "good"), via="hubspot")
    from apps.sync import engine, jobs

    jobs.process_inbox()
    engine.drain("default")
    record = SyncRecord.objects.get()
    assert (record.status, record.stage, record.reason_code) == ("retrying", "psa_project", "connection_paused")
    assert "maintenance window" in record.message and record.attempts == 0

    Connection.objects.filter(kind="kantata").update(paused=False)
    SyncRecord.objects.update(next_attempt_at=timezone.now())
    run_worker()
    record.refresh_from_db()
    assert record.status == "succeeded"


@pytest.mark.django_db(transaction=True)
def test_the_crm_record_shows_held_and_then_project_created(deliverer, alice):
    from apps.sync import services

    deliverer.deliver(make_opportunity(random.Random(22), "no_legal_entity"), via="hubspot")
    run_worker()
    deal = SandboxObject.objects.get(system="hubspot", object_type="deals")
    assert deal.data["properties"]["handoff_status"] == "held: missing legal entity"

    record = SyncRecord.objects.get()
    services.record_resubmit(record_id=record.pk, actor=alice, expected_version=record.version,
                             changes={"legal_entity": "US01"})
    run_worker()
    deal.refresh_from_db()
    assert deal.data["properties"]["handoff_status"] == "project created"
    record.refresh_from_db()
    assert record.priority_reason.startswith("P2: project set-up")
    assert "US01" not in record.search_keys and record.current_payload["account"]["tax_id"].upper() in \
        record.search_keys


@pytest.mark.django_db
def test_integration_admins_can_resubmit_an_edited_raw_payload_and_others_cannot(client, desk_records, alice, carol):
    import json

    beta = desk_records["Beta audit"]
    edited = {**beta.current_payload, "legal_entity": "DE01"}
    data = {"action": "resubmit_raw", "version": beta.version, "payload_json": json.dumps(edited),
            "reason": "fixed in raw"}
    client.force_login(alice)
    assert client.post(f"/records/{beta.pk}/action/", data).status_code == 403
    client.force_login(carol)
    assert client.post(f"/records/{beta.pk}/action/", {**data, "payload_json": "{not json"}).status_code == 302
    beta.refresh_from_db()
    assert beta.status == "held"
    assert client.post(f"/records/{beta.pk}/action/", data).status_code == 302
    beta.refresh_from_db()
    assert beta.status == "pending" and beta.current_payload["legal_entity"] == "DE01"
    entry = AuditEntry.objects.get(record=beta)
    assert entry.after == {"legal_entity": "DE01"} and entry.actor == carol


@pytest.mark.django_db
def test_the_record_page_shows_its_sla_clocks(client, desk_records, alice):
    beta = desk_records["Beta audit"]
    client.force_login(alice)
    html = client.get(f"/records/{beta.pk}/").content.decode()
    assert 'data-testid="sla-clocks"' in html
    assert "due " in html


@pytest.mark.django_db
def test_the_home_board_shows_the_backlog_its_drain_eta_and_paused_systems(client, connections, alice):
    from apps.sync.models import SyncRun

    now = timezone.now()
    for i in range(30):
        held_record(connections, status="pending", payload=opportunity_payload(deal_id=f"b{i}"))
    SyncRecord.objects.filter(status="pending").update(next_attempt_at=now - timedelta(seconds=40))
    SyncRun.objects.create(kind="drain:default", status="completed", started_at=now - timedelta(minutes=2),
                           completed_at=now - timedelta(minutes=1), counts={"claimed": 300, "succeeded": 300})
    Connection.objects.filter(kind="kantata").update(paused=True, paused_by="circuit", paused_at=now,
                                                     paused_reason="circuit open after 5 consecutive failures")
    client.force_login(alice)
    html = client.get("/").content.decode()
    assert 'data-testid="backlog"' in html and "30 waiting" in html
    assert "drained at 1.0 records/s" in html and 'data-testid="drain-eta">30 s' in html
    assert "Kantata (sandbox) is paused" in html and "circuit breaker" in html
