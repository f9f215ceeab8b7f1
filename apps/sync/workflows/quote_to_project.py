"""Quote-to-project: a closed-won opportunity becomes a customer in the ERP, a project in the PSA (and a job in
the ERP), and the new ids are written back to the CRM opportunity.

Stages: fetch (the callback is only a trigger: the opportunity is read through the CRM API) → validate →
erp_customer → psa_project → erp_project → crm_writeback. Every downstream write is idempotent: NetSuite upserts
by external id, Kantata is searched by engagement code before a workspace is created, and the CRM write-back is
a PATCH of the same values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from apps.canonical.models import Customer, Engagement, LegalEntity, PaymentTerms
from apps.canonical import normalise
from apps.canonical import services as canonical
from apps.connectors.hubspot import mapping as hubspot_mapping
from apps.connectors.salesforce import mapping as salesforce_mapping
from apps.core.dates import parse_date
from apps.finance.money import amount_problem

from .base import Hold, Problem, Refusal, Stage, Workflow

# whose queue a held opportunity lands in (base.ADMIN_TEAM adds Handoff's own failures and outages)
OWNER_TEAM = {
    "missing_legal_entity": "pmo", "invalid_legal_entity": "pmo", "currency_not_enabled": "pmo",
    "payload_schema_invalid": "pmo", "duplicate_customer_suspected": "pmo", "source_not_found": "pmo",
    "opportunity_not_won": "pmo",  # the CRM record does not confirm the win its notification announced
    "missing_account": "pmo",  # the deal or opportunity names no company: sales associates one in the CRM
    "unknown_billing_terms": "finance_ops", "missing_tax_profile": "finance_ops",
    "downstream_validation": "finance_ops",  # the ERP refused the customer's tax or terms data
}
DEFAULT_TEAM = "pmo"
PRIORITY = 2  # project set-up (money postings are P1, reference data P3)

CONTRACT_TYPES = [c.value for c in Engagement.ContractType]

FIX_FIELDS = ["legal_entity", "currency", "billing_terms", "account.tax_id", "account.name", "account.country",
              "contract_type", "amount", "service_line", "project_template", "duplicate_resolution"]

FIELD_LABELS = {
    "legal_entity": "legal entity", "currency": "currency", "billing_terms": "billing terms",
    "account.tax_id": "tax id", "account.name": "account name", "account.country": "country",
    "contract_type": "contract type", "amount": "amount", "service_line": "service line",
    "project_template": "project template", "duplicate_resolution": "duplicate resolution",
}

# what a system's permanent refusal becomes (NetSuite's field paths → the canonical field a person fixes)
ERP_REFUSAL = Refusal("The ERP refused to {what}: {message} (field: {label}).", labels=FIELD_LABELS, fields={
    "vatRegNumber": "account.tax_id", "companyName": "account.name", "subsidiary": "legal_entity",
    "currency": "currency", "terms": "billing_terms", "addressBook": "account.country"})
PSA_REFUSAL = Refusal("The PSA refused to create the project: {message}.")
CRM_REFUSAL = Refusal("The CRM refused the write-back of the new ids: {message}.")
DEAL_GONE = Refusal(not_found="HubSpot has no deal {deal_id} (deleted or merged?).")
OPPORTUNITY_GONE = Refusal(not_found="Salesforce has no opportunity {opp_id}, or not its account (deleted or merged?).")


@dataclass(frozen=True)
class MissingAccount:
    """A deal or opportunity that names no customer company: the fix is in the CRM (then resubmit: the record
    fetches again), so no field of the record is at fault."""

    system: str
    message: str

    def problem(self, opp_id: str) -> Problem:
        return Problem("missing_account", self.message.format(opp_id=opp_id), [], self.system, "no account")


NO_COMPANY = MissingAccount("hubspot", "The deal {opp_id} has no associated company in HubSpot: associate the "
                            "customer's company with the deal, then resubmit this record.")
NO_ACCOUNT = MissingAccount("salesforce", "The opportunity {opp_id} has no account in Salesforce: set the customer's "
                            "account on the opportunity, then resubmit this record.")


@dataclass
class Reference:
    """Reference data the rules need, loaded once per batch (not once per record)."""

    legal_entities: dict[str, LegalEntity] = field(default_factory=dict)
    terms: dict[str, PaymentTerms] = field(default_factory=dict)

    @classmethod
    def load(cls) -> "Reference":
        return cls(legal_entities={le.code: le for le in LegalEntity.objects.all()},
                   terms={t.code: t for t in PaymentTerms.objects.all()})


def validate(payload: dict, *, source_kind: str = "", ref: Reference | None = None,
             found: dict | None = None) -> list[Problem]:
    """Every rule a closed-won opportunity must pass before anything is written anywhere."""
    ref = ref or Reference.load()
    name = payload.get("opportunity_name") or "this opportunity"
    problems: list[Problem] = []

    le_code = (payload.get("legal_entity") or "").strip()
    le = ref.legal_entities.get(le_code)
    if not le_code:
        problems.append(Problem("missing_legal_entity",
                                f"No legal entity is set on “{name}”. Choose the legal entity that will contract "
                                f"and invoice this work.", ["legal_entity"]))
    elif le is None or not le.active:
        problems.append(Problem("invalid_legal_entity",
                                f"Legal entity “{le_code}” does not exist or is inactive. Choose one of: "
                                f"{', '.join(sorted(c for c, x in ref.legal_entities.items() if x.active))}.",
                                ["legal_entity"]))

    try:
        currency = normalise.currency_code(payload.get("currency") or "")
    except ValueError as e:
        currency = ""
        problems.append(Problem("payload_schema_invalid", str(e), ["currency"]))
    else:
        if le is not None and le.active and not le.bills_in(currency):
            enabled = sorted({le.base_currency, *le.enabled_currencies})
            problems.append(Problem("currency_not_enabled",
                                    f"{le.code} cannot invoice in {currency}: enabled currencies are "
                                    f"{', '.join(enabled)}. Change the currency or the legal entity.",
                                    ["currency", "legal_entity"]))

    terms = (payload.get("billing_terms") or "").strip()
    if terms not in ref.terms:
        problems.append(Problem("unknown_billing_terms",
                                f"Billing terms “{terms or '(empty)'}” are not known. Use one of: "
                                f"{', '.join(sorted(ref.terms))}.", ["billing_terms"]))

    amount = payload.get("amount")
    try:
        if amount in (None, "") or Decimal(str(amount)) < 0:
            raise InvalidOperation
    except (InvalidOperation, ValueError):
        problems.append(Problem("payload_schema_invalid",
                                f"The amount “{amount}” is not a positive number.", ["amount"]))
    else:
        if currency and (why := amount_problem(amount, currency)):
            problems.append(Problem("payload_schema_invalid", f"The amount “{amount}” {why}.", ["amount"]))

    ctype = payload.get("contract_type") or ""
    if ctype and ctype not in CONTRACT_TYPES:
        problems.append(Problem("payload_schema_invalid",
                                f"Contract type “{ctype}” is not one of {', '.join(CONTRACT_TYPES)}.",
                                ["contract_type"]))

    account = payload.get("account") or {}
    if not (account.get("name") or "").strip():
        problems.append(Problem("payload_schema_invalid", "The account has no name.", ["account.name"]))
    problems += normalised_account(account)[1]

    lookup = duplicate_lookup(payload)
    if lookup is not None and lookup[0] == "link":
        problems += duplicate_problems(lookup, link_exists=lookup[1] is not None
                                       and Customer.objects.filter(pk=lookup[1]).exists())
    elif lookup is not None:
        own, dups = canonical.account_customer_and_duplicates(
            system=source_kind, account_id=account.get("id") or "", name=lookup[1][0], tax_id=lookup[1][1])
        if found is not None:
            found["customer"] = own  # the stage writes to it, without looking it up again
        problems += duplicate_problems(lookup, duplicates=[(c.pk, c.name) for c in dups])
    return problems


def normalised_account(account: dict) -> tuple[dict, list[Problem]]:
    """The account's country and tax id in the one form Handoff compares and sends (apps/canonical/normalise.py),
    and a Problem naming each that is missing or cannot be normalised (then its value is left as it came)."""
    values = {"country": account.get("country") or "", "tax_id": account.get("tax_id") or ""}
    problems = []
    if values["country"].strip():
        try:
            values["country"] = normalise.country_code(values["country"])
        except ValueError as e:
            problems.append(Problem("payload_schema_invalid", f"The account's country: {e}", ["account.country"]))
    if not values["tax_id"].strip():
        problems.append(Problem("missing_tax_profile",
                                f"Account “{account.get('name') or '?'}” has no tax id; the ERP needs one to create "
                                f"the customer.", ["account.tax_id"]))
    else:
        try:
            values["tax_id"] = normalise.tax_id(values["tax_id"], values["country"])
        except ValueError as e:
            problems.append(Problem("missing_tax_profile", f"{e} The ERP needs a valid one to create the customer.",
                                    ["account.tax_id"]))
    return values, problems


def duplicate_lookup(payload: dict) -> tuple | None:
    """What the duplicate-customer rule must look up for this payload: ("link", customer pk or None) when the
    person chose a customer to link to; ("dup", (NAME, normalised tax id)) when the account could duplicate a
    customer; None when they confirmed it is a different customer, or the account lacks a name or a tax id that
    can be normalised (held for that)."""
    resolution = payload.get("duplicate_resolution") or ""
    account = payload.get("account") or {}
    if resolution.startswith("link:"):
        return "link", int(resolution[5:]) if resolution[5:].isdigit() else None
    if resolution == "new" or not (account.get("name") or "").strip():
        return None
    values, problems = normalised_account(account)
    if any("account.tax_id" in p.fields for p in problems):
        return None
    return "dup", (account["name"].strip().upper(), values["tax_id"])


def duplicate_problems(lookup: tuple, *, link_exists: bool = False, duplicates=()) -> list[Problem]:
    """The duplicate-customer rule, given what was looked up (one record at a time here, a whole bulk chunk at
    once in apps/sync/bulk_checks.py): `duplicates` are (pk, name) of the other customers with the same name and
    tax id, the account's own customer left out."""
    if lookup[0] == "link":
        return [] if link_exists else [Problem("duplicate_customer_suspected",
                                               "The customer chosen to link to no longer exists.",
                                               ["duplicate_resolution"])]
    if not duplicates:
        return []
    listing = ", ".join(f"#{pk} {name}" for pk, name in duplicates)
    return [Problem("duplicate_customer_suspected",
                    f"A customer with the same name and tax id already exists ({listing}). Link this account to it, "
                    f"or confirm it is a different customer.", ["duplicate_resolution", "account.name",
                                                                 "account.tax_id"])]


# ---------------------------------------------------------------- stages


def stage_fetch(ctx) -> None:
    """The callback is only a trigger: read the opportunity (HubSpot: the deal and its company; Salesforce: the
    Opportunity and its Account) through the CRM's API, and build the payload from that alone."""
    if ctx.context.get("fetched") or ctx.source.kind not in ("hubspot", "salesforce"):
        return
    client = ctx.client_for(ctx.source)
    if ctx.source.kind == "hubspot":
        deal_id = ctx.payload.get("deal_id") or ctx.record.source_key.split(":", 1)[1]
        with DEAL_GONE.as_hold(deal_id=deal_id):
            deal = client.get_deal(deal_id)
        company_id = hubspot_mapping.deal_company_id(deal)
        if not company_id:
            raise Hold([NO_COMPANY.problem(deal_id)])
        company = client.get_company(company_id)
        canonical_payload = hubspot_mapping.canonical_from_deal(deal, company)
        canonical_payload["deal_id"] = deal_id
    else:
        canonical_payload = _salesforce_opportunity(ctx, client)
    ctx.payload.clear()
    ctx.payload.update(canonical_payload)
    ctx.set_original(canonical_payload)
    ctx.context["fetched"] = True


def _salesforce_opportunity(ctx, client) -> dict:
    """The Opportunity and its Account as the REST API returns them. What the Outbound Message said is not used:
    an opportunity the API does not show as won is held (not set up), so a forged or outdated notification
    creates nothing; Salesforce's next notification of a win starts the record over with the newer record."""
    opp_id = ctx.payload.get("opportunity_id") or ctx.record.source_key.split(":", 1)[1]
    with OPPORTUNITY_GONE.as_hold(opp_id=opp_id):
        opportunity = client.get_opportunity(opp_id)
        account_id = salesforce_mapping.value(opportunity, "AccountId")
        if not account_id:
            raise Hold([NO_ACCOUNT.problem(opp_id)])
        account = client.get_account(account_id)
    won_stages = ctx.source.settings.get("closed_won_stages", ["Closed Won"])
    if not salesforce_mapping.is_won(opportunity, won_stages):
        stage = salesforce_mapping.value(opportunity, "StageName") or "(none)"
        raise Hold([Problem("opportunity_not_won",
                            f"Salesforce shows opportunity {opp_id} at stage “{stage}”, not closed-won: no project "
                            f"was set up. When it is won, Salesforce's notification starts this record over.",
                            [], "salesforce", f"StageName={stage}")])
    return salesforce_mapping.canonical_from_opportunity(opportunity, account)


def stage_validate(ctx) -> None:
    found: dict = {}
    problems = validate(ctx.payload, source_kind=ctx.source.kind, ref=ctx.reference(Reference), found=found)
    if problems:
        raise Hold(problems)
    p = ctx.payload
    ref = ctx.reference(Reference)
    le = ref.legal_entities[p["legal_entity"]]

    account = p["account"]
    normalised, _ = normalised_account(account)  # validated above: these are the forms stored and sent
    currency = normalise.currency_code(p["currency"])

    def apply():
        resolution = p.get("duplicate_resolution") or ""
        linked = (Customer.objects.get(pk=int(resolution[5:])) if resolution.startswith("link:")
                  else found.get("customer"))
        customer = canonical.customer_upsert(
            source_role="crm", system=ctx.source.kind, account_id=account["id"] or f"opp-{p['opportunity_id']}",
            customer=linked, known_new=linked is None and "customer" in found and bool(account["id"]),
            fields={"name": account["name"].strip(), "tax_id": normalised["tax_id"],
                    "country": normalised["country"], "currency": currency,
                    "payment_terms": ref.terms[p["billing_terms"]], "legal_entity": le},
        )
        engagement = canonical.engagement_upsert_from_opportunity(
            source_role="crm", system=ctx.source.kind, opportunity_id=p["opportunity_id"],
            fields={"name": p.get("opportunity_name") or account["name"], "customer": customer, "legal_entity": le,
                    "contract_type": p.get("contract_type") or Engagement.ContractType.FIXED_FEE,
                    "contract_value": Decimal(str(p["amount"])), "currency": currency,
                    "start_date": parse_date(p.get("start_date")), "end_date": parse_date(p.get("end_date")),
                    "service_line": p.get("service_line", ""), "project_template": p.get("project_template", ""),
                    "billing_schedule": p.get("billing_schedule", ""),
                    "correlation_id": ctx.record.correlation_id},
        )
        ctx.context.update(customer_id=customer.pk, engagement_id=engagement.pk, engagement_code=engagement.code)
        ctx.cache.update(customer=customer, engagement=engagement)  # the next stages need them, not a re-read

    ctx.on_commit(apply)


def _cached(ctx, key: str, load):
    """An object an earlier stage of this run loaded or wrote (else read it now)."""
    obj = ctx.cache.get(key)
    if obj is None:
        obj = ctx.cache[key] = load()
    return obj


def stage_erp_customer(ctx) -> None:
    customer = _cached(ctx, "customer", lambda: Customer.objects.select_related("legal_entity", "payment_terms")
                       .get(pk=ctx.context["customer_id"]))
    client = ctx.client_for_role("erp")
    fields = {
        "companyName": customer.name,
        "subsidiary": {"id": customer.legal_entity.erp_subsidiary_id},
        "currency": {"refName": customer.currency},
        "terms": {"id": customer.payment_terms.erp_terms_id},
        "vatRegNumber": customer.tax_id,
        "addressBook": {"items": [{"addressBookAddress": {"country": {"id": customer.country},
                                                          "addressee": customer.name}}]},
    }
    with ERP_REFUSAL.as_hold(what="create the customer"):
        internal_id = client.upsert_customer(f"HO-{customer.key}", fields)
    ctx.context["erp_customer_id"] = internal_id
    ctx.link(customer, system=client.system, object_type="customer", external_id=internal_id)


def stage_psa_project(ctx) -> None:
    engagement = _cached(ctx, "engagement", lambda: Engagement.objects.select_related("customer", "legal_entity")
                         .get(pk=ctx.context["engagement_id"]))
    client = ctx.client_for_role("psa")
    with PSA_REFUSAL.as_hold():
        ws_id = client.find_workspace(engagement.code)
        if ws_id is None:
            ws_id = client.create_workspace({
                "title": f"{engagement.code} · {engagement.name}"[:255],
                "description": f"Customer: {engagement.customer.name}. Created by Handoff from opportunity.",
                "creator_role": "maven",
                "budgeted": True,
                "price": str(engagement.contract_value),
                "currency": engagement.currency,
                "start_date": engagement.start_date.isoformat() if engagement.start_date else None,
                "due_date": engagement.end_date.isoformat() if engagement.end_date else None,
            })
    ctx.context["psa_project_id"] = ws_id
    ctx.link(engagement, system=client.system, object_type="workspace", external_id=ws_id)


def stage_erp_project(ctx) -> None:
    engagement = _cached(ctx, "engagement", lambda: Engagement.objects.select_related("customer", "legal_entity")
                         .get(pk=ctx.context["engagement_id"]))
    client = ctx.client_for_role("erp")
    with ERP_REFUSAL.as_hold(what="create the project (job)"):
        job_id = client.upsert_job(f"HO-{engagement.key}", {
            "entityId": engagement.code,
            "companyName": f"{engagement.code} {engagement.name}"[:83],
            "parent": {"id": ctx.context["erp_customer_id"]},
            "subsidiary": {"id": engagement.legal_entity.erp_subsidiary_id},
            "currency": {"refName": engagement.currency},
        })
    ctx.context["erp_project_id"] = job_id
    ctx.link(engagement, system=client.system, object_type="job", external_id=job_id)


def stage_crm_writeback(ctx) -> None:
    client = ctx.client_for(ctx.source)
    c = ctx.context
    with CRM_REFUSAL.as_hold():
        if ctx.source.kind == "hubspot":
            client.update_deal(ctx.payload["opportunity_id"], hubspot_mapping.opportunity_project_ids(c))
        else:
            client.update_opportunity(ctx.payload["opportunity_id"], salesforce_mapping.opportunity_project_ids(c))


def on_hold(ctx, problems) -> None:
    """The CRM opportunity shows that Handoff holds it, and why (so sales sees it without asking)."""
    opp_id = ctx.payload.get("opportunity_id") or ctx.payload.get("deal_id")
    if not opp_id:
        return
    status = f"held: {problems[0].reason.replace('_', ' ')}"[:255]
    client = ctx.client_for(ctx.source)
    if ctx.source.kind == "hubspot":
        client.update_deal(opp_id, hubspot_mapping.opportunity_status(status))
    elif ctx.source.kind == "salesforce":
        client.update_opportunity(opp_id, salesforce_mapping.opportunity_status(status))


WORKFLOW = Workflow(
    name="quote_to_project",
    label="Quote to project",
    stages=[
        Stage("fetch", "Fetch from CRM", stage_fetch, "crm"),
        Stage("validate", "Validate", stage_validate, idempotent_writes=True),  # upserts by CRM id
        Stage("erp_customer", "Customer in ERP", stage_erp_customer, "erp"),
        Stage("psa_project", "Project in PSA", stage_psa_project, "psa"),
        Stage("erp_project", "Project (job) in ERP", stage_erp_project, "erp"),
        Stage("crm_writeback", "Ids back to CRM", stage_crm_writeback, "crm"),
    ],
    validate=validate,
    owner_teams=OWNER_TEAM,
    default_team=DEFAULT_TEAM,
    base_priority=PRIORITY,
    fix_fields=FIX_FIELDS,
    first_stage_on_restart="validate",
    on_hold=on_hold,
    field_labels=FIELD_LABELS,
)
