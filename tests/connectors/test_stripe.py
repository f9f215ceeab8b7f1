"""Stripe: the webhook verification exactly as Stripe documents it (through DRF's test client), the sandbox's API
(form encoding, error shape, Idempotency-Key replay and mismatch, auth, faults, signed webhooks), and the
connector (errors mapped to permanent/transient with Stripe's message and param, every call recorded)."""

from __future__ import annotations

import json
import time

import pytest
import requests
import stripe

from apps.connectors.base import DownstreamError
from apps.connectors.stripe.client import StripeClient
from apps.sandbox.credentials import INBOUND_SECRETS
from apps.sandbox.models import SandboxObject
from apps.sandbox.stripe import webhooks as stripe_webhooks
from apps.sandbox.stripe.api import API_VERSION as STRIPE_API_VERSION
from apps.sync.intake import process_inbox
from apps.sync.models import Attempt, Connection, InboundEvent, SyncRecord

from tests.callbacks import post_stripe
from tests.worker import inject

SECRET = INBOUND_SECRETS["stripe"]


# ------------------------------------------------------------------ webhook verification


def invoice_event(event_id="evt_1", etype="invoice.paid", created=None, **obj) -> dict:
    invoice = {"id": "in_123", "object": "invoice", "number": "ABC-0001", "currency": "usd", "total": 150000,
               "amount_paid": 150000, "amount_remaining": 0, "status": "paid", "customer": "cus_1",
               "due_date": 1767225600, "created": 1763000000, "metadata": {"handoff_engagement": "ENG-000001"},
               "status_transitions": {"finalized_at": 1763000000, "paid_at": 1763000100}}
    invoice.update(obj)
    return {"id": event_id, "object": "event", "api_version": STRIPE_API_VERSION,
            "created": created or int(time.time()), "data": {"object": invoice}, "livemode": False,
            "pending_webhooks": 1, "request": {"id": None, "idempotency_key": None}, "type": etype}


def test_a_signed_event_is_accepted_and_a_redelivery_stored_once(connections, api):
    ev = invoice_event()
    assert post_stripe(api, ev).status_code == 202
    assert post_stripe(api, ev).status_code == 200  # Stripe retries with the same event id
    stored = InboundEvent.objects.get()
    assert (stored.event_id, stored.deliveries, stored.status) == ("evt_1", 2, "received")
    process_inbox()
    rec = SyncRecord.objects.get()
    assert (rec.workflow, rec.source_key, rec.priority) == ("invoice_payment_to_crm", "invoice:in_123", 1)
    view = rec.current_payload["invoices"][0]
    assert (view["status"], view["total"], view["amount_due"], view["due_on"]) == ("paid", "1500.00", "0.00",
                                                                                   "2026-01-01")


def test_the_library_and_the_sandbox_agree_on_the_signature():
    body = json.dumps(invoice_event())
    header = stripe_webhooks.signature_header(SECRET, body)
    event = stripe.Webhook.construct_event(body, header, SECRET)
    assert event.id == "evt_1" and event.type == "invoice.paid"


def test_one_of_several_v1_signatures_may_match(connections, api):
    body = json.dumps(invoice_event()).encode()
    good = stripe_webhooks.signature_header(SECRET, body.decode())
    t, v1 = good.split(",")
    r = post_stripe(api, body, header=f"{t},v1={'0' * 64},{v1},v0=deadbeef")  # a secret roll: old and new signature
    assert r.status_code == 202


@pytest.mark.parametrize("kind, status, words", [
    ("bad_signature", 401, "bad signature"),
    ("stale", 401, "stale timestamp"),
    ("missing", 401, "missing Stripe-Signature"),
    ("garbled_header", 401, "malformed Stripe-Signature"),
    ("malformed_json", 400, "malformed JSON"),
    ("not_an_event", 400, "not a Stripe event"),
    ("no_object", 400, "no data.object"),
    ("wrong_type", 415, "application/json"),
])
def test_a_bad_stripe_callback_is_refused_with_its_reason(connections, api, kind, status, words):
    payload: bytes | dict = invoice_event()
    kw = {}
    if kind == "bad_signature":
        kw["secret"] = "whsec_someone_else"
    elif kind == "stale":
        kw["t"] = int(time.time()) - 301  # Stripe's tolerance is 300 s
    elif kind == "missing":
        kw["header"] = ""
    elif kind == "garbled_header":
        kw["header"] = "sha256=abc"
    elif kind == "malformed_json":
        payload = b'{"id": "evt_1", "object": "event", '
    elif kind == "not_an_event":
        payload = {"id": "evt_1", "type": "invoice.paid"}
    elif kind == "no_object":
        payload = {**invoice_event(), "data": {}}
    elif kind == "wrong_type":
        kw["content_type"] = "application/x-www-form-urlencoded"
    r = post_stripe(api, payload, **kw)
    assert r.status_code == status, r.content
    assert words in json.loads(r.content)["error"]
    ev = InboundEvent.objects.get()
    assert ev.status == "rejected" and not ev.verified and words in ev.reason
    assert not SyncRecord.objects.exists()


def test_a_fresh_timestamp_within_tolerance_is_accepted(connections, api):
    assert post_stripe(api, invoice_event(), t=int(time.time()) - 290).status_code == 202


def test_other_event_types_are_stored_as_ignored(connections, api):
    ev = {**invoice_event(etype="customer.created"), "data": {"object": {"id": "cus_1", "object": "customer"}}}
    r = post_stripe(api, ev)
    assert r.status_code == 200
    stored = InboundEvent.objects.get()
    assert stored.status == "ignored" and "customer.created" in stored.reason


@pytest.mark.parametrize("etype, status", [("invoice.finalized", "open"), ("invoice.payment_failed", "payment_failed"),
                                           ("invoice.voided", "void"),
                                           ("invoice.marked_uncollectible", "uncollectible")])
def test_each_invoice_event_maps_to_a_canonical_status(connections, api, etype, status):
    post_stripe(api, invoice_event(etype=etype, status="open" if etype != "invoice.voided" else "void"))
    process_inbox()
    rec = SyncRecord.objects.get()
    assert rec.current_payload["status"] == status and rec.source_key == "invoice:in_123"


def test_a_dispute_event_makes_a_dispute_record(connections, api):
    dispute = {"id": "dp_1", "object": "dispute", "amount": 5000, "currency": "eur", "charge": "ch_1",
               "payment_intent": "pi_1", "reason": "fraudulent", "status": "needs_response", "created": 1}
    post_stripe(api, {**invoice_event(etype="charge.dispute.created"), "data": {"object": dispute}})
    process_inbox()
    rec = SyncRecord.objects.get()
    assert rec.source_key == "dispute:dp_1" and rec.current_payload["dispute"]["amount"] == "50.00"
    assert rec.current_payload["fetch"] == "dispute_invoice"


# ------------------------------------------------------------------ the sandbox API and the connector


@pytest.fixture
def client(sandboxes):
    from apps.sync.attempts import Recorder

    class WriteEach(Recorder):  # the engine writes attempts with the record's commit; here, after each call
        def finish(self, handle, **kw):
            super().finish(handle, **kw)
            self.flush()

    rec = SyncRecord.objects.create(workflow="milestone_to_invoice", stage="billing_invoice",
                                    source_connection=sandboxes["kantata"], source_key="story:test")
    recorder = WriteEach(rec, None)
    recorder.stage = "billing_invoice"
    return StripeClient(Connection.objects.get(slug="stripe"), recorder)


def raw(live_server, method, path, *, data=None, key=None, token="sk_test_sandbox_handoff"):
    headers = {"Authorization": f"Bearer {token}"}
    if key:
        headers["Idempotency-Key"] = key
    return requests.request(method, f"{live_server.url}/sandbox/stripe{path}", data=data, headers=headers, timeout=10)


def test_customers_are_found_by_metadata_or_created_once(client, live_server):
    c1 = client.find_or_create_customer(customer_key="k-1", name="Acme")
    c2 = client.find_or_create_customer(customer_key="k-1", name="Acme")
    assert c1["id"] == c2["id"] and c1["metadata"] == {"handoff_customer_key": "k-1"}
    assert SandboxObject.objects.filter(system="stripe", object_type="customer").count() == 1
    # every call is on record, with its Idempotency-Key
    attempts = list(Attempt.objects.order_by("started_at").values_list("method", "url", "outcome"))
    assert attempts == [("GET", "/v1/customers/search", "ok"), ("POST", "/v1/customers", "ok"),
                        ("GET", "/v1/customers/search", "ok")]
    assert "Idempotency-Key: handoff-customer-k-1" in Attempt.objects.get(method="POST").request_summary


def test_an_idempotency_key_replays_the_first_answer_and_refuses_other_parameters(sandboxes, live_server):
    body = {"name": "Acme", "metadata[handoff_customer_key]": "k-9"}
    first = raw(live_server, "POST", "/v1/customers", data=body, key="key-1")
    again = raw(live_server, "POST", "/v1/customers", data=body, key="key-1")
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json() and again.headers["Idempotent-Replayed"] == "true"
    assert SandboxObject.objects.filter(system="stripe", object_type="customer").count() == 1
    other = raw(live_server, "POST", "/v1/customers", data={**body, "name": "Other"}, key="key-1")
    assert other.status_code == 400 and other.json()["error"]["type"] == "idempotency_error"
    elsewhere = raw(live_server, "POST", "/v1/invoices", data={"customer": first.json()["id"]}, key="key-1")
    assert elsewhere.status_code == 400 and "same endpoint" in elsewhere.json()["error"]["message"]


def test_a_refused_request_saves_nothing_under_its_key(sandboxes, live_server):
    bad = raw(live_server, "POST", "/v1/invoices", data={"customer": "cus_nope"}, key="key-2")
    assert bad.status_code == 404
    assert bad.json()["error"] == {"type": "invalid_request_error", "message": "No such customer: 'cus_nope'",
                                   "code": "resource_missing", "param": "id",
                                   "doc_url": "https://stripe.com/docs/error-codes/resource-missing"}
    cus = raw(live_server, "POST", "/v1/customers", data={"name": "A"}).json()
    ok = raw(live_server, "POST", "/v1/invoices", data={"customer": cus["id"]}, key="key-2")
    assert ok.status_code == 200 and ok.json()["status"] == "draft"


def test_auth_and_unknown_paths_answer_in_stripes_error_shape(sandboxes, live_server):
    r = raw(live_server, "GET", "/v1/customers", token="sk_test_wrong")
    assert r.status_code == 401 and r.json()["error"]["type"] == "invalid_request_error"
    r = raw(live_server, "GET", "/v1/nothing")
    assert r.status_code == 404 and "Unrecognized request URL" in r.json()["error"]["message"]


def test_invoice_lifecycle_and_its_signed_webhooks(client, live_server):
    stripe_webhooks.configure_webhooks(mode="hold")
    cus = client.find_or_create_customer(customer_key="k-2", name="Beta")
    ctx: dict = {}
    inv = client.invoice_milestone(key="handoff-ms-1", customer_id=cus["id"], currency="EUR",
                                   amount=__import__("decimal").Decimal("1234.56"), description="M1",
                                   days_until_due=30, metadata={"handoff_milestone": "1"}, context=ctx)
    assert (inv["status"], inv["total"], inv["amount_remaining"], inv["currency"]) == ("open", 123456, 123456, "eur")
    assert inv["number"].endswith("-0001") and inv["due_date"] - inv["status_transitions"]["finalized_at"] == 30 * 86400
    assert [line["amount"] for line in inv["lines"]["data"]] == [123456]
    # run again with the same context: nothing new is created, the finalized invoice is returned
    assert client.invoice_milestone(key="handoff-ms-1", customer_id=cus["id"], currency="EUR",
                                    amount=__import__("decimal").Decimal("1234.56"), description="M1",
                                    days_until_due=30, metadata={}, context=ctx)["id"] == inv["id"]
    # and with the context lost, the idempotency keys replay the same objects
    again = client.invoice_milestone(key="handoff-ms-1", customer_id=cus["id"], currency="EUR",
                                     amount=__import__("decimal").Decimal("1234.56"), description="M1",
                                     days_until_due=30, metadata={"handoff_milestone": "1"}, context={})
    assert again["id"] == inv["id"]
    assert SandboxObject.objects.filter(system="stripe", object_type="invoice").count() == 1
    assert SandboxObject.objects.filter(system="stripe", object_type="invoiceitem").count() == 1
    paid = client.pay_invoice(inv["id"], idempotency_key="p1")
    assert (paid["status"], paid["amount_paid"], paid["amount_remaining"]) == ("paid", 123456, 0)
    voided = raw(live_server, "POST", f"/v1/invoices/{inv['id']}/void")
    assert voided.status_code == 400 and voided.json()["error"]["code"] == "invoice_not_editable"
    types = [e["type"] for e in stripe_webhooks.events_for(inv["id"])]
    assert types == ["invoice.created", "invoice.finalized", "invoice.paid"]
    held = stripe_webhooks.undelivered_events()
    assert [e["type"] for e in held] == ["invoice.finalized", "invoice.paid"]  # invoice.created: not subscribed
    # the finalized event carries the invoice as it was when finalized, signed as Stripe signs it
    assert held[0]["data"]["object"]["status"] == "open"
    received = []

    class Capture:
        status_code = 200

    def fake_post(url, data, headers, timeout):
        received.append((data, headers))
        return Capture()

    import apps.sandbox.stripe.webhooks as mod

    original = mod.requests.post
    mod.requests.post = fake_post
    try:
        stripe_webhooks.deliver_event(held[0]["id"])
    finally:
        mod.requests.post = original
    body, headers = received[0]
    event = stripe.Webhook.construct_event(body.decode(), headers["Stripe-Signature"], INBOUND_SECRETS["stripe"])
    assert event.id == held[0]["id"] and event.data.object.id == inv["id"]
    assert stripe_webhooks.undelivered_events()[0]["type"] == "invoice.paid"


def test_stripe_errors_become_downstream_errors(client, live_server):
    with pytest.raises(DownstreamError) as exc:  # 400: permanent, with Stripe's message and the param
        client.create_invoice({"customer": client.create_customer(customer_key="k", name="n",
                                                                  idempotency_key="c-1")["id"],
                               "collection_method": "send_invoice"}, idempotency_key="i-1")
    e = exc.value
    assert (e.permanent, e.status, e.field, e.system) == (True, 400, "days_until_due", "stripe")
    assert e.message == "Missing required param: days_until_due."
    with pytest.raises(DownstreamError) as exc:  # 404
        client.retrieve_invoice("in_missing")
    assert (exc.value.permanent, exc.value.status, exc.value.code) == (True, 404, "resource_missing")

    inject("stripe", fail_next_count=1, fail_next_status=429, retry_after_seconds=7)
    with pytest.raises(DownstreamError) as exc:
        client.probe()
    assert (exc.value.permanent, exc.value.status, exc.value.retry_after) == (False, 429, 7.0)
    inject("stripe", fail_next_count=1, fail_next_status=503)
    with pytest.raises(DownstreamError) as exc:
        client.probe()
    assert (exc.value.permanent, exc.value.status) == (False, 503)
    client.probe()  # and it answers again

    outcomes = list(Attempt.objects.order_by("started_at").values_list("response_status", "outcome"))
    assert outcomes[-3:] == [(429, "transient"), (503, "transient"), (200, "ok")]
    assert (400, "permanent") in outcomes and (404, "permanent") in outcomes


def test_an_unreachable_stripe_is_a_transient_failure(sandboxes):
    conn = Connection.objects.get(slug="stripe")
    conn.base_url = "http://127.0.0.1:9/sandbox/stripe"
    with pytest.raises(DownstreamError) as exc:
        StripeClient(conn).probe()
    assert exc.value.permanent is False and exc.value.status is None
