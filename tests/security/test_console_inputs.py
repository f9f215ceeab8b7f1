"""Console inputs: each odd value that once gave a logged-in user a 500 now gets a 400 in plain words (what no
screen can use: NUL and other control characters, text that is not UTF-8, over-long values) or is ignored for
the screen's default (a date out of range, a version that is not a number, a page or id past anything real).

Dave the viewer is enough: any logged-in user could reach these."""

from __future__ import annotations

from datetime import date

import pytest
from django.test import Client

from apps.core.inputs import LATEST_DATE, param_date, param_decimal, param_int, param_page
from apps.sync.models import AuditEntry
from tests.builders import held_record, linked_engagement

pytestmark = pytest.mark.django_db


@pytest.fixture
def as_dave(dave):
    client = Client()
    client.force_login(dave)
    return client


@pytest.fixture
def as_carol(carol):
    client = Client()
    client.force_login(carol)
    return client


def assert_refused_in_plain_words(response, *words: str):
    assert response.status_code == 400
    text = response.content.decode()
    assert "This request was refused" in text
    for word in words:
        assert word in text


# ------------------------------------------------------------------ refused by the guard


@pytest.mark.parametrize("url", ["/exceptions/?q=%00", "/search/?q=12-3%0045", "/events/?status=%00held",
                                 "/finance/?q=%07", "/reconciliation/?currency=%1b", "/kpis/?from=%7f"])
def test_a_control_character_in_a_filter_is_a_400(as_dave, url):
    assert_refused_in_plain_words(as_dave.get(url), "control character")


@pytest.mark.parametrize("url", ["/search/?q=%FF", "/exceptions/?workflow=%C3%28", "/kpis/?%FE=1"])
def test_a_query_that_is_not_utf8_is_a_400(as_dave, url):
    assert_refused_in_plain_words(as_dave.get(url), "not valid UTF-8")


def test_a_nul_in_a_path_value_is_a_400(as_dave, connections):
    assert_refused_in_plain_words(as_dave.get("/engagements/ENG%00-1/"), "the address")


def test_a_path_that_is_not_utf8_is_a_400(as_dave, connections):
    assert_refused_in_plain_words(as_dave.get("/engagements/%FF/"), "not valid UTF-8")


def test_an_over_long_value_is_a_400(as_dave):
    assert_refused_in_plain_words(as_dave.get("/search/", {"q": "x" * 5000}), "longer than")


def test_the_refusal_escapes_what_it_names(as_dave):
    response = as_dave.get("/exceptions/?%3Cscript%3E=%00")

    assert_refused_in_plain_words(response)
    assert b"<script>" not in response.content


def test_the_api_refuses_in_json(as_dave):
    response = as_dave.get("/api/v1/records/?status=%00")

    assert response.status_code == 400
    assert "control character" in response.json()["detail"]


def test_a_nul_in_a_form_field_is_a_400_and_changes_nothing(as_carol, connections):
    record = held_record(connections)

    response = as_carol.post(f"/records/{record.pk}/desk/", {"action": "comment", "text": "fixed\x00it"})

    assert_refused_in_plain_words(response, "the form field", "text")
    assert not AuditEntry.objects.filter(record=record).exists()


def test_a_text_area_may_hold_line_breaks_and_be_long(as_carol, connections):
    record = held_record(connections)

    response = as_carol.post(f"/records/{record.pk}/desk/",
                             {"action": "comment", "text": "line one\r\n\tline two " + "x" * 3000})

    assert response.status_code == 302
    assert AuditEntry.objects.filter(record=record, action="comment").exists()


@pytest.mark.parametrize("fields", [{"action": "claim", "version": "²"}, {"action": "claim", "version": "9" * 40},
                                    {"action": "priority", "priority": "high", "reason": "x", "version": "1"}])
def test_an_odd_number_in_a_desk_form_is_a_message_not_a_500(as_carol, connections, fields):
    record = held_record(connections)

    response = as_carol.post(f"/records/{record.pk}/desk/", fields)

    assert response.status_code == 302


def test_anonymous_requests_are_sent_to_the_login_page_first():
    response = Client().get("/exceptions/?q=%00")

    assert response.status_code == 302 and "/login/" in response["Location"]


# ------------------------------------------------------------------ ignored for the default


def test_a_date_far_in_the_future_is_clamped(as_dave):
    response = as_dave.get("/kpis/?to=9999-12-31")

    assert response.status_code == 200
    assert response.context["period"].end_date == LATEST_DATE


@pytest.mark.parametrize("query", ["from=0001-01-01&to=0001-01-02", "from=2024-02-30", "to=tomorrow",
                                   "from=2024-01-01&to=2023-01-01", "to=99999-01-01"])
def test_odd_dates_fall_back_or_clamp(as_dave, query):
    assert as_dave.get(f"/kpis/?{query}").status_code == 200
    assert as_dave.get(f"/kpis/export.csv?kpi=cycle_time&{query}").status_code == 200


def test_the_audit_export_clamps_its_dates(as_carol):
    response = as_carol.get("/audit/export.csv?from=0001-01-01&to=9999-12-31")

    assert response.status_code == 200
    assert b"".join(response.streaming_content).startswith(b"id,at,actor")


@pytest.mark.parametrize("v", ["abc", "", "-3", "1.5", "99999999999999999999999999", "²"])
def test_a_freshness_version_that_is_not_a_number_counts_as_zero(as_dave, connections, v):
    record = held_record(connections)

    response = as_dave.get(f"/records/{record.pk}/freshness/", {"v": v})

    assert response.status_code == 200
    assert response.context["stale"] is True


def test_a_fresh_version_is_still_fresh(as_dave, connections):
    record = held_record(connections)

    response = as_dave.get(f"/records/{record.pk}/freshness/", {"v": str(record.version)})

    assert response.context["stale"] is False


@pytest.mark.parametrize("page", ["abc", "-1", "0", "99999999999999999999999", "1e3", "²", "NaN"])
@pytest.mark.parametrize("url", ["/exceptions/", "/events/", "/runs/", "/finance/", "/reconciliation/"])
def test_an_odd_page_number_shows_a_page(as_carol, connections, url, page):
    assert as_carol.get(url, {"page": page}).status_code == 200


@pytest.mark.parametrize("sort", ["../../etc/passwd", "-id", "title;drop", ""])
def test_an_unknown_sort_key_is_the_default_order(as_carol, connections, sort):
    response = as_carol.get("/exceptions/", {"sort": sort})

    assert response.status_code == 200
    assert response.context["sort"] == "priority"
    assert as_carol.get("/finance/", {"sort": sort}).status_code == 200


@pytest.mark.parametrize("run", ["²", "-1", "99999999999999999999999", "1.0", "abc"])
def test_an_odd_run_id_shows_the_latest_run(as_carol, run):
    response = as_carol.get("/reconciliation/", {"run": run})

    assert response.status_code == 200
    assert response.context["f"].run is None


@pytest.mark.parametrize("pk", ["0", "99999999999999999999"])
def test_an_id_past_any_record_is_a_404(as_carol, pk):
    assert as_carol.get(f"/records/{pk}/").status_code == 404
    assert as_carol.get(f"/records/{pk}/freshness/").status_code == 404


@pytest.mark.parametrize("amount", ["1e999999", "NaN", "Infinity", "-1e400", "9" * 100])
def test_an_unusable_amount_filter_is_ignored(as_carol, connections, amount):
    held_record(connections)

    response = as_carol.get("/exceptions/", {"amount_min": amount, "amount_max": amount, "team": "any"})

    assert response.status_code == 200
    assert len(response.context["rows"]) == 1


def test_a_repeated_parameter_uses_one_value(as_carol, connections):
    held_record(connections)

    response = as_carol.get("/exceptions/?status=held&status=dead&sort=age&sort=zzz&team=any&page=1&page=x")

    assert response.status_code == 200


def test_an_engagement_code_that_does_not_exist_is_a_404(as_carol, connections):
    linked_engagement()

    assert as_carol.get("/engagements/..%2F..%2Fadmin/").status_code == 404


# ------------------------------------------------------------------ the parsers


def test_the_parsers_keep_valid_values_and_default_the_rest():
    assert param_int({"v": " 7 "}, "v", 0) == 7
    assert param_int({"v": "7x"}, "v", 0) == 0
    assert param_int({"v": "-5"}, "v", 0, lo=0) == 0
    assert param_int({"v": "9" * 40}, "v", 0) == 0  # longer than any id: not a number we use
    assert param_page({}) == 1 and param_page({"page": "3"}) == 3
    assert param_date({"d": "2026-03-01"}, "d") == date(2026, 3, 1)
    assert param_date({"d": "1066-10-14"}, "d") == date(2000, 1, 1)
    assert param_date({"d": "2026-3-1"}, "d", date(2026, 1, 1)) == date(2026, 1, 1)
    assert str(param_decimal({"a": "1500.50"}, "a")) == "1500.50"
    assert param_decimal({"a": "sNaN"}, "a") is None
    assert param_decimal({"a": "x"}, "a") is None
