"""The API's OpenAPI document, and who may read sync records and inbound events through the API."""

from __future__ import annotations

import base64
import json

import pytest

from apps.sync.intake import process_inbox
from apps.sync.models import InboundEvent, SyncRecord

from tests.callbacks import deal_event, post_hubspot

pytestmark = pytest.mark.django_db

CALLBACK = "/api/v1/callbacks/{connection}/"
RECORDS = "/api/v1/records/"


def deliver_closed_won(api, event_id: int, deal_id: int):
    response = post_hubspot(api, [deal_event(event_id, deal_id)])
    assert response.status_code == 202, response.content
    return response


@pytest.fixture
def two_records(api, connections):
    deliver_closed_won(api, 1, 700)
    deliver_closed_won(api, 2, 701)
    api.post("/api/v1/callbacks/hubspot/", data=b"[]", content_type="application/json")  # a rejection
    process_inbox()
    assert SyncRecord.objects.count() == 2
    return list(SyncRecord.objects.order_by("source_key"))


def test_the_schema_is_served_to_anyone_and_documents_the_callback_and_records_paths(api, db):
    response = api.get("/api/v1/schema/", {"format": "json"})

    assert response.status_code == 200
    schema = json.loads(response.content)
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "Handoff API"
    assert CALLBACK in schema["paths"]
    assert RECORDS in schema["paths"]
    assert "/api/v1/records/{id}/" in schema["paths"]
    assert "/api/v1/events/" in schema["paths"]


def test_the_schema_describes_what_the_callback_answers(api, db):
    schema = json.loads(api.get("/api/v1/schema/", {"format": "json"}).content)

    post = schema["paths"][CALLBACK]["post"]
    assert post["operationId"] == "callback_receive"
    assert {"200", "202", "400", "401", "403", "404", "413", "415"} <= set(post["responses"])
    assert {"application/json", "text/xml"} <= set(post["requestBody"]["content"])
    headers = {p["name"]: p for p in post["parameters"] if p["in"] == "header"}
    # every sender's signature headers: HubSpot, Standard Webhooks (Kantata, NetSuite), Stripe — none required
    assert set(headers) == {"X-HubSpot-Signature-v3", "X-HubSpot-Request-Timestamp", "webhook-id",
                            "webhook-timestamp", "webhook-signature", "Stripe-Signature"}
    assert not any(h.get("required") for h in headers.values())
    assert "Kantata" in headers["webhook-signature"]["description"]
    assert "NetSuite" in headers["webhook-id"]["description"]
    for system in ("HubSpot", "Salesforce", "Kantata", "NetSuite", "Stripe", "Standard Webhooks"):
        assert system in post["description"], system
    # HubSpot posts an array of events; Kantata, NetSuite and Stripe one event object
    json_body = post["requestBody"]["content"]["application/json"]["schema"]
    assert {s["type"] for s in json_body["oneOf"]} == {"array", "object"}
    assert "Stripe-Signature" in post["responses"]["401"]["description"]
    assert {"connection"} == {p["name"] for p in post["parameters"] if p["in"] == "path"}
    # the records list needs a login; the callback is authenticated by the sender's signature instead
    assert schema["paths"][RECORDS]["get"]["security"] != [{}]
    assert post.get("security", [{}]) == [{}]


def test_the_schema_is_yaml_by_default(api, db):
    response = api.get("/api/v1/schema/")

    assert response.status_code == 200
    assert b"/api/v1/callbacks/{connection}/:" in response.content
    assert b"/api/v1/records/:" in response.content


def test_the_api_docs_page_loads_nothing_from_the_internet(client, db):
    response = client.get("/api/v1/docs/")

    assert response.status_code == 200
    page, policy = response.content.decode(), response["Content-Security-Policy"]
    assert "googleapis" not in page and "gstatic" not in page and "/static/" in page  # Redoc from the sidecar app
    assert "https://" not in policy


@pytest.mark.parametrize("path", [RECORDS, "/api/v1/records/1/", "/api/v1/events/"])
def test_reading_the_api_requires_a_login(api, two_records, path):
    response = api.get(path)

    assert response.status_code in (401, 403)
    assert "results" not in json.loads(response.content)


def test_wrong_basic_auth_credentials_are_refused(api, two_records, alice):
    api.credentials(HTTP_AUTHORIZATION="Basic YWxpY2U6d3Jvbmc=")  # alice:wrong

    response = api.get(RECORDS)

    # 403, not 401: session auth comes first in DEFAULT_AUTHENTICATION_CLASSES, so DRF sends no challenge
    assert response.status_code in (401, 403)
    assert "Invalid username/password" in json.loads(response.content)["detail"]


def test_a_logged_in_user_lists_the_records(api, two_records, alice):
    api.force_authenticate(alice)

    response = api.get(RECORDS)

    assert response.status_code == 200
    data = json.loads(response.content)
    assert data["count"] == 2
    by_key = {r["source_key"]: r for r in data["results"]}
    assert set(by_key) == {"deal:700", "deal:701"}
    assert by_key["deal:700"]["source"] == "hubspot"
    assert by_key["deal:700"]["workflow"] == "quote_to_project"
    assert by_key["deal:700"]["status"] == "pending"
    assert by_key["deal:700"]["id"] == two_records[0].pk


def test_a_session_login_lists_the_records(api, two_records, alice):
    assert api.login(username="alice", password="pw-alice")

    response = api.get(RECORDS)

    assert response.status_code == 200
    assert json.loads(response.content)["count"] == 2


def test_basic_auth_with_the_right_password_lists_the_records(api, two_records, alice):
    api.credentials(HTTP_AUTHORIZATION="Basic " + base64.b64encode(b"alice:pw-alice").decode())

    response = api.get(RECORDS)

    assert response.status_code == 200
    assert json.loads(response.content)["count"] == 2


def test_the_records_list_filters_by_status(api, two_records, alice):
    SyncRecord.objects.filter(pk=two_records[1].pk).update(status="held", reason_code="missing_legal_entity")
    api.force_authenticate(alice)

    held = json.loads(api.get(RECORDS, {"status": "held"}).content)
    by_reason = json.loads(api.get(RECORDS, {"reason_code": "missing_legal_entity"}).content)
    pending = json.loads(api.get(RECORDS, {"status": "pending"}).content)

    assert [r["source_key"] for r in held["results"]] == ["deal:701"]
    assert [r["source_key"] for r in by_reason["results"]] == ["deal:701"]
    assert [r["source_key"] for r in pending["results"]] == ["deal:700"]


def test_a_logged_in_user_reads_one_record(api, two_records, alice):
    api.force_authenticate(alice)

    response = api.get(f"/api/v1/records/{two_records[0].pk}/")

    assert response.status_code == 200
    assert json.loads(response.content)["source_key"] == "deal:700"
    assert api.get("/api/v1/records/999999999/").status_code == 404


def test_an_integration_admin_sees_every_inbound_event_including_rejections(api, two_records, carol):
    api.force_authenticate(carol)

    events = json.loads(api.get("/api/v1/events/").content)["results"]
    rejected = json.loads(api.get("/api/v1/events/", {"status": "rejected"}).content)["results"]

    assert sorted(e["status"] for e in events) == ["processed", "processed", "rejected"]
    assert len(rejected) == 1
    assert rejected[0]["http_status"] == 401 and rejected[0]["verified"] is False and rejected[0]["reason"]
    assert InboundEvent.objects.filter(status="rejected").count() == 1


def test_the_records_api_is_read_only(api, two_records, alice):
    api.force_authenticate(alice)

    response = api.post(RECORDS, {"workflow": "x"}, format="json")
    patch = api.patch(f"/api/v1/records/{two_records[0].pk}/", {"status": "succeeded"}, format="json")

    assert response.status_code == 405 and patch.status_code == 405
    assert SyncRecord.objects.count() == 2
    assert set(SyncRecord.objects.values_list("status", flat=True)) == {"pending"}
