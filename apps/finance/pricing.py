"""Billable rules: what an approved time entry or expense is worth on the invoice. Pure functions (no database),
so the golden data set and the time & expense workflow price exactly alike.

Time:  billable hours = hours − written-off hours (never below 0); 0 when the entry or its task is non-billable.
       amount = round(billable hours × the rate card's rate for the role), in the engagement currency.
       A PSA that records minutes (Kantata's time_in_minutes): amount = round(billable minutes × rate ÷ 60),
       multiplied before dividing, so that a line worth exactly half a cent (2 min at 150.15/h = 5.005) rounds
       up as the ERP does with the H:MM duration, instead of 2/60 h being cut to 28 digits first (→ 5.00).
Expense: amount = round(spent × rate(spent currency → engagement currency, on the day incurred) × (1 + markup %)),
       one rounding per line; 0 when non-billable.
T&M cap: on a T&M engagement with a not-to-exceed amount, a line that would take the billed total above the cap
       is not posted (it is held for a person: bill it anyway, write it off, or raise the cap by change order).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from .money import round_money

HUNDRED = Decimal(100)
SIXTY = Decimal(60)


@dataclass(frozen=True)
class Terms:
    """The engagement terms that pricing needs."""

    currency: str
    contract_type: str
    rates: dict  # role → Decimal rate (already in the engagement currency)
    start_date: date | None = None
    end_date: date | None = None
    tm_cap: Decimal | None = None
    expense_markup_pct: Decimal = Decimal(0)
    non_billable_tasks: frozenset = frozenset()


@dataclass(frozen=True)
class TimeLine:
    role: str
    work_date: date
    hours: Decimal
    billable: bool = True
    write_off_hours: Decimal = Decimal(0)
    task: str = ""
    # set by from_minutes(): the exact PSA quantities (hours above are then minutes ÷ 60, for display only)
    minutes: int | None = None
    write_off_minutes: int = 0

    @classmethod
    def from_minutes(cls, *, role: str, work_date: date, minutes: int, write_off_minutes: int = 0,
                     billable: bool = True, task: str = "") -> "TimeLine":
        return cls(role=role, work_date=work_date, hours=Decimal(minutes) / SIXTY, billable=billable,
                   write_off_hours=Decimal(write_off_minutes) / SIXTY, task=task, minutes=minutes,
                   write_off_minutes=write_off_minutes)


@dataclass(frozen=True)
class ExpenseLine:
    incurred_on: date
    spent_amount: Decimal
    spent_currency: str
    billable: bool = True


@dataclass(frozen=True)
class Priced:
    amount: Decimal  # engagement currency, rounded
    rate: Decimal  # hourly rate (time) or exchange rate (expense)
    billable_quantity: Decimal  # billable hours (time) or spent amount (expense)


class UnknownRole(KeyError):
    pass


def billable_hours(line: TimeLine, terms: Terms) -> Decimal:
    if line.minutes is not None:
        return Decimal(billable_minutes(line, terms)) / SIXTY
    if not line.billable or line.task in terms.non_billable_tasks:
        return Decimal(0)
    return max(Decimal(0), line.hours - line.write_off_hours)


def billable_minutes(line: TimeLine, terms: Terms) -> int:
    """For a line built with TimeLine.from_minutes: minutes − written-off minutes, never below 0."""
    if not line.billable or line.task in terms.non_billable_tasks:
        return 0
    return max(0, (line.minutes or 0) - line.write_off_minutes)


def price_time(line: TimeLine, terms: Terms) -> Priced:
    """Raises UnknownRole when the rate card has no rate for the role (even for non-billable time: the PSA role
    must still map, so that effort is valued in reconciliation)."""
    if line.role not in terms.rates:
        raise UnknownRole(line.role)
    rate = Decimal(terms.rates[line.role])
    hours = billable_hours(line, terms)
    if line.minutes is not None:
        return Priced(round_money(billable_minutes(line, terms) * rate / SIXTY, terms.currency), rate, hours)
    return Priced(round_money(hours * rate, terms.currency), rate, hours)


def price_expense(line: ExpenseLine, terms: Terms, fx_rate: Decimal = Decimal(1)) -> Priced:
    """fx_rate converts the spent currency into the engagement currency (1 when they are the same)."""
    if not line.billable:
        return Priced(round_money(Decimal(0), terms.currency), fx_rate, line.spent_amount)
    factor = Decimal(1) + Decimal(terms.expense_markup_pct) / HUNDRED
    return Priced(round_money(line.spent_amount * fx_rate * factor, terms.currency), fx_rate, line.spent_amount)


def effective_markup(engagement_pct: Decimal | None, policy_default: Decimal) -> Decimal:
    """The engagement's own expense markup when it has one (even 0), else the finance policy's default."""
    return Decimal(policy_default if engagement_pct is None else engagement_pct)


def outside_dates(d: date, terms: Terms) -> bool:
    return bool((terms.start_date and d < terms.start_date) or (terms.end_date and d > terms.end_date))


def over_cap(amount: Decimal, billed_so_far: Decimal, terms: Terms) -> bool:
    """True when posting `amount` would take a capped T&M engagement above its not-to-exceed amount."""
    if terms.contract_type != "t_and_m" or terms.tm_cap is None:
        return False
    return billed_so_far + amount > terms.tm_cap
