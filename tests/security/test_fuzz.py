"""Fuzz: whatever arrives, Handoff answers it without a 5xx.

Hypothesis throws arbitrary bytes, headers and query strings at every callback endpoint (each connection kind,
signed and unsigned, and a name no connection has), and arbitrary query strings, headers and path values at
every console GET URL the URLconf has, as Carol the integration admin (who may open every screen). Each target
gets a bounded number of examples (PAGE_EXAMPLES, CALLBACK_EXAMPLES): the module takes well under 90 s.
"""

from __future__ import annotations

import json
import time
import uuid
from urllib.parse import quote, quote_from_bytes

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from hypothesis import HealthCheck, given, settings, strategies as st

from apps.connectors.standard_webhooks.signature import signed_headers
from apps.connectors.hubspot.inbound import signature_v3
from apps.sandbox.credentials import INBOUND_SECRETS
from apps.sandbox.stripe.webhooks import signature_header
from apps.sync.bulk import bulk_preview
from tests.builders import held_record, linked_engagement
from tests.callbacks import HUBSPOT_SECRET

pytestmark = pytest.mark.django_db

# examples per target: a console page costs ~50 ms a request, a callback ~10 ms (≈ 30 pages, 8 callback targets)
PAGE_EXAMPLES, CALLBACK_EXAMPLES = 20, 40


def fuzz(max_examples: int):
    return settings(max_examples=max_examples, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


# ------------------------------------------------------------------ strategies

# the names the screens read, plus whatever else
PARAM_NAMES = ["page", "sort", "view", "q", "go", "from", "to", "v", "status", "kpi", "run", "period",
               "contract_type", "currency", "over", "watch", "partial", "workflow", "stage", "reason", "source",
               "target", "team", "assignee", "priority", "sla", "age", "amount_min", "amount_max", "signature",
               "channel", "overdue", "format"]
ODD_VALUES = ["", "%00", "abc", "-1", "0", "1e400", "NaN", "Infinity", "9999-12-31", "0001-01-01", "2024-02-30",
              "2024-13", "99999999999999999999999999", "²", "١٢", "%FF%FE", "%C3%28", "..%2F..%2Fetc", "'",
              "\u202e", "%E2%80%AE", "x" * 3000, "%0d%0aSet-Cookie:%20a=b", "[]", "{}", "true"]


def _encoded(raw: bytes) -> str:
    return quote_from_bytes(raw, safe="")


odd_values = st.sampled_from(ODD_VALUES).map(lambda v: quote(v, safe="%/:=?'[]{}!$()*+,;@~"))
# the listed odd values twice as often as arbitrary text: they are what broke the screens
values = st.one_of(odd_values, odd_values,
                   st.text(max_size=60).map(lambda t: _encoded(t.encode("utf-8", "surrogatepass"))),
                   st.binary(max_size=40).map(_encoded))
names = st.one_of(st.sampled_from(PARAM_NAMES), st.binary(max_size=12).map(_encoded))
pairs = st.lists(st.tuples(names, values), max_size=6)
# a query string as it reaches WSGI: key=value pairs (repeated keys included), or raw bytes as latin-1 text
query_strings = st.one_of(pairs.map(lambda ps: "&".join(f"{k}={v}" for k, v in ps)),
                          st.binary(max_size=120).map(lambda b: b.decode("latin-1")))
header_values = st.binary(max_size=80).map(lambda b: b.decode("latin-1"))
HEADER_NAMES = ["HX-Request", "HX-Boosted", "HX-Target", "HX-Current-URL", "Accept", "Accept-Language", "Referer",
                "User-Agent", "X-Forwarded-For", "X-Forwarded-Proto", "X-HubSpot-Signature-v3",
                "X-HubSpot-Request-Timestamp", "webhook-id", "webhook-timestamp", "webhook-signature",
                "Stripe-Signature", "SOAPAction", "If-Modified-Since", "Range"]
headers = st.dictionaries(st.sampled_from(HEADER_NAMES), header_values, max_size=5)
content_types = st.one_of(st.sampled_from(["application/json", "text/xml; charset=utf-8", "application/xml",
                                           "application/x-www-form-urlencoded", "multipart/form-data", ""]),
                          header_values)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
    | st.sampled_from([10**400, -1, 0, "1e400", "NaN", "-18500.00", "0065g00000ABCDEAA2", "../Account/x"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20)
# JSON shaped like what each system sends, with arbitrary values: reaches the parsers, not just the signature
EVENT_KEYS = ["eventId", "subscriptionType", "objectId", "propertyName", "propertyValue", "occurredAt", "portalId",
              "id", "type", "timestamp", "data", "object", "created", "amount_paid", "currency", "lines",
              "updated_at", "workspace_id", "total", "apply", "lastModifiedDate", "status"]
events = st.dictionaries(st.sampled_from(EVENT_KEYS), json_values, max_size=8)
json_bodies = st.one_of(st.lists(events, max_size=3), events, json_values).map(
    lambda v: json.dumps(v).encode())
bodies = st.one_of(st.binary(max_size=600), json_bodies)


# ------------------------------------------------------------------ callbacks


def _sign(kind: str, uri: str, body: bytes) -> dict:
    """The headers that make `body` a validly signed callback of `kind` (so the parsers see it)."""
    if kind == "hubspot":
        ts = str(int(time.time() * 1000))
        return {"X-HubSpot-Signature-v3": signature_v3(HUBSPOT_SECRET, "POST", uri, body, ts),
                "X-HubSpot-Request-Timestamp": ts}
    if kind in ("kantata", "netsuite"):
        return signed_headers(INBOUND_SECRETS[kind], f"msg_{uuid.uuid4().hex}", body)
    if kind == "stripe":
        return {"Stripe-Signature": signature_header(INBOUND_SECRETS["stripe"], body.decode("utf-8", "replace"))}
    return {}


@pytest.mark.parametrize("slug", ["hubspot", "salesforce", "netsuite", "kantata", "stripe", "anaplan",
                                  "no-such-connection"])
def test_no_callback_gets_a_5xx(connections, slug):
    client = Client()

    @fuzz(CALLBACK_EXAMPLES)
    @given(body=bodies, sent_headers=headers, content_type=content_types, query=query_strings,
           signed=st.booleans())
    def attempt(body, sent_headers, content_type, query, signed):
        path = f"/api/v1/callbacks/{slug}/"
        uri = "http://testserver" + path + (f"?{query}" if query else "")
        sent = dict(sent_headers)
        if signed and slug in connections:
            sent.update(_sign(connections[slug].kind, uri, body))
        response = client.generic("POST", path, data=body, content_type=content_type, headers=sent,
                                  QUERY_STRING=query)
        assert response.status_code < 500, (response.status_code, response.content[:300])

    attempt()


def test_no_callback_to_an_odd_connection_name_gets_a_5xx(connections):
    client = Client()

    @fuzz(CALLBACK_EXAMPLES)
    @given(name=st.binary(min_size=1, max_size=80), body=st.binary(max_size=200))
    def attempt(name, body):
        response = client.generic("POST", f"/api/v1/callbacks/{_encoded(name)}/", data=body,
                                  content_type="application/json")
        assert response.status_code < 500, (response.status_code, response.content[:300])

    attempt()


# ------------------------------------------------------------------ console GETs

# not screens: the login/logout pages, Django's admin and RQ's dashboard (their own input handling), the
# sandboxes (demo only), the callbacks (above), and the API's schema documents, which read no input
SKIPPED_PREFIXES = ("admin/", "login/", "logout/", "sandbox/", "api/v1/callbacks/", "api/v1/schema/", "api/v1/docs/")


def _routes(patterns, prefix: str = ""):
    for p in patterns:
        if isinstance(p, URLResolver):
            yield from _routes(p.url_patterns, prefix + str(p.pattern))
        elif isinstance(p, URLPattern):
            yield prefix + str(p.pattern)


def console_routes() -> list[str]:
    """Every GET-able route of the URLconf a console user reaches (route syntax, `<int:pk>` left in)."""
    return sorted({r for r in _routes(get_resolver().url_patterns)
                   if not r.startswith(SKIPPED_PREFIXES) and not r.startswith("^")})


@pytest.fixture
def fuzz_world(connections, carol):
    """Something behind every id: a held record, a previewed bulk action, an engagement; Carol logged in."""
    record = held_record(connections)
    bulk = bulk_preview(actor=carol, action="resubmit", record_ids=[record.pk], params={})
    engagement = linked_engagement()
    client = Client()
    client.force_login(carol)
    return {"client": client, "pk": record.pk, "bulk": bulk.pk, "code": engagement.code}


def _fill(route: str, world: dict) -> str:
    if route.startswith("bulk/"):
        route = route.replace("<int:pk>", str(world["bulk"]))
    for name, value in (("<int:pk>", world["pk"]), ("<str:code>", world["code"])):
        route = route.replace(name, str(value))
    assert "<" not in route, f"no value to fill {route!r} with: add one to _fill"
    return "/" + route


def _read(response) -> None:
    """Consume a streamed response (the CSV exports), so an error while streaming fails the test too."""
    if response.streaming:
        b"".join(response.streaming_content)


def test_the_walk_finds_the_console_screens():
    routes = console_routes()
    for expected in ("", "exceptions/", "kpis/", "records/<int:pk>/freshness/", "reconciliation/", "finance/",
                     "engagements/<str:code>/", "api/v1/records/"):
        assert expected in routes


@pytest.mark.parametrize("route", console_routes())
def test_no_console_get_gets_a_5xx(fuzz_world, route):
    client, path = fuzz_world["client"], _fill(route, fuzz_world)

    @fuzz(PAGE_EXAMPLES)
    @given(query=query_strings, sent_headers=headers)
    def attempt(query, sent_headers):
        response = client.get(path, headers=sent_headers, QUERY_STRING=query)
        _read(response)
        assert response.status_code < 500, (path, query, response.status_code)

    attempt()


@pytest.mark.parametrize("route", [r for r in console_routes() if "<" in r])
def test_no_odd_id_in_a_console_path_gets_a_5xx(fuzz_world, route):
    client = fuzz_world["client"]

    @fuzz(PAGE_EXAMPLES)
    @given(value=st.one_of(st.sampled_from(["0", "-1", "99999999999999999999999", "%00", "%FF", "..", "a%2Fb"]),
                           st.binary(min_size=1, max_size=40).map(_encoded)))
    def attempt(value):
        path = "/" + route.replace("<int:pk>", value).replace("<str:code>", value)
        response = client.get(path)
        _read(response)
        assert response.status_code < 500, (path, response.status_code)

    attempt()
