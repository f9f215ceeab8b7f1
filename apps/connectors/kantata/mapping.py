"""Kantata's time entries, expenses and milestone stories ⇄ the payloads of time-to-billing and
milestone-to-invoice: the amounts read from Kantata's fields. An entry's title is the canonical one
(apps.finance.billable.entry_title), used by the billing rules' messages too."""

from __future__ import annotations

from decimal import Decimal

from apps.finance.money import MoneyError, exponent, to_decimal

POST = "post"  # a time_to_billing payload's action: bill the entry (apps.finance.billable.REVERSE withdraws it)


def minor_to_decimal(minor: int, currency: str) -> str:
    """An amount in the currency's minor units (Kantata's *_in_cents fields) as decimal text."""
    return str(Decimal(minor).scaleb(-exponent(currency or "USD")))


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
