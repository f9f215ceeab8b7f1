"""Time & expense to billing: an approved time entry or expense in the PSA (Kantata) is priced with the
engagement's rate card and billing rules, mapped to ERP dimensions, and posted to the ERP (NetSuite) as one line
per entry — a `timebill` per time entry, a `charge` per expense — upserted by the external id HO-TE-<id> /
HO-EX-<id>, so a retry, a redelivery or a correction in the PSA updates the same ERP line and never adds one.

Stages: price (Handoff's rules; the canonical TimeEntry / ExpenseEntry is written PRICED) → erp_post (NetSuite
upsert; the canonical entry becomes POSTED). An unapproved or deleted entry (`action: reverse`) skips pricing and
zeroes its ERP line (hours 0:00 and not billable / charge amount 0 and stage NON_BILLABLE); the canonical entry
becomes REVERSED with amount 0. A re-approval later brings the same line back.

The rules (closed project, dates, rate card, write-offs, expense markup, exchange rates, T&M cap) are
apps/finance/billable.py, the arithmetic apps/finance/pricing.py, the canonical writes apps/finance/services.py;
this module parses the PSA's entry, runs them and posts to the ERP. Who answers for each hold: OWNER_TEAM below.

Reference data is cached for one drain batch (billable.Reference), but a record is never held on cached data,
and a record a person resubmitted runs on fresh data, so a fix made in the admin goes through.
On a capped T&M engagement the cap is a budget every line draws on: the check runs again, and the line is saved
as PRICED, in one transaction holding the engagement's row lock, so two workers pricing lines of one engagement
at the same instant take their turns and the second sees the first's line.
"""

from __future__ import annotations

from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from apps.canonical.models import Engagement
from apps.finance import billable, money
from apps.finance import services as finance
from apps.core.dates import parse_date
from apps.finance.billable import BILL_ANYWAY, EXPENSE, REVERSE, TIME, Quantities, Reference, Valuation, entry_title

from .base import Hold, Problem, Refusal, Stage, Workflow, problems_from

NAME = "time_to_billing"
# whose queue a held entry lands in (base.ADMIN_TEAM adds Handoff's own failures and outages)
OWNER_TEAM = {
    "unknown_project": "pmo", "project_closed": "pmo", "unknown_rate_card_role": "pmo",
    "rate_card_currency_mismatch": "pmo", "entry_outside_engagement_dates": "pmo", "payload_schema_invalid": "pmo",
    "tm_cap_exceeded": "finance_ops", "missing_dimension_mapping": "finance_ops",
    "missing_exchange_rate": "finance_ops", "downstream_validation": "finance_ops",
    "": "finance_ops",  # a new entry, before any hold: a money posting
}
DEFAULT_TEAM = "pmo"
PRIORITY = 1  # a money posting
ERP_RECORD = {TIME: "timebill", EXPENSE: "charge"}  # NetSuite REST record ids
ERP_RECORD_KIND = {v: k for k, v in ERP_RECORD.items()}
SOURCE_KEY = {TIME: "time_entry", EXPENSE: "expense"}

FIX_FIELDS = ["engagement_code", "role", "service_code", "date", "write_off_minutes", "cap_decision"]
FIELD_LABELS = {
    "engagement_code": "engagement code (bill this entry to that engagement instead of the PSA project's)",
    "role": "rate-card role",
    "service_code": "service code (chooses the ERP department, class and location)",
    "date": "date of the entry",
    "write_off_minutes": "minutes written off",
    "cap_decision": "T&M cap decision (“bill_anyway” bills above the cap)",
    "currency": "currency",
}
# NetSuite's refusal (its field → the canonical field a person fixes)
ERP_REFUSAL = Refusal(
    "The ERP refused to {what}: {message} (field: {field}{note}).", "The ERP refused to {what}: {message} (no field "
    "named).", notes={"service_code": " — from the dimension mapping of service code “{service_code}”"}, fields={
        "department": "service_code", "class": "service_code", "location": "service_code", "item": "service_code",
        "billingItem": "service_code", "customer": "engagement_code", "billTo": "engagement_code",
        "tranDate": "date", "chargeDate": "date"})


def erp_external_id(kind: str, entry_id: str) -> str:
    return f"HO-{'TE' if kind == TIME else 'EX'}-{entry_id}"


def _int(value, default: int | None = None) -> int | None:
    if value in (None, ""):
        return default
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError
        return int(value)
    return int(str(value).strip())




def evaluate(payload: dict, *, source_kind: str = "kantata", ref: Reference | None = None,
             exclude_source: tuple[str, str] | None = None, check_cap: bool = True
             ) -> tuple[list[Problem], Valuation | None]:
    """Every rule an approved entry must pass; the valuation when it passes them all. A problem found with cached
    reference data is confirmed on fresh data before it is returned. `exclude_source` is this entry's own
    canonical row (its earlier version does not count towards the cap)."""
    ref = ref or Reference.load()
    problems, valuation = _evaluate(payload, source_kind, ref, exclude_source, check_cap)
    if problems and ref.used_cache:
        ref.forget()
        problems, valuation = _evaluate(payload, source_kind, ref, exclude_source, check_cap)
    return problems, valuation


def validate(payload: dict, *, source_kind: str = "kantata", ref: Reference | None = None) -> list[Problem]:
    """The workflow's rules (also the fix form's dry run and the resubmit check)."""
    return evaluate(payload, source_kind=source_kind, ref=ref,
                    exclude_source=(source_kind, str(payload.get("entry_id", ""))))[0]


def _evaluate(p: dict, source_kind: str, ref: Reference, exclude_source, check_cap: bool
              ) -> tuple[list[Problem], Valuation | None]:
    ref.used_cache = False
    if p.get("action") == REVERSE:
        return [], None  # withdrawing an entry needs no rule: it zeroes what was posted, if anything
    kind = p.get("entry_type")
    if kind not in (TIME, EXPENSE):
        return [Problem("payload_schema_invalid", f"Entry type “{kind}” is neither time nor expense.", [])], None
    q, problems = _quantities(p, kind)
    eng, findings = billable.engagement_billed(p, source_kind, ref)
    if findings or problems:
        return problems + problems_from(findings), None
    findings, valuation = billable.price(p, kind, q, eng, ref, exclude_source, check_cap)
    return problems_from(findings), valuation


def _quantities(p: dict, kind: str) -> tuple[Quantities, list[Problem]]:
    """Shape rules: a date, whole minutes, an amount and currency, a known cap decision."""
    q, problems = Quantities(), []
    q.entry_date = parse_date(p.get("date"))
    if q.entry_date is None:
        problems.append(Problem("payload_schema_invalid",
                                f"The date of the entry “{p.get('date') or '(empty)'}” is not a date (YYYY-MM-DD).",
                                ["date"]))
    if kind == TIME:
        try:
            q.minutes = _int(p.get("minutes"), 0)
            if q.minutes < 0:
                raise ValueError
        except (ValueError, TypeError):
            problems.append(Problem("payload_schema_invalid",
                                    f"Time worked “{p.get('minutes')}” is not a whole number of minutes.", []))
        try:
            q.write_off_minutes = _int(p.get("write_off_minutes"), 0)
            if q.write_off_minutes < 0:
                raise ValueError
        except (ValueError, TypeError):
            problems.append(Problem("payload_schema_invalid",
                                    f"Minutes written off “{p.get('write_off_minutes')}” is not a whole number of "
                                    f"minutes (0 or more).", ["write_off_minutes"]))
    else:
        try:
            q.spent = money.to_decimal(p.get("amount"), "the amount spent")
            if q.spent < 0:
                raise money.MoneyError("negative")
        except money.MoneyError:
            problems.append(Problem("payload_schema_invalid",
                                    f"The amount spent “{p.get('amount')}” is not a positive number.", []))
        q.spent_currency = (p.get("currency") or "").strip().upper()
        if len(q.spent_currency) != 3 or not q.spent_currency.isalpha():
            problems.append(Problem("payload_schema_invalid",
                                    f"The expense currency “{q.spent_currency or '(empty)'}” is not an ISO-4217 "
                                    f"code.", ["currency"]))
    q.cap_decision = (p.get("cap_decision") or "").strip()
    if q.cap_decision not in ("", BILL_ANYWAY):
        problems.append(Problem("payload_schema_invalid",
                                f"T&M cap decision “{q.cap_decision}” is not understood: leave it empty, or write "
                                f"“{BILL_ANYWAY}” to bill this line above the cap.", ["cap_decision"]))
    return q, problems


def summary(payload: dict) -> dict:
    """The priced amount once known; before that, what the PSA values the entry at (revenue at risk)."""
    priced = payload.get("priced") or {}
    amount, currency = priced.get("amount"), priced.get("currency", "")
    if amount is None and payload.get("action") != REVERSE:
        if payload.get("entry_type") == EXPENSE:
            amount, currency = payload.get("amount"), payload.get("currency", "")
        elif payload.get("psa_rate") and payload.get("currency"):
            try:
                amount = money.round_money(Decimal(int(payload.get("minutes") or 0)) * Decimal(str(
                    payload["psa_rate"])) / 60, payload["currency"])
                currency = payload["currency"]
            except (ValueError, ArithmeticError, money.MoneyError):
                amount = None
    return {"title": entry_title(payload), "amount": amount, "currency": currency}


# ---------------------------------------------------------------- stages


def _reference(ctx) -> Reference:
    """The batch's reference data; fresh for a record a person has fixed or resubmitted (version > 1), so that a
    correction made in the admin a moment ago (rate card, mapping, rate, engagement) is what it runs on."""
    ref = ctx.reference(Reference)
    if ctx.record.version > 1:
        ref.forget()
    return ref


def stage_price(ctx) -> None:
    p = ctx.payload
    if p.get("action") == REVERSE:
        return
    # the cap is checked once, under the engagement's lock, by price_under_cap (when the line draws on one)
    problems, v = evaluate(p, source_kind=ctx.source.kind, ref=_reference(ctx),
                           exclude_source=(ctx.source.kind, str(p.get("entry_id", ""))), check_cap=False)
    if problems:
        p.pop("priced", None)
        raise Hold(problems)
    source_system, source_id = ctx.source.kind, str(p["entry_id"])
    version = str(ctx.context.get("source_modified_at") or p.get("source_modified_at") or "")[:40]
    if billable.draws_on_cap(v.engagement, v.amount, p.get("cap_decision")):
        v = price_under_cap(p, engagement_pk=v.engagement.pk, source_kind=ctx.source.kind, ref=_reference(ctx),
                            source_role=ctx.source.role, version=version, context=ctx.context)
    else:
        def apply():
            ctx.context["canonical_id"] = finance.entry_save_priced(
                v, p, source_system=source_system, source_id=source_id, source_role=ctx.source.role, version=version)

        ctx.on_commit(apply)
    eng = v.engagement
    p["priced"] = {"amount": str(v.amount), "currency": v.currency}
    ctx.context.update(engagement_id=eng.pk, engagement_code=eng.code, amount=str(v.amount), currency=v.currency,
                       base_amount=str(v.base_amount), base_currency=v.base_currency,
                       erp_external_id=erp_external_id(v.kind, p["entry_id"]))


def price_under_cap(p: dict, *, engagement_pk: int, source_kind: str, ref: Reference, source_role: str,
                    version: str, context: dict) -> Valuation:
    """Check the T&M cap and save the line as PRICED in one transaction holding the engagement's row lock: a
    concurrent pricer of the same engagement waits, then counts this line. Raises Hold if the cap is exceeded."""
    source_id = str(p["entry_id"])
    with transaction.atomic():
        list(Engagement.objects.select_for_update().filter(pk=engagement_pk).values_list("pk", flat=True))
        problems, v = evaluate(p, source_kind=source_kind, ref=ref, exclude_source=(source_kind, source_id))
        if problems:
            p.pop("priced", None)
            raise Hold(problems)
        context["canonical_id"] = finance.entry_save_priced(v, p, source_system=source_kind, source_id=source_id,
                                                            source_role=source_role, version=version)
    return v


def _duration(minutes: int) -> str:
    """NetSuite's duration format for timebill hours: H:MM."""
    return f"{minutes // 60}:{minutes % 60:02d}"


def erp_fields(v: Valuation, p: dict, *, source_system: str) -> dict:
    """The NetSuite record for one priced line (timebill or charge)."""
    eng, m = v.engagement, v.mapping
    dims = {"department": {"id": m.department_id}, "class": {"id": m.class_id}, "location": {"id": m.location_id},
            "subsidiary": {"id": eng.legal_entity.erp_subsidiary_id}}
    project = {"externalId": f"HO-{eng.key}"}  # the job quote_to_project upserted for the engagement
    trace = f"{source_system}:{SOURCE_KEY[v.kind]}:{p['entry_id']}"
    if v.kind == TIME:
        hours_billed = v.billable_minutes if v.erp_billable else v.minutes
        return {
            "tranDate": v.entry_date.isoformat(),
            "employee": {"externalId": f"PSA-USER-{p.get('user_id') or 'unknown'}"},
            "customer": project,
            **({"item": {"id": m.item_id}} if m.item_id else {}),
            "hours": _duration(hours_billed),
            "rate": str(v.rate),
            "isBillable": v.erp_billable,
            "memo": " · ".join(x for x in (p.get("task"), p.get("notes")) if x)[:999],
            **dims,
            "custcol_ho_role": v.role,
            "custcol_ho_hours_worked": _duration(v.minutes),
            "custcol_ho_write_off": _duration(v.write_off_minutes),
            "custcol_ho_amount": str(v.amount),
            "custcol_ho_currency": v.currency,
            "custcol_ho_base_amount": str(v.base_amount),
            "custcol_ho_source": trace,
        }
    return {
        "billTo": project,
        "chargeDate": v.entry_date.isoformat(),
        "stage": "READY_FOR_BILLING" if v.erp_billable else "NON_BILLABLE",
        **({"billingItem": {"id": m.item_id}} if m.item_id else {}),
        "rate": str(v.amount),
        "quantity": "1",
        "amount": str(v.amount),
        "currency": {"refName": v.currency},
        "description": " · ".join(x for x in (p.get("category"), p.get("notes")) if x)[:999] or "Expense",
        **dims,
        "custcol_ho_spent": f"{v.spent_amount} {v.spent_currency}",
        "custcol_ho_fx_rate": str(v.spend_rate),
        "custcol_ho_markup_pct": str(v.markup_pct),
        "custcol_ho_base_amount": str(v.base_amount),
        "custcol_ho_source": trace,
    }


ZEROED = {TIME: {"hours": "0:00", "isBillable": False, "custcol_ho_amount": "0.00", "custcol_ho_base_amount": "0.00"},
          EXPENSE: {"stage": "NON_BILLABLE", "rate": "0.00", "amount": "0.00", "custcol_ho_base_amount": "0.00"}}
REVERSED_PREFIX = "Reversed in the PSA (unapproved or deleted)."
READ_ONLY = ("id", "externalId", "links", "refName", "createdDate", "lastModifiedDate")


def stage_erp_post(ctx) -> None:
    p = ctx.payload
    kind = p.get("entry_type")
    record_type, eid = ERP_RECORD[kind], erp_external_id(kind, p["entry_id"])
    client = ctx.client_for_role("erp")
    what = "time bill" if kind == TIME else "charge"
    if p.get("action") == REVERSE:
        reverse(ctx, client, record_type, eid, what)
        return
    # the rules ran in `price` (which reserved the amount under the cap); they run again here, without the cap,
    # for the valuation and so that a mapping corrected since counts on resubmit
    problems, v = evaluate(p, source_kind=ctx.source.kind, ref=_reference(ctx), check_cap=False)
    if problems:
        raise Hold(problems)
    fields = erp_fields(v, p, source_system=ctx.source.kind)
    with ERP_REFUSAL.as_hold(what=f"post the {what}", service_code=p.get("service_code", "")):
        internal_id = client.upsert(record_type, eid, fields)
    ctx.context.update(erp_record_id=internal_id, erp_record_type=record_type, erp_external_id=eid,
                       erp_action="posted")
    now, entry_pk = timezone.now(), ctx.context.get("canonical_id")
    ctx.on_commit(lambda: finance.entry_mark_posted(kind=kind, entry_pk=entry_pk, system=client.system,
                                                    record_type=record_type, external_id=internal_id, at=now))


def reverse(ctx, client, record_type, eid, what) -> None:
    """Withdrawn in the PSA: zero the ERP line if the ERP has it (read first: a full record is written back, so
    the upsert stays valid whether or not it existed), and mark the canonical entry REVERSED."""
    with ERP_REFUSAL.as_hold(what=f"reverse the {what}", service_code=ctx.payload.get("service_code", "")):
        current = client.get_by_external_id(record_type, eid)
        if current is not None:
            fields = {k: v for k, v in current.items() if k not in READ_ONLY}
            fields.update(ZEROED[ERP_RECORD_KIND[record_type]])
            text_field = "memo" if record_type == "timebill" else "description"
            text = str(current.get(text_field) or "")
            if not text.startswith(REVERSED_PREFIX):  # a retried reversal writes the same values again
                fields[text_field] = f"{REVERSED_PREFIX} {text}"[:999]
            ctx.context["erp_record_id"] = client.upsert(record_type, eid, fields)
    ctx.context.update(erp_action="reversed" if current is not None else "nothing posted",
                       erp_external_id=eid)
    ctx.payload.pop("priced", None)
    kind, source_id, now = ctx.payload.get("entry_type"), str(ctx.payload["entry_id"]), timezone.now()
    ctx.on_commit(lambda: finance.entry_mark_reversed(kind=kind, source_system=ctx.source.kind, source_id=source_id,
                                                      source_role=ctx.source.role, at=now))


WORKFLOW = Workflow(
    name=NAME,
    label="Time & expense to billing",
    stages=[
        Stage("price", "Price with rate card", stage_price),
        Stage("erp_post", "Post to ERP", stage_erp_post, "erp"),
    ],
    validate=validate,
    owner_teams=OWNER_TEAM,
    default_team=DEFAULT_TEAM,
    base_priority=PRIORITY,
    fix_fields=FIX_FIELDS,
    first_stage_on_restart="price",
    field_labels=FIELD_LABELS,
    summary=summary,
    reopen_on_update=True,
)
