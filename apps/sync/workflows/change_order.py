"""Change orders: an amendment approved in the CRM changes the engagement (history kept), then the PSA budget, the
ERP billing schedule and the forecast follow.

Sources:
- HubSpot: a `deal.propertyChange` webhook with propertyName `amendment_status` = `approved` carries only the
  deal id; the fetch stage reads the deal's amendment properties (amendment_id, amended_amount,
  amended_start_date, amended_end_date, amended_rate_card, amended_billing_schedule) through CRM v3. A deal holds
  one current amendment, so the record is per deal (`amendment:deal-<id>`) and runs again for each newly
  approved amendment (reopen_on_update; a newer approval re-fetches).
- Salesforce: an Outbound Message for `Contract_Amendment__c` (Status__c = Approved) is only a trigger (it is not
  signed): the fetch stage reads the record through the REST API and uses only that; the record is per amendment
  (`amendment:<Id>`).

Stages: fetch → validate → apply → psa_budget → erp_billing → forecast.

Rules (validate, all problems listed at once):
- the engagement is known: the opportunity/deal is linked to an engagement (or a person names its code);
- the new contract value is a money amount and not below what is already billed on the engagement
  (apps/forecast/actuals.py: invoices not void, plus posted T&M time and expenses not yet invoiced) — else held
  for finance ops as `contract_value_below_invoiced`, naming both figures;
- the rate card exists (`unknown_rate_card`) and is in the engagement currency;
- dates are dates and the end is not before the start (the amended or the current one);
- the billing schedule is one the ERP can be given ("on milestones", "<monthly|quarterly|…> in advance|arrears").
Apply (canonical, CRM-owned): the engagement changes and an EngagementChange keeps before/after, once per
amendment id: a redelivery (same values) changes nothing; an amendment approved before the newest one already
applied never overwrites it (it is recorded as superseded in the record's context and goes no further).
Downstream writes are idempotent: Kantata PUT of the workspace's current values, NetSuite upserts by external id,
and one forecast refresh per applied change (created in the same commit as the stage).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation

from django.utils.dateparse import parse_datetime

from apps.canonical import amendments
from apps.canonical import services as canonical
from apps.canonical.models import Engagement, RateCard
from apps.connectors.hubspot import mapping as hubspot_mapping
from apps.connectors.salesforce import mapping as salesforce_mapping
from apps.core.dates import parse_date
from apps.finance.money import exponent

from .base import Hold, Problem, Refusal, Stage, Workflow

# whose queue a held change order lands in (base.ADMIN_TEAM adds Handoff's own failures and outages)
OWNER_TEAM = {
    "unknown_engagement": "pmo", "payload_schema_invalid": "pmo", "invalid_dates": "pmo", "unknown_rate_card": "pmo",
    "amendment_not_approved": "pmo", "source_not_found": "pmo", "psa_project_not_found": "pmo",
    "erp_project_not_found": "pmo",
    "contract_value_below_invoiced": "finance_ops", "unknown_billing_schedule": "finance_ops",
    "downstream_validation": "finance_ops",
    "forecast_not_configured": "integration_admin",
}
DEFAULT_TEAM = "pmo"
PRIORITY = 2  # engagement set-up; a record held for finance gets the desk's business priority

# payload field → the engagement field it amends
AMENDS = {"amended_amount": "contract_value", "amended_start_date": "start_date", "amended_end_date": "end_date",
          "amended_rate_card": "rate_card", "amended_billing_schedule": "billing_schedule"}
FIX_FIELDS = ["engagement_code", *AMENDS]
FIELD_LABELS = {"engagement_code": "engagement", "amended_amount": "amended contract value",
                "amended_start_date": "amended start date", "amended_end_date": "amended end date",
                "amended_rate_card": "amended rate card", "amended_billing_schedule": "amended billing schedule",
                "amendment_id": "amendment id"}
# what a system's refusal becomes (its field → the payload field a person fixes)
PSA_REFUSAL = Refusal("The PSA refused the change: {message} (field: {label}).", labels=FIELD_LABELS, fields={
    "price": "amended_amount", "start_date": "amended_start_date", "due_date": "amended_end_date"})
ERP_REFUSAL = Refusal("The ERP refused the change: {message} (field: {label}).", labels=FIELD_LABELS, fields={
    "startDate": "amended_start_date", "projectedEndDate": "amended_end_date",
    "custentity_handoff_contract_value": "amended_amount", "billingSchedule": "amended_billing_schedule",
    "scheduleType": "amended_billing_schedule", "frequency": "amended_billing_schedule"})
DEAL_GONE = Refusal(not_found="HubSpot has no deal {deal_id} (deleted or merged?).")
AMENDMENT_GONE = Refusal(not_found="Salesforce has no Contract_Amendment__c {amendment_id} (deleted?).")

FREQUENCIES = {"weekly": "WEEKLY", "monthly": "MONTHLY", "quarterly": "QUARTERLY", "semi-annually": "SEMIANNUALLY",
               "annually": "ANNUALLY"}
SCHEDULE = re.compile(rf"({'|'.join(map(re.escape, FREQUENCIES))}) in (advance|arrears)")


def erp_billing_schedule(schedule: str, contract_type: str) -> dict | None:
    """The NetSuite billingSchedule fields for a canonical billing schedule, or None when it is not one Handoff
    maps: "on milestones" (a milestone schedule) or "<frequency> in advance|arrears" (an interval schedule:
    time & material for T&M, standard for retainers, fixed-bid interval otherwise)."""
    s = " ".join((schedule or "").lower().split())
    if s in ("on milestones", "milestones"):
        return {"scheduleType": {"id": "FIXED_BID_MILESTONE"}}
    m = SCHEDULE.fullmatch(s)
    if not m:
        return None
    stype = {"t_and_m": "TIME_AND_MATERIAL", "retainer": "STANDARD"}.get(contract_type, "FIXED_BID_INTERVAL")
    return {"scheduleType": {"id": stype}, "frequency": {"id": FREQUENCIES[m.group(1)]},
            "inArrears": m.group(2) == "arrears"}


@dataclass
class Reference:
    """Rate cards by name, loaded once per batch."""

    rate_cards: dict[str, RateCard] = field(default_factory=dict)

    @classmethod
    def load(cls) -> "Reference":
        return cls(rate_cards={r.name: r for r in RateCard.objects.all()})


def find_engagement(payload: dict, source_kind: str) -> Engagement | None:
    """The engagement named by the person (engagement_code), else the one linked to the opportunity/deal."""
    code = (payload.get("engagement_code") or "").strip()
    if code:
        return Engagement.objects.select_related("rate_card").filter(code__iexact=code).first()
    opp = payload.get("opportunity_id")
    if not opp or not source_kind:
        return None
    e = canonical.object_by_external_id(model=Engagement, system=source_kind, object_type="opportunity",
                                        external_id=str(opp))
    return e


def _money(amount: Decimal, currency: str) -> str:
    return f"{amount:,.{exponent(currency)}f} {currency}"


def requested(payload: dict) -> dict:
    """What the amendment sets, as EngagementChange stores it: engagement field → text (only fields it sets)."""
    out = {}
    for key, fname in AMENDS.items():
        value = payload.get(key)
        if value in (None, ""):
            continue
        if key == "amended_amount":
            out[fname] = str(Decimal(str(value).strip()))
        elif key in ("amended_start_date", "amended_end_date"):
            out[fname] = parse_date(value, strict=True).isoformat()
        else:
            out[fname] = " ".join(str(value).split())
    return out


def validate(payload: dict, *, source_kind: str = "", ref: Reference | None = None) -> list[Problem]:
    """Every rule an approved amendment must pass before the engagement changes."""
    from apps.forecast.actuals import billed_to_date

    ref = ref or Reference.load()
    problems: list[Problem] = []
    if not str(payload.get("amendment_id") or "").strip():
        problems.append(Problem("payload_schema_invalid", "The amendment has no id in the CRM.", ["amendment_id"]))
    engagement = find_engagement(payload, source_kind)
    if engagement is None:
        code = (payload.get("engagement_code") or "").strip()
        problems.append(Problem(
            "unknown_engagement",
            f"No engagement has the code “{code}”." if code else
            f"No engagement is linked to opportunity {payload.get('opportunity_id') or '(none)'}: its project was "
            f"never set up through Handoff. Name the engagement this amendment changes.", ["engagement_code"]))
    currency = engagement.currency if engagement else ""

    amount = None
    raw_amount = payload.get("amended_amount")
    if raw_amount not in (None, ""):
        try:
            amount = Decimal(str(raw_amount).strip())
            if not amount.is_finite() or amount < 0:
                raise InvalidOperation
            if currency and -amount.as_tuple().exponent > exponent(currency):
                problems.append(Problem("payload_schema_invalid",
                                        f"The amended contract value “{raw_amount}” has more decimals than "
                                        f"{currency} has.", ["amended_amount"]))
                amount = None
        except (InvalidOperation, ValueError):
            problems.append(Problem("payload_schema_invalid",
                                    f"The amended contract value “{raw_amount}” is not a positive amount.",
                                    ["amended_amount"]))
            amount = None

    dates = {}
    for key in ("amended_start_date", "amended_end_date"):
        try:
            dates[key] = parse_date(payload.get(key), strict=True)
        except ValueError:
            problems.append(Problem("invalid_dates", f"The {FIELD_LABELS[key]} “{payload.get(key)}” is not a date "
                                                     f"(YYYY-MM-DD).", [key]))
            dates[key] = None

    card_name = " ".join(str(payload.get("amended_rate_card") or "").split())
    if card_name:
        card = ref.rate_cards.get(card_name)
        if card is None:
            known = ", ".join(sorted(ref.rate_cards)[:10]) or "none are set up"
            problems.append(Problem("unknown_rate_card", f"Rate card “{card_name}” is not known. Known rate cards: "
                                                         f"{known}.", ["amended_rate_card"]))
        elif engagement is not None and card.currency != engagement.currency:
            problems.append(Problem("unknown_rate_card", f"Rate card “{card_name}” prices in {card.currency}, but "
                                                         f"{engagement.code} is in {engagement.currency}.",
                                    ["amended_rate_card"]))

    schedule = str(payload.get("amended_billing_schedule") or "").strip()
    if schedule and erp_billing_schedule(schedule, engagement.contract_type if engagement else "") is None:
        problems.append(Problem("unknown_billing_schedule",
                                f"Billing schedule “{schedule}” is not one the ERP can be given: use “on milestones” "
                                f"or “monthly / quarterly / semi-annually / annually in advance / in arrears”.",
                                ["amended_billing_schedule"]))

    if not any(payload.get(k) not in (None, "") for k in AMENDS):
        problems.append(Problem("payload_schema_invalid", "The amendment changes nothing: it sets no contract value, "
                                                          "dates, rate card or billing schedule.",
                                ["amended_amount"]))

    if engagement is not None:
        start = dates.get("amended_start_date") or engagement.start_date
        end = dates.get("amended_end_date") or engagement.end_date
        if start and end and end < start and not any(p.reason == "invalid_dates" for p in problems):
            problems.append(Problem("invalid_dates", f"The end date {end.isoformat()} would be before the start date "
                                                     f"{start.isoformat()} of {engagement.code}.",
                                    ["amended_end_date", "amended_start_date"]))
        if amount is not None:
            invoiced = billed_to_date(engagement)
            if amount < invoiced:
                problems.append(Problem(
                    "contract_value_below_invoiced",
                    f"The amended contract value of {_money(amount, currency)} is below the "
                    f"{_money(invoiced, currency)} already invoiced on {engagement.code} ({engagement.name}). "
                    f"Agree the amount with sales (or credit the difference first), then resubmit.",
                    ["amended_amount"]))
    return problems


def summary(payload: dict) -> dict:
    what = payload.get("engagement_code") or (f"opportunity {payload['opportunity_id']}"
                                              if payload.get("opportunity_id") else f"deal {payload.get('deal_id')}")
    return {"title": f"Change order {payload.get('amendment_id') or '(not fetched yet)'} · {what}",
            "amount": payload.get("amended_amount") or None, "currency": payload.get("currency", "")}


def _approved_at(payload: dict) -> datetime | None:
    value = payload.get("approved_at") or payload.get("source_modified_at")
    try:
        return parse_datetime(str(value)) if value else None
    except ValueError:
        return None


# ---------------------------------------------------------------- stages


def stage_fetch(ctx) -> None:
    """The callback is only a trigger: read the amendment through the CRM's API (again when a newer approval
    came) and build the payload from that alone. HubSpot: the deal's amendment properties; Salesforce: the
    Contract_Amendment__c record."""
    if ctx.source.kind not in ("hubspot", "salesforce"):
        return
    version = ctx.context.get("source_modified_at", "")
    if ctx.context.get("fetched") and ctx.context.get("fetched_for") == version:
        return  # fetched for this approval already (a resubmission keeps the person's fix)
    client = ctx.client_for(ctx.source)
    if ctx.source.kind == "salesforce":
        _salesforce_amendment(ctx, client, version)
        return
    deal_id = ctx.payload.get("deal_id") or ctx.record.source_key.rsplit("-", 1)[-1]
    with DEAL_GONE.as_hold(deal_id=deal_id):
        deal = client.get_deal_amendment(deal_id)
    payload = hubspot_mapping.canonical_from_deal_amendment(deal, deal_id)
    payload["approved_at"] = ctx.payload.get("approved_at") or version
    payload["source_modified_at"] = ctx.payload.get("source_modified_at") or version
    _fetched(ctx, payload, version)
    status = str((deal.get("properties") or {}).get("amendment_status") or "")
    if status.lower() != "approved":
        raise Hold([Problem("amendment_not_approved",
                            f"The amendment on deal {deal_id} is “{status or '(empty)'}” now, no longer approved: "
                            f"nothing was changed.", [], "hubspot", "")])


def _salesforce_amendment(ctx, client, version: str) -> None:
    """The Contract_Amendment__c as the REST API returns it; one the API does not show as Approved changes
    nothing (and is fetched again on a resubmission, so a person cannot push it through)."""
    amendment_id = ctx.payload.get("amendment_id") or ctx.record.source_key.split(":", 1)[1]
    with AMENDMENT_GONE.as_hold(amendment_id=amendment_id):
        record = client.get_amendment(amendment_id)
    status = salesforce_mapping.value(record, "Status__c")
    if status.lower() != "approved":
        raise Hold([Problem("amendment_not_approved",
                            f"Salesforce shows amendment {amendment_id} as “{status or '(empty)'}”, not Approved: "
                            f"nothing was changed.", [], "salesforce", f"Status__c={status}")])
    _fetched(ctx, salesforce_mapping.canonical_from_amendment(record), version)


def _fetched(ctx, payload: dict, version: str) -> None:
    ctx.payload.clear()
    ctx.payload.update(payload)
    ctx.set_original(payload)
    ctx.context.update(fetched=True, fetched_for=version)


def stage_validate(ctx) -> None:
    ref = ctx.reference(Reference)
    engagement = find_engagement(ctx.payload, ctx.source.kind)
    if engagement is not None:  # shown in the queue (title, currency) and searchable, held or not
        ctx.payload["engagement_code"] = engagement.code
        ctx.payload["currency"] = engagement.currency
        ctx.context.update(engagement_id=engagement.pk, engagement_code=engagement.code)
    problems = validate(ctx.payload, source_kind=ctx.source.kind, ref=ref)
    if problems:
        raise Hold(problems)


def stage_apply(ctx) -> None:
    p = ctx.payload
    values = requested(p)

    def apply():
        outcome, change = amendments.amendment_apply(
            engagement_id=ctx.context["engagement_id"], change_id=str(p["amendment_id"]).strip(),
            source_system=ctx.source.kind, source_role=ctx.source.role, approved_at=_approved_at(p), values=values)
        ctx.context.update(outcome=outcome, change_id=change.change_id)
        if outcome == "superseded":
            ctx.context["superseded_by"] = change.change_id

    ctx.on_commit(apply)


def _superseded(ctx) -> bool:
    return ctx.context.get("outcome") == "superseded"


def stage_psa_budget(ctx) -> None:
    """The Kantata workspace gets the engagement's current budget and dates (a PUT of the same values is a no-op)."""
    if _superseded(ctx):
        return
    e = Engagement.objects.get(pk=ctx.context["engagement_id"])
    client = ctx.client_for_role("psa")
    with PSA_REFUSAL.as_hold():
        ws_id = canonical.external_id_get(obj=e, system=client.system, object_type="workspace") \
            or client.find_workspace(e.code)
        if not ws_id:
            raise Hold([Problem("psa_project_not_found",
                                f"{client.connection.name} has no project for {e.code}: it was never created (or was "
                                f"deleted). Set the project up, then resubmit.", [], client.system, "")])
        client.update_workspace(ws_id, {
            "price": str(e.contract_value), "budgeted": True, "currency": e.currency,
            "start_date": e.start_date.isoformat() if e.start_date else None,
            "due_date": e.end_date.isoformat() if e.end_date else None})
    ctx.context["psa_project_id"] = ws_id
    ctx.on_commit(lambda: canonical.external_id_link(obj=e, system=client.system, object_type="workspace",
                                                     external_id=ws_id))


def stage_erp_billing(ctx) -> None:
    """NetSuite: the engagement's billing schedule (upserted by external id) and its project (job) with the new
    value, dates and schedule (upserted by the external id quote-to-project gave it)."""
    if _superseded(ctx):
        return
    e = Engagement.objects.select_related("legal_entity", "customer").get(pk=ctx.context["engagement_id"])
    client = ctx.client_for_role("erp")
    customer_id = canonical.external_id_get(obj=e.customer, system=client.system, object_type="customer")
    if not customer_id:
        raise Hold([Problem("erp_project_not_found",
                            f"{client.connection.name} has no customer for {e.customer.name}, so {e.code} has no "
                            f"project there to change. Let quote-to-project set it up, then resubmit.", [],
                            client.system, "")])
    schedule = erp_billing_schedule(e.billing_schedule, e.contract_type)
    with ERP_REFUSAL.as_hold():
        schedule_id = None
        if schedule is not None:
            schedule_id = client.upsert("billingSchedule", f"HO-BS-{e.key}",
                                        {"name": f"{e.code} {e.billing_schedule}"[:100], **schedule})
        job = {"entityId": e.code, "companyName": f"{e.code} {e.name}"[:83], "parent": {"id": customer_id},
               "subsidiary": {"id": e.legal_entity.erp_subsidiary_id}, "currency": {"refName": e.currency},
               "startDate": e.start_date.isoformat() if e.start_date else None,
               "projectedEndDate": e.end_date.isoformat() if e.end_date else None,
               "custentity_handoff_contract_value": str(e.contract_value)}
        if schedule_id:
            job["billingSchedule"] = {"id": schedule_id}
        job_id = client.upsert("job", f"HO-{e.key}", job)
    ctx.context.update(erp_project_id=job_id, erp_billing_schedule_id=schedule_id or "")

    def link():
        canonical.external_id_link(obj=e, system=client.system, object_type="job", external_id=job_id)
        if schedule_id:
            canonical.external_id_link(obj=e, system=client.system, object_type="billingSchedule",
                                       external_id=schedule_id)

    ctx.on_commit(link)


def stage_forecast(ctx) -> None:
    """Queue a forecast refresh of this engagement (in this stage's commit: exactly one per run)."""
    from apps.forecast import services as forecast

    if _superseded(ctx):
        return
    try:
        forecast.forecast_connection()
    except forecast.NoForecastConnection as exc:
        raise Hold([Problem("forecast_not_configured", str(exc), [], "handoff", "")])
    e = Engagement.objects.get(pk=ctx.context["engagement_id"])

    def apply():
        refresh = forecast.request_refresh(trigger="change_order", engagement=e)
        ctx.context["forecast_refresh_id"] = refresh.pk

    ctx.on_commit(apply)


def on_hold(ctx, problems) -> None:
    """A change held for finance ops shows in the engagement's history as held."""
    if not any(p.reason == "contract_value_below_invoiced" for p in problems):
        return
    if not ctx.context.get("engagement_id") or not ctx.payload.get("amendment_id"):
        return
    try:
        values = requested(ctx.payload)
    except (ValueError, InvalidOperation):  # another problem (a bad date) is held with it: nothing to show yet
        return
    amendments.amendment_hold(engagement_id=ctx.context["engagement_id"],
                              change_id=str(ctx.payload["amendment_id"]).strip(), source_system=ctx.source.kind,
                              approved_at=_approved_at(ctx.payload), values=values)


WORKFLOW = Workflow(
    name="change_order",
    label="Change orders",
    stages=[
        Stage("fetch", "Fetch from CRM", stage_fetch, "crm"),
        Stage("validate", "Validate", stage_validate),
        Stage("apply", "Engagement updated", stage_apply),
        Stage("psa_budget", "Budget in PSA", stage_psa_budget, "psa"),
        Stage("erp_billing", "Billing schedule in ERP", stage_erp_billing, "erp"),
        Stage("forecast", "Forecast refresh queued", stage_forecast),
    ],
    validate=validate,
    owner_teams=OWNER_TEAM,
    default_team=DEFAULT_TEAM,
    base_priority=PRIORITY,
    fix_fields=FIX_FIELDS,
    first_stage_on_restart="fetch",
    on_hold=on_hold,
    field_labels=FIELD_LABELS,
    summary=summary,
    reopen_on_update=True,
)
