"""Billable rules of an approved time entry or expense (DOMAIN.md workflow 2): which engagement it bills, whether
it may be billed there, and what it is worth. One function per rule, named for it, each returning the Finding a
person reads (None when the rule passes); `price` applies them all and lists every finding at once.

- unknown_project: the engagement code names no engagement, or the PSA workspace is linked to none.
- project_closed: nothing more is billed to a closed engagement.
- entry_outside_engagement_dates: the entry's date is within the engagement's start and end dates.
- rate_card_currency_mismatch / unknown_rate_card_role: time is priced with the engagement's rate card, in its
  currency, for the entry's role (non-billable time too: its effort is valued for reconciliation).
- missing_dimension_mapping: the service code maps to the ERP's department, class and location.
- missing_exchange_rate: an expense converts to the engagement currency, and every line to the legal entity's
  base currency, at the ERP's rate for the entry's date (latest on or before it).
- tm_cap_exceeded: on a T&M engagement with a cap, what is already priced or posted (time and expenses, this
  entry's own earlier version excluded) + this line may not exceed the cap, unless a person bills it anyway.
What a line is worth (write-offs, billable minutes, expense markup, rounding) is apps/finance/pricing.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, ROUND_HALF_UP

from django.contrib.contenttypes.models import ContentType
from django.db.models import OuterRef, Subquery, Sum

from apps.canonical.models import Engagement, ExternalId, LegalEntity, RateCardLine

from . import money, pricing
from .invoicing import Finding
from .models import DimensionMapping, ExpenseEntry, FinancePolicy, TimeEntry

TIME, EXPENSE = "time", "expense"
REVERSE = "reverse"  # the PSA withdrew the entry (unapproved or deleted)
BILL_ANYWAY = "bill_anyway"  # a person's decision to bill a line above the T&M cap
HOURS_Q = Decimal("0.01")


def entry_title(p: dict) -> str:
    """What an entry is called in the queue and in the rules' words: what, who, when."""
    kind, entry_id = p.get("entry_type"), p.get("entry_id", "?")
    if p.get("action") == REVERSE:
        what = "Time entry" if kind == TIME else "Expense"
        return f"{what} {entry_id} withdrawn in the PSA ({p.get('event_type', 'unapproved')})"
    who = p.get("person") or (f"user {p['user_id']}" if p.get("user_id") else "someone")
    if kind == TIME:
        try:
            hours = (Decimal(int(p.get("minutes") or 0)) / 60).quantize(HOURS_Q, ROUND_HALF_UP)
        except (ValueError, TypeError, ArithmeticError):
            hours = "?"
        return f"Time {hours} h · {who} · {p.get('date', '?')} (entry {entry_id})"
    return (f"Expense {p.get('amount', '?')} {p.get('currency', '')} · {p.get('category') or 'expense'} · {who} · "
            f"{p.get('date', '?')} (expense {entry_id})")


@dataclass
class Reference:
    """Engagements, rate cards, dimension mappings, rates and the markup policy, looked up at most once per drain
    batch. Only hits are cached, and `forget()` drops everything: a line is never held on cached data (the rules
    run again on fresh rows first), so a fix made in the admin a moment ago is what a resubmission runs on."""

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


@dataclass
class Quantities:
    """What the entry says, parsed from the PSA's payload by the workflow."""

    entry_date: date | None = None
    minutes: int = 0
    write_off_minutes: int = 0
    spent: Decimal = Decimal(0)
    spent_currency: str = ""
    cap_decision: str = ""


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


def _fmt(d: Decimal, currency: str) -> str:
    return f"{d:,.{money.exponent(currency)}f} {currency}"


# ---------------------------------------------------------------- the rules, one function each


def engagement_billed(p: dict, source_kind: str, ref: Reference) -> tuple[Engagement | None, list[Finding]]:
    """The engagement billed: the one the engagement code names, else the one the PSA workspace is linked to;
    with the finding that stops billing it (unknown_project, project_closed)."""
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
        return None, [Finding("unknown_project", msg, ("engagement_code",))]
    closed = project_closed(eng)
    return eng, [closed] if closed else []


def project_closed(eng: Engagement) -> Finding | None:
    """A time entry or expense is held against a closed engagement: nothing more can be billed to it."""
    if eng.status != Engagement.Status.CLOSED:
        return None
    return Finding("project_closed", f"Engagement {eng.code} “{eng.name}” is closed: nothing more can be billed to "
                                     f"it. Re-open it, or bill another engagement (engagement code).",
                   ("engagement_code",))


def rate_card_currency_mismatch(eng: Engagement) -> Finding | None:
    if not eng.rate_card_id or eng.rate_card.currency == eng.currency:
        return None
    return Finding("rate_card_currency_mismatch",
                   f"Engagement {eng.code} bills in {eng.currency} but its rate card “{eng.rate_card.name}” is in "
                   f"{eng.rate_card.currency}. Give the engagement a {eng.currency} rate card.", ("engagement_code",))


def outside_engagement_dates(label: str, entry_date: date, eng: Engagement, terms: pricing.Terms) -> Finding | None:
    if not pricing.outside_dates(entry_date, terms):
        return None
    span = f"{eng.start_date or 'open'} – {eng.end_date or 'open'}"
    return Finding("entry_outside_engagement_dates",
                   f"{label}: the date of the entry {entry_date} is outside engagement {eng.code}'s dates ({span}). "
                   f"Correct the date, or extend the engagement by change order.", ("date",))


def unknown_rate_card_role(role: str, eng: Engagement, rates: dict) -> Finding:
    if not eng.rate_card_id:
        msg = (f"Engagement {eng.code} has no rate card, so the role “{role or '(empty)'}” cannot be priced. Give "
               f"the engagement a rate card.")
    else:
        msg = (f"The rate-card role “{role or '(empty)'}” is not on rate card “{eng.rate_card.name}” of {eng.code}. "
               f"Choose one of: {', '.join(sorted(rates)) or '(none)'}.")
    return Finding("unknown_rate_card_role", msg, ("role",))


def missing_dimension_mapping(service_code: str, le: LegalEntity) -> Finding:
    return Finding("missing_dimension_mapping",
                   f"No ERP dimension mapping exists for service code “{service_code or '(empty)'}” in {le.code}: "
                   f"department, class and location are unknown. Choose a mapped service code, or add the mapping.",
                   ("service_code",))


def draws_on_cap(eng: Engagement, amount: Decimal, cap_decision: str) -> bool:
    """The line counts against a T&M cap (and is checked under the engagement's lock)."""
    return (eng.contract_type == Engagement.ContractType.TIME_AND_MATERIALS and eng.tm_cap is not None
            and amount > 0 and (cap_decision or "").strip() != BILL_ANYWAY)


def tm_cap_exceeded(label: str, amount: Decimal, eng: Engagement, terms: pricing.Terms,
                    exclude_source: tuple[str, str] | None) -> Finding | None:
    so_far = billed_so_far(eng.pk, exclude_source)
    if not pricing.over_cap(amount, so_far, terms):
        return None
    left = max(Decimal(0), eng.tm_cap - so_far)
    return Finding("tm_cap_exceeded",
                   f"{label}: {_fmt(amount, eng.currency)} would take {eng.code} above its T&M cap of "
                   f"{_fmt(eng.tm_cap, eng.currency)} ({_fmt(so_far, eng.currency)} already billed, "
                   f"{_fmt(left, eng.currency)} left). Write minutes off, raise the cap by change order, or bill it "
                   f"anyway (T&M cap decision).", ("write_off_minutes", "cap_decision"))


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


# ---------------------------------------------------------------- all of them, then the valuation


def price(p: dict, kind: str, q: Quantities, eng: Engagement, ref: Reference, exclude_source, check_cap: bool
          ) -> tuple[list[Finding], Valuation | None]:
    """The rules that need the engagement (dates, rate card, mapping, rates, cap), then the valuation."""
    label = entry_title(p)
    findings: list[Finding | None] = []
    le = ref.legal_entities.get(eng.legal_entity_id) or eng.legal_entity
    rates = {}
    if kind == TIME and eng.rate_card_id:
        findings.append(rate_card_currency_mismatch(eng))
        rates = ref.rate_card(eng.rate_card_id)
    terms = pricing.Terms(currency=eng.currency, contract_type=eng.contract_type, rates=rates,
                          start_date=eng.start_date, end_date=eng.end_date, tm_cap=eng.tm_cap,
                          expense_markup_pct=pricing.effective_markup(eng.expense_markup_pct, ref.default_markup))
    findings.append(outside_engagement_dates(label, q.entry_date, eng, terms))

    role = (p.get("role") or "").strip()
    priced = line = None
    if kind == TIME:
        line = pricing.TimeLine.from_minutes(
            role=role, work_date=q.entry_date, minutes=q.minutes, write_off_minutes=q.write_off_minutes,
            billable=bool(p.get("billable", True)) and bool(p.get("task_billable", True)), task=p.get("task", ""))
        try:
            priced = pricing.price_time(line, terms)
        except pricing.UnknownRole:
            findings.append(unknown_rate_card_role(role, eng, rates))

    service_code = (p.get("service_code") or "").strip()
    mapping = ref.mapping(eng.legal_entity_id, service_code) if service_code else None
    if mapping is None:
        findings.append(missing_dimension_mapping(service_code, le))

    spend_rate = (Decimal(1), q.entry_date)
    if kind == EXPENSE:
        spend_rate = ref.rate(q.spent_currency, eng.currency, q.entry_date)
        if spend_rate is None:
            findings.append(Finding("missing_exchange_rate",
                                    f"The ERP has no exchange rate {q.spent_currency}→{eng.currency} on or before "
                                    f"{q.entry_date}, so the expense cannot be converted to the engagement "
                                    f"currency. Add the rate, or correct the currency.", ("currency",)))
        else:
            line = pricing.ExpenseLine(incurred_on=q.entry_date, spent_amount=q.spent,
                                       spent_currency=q.spent_currency, billable=bool(p.get("billable", True)))
            priced = pricing.price_expense(line, terms, fx_rate=spend_rate[0])
    base_rate = ref.rate(eng.currency, le.base_currency, q.entry_date)
    if base_rate is None:
        findings.append(Finding("missing_exchange_rate",
                                f"The ERP has no exchange rate {eng.currency}→{le.base_currency} on or before "
                                f"{q.entry_date}: the line cannot be kept in {le.code}'s base currency. Add the "
                                f"rate."))
    findings = [f for f in findings if f is not None]
    if findings:
        return findings, None

    amount = priced.amount
    if check_cap and draws_on_cap(eng, amount, q.cap_decision):
        over = tm_cap_exceeded(label, amount, eng, terms, exclude_source)
        if over is not None:
            return [over], None

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
