"""The demo firm's won deals: invented opportunities (good ones, and every kind of bad one the quote-to-project
workflow holds), created in the HubSpot / Salesforce sandboxes and delivered to Handoff's callback API exactly as
those systems would (signed webhook v3 / SOAP Outbound Message).

Used by `manage.py demo_traffic`, the demo book, the tests and the benchmarks.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import dataclass

import requests

from apps.connectors.hubspot.inbound import signature_v3
from apps.connectors.salesforce.inbound import build_outbound_message
from apps.connectors.ids import salesforce_id18
from apps.sandbox.credentials import CALLBACK_URL_SECRETS, DEFAULT_TOKENS

ADJ = ["Northern", "Blue", "Summit", "Harbor", "Granite", "Silver", "Cedar", "Atlas", "Vertex", "Lumen", "Polar",
       "Crescent", "Evergreen", "Iron", "Beacon", "Orbit", "Maple", "Quantum", "Coastal", "Prairie"]
NOUN = ["Logistics", "Health", "Energy", "Foods", "Analytics", "Retail", "Capital", "Robotics", "Pharma", "Media",
        "Telecom", "Insurance", "Motors", "Labs", "Textiles", "Airways", "Minerals", "Bank", "Systems", "Hotels"]
PROJECTS = ["ERP rollout", "Data platform", "Cloud migration", "Finance transformation", "CX redesign",
            "Security audit", "Supply chain study", "Pricing strategy", "Org design", "AI pilot"]

# legal entity → (country, tax id maker, currency)
ENTITIES = {
    "US01": ("US", lambda r: f"{r.randrange(10, 99)}-{r.randrange(10**6, 10**7)}", "USD"),
    "UK01": ("GB", lambda r: f"GB{r.randrange(10**8, 10**9)}", "GBP"),
    "DE01": ("DE", lambda r: f"DE{r.randrange(10**8, 10**9)}", "EUR"),
}

# scenario → share of generated traffic (the rest is good)
BAD_SCENARIOS = ["no_legal_entity", "currency_not_enabled", "duplicate_customer", "unknown_terms", "bad_tax_id"]
DUPLICATE_OF = ("Northwind Traders", "GB123456789")  # an existing customer (demo_setup creates it)


@dataclass
class Opportunity:
    scenario: str
    name: str
    account: str
    tax_id: str
    country: str
    legal_entity: str
    currency: str
    amount: str
    billing_terms: str
    contract_type: str
    service_line: str

    def as_hubspot(self) -> tuple[dict, dict]:
        company = {"name": self.account, "tax_id": self.tax_id, "country": self.country,
                   "domain": self.account.lower().replace(" ", "") + ".example"}
        deal = {"dealname": self.name, "amount": self.amount, "deal_currency_code": self.currency,
                "dealstage": "closedwon", "pipeline": "default", "closedate": time.strftime("%Y-%m-%dT00:00:00Z"),
                "legal_entity": self.legal_entity, "billing_terms": self.billing_terms,
                "contract_type": self.contract_type, "service_line": self.service_line,
                "project_template": "standard", "start_date": time.strftime("%Y-%m-%d")}
        return company, deal

    def as_salesforce(self, opp_id: str, account_id: str) -> dict:
        return {"Id": opp_id, "Name": self.name, "StageName": "Closed Won", "IsWon": "true", "Amount": self.amount,
                "CurrencyIsoCode": self.currency, "CloseDate": time.strftime("%Y-%m-%d"), "AccountId": account_id,
                "Account_Name__c": self.account, "Account_Tax_Id__c": self.tax_id,
                "Account_Country__c": self.country, "Legal_Entity__c": self.legal_entity,
                "Billing_Terms__c": self.billing_terms, "Contract_Type__c": self.contract_type,
                "Service_Line__c": self.service_line, "Project_Template__c": "standard",
                "Start_Date__c": time.strftime("%Y-%m-%d"),
                "SystemModstamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())}


def salesforce_account_id(account: str) -> str:
    """A stable 18-character Account id per account name (the same in every process and run)."""
    return salesforce_id18(f"001SB{int(hashlib.sha256(account.encode()).hexdigest(), 16) % 10**10:010d}")


def account_fields(account_id: str, opp: Opportunity) -> dict:
    """The Account as the Salesforce sandbox stores it (POST /sobjects/Account: its fields, Id included)."""
    return {"Id": account_id, "Name": opp.account, "Tax_Id__c": opp.tax_id, "BillingCountryCode": opp.country}


def make_opportunity(rng: random.Random, scenario: str = "good") -> Opportunity:
    le = rng.choice(list(ENTITIES))
    country, taxer, currency = ENTITIES[le]
    account = f"{rng.choice(ADJ)} {rng.choice(NOUN)} {rng.randrange(100, 999)}"
    opp = Opportunity(scenario=scenario, name=f"{account} — {rng.choice(PROJECTS)}", account=account,
                      tax_id=taxer(rng), country=country, legal_entity=le, currency=currency,
                      amount=f"{rng.randrange(20, 900) * 1000}.00", billing_terms=rng.choice(["NET30", "NET45", "NET60"]),
                      contract_type=rng.choice(["fixed_fee", "t_and_m", "milestone", "retainer"]),
                      service_line=rng.choice(["Consulting", "Implementation", "Managed services"]))
    if scenario == "no_legal_entity":
        opp.legal_entity = ""
    elif scenario == "currency_not_enabled":
        opp.legal_entity, opp.country, opp.currency = "DE01", "DE", "USD"
        opp.tax_id = ENTITIES["DE01"][1](rng)
    elif scenario == "duplicate_customer":
        opp.account, opp.tax_id = DUPLICATE_OF
        opp.legal_entity, opp.country, opp.currency = "UK01", "GB", "GBP"
        opp.name = f"{opp.account} — {rng.choice(PROJECTS)}"
    elif scenario == "unknown_terms":
        opp.billing_terms = "NET99"
    elif scenario == "bad_tax_id":
        opp.tax_id = opp.tax_id[:4]  # the ERP refuses this format
    return opp


class Deliverer:
    """Creates the opportunity in a sandbox CRM and delivers its closed-won event to Handoff."""

    def __init__(self, *, handoff_url: str, sandbox_url: str, hubspot_slug="hubspot", hubspot_secret="",
                 salesforce_slug="salesforce", salesforce_org="", tokens: dict | None = None,
                 salesforce_url_secret: str = CALLBACK_URL_SECRETS["salesforce"]):
        self.handoff_url = handoff_url.rstrip("/")
        self.sandbox_url = sandbox_url.rstrip("/")
        self.hubspot_slug, self.hubspot_secret = hubspot_slug, hubspot_secret
        self.salesforce_slug, self.salesforce_org = salesforce_slug, salesforce_org
        self.salesforce_url = f"{self.handoff_url}/api/v1/callbacks/{salesforce_slug}/{salesforce_url_secret}/"
        self.tokens = tokens or DEFAULT_TOKENS
        self.http = requests.Session()
        self.event_seq = int(time.time() * 1000) * 1000 + random.randrange(1000)

    def _sandbox(self, system: str, method: str, path: str, body: dict) -> dict:
        r = self.http.request(method, f"{self.sandbox_url}/sandbox/{system}{path}", json=body, timeout=10,
                              headers={"Authorization": f"Bearer {self.tokens[system]}"})
        r.raise_for_status()
        return r.json()

    def create_hubspot(self, opp: Opportunity) -> str:
        company, deal = opp.as_hubspot()
        c = self._sandbox("hubspot", "POST", "/crm/v3/objects/companies", {"properties": company})
        d = self._sandbox("hubspot", "POST", "/crm/v3/objects/deals", {
            "properties": deal,
            "associations": [{"to": {"id": c["id"]},
                              "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 5}]}]})
        return d["id"]

    def hubspot_events(self, deal_ids: list[str]) -> list[dict]:
        events = []
        for deal_id in deal_ids:
            self.event_seq += 1
            events.append({"eventId": self.event_seq, "subscriptionId": 1, "portalId": 62515, "appId": 1,
                           "occurredAt": int(time.time() * 1000), "subscriptionType": "deal.propertyChange",
                           "attemptNumber": 0, "objectId": int(deal_id), "propertyName": "dealstage",
                           "propertyValue": "closedwon", "changeSource": "CRM"})
        return events

    def send_hubspot(self, events: list[dict]) -> requests.Response:
        url = f"{self.handoff_url}/api/v1/callbacks/{self.hubspot_slug}/"
        body = json.dumps(events).encode()
        ts = str(int(time.time() * 1000))
        sig = signature_v3(self.hubspot_secret, "POST", url, body, ts)
        return self.http.post(url, data=body, timeout=10, headers={
            "Content-Type": "application/json", "X-HubSpot-Signature-v3": sig, "X-HubSpot-Request-Timestamp": ts})

    def create_salesforce(self, opp: Opportunity) -> tuple[str, dict]:
        """The opportunity and its account in the Salesforce sandbox (the account once per account name, as one
        Salesforce account holds many opportunities; the invoice write-back updates both)."""
        self.event_seq += 1
        opp_id = salesforce_id18(f"006SB{self.event_seq % 10**10:010d}")
        account_id = salesforce_account_id(opp.account)
        self.ensure_salesforce_account(account_id, opp)
        fields = opp.as_salesforce(opp_id, account_id)
        self.store_salesforce("Opportunity", fields)
        return opp_id, fields

    def store_salesforce(self, sobject_type: str, fields: dict) -> None:
        """Create the record in the Salesforce sandbox, or update it when it has that Id already: what Handoff
        reads through the REST API once it is notified."""
        path = f"/services/data/v62.0/sobjects/{sobject_type}"
        r = self.http.get(f"{self.sandbox_url}/sandbox/salesforce{path}/{fields['Id']}", timeout=10,
                          headers={"Authorization": f"Bearer {self.tokens['salesforce']}"})
        if r.status_code == 200:
            self.http.patch(f"{self.sandbox_url}/sandbox/salesforce{path}/{fields['Id']}", timeout=10,
                            json={k: v for k, v in fields.items() if k != "Id"},
                            headers={"Authorization": f"Bearer {self.tokens['salesforce']}"}).raise_for_status()
        else:
            self._sandbox("salesforce", "POST", path, fields)

    def ensure_salesforce_account(self, account_id: str, opp: Opportunity) -> None:
        path = f"{self.sandbox_url}/sandbox/salesforce/services/data/v62.0/sobjects/Account"
        auth = {"Authorization": f"Bearer {self.tokens['salesforce']}"}
        if self.http.get(f"{path}/{account_id}", headers=auth, timeout=10).status_code == 200:
            return
        r = self.http.post(path, json=account_fields(account_id, opp), headers=auth, timeout=10)
        if r.status_code >= 400 and self.http.get(f"{path}/{account_id}", headers=auth,
                                                  timeout=10).status_code != 200:
            r.raise_for_status()  # not a concurrent creation of the same account: a real failure

    def send_salesforce(self, notifications: list[tuple[str, dict]],
                        sobject_type: str = "Opportunity") -> requests.Response:
        """The Outbound Message, to the connection's secret callback URL."""
        body = build_outbound_message(org_id=self.salesforce_org, notifications=notifications,
                                      sobject_type=sobject_type)
        return self.http.post(self.salesforce_url, data=body, timeout=10,
                              headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'})

    def deliver(self, opp: Opportunity, *, via: str = "hubspot", times: int = 1) -> list[requests.Response]:
        """Create the opportunity in the sandbox CRM and deliver its event `times` times (redeliveries)."""
        out = []
        if via == "hubspot":
            deal_id = self.create_hubspot(opp)
            events = self.hubspot_events([deal_id])
            for _ in range(times):
                out.append(self.send_hubspot(events))
        else:
            opp_id, fields = self.create_salesforce(opp)
            nid = f"04l{opp_id[3:]}"
            for _ in range(times):
                out.append(self.send_salesforce([(nid, fields)]))
        return out


def scenario_mix(n: int, rng: random.Random, bad_share: float = 0.25) -> list[str]:
    """n scenarios: every bad one at least once (when n allows), the rest mostly good."""
    out = list(BAD_SCENARIOS) if n >= 2 * len(BAD_SCENARIOS) else []
    while len(out) < n:
        out.append(rng.choice(BAD_SCENARIOS) if rng.random() < bad_share else "good")
    rng.shuffle(out)
    return out
