"""Time & expense to billing: an approved time entry or expense in the PSA (Kantata) is priced with the
engagement's rate card and billing rules, mapped to ERP dimensions, and posted to the ERP (NetSuite) as one line
per entry — a `timebill` per time entry, a `charge` per expense — upserted by the external id HO-TE-<id> /
HO-EX-<id>, so a retry, a redelivery or a correction in the PSA updates the same ERP line and never adds one.

Stages: price (Handoff's rules; the canonical TimeEntry / ExpenseEntry is written PRICED) → erp_post (NetSuite
upsert; the canonical entry becomes POSTED). An unapproved or deleted entry (`action: reverse`) skips pricing and
zeroes its ERP line (hours 0:00 and not billable / charge amount 0 and stage NON_BILLABLE); the canonical entry
becomes REVERSED with amount 0. A re-approval later brings the same line back.

Rules (apps/finance/pricing.py, apps/finance/money.py — one rounding per line, half up, in the ERP's minor unit):
- time: amount = round(billable minutes × rate-card rate for the role ÷ 60); billable minutes = minutes −
  written-off minutes, 0 for a non-billable entry or a non-billable task (still recorded and posted, at 0).
  The ERP bills it (timebill isBillable) only on time & materials engagements with an amount above 0; on
  fixed-fee, milestone and retainer engagements time is posted for cost and utilisation and billed by fee or
  milestone elsewhere, its amount being the rate-card value of the effort.
- expense: amount = round(spent × ERP rate (spent currency → engagement currency, on the day incurred) ×
  (1 + markup %)); markup = the engagement's expense_markup_pct, else FinancePolicy.default_expense_markup_pct;
  0 when non-billable (posted as a NON_BILLABLE charge).
- every amount is also kept in the legal entity's base currency, converted at the ERP's rate for the entry's
  date (latest on or before it), with the rate and its date.
- T&M cap: on a T&M engagement with tm_cap, the amounts already priced or posted for the engagement (time and
  expenses, this entry's own earlier version excluded) + this line may not exceed the cap.

Holds (reason → owner): unknown_project, project_closed, unknown_rate_card_role, rate_card_currency_mismatch,
entry_outside_engagement_dates, payload_schema_invalid → PMO; tm_cap_exceeded, missing_dimension_mapping,
missing_exchange_rate, downstream_validation (the ERP's own refusal, naming its field) → finance ops. Every rule
is checked before anything is written anywhere, and every problem is listed at once.

Reference data (engagements, rate cards, dimension mappings, exchange rates) is cached for one drain batch, but a
record is never held on cached data (before holding, the cache is dropped and the rules run again on fresh rows),
and a record a person resubmitted runs on fresh data, so a fix made in the admin (a role added to the rate card,
a mapping, a rate) goes through. Otherwise a change reaches the workers within one drain (≤ 30 s).
On a capped T&M engagement the cap is a budget every line draws on: the check runs again, and the line is saved
as PRICED, in one transaction holding the engagement's row lock, so two workers pricing lines of one engagement
at the same instant take their turns and the second sees the first's line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, ROUND_HALF_UP

from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.db.models import OuterRef, Subquery, Sum
from django.utils import timezone

from apps.canonical import services as canonical
from apps.canonical.models import Engagement, ExternalId, LegalEntity, RateCardLine
from apps.canonical.ownership import assert_may_write
from apps.connectors.base import DownstreamError
from apps.connectors.kantata.mapping import EXPENSE, REVERSE, TIME, entry_title
from apps.finance import money, pricing
from apps.finance.models import DimensionMapping, ExpenseEntry, FinancePolicy, TimeEntry

from .base import Hold, Problem, Stage, Workflow, register

NAME = "time_to_billing"
BILL_ANYWAY = "bill_anyway"
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
# NetSuite field → the canonical field a person fixes
ERP_FIELD_MAP = {
    "department": "service_code", "class": "service_code", "location": "service_code", "item": "service_code",
    "billingItem": "service_code", "customer": "engagement_code", "billTo": "engagement_code",
    "tranDate": "date", "chargeDate": "date",
}
HOURS_Q = Decimal("0.01")


def erp_external_id(kind: str, entry_id: str) -> str:
    return f"HO-{'TE' if kind == TIME else 'EX'}-{entry_id}"


# ---------------------------------------------------------------- reference data, cached for one batch


@dataclass
class Reference:
    """Engagements, rate cards, dimension mappings, rates and the markup policy, looked up at most once per drain
    batch. Only hits are cached, and `forget()` drops everything before a hold is decided (see the docstring)."""

    legal_entities: dict[int, LegalEntity] = field(default_factory=dict)
    default_markup: Decimal = Decimal(0)
    engagements: dict = field(default_factory=dict)  # ("ws", kind, id) / ("code", code) → Engagement
    rate_cards: dict = field(default_factory=dict)  # rate card id → {role: rate}
    mappings: dict = field(default_factory=dict)  # (legal entity id, service code) → DimensionMapping
    rates: dict = field(default_factory=dict)  # (from, to, date) → (rate, rate date)
    used_cache: bool = False

    @classmethod
    def load(cls) -> "Reference":
        return cls(legal_entities={le.pk: le for le in LegalEntity.objects.all()},
                   default_markup=FinancePolicy.current().default_expense_markup_pct)

    def forget(self) -> None:
        self.engagements.clear()
        self.rate_cards.clear()
        self.mappings.clear()
        self.rates.clear()
        self.default_markup = FinancePolicy.current().default_expense_markup_pct
        self.used_cache = False

    def _cached(self, cache: dict, key, fetch):
        if key in cache:
            self.used_cache = True
            return cache[key]
        value = fetch()
        if value is not None:
            cache[key] = value
        return value

    def engagement(self, *, source_kind: str, workspace_id: str, code: str) -> Engagement | None:
        qs = Engagement.objects.select_related("legal_entity", "customer", "rate_card")
        if code:
            return self._cached(self.engagements, ("code", code), lambda: qs.filter(code=code).first())
        if not workspace_id:
            return None

        def by_workspace():
            links = ExternalId.objects.filter(content_type=ContentType.objects.get_for_model(Engagement),
                                              system=source_kind, object_type="workspace",
                                              external_id=str(workspace_id)).values("object_id")
            return qs.filter(pk__in=Subquery(links)).first()

        return self._cached(self.engagements, ("ws", source_kind, str(workspace_id)), by_workspace)

    def rate_card(self, rate_card_id: int) -> dict:
        return self._cached(self.rate_cards, rate_card_id, lambda: dict(
            RateCardLine.objects.filter(rate_card_id=rate_card_id).values_list("role", "rate")))

    def mapping(self, legal_entity_id: int, service_code: str) -> DimensionMapping | None:
        return self._cached(self.mappings, (legal_entity_id, service_code), lambda: DimensionMapping.objects.filter(
            legal_entity_id=legal_entity_id, service_code=service_code, active=True).first())

    def rate(self, from_currency: str, to_currency: str, on: date) -> tuple[Decimal, date] | None:
        if from_currency == to_currency:
            return Decimal(1), on
        return self._cached(self.rates, (from_currency, to_currency, on),
                            lambda: money.find_rate(from_currency, to_currency, on))


# ---------------------------------------------------------------- rules


@dataclass
class Valuation:
    """What the rules computed for a line that passes them all."""

    kind: str
    engagement: Engagement
    mapping: DimensionMapping
    entry_date: date
    amount: Decimal  # engagement currency
    currency: str
    base_amount: Decimal
    base_currency: str
    fx_rate: Decimal  # engagement currency → base currency
    fx_date: date
    erp_billable: bool
    # time
    role: str = ""
    rate: Decimal = Decimal(0)
    minutes: int = 0
    write_off_minutes: int = 0
    billable_minutes: int = 0
    billable: bool = True
    # expense
    spent_amount: Decimal = Decimal(0)
    spent_currency: str = ""
    spend_rate: Decimal = Decimal(1)  # spent currency → engagement currency
    spend_rate_date: date | None = None
    markup_pct: Decimal = Decimal(0)


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


def _date(value) -> date | None:
    try:
        return date.fromisoformat(str(value).strip()[:10]) if value else None
    except ValueError:
        return None


def _fmt(d: Decimal, currency: str) -> str:
    return f"{d:,.{money.exponent(currency)}f} {currency}"


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


@dataclass
class Quantities:
    """What the entry says, parsed from the payload."""

    entry_date: date | None = None
    minutes: int = 0
    write_off_minutes: int = 0
    spent: Decimal = Decimal(0)
    spent_currency: str = ""
    cap_decision: str = ""


def _evaluate(p: dict, source_kind: str, ref: Reference, exclude_source, check_cap: bool
              ) -> tuple[list[Problem], Valuation | None]:
    ref.used_cache = False
    if p.get("action") == REVERSE:
        return [], None  # withdrawing an entry needs no rule: it zeroes what was posted, if anything
    kind = p.get("entry_type")
    if kind not in (TIME, EXPENSE):
        return [Problem("payload_schema_invalid", f"Entry type “{kind}” is neither time nor expense.", [])], None
    q, problems = _quantities(p, kind)
    eng, project_problems = _project(p, source_kind, ref)
    if project_problems or problems:
        return problems + project_problems, None
    return _price(p, kind, q, eng, ref, exclude_source, check_cap)


def _quantities(p: dict, kind: str) -> tuple[Quantities, list[Problem]]:
    """Shape rules: a date, whole minutes, an amount and currency, a known cap decision."""
    q, problems = Quantities(), []
    q.entry_date = _date(p.get("date"))
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


def _project(p: dict, source_kind: str, ref: Reference) -> tuple[Engagement | None, list[Problem]]:
    """The engagement billed: the one the engagement code names, else the one the PSA workspace is linked to."""
    code = (p.get("engagement_code") or "").strip()
    workspace = str(p.get("workspace_id") or "").strip()
    eng = ref.engagement(source_kind=source_kind, workspace_id=workspace, code=code)
    if eng is None:
        if code:
            msg = (f"No engagement has the code “{code}” (engagement code). Enter the code of an existing "
                   f"engagement, or clear it to use the PSA project's.")
        else:
            msg = (f"{entry_title(p)}: the PSA project (workspace {workspace or '(none)'}) is not linked to any "
                   f"engagement. Link the workspace to its engagement, or enter the engagement code to bill.")
        return None, [Problem("unknown_project", msg, ["engagement_code"])]
    if eng.status == Engagement.Status.CLOSED:
        return eng, [Problem("project_closed",
                             f"Engagement {eng.code} “{eng.name}” is closed: nothing more can be billed to it. "
                             f"Re-open it, or bill another engagement (engagement code).", ["engagement_code"])]
    return eng, []


def _price(p: dict, kind: str, q: Quantities, eng: Engagement, ref: Reference, exclude_source, check_cap: bool
           ) -> tuple[list[Problem], Valuation | None]:
    """The rules that need the engagement (dates, rate card, mapping, rates, cap), then the valuation."""
    label = entry_title(p)
    problems: list[Problem] = []
    le = ref.legal_entities.get(eng.legal_entity_id) or eng.legal_entity
    rates = {}
    if kind == TIME and eng.rate_card_id:
        if eng.rate_card.currency != eng.currency:
            problems.append(Problem("rate_card_currency_mismatch",
                                    f"Engagement {eng.code} bills in {eng.currency} but its rate card "
                                    f"“{eng.rate_card.name}” is in {eng.rate_card.currency}. Give the engagement a "
                                    f"{eng.currency} rate card.", ["engagement_code"]))
        rates = ref.rate_card(eng.rate_card_id)
    terms = pricing.Terms(currency=eng.currency, contract_type=eng.contract_type, rates=rates,
                          start_date=eng.start_date, end_date=eng.end_date, tm_cap=eng.tm_cap,
                          expense_markup_pct=pricing.effective_markup(eng.expense_markup_pct, ref.default_markup))

    if pricing.outside_dates(q.entry_date, terms):
        span = f"{eng.start_date or 'open'} – {eng.end_date or 'open'}"
        problems.append(Problem("entry_outside_engagement_dates",
                                f"{label}: the date of the entry {q.entry_date} is outside engagement {eng.code}'s "
                                f"dates ({span}). Correct the date, or extend the engagement by change order.",
                                ["date"]))

    role = (p.get("role") or "").strip()
    priced = line = None
    if kind == TIME:
        line = pricing.TimeLine.from_minutes(
            role=role, work_date=q.entry_date, minutes=q.minutes, write_off_minutes=q.write_off_minutes,
            billable=bool(p.get("billable", True)) and bool(p.get("task_billable", True)), task=p.get("task", ""))
        try:
            priced = pricing.price_time(line, terms)
        except pricing.UnknownRole:
            if not eng.rate_card_id:
                msg = (f"Engagement {eng.code} has no rate card, so the role “{role or '(empty)'}” cannot be "
                       f"priced. Give the engagement a rate card.")
            else:
                msg = (f"The rate-card role “{role or '(empty)'}” is not on rate card “{eng.rate_card.name}” of "
                       f"{eng.code}. Choose one of: {', '.join(sorted(rates)) or '(none)'}.")
            problems.append(Problem("unknown_rate_card_role", msg, ["role"]))

    service_code = (p.get("service_code") or "").strip()
    mapping = ref.mapping(eng.legal_entity_id, service_code) if service_code else None
    if mapping is None:
        problems.append(Problem("missing_dimension_mapping",
                                f"No ERP dimension mapping exists for service code “{service_code or '(empty)'}” in "
                                f"{le.code}: department, class and location are unknown. Choose a mapped service "
                                f"code, or add the mapping.", ["service_code"]))

    spend_rate = (Decimal(1), q.entry_date)
    if kind == EXPENSE:
        spend_rate = ref.rate(q.spent_currency, eng.currency, q.entry_date)
        if spend_rate is None:
            problems.append(Problem("missing_exchange_rate",
                                    f"The ERP has no exchange rate {q.spent_currency}→{eng.currency} on or before "
                                    f"{q.entry_date}, so the expense cannot be converted to the engagement "
                                    f"currency. Add the rate, or correct the currency.", ["currency"]))
        else:
            line = pricing.ExpenseLine(incurred_on=q.entry_date, spent_amount=q.spent,
                                       spent_currency=q.spent_currency, billable=bool(p.get("billable", True)))
            priced = pricing.price_expense(line, terms, fx_rate=spend_rate[0])
    base_rate = ref.rate(eng.currency, le.base_currency, q.entry_date)
    if base_rate is None:
        problems.append(Problem("missing_exchange_rate",
                                f"The ERP has no exchange rate {eng.currency}→{le.base_currency} on or before "
                                f"{q.entry_date}: the line cannot be kept in {le.code}'s base currency. Add the "
                                f"rate.", []))
    if problems:
        return problems, None

    amount = priced.amount
    capped = eng.contract_type == Engagement.ContractType.TIME_AND_MATERIALS and eng.tm_cap is not None
    if check_cap and capped and amount > 0 and q.cap_decision != BILL_ANYWAY:
        so_far = billed_so_far(eng.pk, exclude_source)
        if pricing.over_cap(amount, so_far, terms):
            left = max(Decimal(0), eng.tm_cap - so_far)
            return [Problem("tm_cap_exceeded",
                            f"{label}: {_fmt(amount, eng.currency)} would take {eng.code} above its T&M cap of "
                            f"{_fmt(eng.tm_cap, eng.currency)} ({_fmt(so_far, eng.currency)} already billed, "
                            f"{_fmt(left, eng.currency)} left). Write minutes off, raise the cap by change order, "
                            f"or bill it anyway (T&M cap decision).", ["write_off_minutes", "cap_decision"])], None

    base = money.convert(amount, eng.currency, le.base_currency, q.entry_date, rate=base_rate)
    v = Valuation(kind=kind, engagement=eng, mapping=mapping, entry_date=q.entry_date, amount=amount,
                  currency=eng.currency, base_amount=base.amount, base_currency=le.base_currency,
                  fx_rate=base.rate, fx_date=base.rate_date or q.entry_date, erp_billable=False, billable=line.billable)
    if kind == TIME:
        v.role, v.rate, v.minutes, v.write_off_minutes = role, priced.rate, q.minutes, q.write_off_minutes
        v.billable_minutes = pricing.billable_minutes(line, terms)
        v.erp_billable = amount > 0 and eng.contract_type == Engagement.ContractType.TIME_AND_MATERIALS
    else:
        v.spent_amount, v.spent_currency, v.markup_pct = q.spent, q.spent_currency, terms.expense_markup_pct
        v.spend_rate, v.spend_rate_date = spend_rate
        v.erp_billable = v.billable and amount > 0
    return [], v


def billed_so_far(engagement_id: int, exclude_source: tuple[str, str] | None) -> Decimal:
    """Time and expenses priced (reserved) or posted for the engagement, without this entry's earlier version:
    one query (two sums as subqueries of the engagement row)."""
    live = [TimeEntry.Status.PRICED, TimeEntry.Status.POSTED]

    def total(model):
        qs = model.objects.filter(engagement_id=OuterRef("pk"), status__in=live)
        if exclude_source:
            qs = qs.exclude(source_system=exclude_source[0], source_id=exclude_source[1])
        return Subquery(qs.values("engagement_id").annotate(s=Sum("amount")).values("s"))

    row = (Engagement.objects.filter(pk=engagement_id)
           .annotate(t=total(TimeEntry), e=total(ExpenseEntry)).values_list("t", "e").first())
    return sum((x or Decimal(0) for x in (row or ())), Decimal(0))


def owner_team(reason: str) -> str:
    if reason in ("", "tm_cap_exceeded", "missing_dimension_mapping", "missing_exchange_rate",
                  "downstream_validation"):
        return "finance_ops"
    if reason in ("internal_error", "downstream_auth", "downstream_unavailable"):
        return "integration_admin"
    return "pmo"


def priority(payload: dict) -> int:
    return 1  # a money posting


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


def _entry_model(kind: str):
    return TimeEntry if kind == TIME else ExpenseEntry


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
    if draws_on_cap(v, p):
        v = price_under_cap(p, engagement_pk=v.engagement.pk, source_kind=ctx.source.kind, ref=_reference(ctx),
                            source_role=ctx.source.role, version=version, context=ctx.context)
    else:
        def apply():
            ctx.context["canonical_id"] = save_priced(v, p, source_system=source_system, source_id=source_id,
                                                      source_role=ctx.source.role, version=version)

        ctx.on_commit(apply)
    eng = v.engagement
    p["priced"] = {"amount": str(v.amount), "currency": v.currency}
    ctx.context.update(engagement_id=eng.pk, engagement_code=eng.code, amount=str(v.amount), currency=v.currency,
                       base_amount=str(v.base_amount), base_currency=v.base_currency,
                       erp_external_id=erp_external_id(v.kind, p["entry_id"]))


def draws_on_cap(v: Valuation, p: dict) -> bool:
    eng = v.engagement
    return (eng.contract_type == Engagement.ContractType.TIME_AND_MATERIALS and eng.tm_cap is not None
            and v.amount > 0 and (p.get("cap_decision") or "").strip() != BILL_ANYWAY)


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
        context["canonical_id"] = save_priced(v, p, source_system=source_kind, source_id=source_id,
                                              source_role=source_role, version=version)
    return v


def _approved_at(p: dict) -> datetime | None:
    value = p.get("approved_at") or p.get("source_modified_at")
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None
    except ValueError:
        return None


def save_priced(v: Valuation, p: dict, *, source_system: str, source_id: str, source_role: str,
                version: str) -> int:
    """Upsert the canonical entry (one INSERT … ON CONFLICT by source), status PRICED. Returns its id."""
    common = dict(source_system=source_system, source_id=source_id, source_version=version, engagement=v.engagement,
                  person=(p.get("person") or "")[:200], service_code=(p.get("service_code") or "")[:64],
                  billable=v.billable, approved_at=_approved_at(p), status=TimeEntry.Status.PRICED, posted_at=None,
                  currency=v.currency, amount=v.amount, base_currency=v.base_currency, base_amount=v.base_amount,
                  fx_rate=v.fx_rate, fx_date=v.fx_date)
    if v.kind == TIME:
        assert_may_write("time_entry", source_role)
        obj = TimeEntry(**common, role=v.role[:100], task=(p.get("task") or "")[:200], work_date=v.entry_date,
                        hours=(Decimal(v.minutes) / 60).quantize(HOURS_Q, ROUND_HALF_UP),
                        write_off_hours=(Decimal(v.write_off_minutes) / 60).quantize(HOURS_Q, ROUND_HALF_UP),
                        rate=v.rate)
    else:
        assert_may_write("expense_entry", source_role)
        obj = ExpenseEntry(**common, category=(p.get("category") or "")[:100], incurred_on=v.entry_date,
                           spent_amount=v.spent_amount, spent_currency=v.spent_currency, markup_pct=v.markup_pct)
    model = type(obj)
    fields = [f.name for f in model._meta.concrete_fields
              if f.name not in ("id", "source_system", "source_id", "created_at")]
    [saved] = model.objects.bulk_create([obj], update_conflicts=True, unique_fields=["source_system", "source_id"],
                                        update_fields=fields)
    return saved.pk


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


def _erp_hold(exc: DownstreamError, what: str, p: dict) -> Hold:
    fault = ERP_FIELD_MAP.get(exc.field.split(".")[0], "") if exc.field else ""
    where = f"field: {exc.field}" if exc.field else "no field named"
    if fault == "service_code":
        where += f" — from the dimension mapping of service code “{p.get('service_code', '')}”"
    return Hold([Problem("downstream_validation", f"The ERP refused to {what}: {exc.message} ({where}).",
                         [fault] if fault else [], exc.system, exc.message)])


def stage_erp_post(ctx) -> None:
    p = ctx.payload
    kind = p.get("entry_type")
    record_type, eid = ERP_RECORD[kind], erp_external_id(kind, p["entry_id"])
    client = ctx.client_for_role("erp")
    source_system, source_id = ctx.source.kind, str(p["entry_id"])
    model = _entry_model(kind)
    what = "time bill" if kind == TIME else "charge"
    if p.get("action") == REVERSE:
        reverse(ctx, client, record_type, eid, model, source_system, source_id, what)
        return
    # the rules ran in `price` (which reserved the amount under the cap); they run again here, without the cap,
    # for the valuation and so that a mapping corrected since counts on resubmit
    problems, v = evaluate(p, source_kind=source_system, ref=_reference(ctx), check_cap=False)
    if problems:
        raise Hold(problems)
    fields = erp_fields(v, p, source_system=source_system)
    try:
        internal_id = client.upsert(record_type, eid, fields)
    except DownstreamError as exc:
        if exc.permanent:
            raise _erp_hold(exc, f"post the {what}", p)
        raise
    ctx.context.update(erp_record_id=internal_id, erp_record_type=record_type, erp_external_id=eid,
                       erp_action="posted")
    now = timezone.now()
    entry_pk = ctx.context.get("canonical_id")

    def apply():
        n = model.objects.filter(pk=entry_pk).update(status=model.Status.POSTED, posted_at=now, updated_at=now)
        if n:
            canonical.external_id_link(obj=model(pk=entry_pk), system=client.system, object_type=record_type,
                                       external_id=internal_id)

    ctx.on_commit(apply)


def reverse(ctx, client, record_type, eid, model, source_system, source_id, what) -> None:
    """Withdrawn in the PSA: zero the ERP line if the ERP has it (read first: a full record is written back, so
    the upsert stays valid whether or not it existed), and mark the canonical entry REVERSED."""
    try:
        current = client.get_by_external_id(record_type, eid)
        if current is not None:
            fields = {k: v for k, v in current.items() if k not in READ_ONLY}
            fields.update(ZEROED[ERP_RECORD_KIND[record_type]])
            text_field = "memo" if record_type == "timebill" else "description"
            text = str(current.get(text_field) or "")
            if not text.startswith(REVERSED_PREFIX):  # a retried reversal writes the same values again
                fields[text_field] = f"{REVERSED_PREFIX} {text}"[:999]
            ctx.context["erp_record_id"] = client.upsert(record_type, eid, fields)
    except DownstreamError as exc:
        if exc.permanent:
            raise _erp_hold(exc, f"reverse the {what}", ctx.payload)
        raise
    ctx.context.update(erp_action="reversed" if current is not None else "nothing posted",
                       erp_external_id=eid)
    ctx.payload.pop("priced", None)
    now = timezone.now()

    def apply():
        assert_may_write("time_entry" if model is TimeEntry else "expense_entry", ctx.source.role)
        model.objects.filter(source_system=source_system, source_id=source_id).update(
            status=model.Status.REVERSED, amount=Decimal(0), base_amount=Decimal(0), updated_at=now)

    ctx.on_commit(apply)


WORKFLOW = register(Workflow(
    name=NAME,
    label="Time & expense to billing",
    stages=[
        Stage("price", "Price with rate card", stage_price),
        Stage("erp_post", "Post to ERP", stage_erp_post, "erp"),
    ],
    validate=validate,
    owner_team=owner_team,
    priority=priority,
    fix_fields=FIX_FIELDS,
    first_stage_on_restart="price",
    field_labels=FIELD_LABELS,
    summary=summary,
    reopen_on_update=True,
))
