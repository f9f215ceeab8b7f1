"""Every URL pattern of the URLconf × anonymous / viewer / pmo / finance_ops / integration_admin × GET and each
POST action, against the one table below. A URL pattern without an entry fails the test: a new screen or
endpoint states who may use it before it ships.

The intent the table encodes (apps/core/roles.py): everyone logged in reads boards, queues, records, KPIs,
finance and reconciliation; pmo / finance_ops act on their own team's held records (the record here is
PMO's), integration admins on every record, plus connections, callbacks (events), runs and the admin; viewers
change nothing. Each request runs in a savepoint that is rolled back, so every cell sees the same data.
"""

from __future__ import annotations

from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

ROLES = ("anonymous", "viewer", "pmo", "finance_ops", "integration_admin")
EXCLUDED = "excluded"  # authenticates itself (a sender's signature, a sandbox's own token): tested elsewhere


def R(anonymous, viewer, pmo, finance_ops, integration_admin) -> dict[str, int]:
    """One row of the table: the status code each role gets, in ROLES order."""
    return dict(zip(ROLES, (anonymous, viewer, pmo, finance_ops, integration_admin)))


LOGIN = 302  # an anonymous user is sent to the login page; a POST changes nothing
READ = R(LOGIN, 200, 200, 200, 200)
ADMIN_ONLY = R(LOGIN, 403, 403, 403, 200)
NO_GET = R(LOGIN, 405, 405, 405, 405)  # POST-only actions

# url name (or, for an unnamed pattern, its route) → method (or "POST <action>") → status per role.
# "args" names the fixture object whose id fills the path; "data" is the POST body per action.
EXPECTED: dict[str, dict] = {
    # probes and login: open to everyone (metrics: a staff session or a token)
    "healthz": {"GET": R(200, 200, 200, 200, 200)},
    "readyz": {"GET": R(200, 200, 200, 200, 200)},
    "metrics": {"GET": R(401, 403, 403, 403, 200)},
    "login": {"GET": R(200, 200, 200, 200, 200)},
    "logout": {"GET": R(LOGIN, 405, 405, 405, 405), "POST": R(302, 302, 302, 302, 302)},
    # the second factor's pages: the suite asks nobody for one (HANDOFF_REQUIRE_TOTP_FOR is empty), so they send
    # everyone on to the console (tests/platform/test_two_factor.py turns it on)
    "two_factor_verify": {"GET": R(LOGIN, 302, 302, 302, 302)},
    "two_factor_enrol": {"GET": R(LOGIN, 302, 302, 302, 302)},
    # single sign-on: open to everyone, and not there while it is not configured, as in the suite
    # (tests/platform/test_sso.py configures it)
    "oidc_authentication_init": {"GET": R(404, 404, 404, 404, 404)},
    "oidc_authentication_callback": {"GET": R(404, 404, 404, 404, 404)},
    # the Django admin and RQ's dashboard: staff (carol) only; records and the trail are read-only there
    "admin": {"GET": R(302, 302, 302, 302, 200), "POST syncrecord change": R(302, 302, 302, 302, 403)},
    # the API: its own authentication (401 with a Basic challenge); callbacks are verified by signature
    "api:callback": EXCLUDED,
    "api:callback_secret_url": EXCLUDED,  # Salesforce's, with its secret (tests/security/test_forged_callbacks.py)
    "sandbox": EXCLUDED,  # every /sandbox/<vendor>/… simulator (HANDOFF_SANDBOX_ENABLED): the vendor's own tokens
    "api:records": {"GET": R(403, 200, 200, 200, 200)},
    "api:record": {"args": "record", "GET": R(403, 200, 200, 200, 200)},
    "api:events": {"GET": R(403, 403, 403, 403, 200)},
    "api:schema": {"GET": R(200, 200, 200, 200, 200)},  # the API's description is public, like its docs page
    "api:docs": {"GET": R(200, 200, 200, 200, 200)},
    # the console's boards and records: every role reads
    "console:home": {"GET": READ},
    "console:exceptions": {"GET": READ},
    "console:record": {"args": "record", "GET": READ},
    "console:record_freshness": {"args": "record", "GET": READ},
    "console:search": {"GET": READ},
    "console:boards": {"GET": READ},
    "console:kpis": {"GET": READ},
    "console:kpis_export": {"query": "?kpi=cycle_time", "GET": READ},
    "console:finance": {"GET": READ},
    "console:engagement": {"args": "engagement", "GET": READ},
    # a held PMO record: pmo and admins act (422: let through, and the fix still fails the workflow's rules);
    # finance ops may try a dry run but not change it; viewers nothing
    "console:record_action": {
        "args": "record", "GET": NO_GET,
        "POST dry_run": R(LOGIN, 403, 200, 200, 200),
        "POST resubmit": R(LOGIN, 403, 422, 403, 422),
        "POST ignore": R(LOGIN, 403, 302, 403, 302),
        "POST resubmit_raw": R(LOGIN, 403, 403, 403, 302),
    },
    "console:record_desk": {
        "args": "record", "GET": NO_GET,
        "POST comment": R(LOGIN, 403, 302, 302, 302),
        "POST claim": R(LOGIN, 403, 302, 403, 302),
        "POST assign to alice": R(LOGIN, 403, 302, 403, 302),
        "POST assign to dave": R(LOGIN, 403, 403, 403, 403),
        "POST unassign": R(LOGIN, 403, 302, 403, 302),
        "POST priority": R(LOGIN, 403, 302, 403, 302),
    },
    # admin-only screens: connections (and their actions), callbacks received, runs (tracebacks), audit export
    "console:events": {"GET": ADMIN_ONLY},
    "console:runs": {"GET": ADMIN_ONLY},
    "console:runs_manual": {"GET": NO_GET, "POST sweep": R(LOGIN, 403, 403, 403, 302)},
    "console:connections": {"GET": ADMIN_ONLY},
    "console:connection_pause": {"args": "connection", "GET": NO_GET, "POST": R(LOGIN, 403, 403, 403, 302)},
    "console:connection_resume": {"args": "connection", "GET": NO_GET, "POST": R(LOGIN, 403, 403, 403, 302)},
    "console:connection_rotate_secret": {"args": "connection", "GET": NO_GET,
                                         "POST": R(LOGIN, 403, 403, 403, 200)},
    "sandbox_connection_faults": {"args": "connection", "GET": NO_GET, "POST": R(LOGIN, 403, 403, 403, 302)},
    "console:audit_export": {"GET": ADMIN_ONLY},
    # bulk actions: the roles that act (each only on records it may act on; the preview says which)
    "console:bulk_preview": {"GET": NO_GET, "POST resubmit": R(LOGIN, 403, 302, 302, 302)},
    "console:bulk": {"args": "bulk", "GET": R(LOGIN, 403, 200, 200, 200)},
    "console:bulk_confirm": {"args": "bulk", "GET": NO_GET, "POST": R(LOGIN, 403, 302, 403, 403)},
    # forecast refresh and reconciliation run: finance ops and admins; the report: every role
    "forecast:refresh": {"GET": NO_GET, "POST": R(LOGIN, 403, 403, 302, 302)},
    "reconcile:report": {"GET": READ},
    "reconcile:export": {"GET": READ},
    "reconcile:run": {"GET": NO_GET, "POST": R(LOGIN, 403, 403, 302, 302)},
}


def post_data(world) -> dict[str, dict]:
    """The body of each POST action (a version where the view checks one)."""
    record, version = world.record, world.record.version
    fix = {"version": version, "legal_entity": "US01", "reason": "checked with the deal desk"}
    return {
        "POST dry_run": {**fix, "action": "dry_run"},
        "POST resubmit": {**fix, "action": "resubmit", "ids": [record.pk]},
        "POST ignore": {**fix, "action": "ignore"},
        "POST resubmit_raw": {"action": "resubmit_raw", "version": version, "reason": "raw",
                              "payload_json": '{"legal_entity": "US01"}'},
        "POST comment": {"action": "comment", "text": "looking at it"},
        "POST claim": {"action": "claim", "version": version},
        "POST assign to alice": {"action": "assign", "assignee": "alice", "version": version},
        "POST assign to dave": {"action": "assign", "assignee": "dave", "version": version},
        "POST unassign": {"action": "unassign", "version": version},
        "POST priority": {"action": "priority", "priority": 1, "reason": "quarter end", "version": version},
        "POST sweep": {"action": "sweep"},
        "POST": {"reason": "maintenance", **{f"c{world.connection.pk}-{k}": v for k, v in (
            ("reason", "maintenance"), ("error_rate", "0"), ("rate_limit_rate", "0"), ("timeout_rate", "0"),
            ("lost_response_rate", "0"), ("hang_ms", "0"), ("latency_ms", "0"), ("fail_next_count", "0"),
            ("fail_next_status", "503"), ("retry_after_seconds", "1"))}},
        "POST syncrecord change": {"status": "succeeded", "stage": "done"},
    }


def url_patterns(resolver=None, prefix: str = "", namespace: str = ""):
    """(key, route, pattern) for every pattern: key = namespaced name, or the route when unnamed."""
    resolver = resolver or get_resolver()
    for p in resolver.url_patterns:
        route = prefix + str(p.pattern)
        if isinstance(p, URLResolver):
            ns = f"{namespace}{p.namespace}:" if p.namespace else namespace
            yield from url_patterns(p, route, ns)
        elif isinstance(p, URLPattern):
            yield (f"{namespace}{p.name}" if p.name else route), route, p


def entry_key(key: str, route: str) -> str:
    if route.startswith("admin/"):
        return "admin"
    if route.lstrip("^").startswith("sandbox/"):
        return "sandbox"
    return key


def admin_paths(world) -> dict[str, list[str]]:
    r = world.record.pk
    return {"GET": ["/admin/", "/admin/sync/syncrecord/", f"/admin/sync/syncrecord/{r}/change/",
                    f"/admin/sync/connection/{world.connection.pk}/change/", "/admin/sync/auditentry/", "/admin/rq/"],
            "POST syncrecord change": [f"/admin/sync/syncrecord/{r}/change/"]}


def path_for(key: str, entry: dict, world) -> str:
    from django.urls import reverse

    obj = {"record": world.record, "connection": world.connection, "bulk": world.bulk,
           "engagement": world.engagement}.get(entry.get("args", ""))
    if obj is None:
        path = reverse(key)
    elif key == "console:engagement":
        path = reverse(key, kwargs={"code": obj.code})
    else:
        path = reverse(key, kwargs={"pk": obj.pk})
    return path + entry.get("query", "")


def status_of(client: Client, method: str, path: str, data: dict | None) -> int:
    """The status code, with whatever the request wrote rolled back (so every cell starts from the same data)."""
    with transaction.atomic():
        resp = client.get(path) if method == "GET" else client.post(path, data or {})
        transaction.set_rollback(True)
    return resp.status_code


def logged_in(alice, bob, carol, dave) -> dict[str, Client]:
    out = {"anonymous": Client()}
    for role, user in (("viewer", dave), ("pmo", alice), ("finance_ops", bob), ("integration_admin", carol)):
        out[role] = Client()
        out[role].force_login(user)
    return out


def test_every_url_pattern_has_an_entry_in_the_table():
    keys = {entry_key(k, route) for k, route, _ in url_patterns()}
    missing = sorted(keys - set(EXPECTED))
    assert not missing, f"URL patterns with no entry in the permission table: {missing}"
    stale = sorted(set(EXPECTED) - keys)
    assert not stale, f"entries for URL patterns that no longer exist: {stale}"


def test_every_url_answers_every_role_as_the_table_says(world, alice, bob, carol, dave):
    clients = logged_in(alice, bob, carol, dave)
    bodies = post_data(world)
    got: dict[tuple, int] = {}
    want: dict[tuple, int] = {}
    for key in sorted({entry_key(k, route) for k, route, _ in url_patterns()}):
        entry = EXPECTED[key]
        if entry == EXCLUDED:
            continue
        for method_action, row in entry.items():
            if method_action in ("args", "query"):
                continue
            method = method_action.split(" ", 1)[0]
            paths = admin_paths(world)[method_action] if key == "admin" else [path_for(key, entry, world)]
            for path in paths:
                for role in ROLES:
                    cell = (key, path, method_action, role)
                    got[cell] = status_of(clients[role], method, path, bodies.get(method_action))
                    want[cell] = row[role]
        if key == "logout":  # the session cookie is gone (its row comes back with the rollback): log in again
            clients = logged_in(alice, bob, carol, dave)
    wrong = [f"{k} {p} {m} as {r}: got {got[c]}, table says {want[c]}"
             for c in sorted(got) for k, p, m, r in [c] if got[c] != want[c]]
    assert not wrong, "\n" + "\n".join(wrong)
