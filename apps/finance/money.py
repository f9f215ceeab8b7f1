"""Money rules, written down once and used everywhere (docs/money.md explains them to finance).

- Amounts are `Decimal` with an ISO-4217 currency; a float never touches money.
- Rounding happens only where the ERP rounds: **per line**, to the currency's minor unit, **half up**
  (NetSuite and Stripe both round a line's amount this way). Totals are sums of rounded lines and are never
  rounded again, so an invoice total always equals the sum of its lines to the cent.
- Intermediate products (hours × rate, amount × (1 + markup)) keep full precision until that single rounding.
- Conversion to another currency uses the ERP's rate for the transaction date (the latest rate on or before
  it), then the same per-line rounding. The rate and its date are stored with the converted amount.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

# currencies whose minor unit is not the cent (ISO-4217 exponent)
MINOR_UNITS = {"JPY": 0, "KRW": 0, "CLP": 0, "BHD": 3, "KWD": 3}


class MoneyError(ValueError):
    pass


def exponent(currency: str) -> int:
    return MINOR_UNITS.get(currency.upper(), 2)


def quantum(currency: str) -> Decimal:
    return Decimal(1).scaleb(-exponent(currency))


def round_money(amount: Decimal, currency: str) -> Decimal:
    """Round one line's amount the way the ERP does: to the minor unit, half up."""
    if not isinstance(amount, Decimal):
        raise MoneyError(f"money must be Decimal, got {type(amount).__name__}")
    return amount.quantize(quantum(currency), rounding=ROUND_HALF_UP)


def to_decimal(value, what: str = "amount") -> Decimal:
    """Parse a value from a payload (string or int; never float) into a Decimal, or raise MoneyError."""
    if isinstance(value, float):
        value = repr(value)  # JSON numbers arrive as float: take their shortest exact text, not the binary value
    try:
        d = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise MoneyError(f"{what} “{value}” is not a number")
    if not d.is_finite():
        raise MoneyError(f"{what} “{value}” is not a finite number")
    return d


def to_decimal_or_none(value) -> Decimal | None:
    """A payload's amount, or None when it is absent or not a finite number."""
    if value in (None, ""):
        return None
    try:
        return to_decimal(value)
    except MoneyError:
        return None


def amount_problem(value, currency: str, *, may_be_negative: bool = True) -> str:
    """Why `value` is not an amount in `currency`, in words ("" when it is): not a finite number, more decimals
    than the currency's minor unit (storing it would round it silently), or negative where it cannot be."""
    d = to_decimal_or_none(value)
    if d is None:
        return "is not a number"
    if -d.normalize().as_tuple().exponent > exponent(currency):
        places = exponent(currency)
        return f"has more decimals than {currency.upper()} has ({places})"
    if d < 0 and not may_be_negative:
        return "is negative, which it cannot be"
    return ""


@dataclass(frozen=True)
class Converted:
    amount: Decimal
    currency: str
    rate: Decimal
    rate_date: date | None


def find_rate(from_currency: str, to_currency: str, on: date) -> tuple[Decimal, date] | None:
    """The ERP's rate for `on`: the latest stored rate on or before that date (or the inverse pair)."""
    from .models import ExchangeRate

    if from_currency == to_currency:
        return Decimal(1), on
    r = (ExchangeRate.objects.filter(from_currency=from_currency, to_currency=to_currency, rate_date__lte=on)
         .order_by("-rate_date").first())
    if r is not None:
        return r.rate, r.rate_date
    inv = (ExchangeRate.objects.filter(from_currency=to_currency, to_currency=from_currency, rate_date__lte=on)
           .order_by("-rate_date").first())
    if inv is not None:
        return (Decimal(1) / inv.rate).quantize(Decimal("0.00000001"), rounding=ROUND_HALF_UP), inv.rate_date
    return None


def convert(amount: Decimal, from_currency: str, to_currency: str, on: date,
            rate: tuple[Decimal, date] | None = None) -> Converted:
    """amount (already rounded in its own currency) in `to_currency`, rounded per line. Raises MoneyError when
    the ERP has no rate for that date."""
    if from_currency == to_currency:
        return Converted(amount, to_currency, Decimal(1), on)
    rate = rate or find_rate(from_currency, to_currency, on)
    if rate is None:
        raise MoneyError(f"no exchange rate {from_currency}→{to_currency} on or before {on.isoformat()}")
    return Converted(round_money(amount * rate[0], to_currency), to_currency, rate[0], rate[1])


def month_start(d: date) -> date:
    return d.replace(day=1)
