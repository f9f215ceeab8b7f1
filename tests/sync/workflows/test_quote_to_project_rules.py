"""Quote-to-project rules and mappings, as plain functions (no HTTP)."""

from __future__ import annotations

import pytest

from apps.canonical.models import Customer
from apps.canonical.ownership import NotSystemOfRecord, assert_may_write
from apps.canonical.services import customer_find_duplicates, customer_upsert, external_id_link
from apps.connectors.base import DownstreamError, exact_json, parse_retry_after
from apps.connectors.hubspot.mapping import canonical_from_deal, deal_company_id
from apps.connectors.salesforce.mapping import canonical_from_opportunity, is_won
from apps.sync.engine import backoff_seconds
from apps.sync.workflows.base import Hold
from apps.sync.workflows.catalog import MODULES, WORKFLOWS
from apps.sync.workflows.quote_to_project import DEAL_GONE, ERP_REFUSAL, NO_COMPANY, WORKFLOW, validate

pytestmark = pytest.mark.django_db


def payload(**overrides):
    p = {
        "opportunity_id": "123", "opportunity_name": "Acme — ERP rollout", "amount": "120000.00", "currency": "EUR",
        "contract_type": "fixed_fee", "billing_terms": "NET30", "legal_entity": "DE01",
        "account": {"id": "9", "name": "Acme GmbH", "tax_id": "DE123456789", "country": "DE"},
    }
    account = overrides.pop("account", {})
    p.update(overrides)
    p["account"] = {**p["account"], **account}
    return p


def reasons(problems):
    return [p.reason for p in problems]


def test_a_complete_opportunity_passes(firm):
    assert validate(payload()) == []


def test_it_holds_record_without_legal_entity(firm):
    [problem] = validate(payload(legal_entity=""))
    assert problem.reason == "missing_legal_entity"
    assert problem.fields == ["legal_entity"]
    assert "legal entity" in problem.message


def test_it_names_the_valid_legal_entities_when_one_is_unknown(firm):
    [problem] = validate(payload(legal_entity="XX99"))
    assert problem.reason == "invalid_legal_entity"
    assert "DE01" in problem.message and "US01" in problem.message


def test_it_holds_a_currency_the_legal_entity_does_not_bill_in(firm):
    [problem] = validate(payload(currency="USD"))
    assert problem.reason == "currency_not_enabled"
    assert set(problem.fields) == {"currency", "legal_entity"}
    assert "CHF, EUR" in problem.message


def test_a_legal_entitys_base_currency_is_always_enabled(firm):
    assert validate(payload(legal_entity="US01", currency="USD")) == []


def test_it_holds_unknown_billing_terms(firm):
    [problem] = validate(payload(billing_terms="NET99"))
    assert problem.reason == "unknown_billing_terms"
    assert "NET30" in problem.message


def test_it_holds_an_account_without_tax_id(firm):
    assert reasons(validate(payload(account={"tax_id": ""}))) == ["missing_tax_profile"]


def test_it_reports_every_problem_at_once(firm):
    found = reasons(validate(payload(legal_entity="", billing_terms="", amount="abc")))
    assert set(found) == {"missing_legal_entity", "unknown_billing_terms", "payload_schema_invalid"}


def test_it_rejects_an_unknown_currency_code_as_schema_invalid(firm):
    [problem] = validate(payload(currency="EURO"))
    assert (problem.reason, problem.fields) == ("payload_schema_invalid", ["currency"])


def test_it_suspects_a_duplicate_customer_with_same_name_and_tax_id(firm):
    [problem] = validate(payload(account={"name": "northwind traders", "tax_id": "GB123456789", "id": "77"},
                                 legal_entity="UK01", currency="GBP"))
    assert problem.reason == "duplicate_customer_suspected"
    assert "Northwind Traders" in problem.message


def test_the_same_crm_account_is_not_its_own_duplicate(firm):
    northwind = Customer.objects.get(name="Northwind Traders")
    external_id_link(obj=northwind, system="hubspot", object_type="account", external_id="77")
    p = payload(account={"name": "Northwind Traders", "tax_id": "GB123456789", "id": "77"}, legal_entity="UK01",
                currency="GBP")
    assert validate(p, source_kind="hubspot") == []


def test_a_confirmed_new_customer_or_a_link_resolves_the_duplicate(firm):
    dup = {"account": {"name": "Northwind Traders", "tax_id": "GB123456789", "id": "78"}, "legal_entity": "UK01",
           "currency": "GBP"}
    assert validate(payload(duplicate_resolution="new", **dup)) == []
    northwind = Customer.objects.get(name="Northwind Traders")
    assert validate(payload(duplicate_resolution=f"link:{northwind.pk}", **dup)) == []
    assert reasons(validate(payload(duplicate_resolution="link:999999", **dup))) == ["duplicate_customer_suspected"]


def test_owner_team_follows_the_reason():
    assert WORKFLOW.owner_team("missing_legal_entity") == "pmo"
    assert WORKFLOW.owner_team("unknown_billing_terms") == "finance_ops"
    assert WORKFLOW.owner_team("downstream_unavailable") == "integration_admin"


def test_every_workflow_reads_its_owner_teams_from_its_table():
    # the catalog runs every workflow of DOMAIN.md (1–7, in its order), each as its module declares it
    assert list(WORKFLOWS) == ["quote_to_project", "time_to_billing", "milestone_to_invoice",
                               "invoice_payment_to_crm", "change_order", "actuals_to_forecast", "reconciliation"]
    for module in MODULES:
        wf = WORKFLOWS[module.WORKFLOW.name]
        assert wf is module.WORKFLOW
        for reason, team in module.OWNER_TEAM.items():
            assert wf.owner_team(reason) == team, (wf.name, reason)
        assert wf.owner_team("some_reason_nobody_named") == module.DEFAULT_TEAM
        assert wf.owner_team("internal_error") == "integration_admin" and wf.priority({}) == module.PRIORITY


def test_a_permanent_refusal_holds_with_the_field_at_fault_and_a_transient_one_is_retried():
    refused = DownstreamError("Invalid vatRegNumber", permanent=True, system="netsuite", status=400,
                              field="vatRegNumber")
    with pytest.raises(Hold) as held:
        with ERP_REFUSAL.as_hold(what="create the customer"):
            raise refused
    [problem] = held.value.problems
    assert (problem.reason, problem.fields, problem.system) == ("downstream_validation", ["account.tax_id"], "netsuite")
    assert problem.message == "The ERP refused to create the customer: Invalid vatRegNumber (field: tax id)."
    down = DownstreamError("503", permanent=False, system="netsuite", status=503)
    with pytest.raises(DownstreamError):  # the engine retries it
        with ERP_REFUSAL.as_hold(what="create the customer"):
            raise down
    gone = DownstreamError("not found", permanent=True, system="hubspot", status=404)
    with pytest.raises(Hold) as held:
        with DEAL_GONE.as_hold(deal_id="42"):
            raise gone
    assert (held.value.problems[0].reason, held.value.problems[0].message) == (
        "source_not_found", "HubSpot has no deal 42 (deleted or merged?).")
    with pytest.raises(DownstreamError):  # a refusal DEAL_GONE does not declare: the engine's generic hold
        with DEAL_GONE.as_hold(deal_id="42"):
            raise refused


def test_only_the_crm_may_write_customer_fields(firm):
    assert_may_write("customer", "crm")
    with pytest.raises(NotSystemOfRecord):
        assert_may_write("customer", "erp")
    with pytest.raises(NotSystemOfRecord):
        customer_upsert(source_role="psa", system="kantata", account_id="1", fields={"name": "x"})
    assert not Customer.objects.filter(name="x").exists()


def test_hubspot_deal_and_company_map_to_the_canonical_opportunity():
    deal = {"id": "55", "properties": {"dealname": "Big deal", "amount": "1000", "deal_currency_code": "eur",
                                       "closedate": "2026-11-20T00:00:00Z", "legal_entity": "DE01",
                                       "billing_terms": "NET30"},
            "associations": {"companies": {"results": [{"id": "9", "type": "deal_to_company"}]}}}
    company = {"id": "9", "properties": {"name": "Acme", "tax_id": "DE1", "country": "de"}}
    p = canonical_from_deal(deal, company)
    assert deal_company_id(deal) == "9"
    assert (p["opportunity_id"], p["currency"], p["close_date"]) == ("55", "EUR", "2026-11-20")
    assert p["account"] == {"id": "9", "name": "Acme", "tax_id": "DE1", "country": "DE", "parent_id": ""}


def test_salesforce_records_map_to_the_canonical_opportunity():
    # as the REST API returns them: a currency field is a JSON number (read as Decimal), null for no value
    opportunity = exact_json(
        '{"attributes": {"type": "Opportunity", "url": "/services/data/v62.0/sobjects/Opportunity/006A"}, '
        '"Id": "006A", "Name": "Opp <A&B>", "StageName": "Closed Won", "IsWon": true, "Amount": 5.50, '
        '"CurrencyIsoCode": "gbp", "AccountId": "001A", "Legal_Entity__c": "UK01", "CloseDate": "2026-11-20", '
        '"End_Date__c": null}')
    account = {"Id": "001A", "Name": "A&B Ltd", "Tax_Id__c": "GB123456789", "BillingCountryCode": "gb"}
    p = canonical_from_opportunity(opportunity, account)
    assert is_won(opportunity, ["Closed Won"])
    assert (p["opportunity_id"], p["opportunity_name"], p["amount"]) == ("006A", "Opp <A&B>", "5.50")
    assert (p["currency"], p["close_date"], p["end_date"], p["legal_entity"]) == ("GBP", "2026-11-20", "", "UK01")
    assert p["account"] == {"id": "001A", "name": "A&B Ltd", "tax_id": "GB123456789", "country": "GB",
                            "parent_id": ""}


def test_backoff_grows_with_jitter_caps_and_honours_retry_after(connections):
    conn = connections["netsuite"]
    delays = [backoff_seconds(conn, n, None) for n in range(1, 12)]
    assert all(d > 0 for d in delays)
    assert max(delays) <= conn.backoff_cap_seconds
    assert 1.0 <= backoff_seconds(conn, 1, None) <= 2.0  # base 2 s, equal jitter
    assert backoff_seconds(conn, 1, 30.0) == 30.0
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("soon") is None


# ---------------------------------------------------------------- normalised values (apps/canonical/normalise.py)


def test_a_tax_id_with_spaces_is_the_existing_customers_compact_id(firm):
    # Northwind Traders is stored as GB123456789
    [problem] = validate(payload(account={"name": "Northwind Traders", "tax_id": "GB 123 456 789", "id": "77",
                                          "country": "GB"}, legal_entity="UK01", currency="GBP"))
    assert problem.reason == "duplicate_customer_suspected" and "Northwind Traders" in problem.message
    [problem] = validate(payload(account={"name": "Northwind Traders", "tax_id": "123.456.789", "id": "77",
                                          "country": "United Kingdom"}, legal_entity="UK01", currency="GBP"))
    assert problem.reason == "duplicate_customer_suspected"


def test_an_existing_customers_tax_id_is_compared_normalised_on_the_fix_form_too(firm):
    northwind = Customer.objects.get(name="Northwind Traders")
    assert list(customer_find_duplicates(name="NORTHWIND TRADERS", tax_id="gb-123 456 789")) == [northwind]
    assert list(customer_find_duplicates(name="Northwind Traders", tax_id="123456789", country="GB")) == [northwind]


def test_a_country_name_passes_and_an_unrecognised_country_holds_naming_the_field(firm):
    assert validate(payload(account={"country": "Germany"})) == []
    [problem] = validate(payload(account={"country": "Atlantis"}))
    assert (problem.reason, problem.fields) == ("payload_schema_invalid", ["account.country"])
    assert "Atlantis" in problem.message


def test_a_tax_id_that_cannot_be_normalised_holds_naming_the_field(firm):
    [problem] = validate(payload(account={"tax_id": "DE 811#907"}))
    assert (problem.reason, problem.fields) == ("missing_tax_profile", ["account.tax_id"])
    assert "DE 811#907" in problem.message
    long_id = "DE" + "9" * 80
    [problem] = validate(payload(account={"tax_id": long_id}))
    assert problem.fields == ["account.tax_id"] and "longer than 64" in problem.message


def test_an_iso_currency_is_held_only_where_the_legal_entity_does_not_enable_it(firm):
    assert validate(payload(currency="chf")) == []  # DE01 bills in EUR and CHF
    [problem] = validate(payload(currency="SEK"))  # ISO 4217, not enabled for DE01
    assert problem.reason == "currency_not_enabled" and "SEK" in problem.message
    [problem] = validate(payload(currency="NOK"))  # ISO 4217, outside the firm's usual ten: still only "not enabled"
    assert problem.reason == "currency_not_enabled"
    [problem] = validate(payload(currency="XYZ"))
    assert (problem.reason, problem.fields) == ("payload_schema_invalid", ["currency"])
    assert "not an ISO 4217 currency" in problem.message


def test_a_salesforce_account_country_name_maps_to_its_code():
    opportunity = {"Id": "006B", "Name": "Opp", "AccountId": "001B", "CurrencyIsoCode": "EUR"}
    for name, code in [("Germany", "DE"), ("United Kingdom", "GB")]:
        account = {"Id": "001B", "Name": "B GmbH", "Tax_Id__c": "DE 811 907 980", "BillingCountryCode": name}
        assert canonical_from_opportunity(opportunity, account)["account"]["country"] == code
    account = {"Id": "001B", "Name": "B GmbH", "BillingCountryCode": "Republic of Atlantis"}
    assert canonical_from_opportunity(opportunity, account)["account"]["country"] == "Republic of Atlantis"


def test_a_deal_without_a_company_has_its_own_reason_for_the_pmo():
    assert WORKFLOW.owner_team("missing_account") == "pmo"
    problem = NO_COMPANY.problem("42")
    assert (problem.reason, problem.fields, problem.system) == ("missing_account", [], "hubspot")
    assert problem.message.startswith("The deal 42 has no associated company in HubSpot: associate the customer's")
