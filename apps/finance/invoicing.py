"""Invoice rules: is a completed milestone ready to invoice, which invoice state wins, what the CRM is told.

Pure functions (no database, no clock of their own), unit-tested in tests/test_milestone_to_invoice.py and
tests/test_invoice_to_crm.py. The workflows gather the facts and apply the outcome.

Readiness of a completed milestone (every failing rule is reported at once):
- unknown_project: the milestone's PSA project (Kantata workspace) is linked to no engagement.
- contract_not_milestone_billed: only milestone contracts, and fixed-fee contracts whose billing schedule is a
  milestone schedule (its text names milestones, e.g. "on milestones"), bill on milestones; T&M and retainer
  contracts bill time or a monthly fee, never a milestone.
- missing_billing_schedule: the engagement has no billing schedule at all.
- currency_mismatch: one currency per invoice: the milestone's currency must be the engagement's.
- milestone_exceeds_remaining_value: the amount may not be above the remaining contract value, i.e. contract
  value − what is already committed (invoices not voided, plus other completed milestones on their way to an
  invoice). Compared only when the currencies agree.
- customer_not_in_erp: the customer must be active in the ERP (linked to its NetSuite customer id).
- missing_exchange_rate: when the engagement currency is not the legal entity's base currency, the ERP must have
  a rate for the invoice date (the invoice is also kept in base currency, with the rate and its date).
- payload_schema_invalid: the amount must be a positive number, the currency an ISO-4217 code.

Invoice state ordering (duplicates and out-of-order deliveries are harmless): a state carries the source's time
for it; a newer time wins; at the same time the higher Invoice.STATUS_RANK wins (a Stripe invoice is often
finalized and paid within the same second), except that a dispute follows the payment it disputes; an older
state never overwrites a newer one, so a paid invoice never goes back to "open" because an older event arrived
late. A voided invoice stays void.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone as dt_tz
from decimal import Decimal

from .models import Invoice

RANK = Invoice.STATUS_RANK


def order_at_same_time(status: str) -> int:
    """Which of two states with the same source time is the later one: the higher Invoice.STATUS_RANK, except
    that a dispute follows the payment it disputes (a dispute is only ever raised on a paid charge)."""
    if status == "disputed":
        return 2 * RANK["paid"] + 1
    return 2 * RANK.get(status, 0)
FINAL = {"void"}
# contract types that may bill on milestones
MILESTONE_CONTRACTS = {"milestone", "fixed_fee"}


@dataclass(frozen=True)
class Finding:
    """One reason a finance rule stops a line or a milestone, in a person's words, with the fields to fix (a
    Problem once the workflow has it)."""

    reason: str
    message: str
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class MilestoneFacts:
    name: str
    amount: Decimal | None  # None: not a number
    currency: str
    workspace_id: str = ""


@dataclass(frozen=True)
class EngagementFacts:
    code: str
    contract_type: str
    billing_schedule: str
    contract_value: Decimal
    currency: str
    committed: Decimal  # invoiced (not void) + other completed, not yet invoiced milestones, in engagement currency
    customer_name: str
    customer_in_erp: bool
    base_currency: str = ""
    rate_found: bool = True  # an ERP rate engagement currency → base currency exists for the invoice date


def is_milestone_schedule(billing_schedule: str) -> bool:
    """A billing schedule bills on milestones when it says so ("on milestones", "Milestone schedule A")."""
    return "milestone" in (billing_schedule or "").lower()


def bills_by_milestone(contract_type: str, billing_schedule: str) -> bool:
    if contract_type == "milestone":
        return True
    return contract_type == "fixed_fee" and is_milestone_schedule(billing_schedule)


def remaining_value(contract_value: Decimal, committed: Decimal) -> Decimal:
    return contract_value - committed


def readiness(ms: MilestoneFacts, eng: EngagementFacts | None) -> list[Finding]:
    """Every reason this completed milestone cannot be invoiced now (empty: ready)."""
    out: list[Finding] = []
    if ms.amount is None or ms.amount <= 0:
        out.append(Finding("payload_schema_invalid",
                           f"Milestone “{ms.name}” has no positive amount to invoice (set its price in the PSA).",
                           ("amount",)))
    if len(ms.currency) != 3 or not ms.currency.isalpha():
        out.append(Finding("payload_schema_invalid",
                           f"Milestone “{ms.name}” has no valid ISO-4217 currency (“{ms.currency or '(empty)'}”).",
                           ("currency",)))
    if eng is None:
        out.append(Finding("unknown_project",
                           f"Kantata project {ms.workspace_id or '(none)'} of milestone “{ms.name}” is linked to no "
                           f"engagement: it was not created from a won opportunity, or under another id.",
                           ("workspace_id",)))
        return out
    schedule = (eng.billing_schedule or "").strip()
    if eng.contract_type not in MILESTONE_CONTRACTS:
        out.append(Finding("contract_not_milestone_billed",
                           f"{eng.code} is a {eng.contract_type.replace('_', ' ')} contract: it bills "
                           f"{'time and expenses' if eng.contract_type == 't_and_m' else 'a periodic fee'}, not "
                           f"milestones. Do not invoice milestone “{ms.name}”, or change the contract by change order.",
                           ("engagement.contract_type",)))
    elif not schedule:
        out.append(Finding("missing_billing_schedule",
                           f"{eng.code} has no billing schedule, so Handoff cannot tell whether milestone "
                           f"“{ms.name}” is billable. Set the billing schedule (change order).",
                           ("engagement.billing_schedule",)))
    elif not bills_by_milestone(eng.contract_type, schedule):
        out.append(Finding("contract_not_milestone_billed",
                           f"{eng.code} is a fixed-fee contract billed “{schedule}”, not on milestones: milestone "
                           f"“{ms.name}” is not an invoice trigger.", ("engagement.billing_schedule",)))
    if ms.currency and eng.currency and ms.currency != eng.currency:
        out.append(Finding("currency_mismatch",
                           f"Milestone “{ms.name}” is priced in {ms.currency} but {eng.code} bills in "
                           f"{eng.currency}: one invoice has one currency. Correct the milestone's currency.",
                           ("currency",)))
    elif ms.amount is not None and ms.amount > 0:
        left = remaining_value(eng.contract_value, eng.committed)
        if ms.amount > left:
            out.append(Finding("milestone_exceeds_remaining_value",
                               f"Milestone “{ms.name}” ({ms.amount} {ms.currency}) is above what is left of "
                               f"{eng.code}'s contract value: {eng.contract_value} − {eng.committed} already "
                               f"invoiced or on its way = {left} {eng.currency}.", ("amount",)))
    if not eng.customer_in_erp:
        out.append(Finding("customer_not_in_erp",
                           f"Customer “{eng.customer_name}” is not active in the ERP (no NetSuite customer is linked): "
                           f"set the customer up in the ERP first (quote-to-project does it).", ()))
    if not eng.rate_found:
        out.append(Finding("missing_exchange_rate",
                           f"The ERP has no {eng.currency}→{eng.base_currency} exchange rate for the invoice date, "
                           f"so the invoice cannot be kept in the legal entity's base currency.", ()))
    return out


# ------------------------------------------------------------------ invoice state ordering


@dataclass(frozen=True)
class InvoiceState:
    status: str
    at: datetime | None  # the source's time for this state (event created / record last modified)


def supersedes(new: InvoiceState, current: InvoiceState | None) -> bool:
    """Does `new` replace `current`? Newer time wins; same time: the later state (`order_at_same_time`, or the same
    state again); older never; void is final."""
    if current is None:
        return True
    if current.status in FINAL:
        return False
    if current.at is None or new.at is None:
        return order_at_same_time(new.status) >= order_at_same_time(current.status)
    if new.at != current.at:
        return new.at > current.at
    return order_at_same_time(new.status) >= order_at_same_time(current.status)


def utc_text(dt: datetime) -> str:
    """A UTC time as fixed-width text, so times compare as strings (the records' source_modified_at)."""
    return dt.astimezone(dt_tz.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value) -> datetime | None:
    """ISO-8601 text (with Z or an offset) or Unix seconds → an aware datetime in UTC; None when absent or invalid,
    including a time that exists only in its own offset (`0001-01-01T00:00:00+05:00` is before year 1 in UTC,
    which a datetime cannot hold: converting it later would raise instead of refusing it here)."""
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(int(value), tz=dt_tz.utc)
        except (OverflowError, OSError, ValueError):
            return None
    try:
        dt = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        return (dt if dt.tzinfo else dt.replace(tzinfo=dt_tz.utc)).astimezone(dt_tz.utc)
    except (ValueError, OverflowError):
        return None


def state_version(status: str, at: datetime) -> str:
    """The ordering key of an invoice state as text: time first, then rank (what `supersedes` compares)."""
    return f"{utc_text(at)}#r{order_at_same_time(status):02d}"


# ------------------------------------------------------------------ what the CRM is told


def days_overdue(due_on: date | None, today: date, status: str, amount_due: Decimal) -> int:
    """Whole days past the due date of an invoice that still has money open (0 when paid, void or not due)."""
    if due_on is None or status in ("paid", "void", "draft") or amount_due <= 0:
        return 0
    return max(0, (today - due_on).days)


# severity of what the account shows: the worst of its invoices
PAYMENT_STATUS_ORDER = ["paid", "open", "overdue", "payment_failed", "disputed"]


@dataclass(frozen=True)
class InvoiceView:
    status: str
    currency: str
    amount_due: Decimal
    due_on: date | None


@dataclass(frozen=True)
class Standing:
    """An account's or opportunity's invoices, summed up: open amount per currency, worst delay, worst status."""

    open_amounts: dict  # currency → Decimal
    max_days_overdue: int
    payment_status: str
    open_invoices: int

    def open_amount_text(self, currency: str) -> str:
        """The open amount in `currency` (0.00 when none), plus any other currency, e.g. "1200.00 EUR"."""
        own = self.open_amounts.get(currency, Decimal("0.00"))
        others = [f"{v} {c}" for c, v in sorted(self.open_amounts.items()) if c != currency and v]
        return "; ".join([f"{own} {currency}", *others])


def standing(invoices: list[InvoiceView], today: date) -> Standing:
    """Sum up invoices: amounts still due (not void/draft) per currency, the longest delay, the worst status."""
    amounts: dict = {}
    worst, longest, n_open = "paid", 0, 0
    for inv in invoices:
        if inv.status in ("void", "draft", "uncollectible"):
            continue
        late = days_overdue(inv.due_on, today, inv.status, inv.amount_due)
        longest = max(longest, late)
        if inv.amount_due > 0 and inv.status != "paid":
            n_open += 1
            amounts[inv.currency] = amounts.get(inv.currency, Decimal("0.00")) + inv.amount_due
        if inv.status == "paid" and inv.amount_due <= 0:
            label = "paid"
        elif inv.status in ("payment_failed", "disputed"):
            label = inv.status
        else:
            label = "overdue" if late > 0 else "open"
        if PAYMENT_STATUS_ORDER.index(label) > PAYMENT_STATUS_ORDER.index(worst):
            worst = label
    return Standing(amounts, longest, worst, n_open)
