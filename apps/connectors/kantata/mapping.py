"""Kantata's time entries, expenses and milestone stories ⇄ the payloads of time-to-billing and
milestone-to-invoice: the amounts read from Kantata's fields and the title a record shows in the queue."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from apps.finance.money import MoneyError, exponent, to_decimal

TIME, EXPENSE = "time", "expense"  # a time_to_billing payload's entry_type
POST, REVERSE = "post", "reverse"  # its action: bill the entry, or withdraw the billed line


def minor_to_decimal(minor: int, currency: str) -> str:
    """An amount in the currency's minor units (Kantata's *_in_cents fields) as decimal text."""
    return str(Decimal(minor).scaleb(-exponent(currency or "USD")))


def entry_title(p: dict) -> str:
    """What the queue shows for a time entry or expense: what, who, when."""
    kind, entry_id = p.get("entry_type"), p.get("entry_id", "?")
    if p.get("action") == REVERSE:
        what = "Time entry" if kind == TIME else "Expense"
        return f"{what} {entry_id} withdrawn in the PSA ({p.get('event_type', 'unapproved')})"
    who = p.get("person") or (f"user {p['user_id']}" if p.get("user_id") else "someone")
    if kind == TIME:
        try:
            hours = (Decimal(int(p.get("minutes") or 0)) / 60).quantize(Decimal("0.01"), ROUND_HALF_UP)
        except (ValueError, TypeError, ArithmeticError):
            hours = "?"
        return f"Time {hours} h · {who} · {p.get('date', '?')} (entry {entry_id})"
    return (f"Expense {p.get('amount', '?')} {p.get('currency', '')} · {p.get('category') or 'expense'} · {who} · "
            f"{p.get('date', '?')} (expense {entry_id})")


def story_amount(data: dict, currency: str) -> str:
    """A milestone story's amount as decimal text: `price` (a decimal string) when given, else
    `budget_estimate_in_cents` read as minor units of the currency; "" when the story carries none we can read."""
    price = data.get("price")
    try:
        if price not in (None, ""):
            return str(to_decimal(price, "price"))
        cents = data.get("budget_estimate_in_cents")
        if cents in (None, "") or isinstance(cents, bool):
            return ""
        minor = to_decimal(cents, "budget_estimate_in_cents")
        if minor != minor.to_integral_value():
            return ""
        return minor_to_decimal(int(minor), currency)
    except MoneyError:
        return ""
