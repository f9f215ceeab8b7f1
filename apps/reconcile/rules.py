"""Reconciliation rules: per engagement and period (a calendar month), three figures in the engagement currency,
which of them must agree for the contract type, and when a difference becomes an exception. Pure functions (no
database), so the nightly run, the re-check of one record and the golden data set apply exactly the same rules.
docs/money.md ("Reconciliation") explains them to finance.

The figures (all Σ of already-rounded amounts: nothing is rounded here)
- delivered  = Σ TimeEntry.amount + Σ ExpenseEntry.amount of the entries dated in the month (work_date /
               incurred_on) and not REVERSED: the PSA's approved effort priced with the rate card
               (apps/finance/pricing.py; non-billable time and written-off hours are worth 0).
- billed     = time & materials: Σ amount of those entries that are POSTED (what the ERP / billing engine
               received as billable transactions);
               milestone, fixed fee, retainer: Σ Invoice.total of the engagement's invoices for the month
               (Invoice.period, or the month of issued_on when the period is empty) that are not VOID.
- recognised = Σ RevenueEntry.amount for the month (ERP-owned).
- expected   = retainer only: the fee the month must bill — Engagement.retainer_fee for every calendar month
               that overlaps the engagement's dates (no proration), 0.00 for a month outside them; none when
               the engagement has no retainer fee (then only billed = recognised is checked).

What must agree
- time & materials:        delivered = billed = recognised
- milestone, fixed fee:    billed = recognised (delivered is shown, not compared: the price is not the effort)
- retainer:                billed = recognised = expected
- any other contract type: billed = recognised

variance = the largest absolute difference among the figures that must agree (max − min), exact.
A variance strictly above the tolerance (FinancePolicy.reconciliation_tolerance, default 0.01, in the engagement
currency) is an exception; a variance exactly at the tolerance is not.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

T_AND_M = "t_and_m"
MILESTONE = "milestone"
FIXED_FEE = "fixed_fee"
RETAINER = "retainer"

ZERO = Decimal("0.00")

# contract type → the figures that must agree
COMPARED = {
    T_AND_M: ("delivered", "billed", "recognised"),
    MILESTONE: ("billed", "recognised"),
    FIXED_FEE: ("billed", "recognised"),
    RETAINER: ("billed", "recognised", "expected"),
}
DEFAULT_COMPARED = ("billed", "recognised")

CONTRACT_RULE = {
    T_AND_M: "time & materials: delivered = billed = recognised",
    MILESTONE: "milestone: billed = recognised",
    FIXED_FEE: "fixed fee: billed = recognised",
    RETAINER: "retainer: billed = recognised = the monthly retainer fee",
}


@dataclass(frozen=True)
class Figures:
    """What the PSA, the ERP / billing engine and the revenue ledger say for one engagement and month."""

    contract_type: str
    currency: str
    period: date  # first day of the month
    delivered: Decimal = ZERO  # Σ amount of time and expense entries not reversed
    posted: Decimal = ZERO  # Σ amount of those that are posted
    invoiced: Decimal = ZERO  # Σ total of invoices not void
    recognised: Decimal = ZERO  # Σ revenue entries
    retainer_fee: Decimal | None = None
    start_date: date | None = None
    end_date: date | None = None


@dataclass(frozen=True)
class Result:
    delivered: Decimal
    billed: Decimal
    recognised: Decimal
    expected: Decimal | None  # retainer: the fee due this month; None otherwise
    compared: tuple[str, ...]  # names of the figures that must agree
    variance: Decimal
    over_tolerance: bool

    def figure(self, name: str) -> Decimal | None:
        return getattr(self, name)


def month_end(period: date) -> date:
    return period.replace(day=calendar.monthrange(period.year, period.month)[1])


def in_dates(period: date, start: date | None, end: date | None) -> bool:
    """True when the calendar month of `period` overlaps [start, end] (an open end overlaps everything after)."""
    return (start is None or start <= month_end(period)) and (end is None or end >= period.replace(day=1))


def billed(f: Figures) -> Decimal:
    """T&M bills through posted billable transactions; every other contract type through invoices."""
    return f.posted if f.contract_type == T_AND_M else f.invoiced


def expected_fee(f: Figures) -> Decimal | None:
    """Retainer: the full fee for a month inside the engagement's dates, 0.00 outside them; None otherwise."""
    if f.contract_type != RETAINER or f.retainer_fee is None:
        return None
    return f.retainer_fee if in_dates(f.period, f.start_date, f.end_date) else ZERO


def compared(contract_type: str, expected: Decimal | None) -> tuple[str, ...]:
    names = COMPARED.get(contract_type, DEFAULT_COMPARED)
    if expected is None:
        names = tuple(n for n in names if n != "expected")
    return names


def variance(values: list[Decimal]) -> Decimal:
    """The largest absolute difference among the values: max − min (0 for fewer than two)."""
    if len(values) < 2:
        return ZERO
    return max(values) - min(values)


def is_exception(var: Decimal, tolerance: Decimal) -> bool:
    """Strictly above the tolerance: a variance exactly at it is not an exception."""
    return var > tolerance


def reconcile(f: Figures, tolerance: Decimal) -> Result:
    expected = expected_fee(f)
    b = billed(f)
    names = compared(f.contract_type, expected)
    values = {"delivered": f.delivered, "billed": b, "recognised": f.recognised, "expected": expected}
    var = variance([values[n] for n in names])
    return Result(delivered=f.delivered, billed=b, recognised=f.recognised, expected=expected, compared=names,
                  variance=var, over_tolerance=is_exception(var, tolerance))


def describe(contract_type: str) -> str:
    """The rule in words, for the exception message and the report."""
    return CONTRACT_RULE.get(contract_type, f"{contract_type or 'unknown contract type'}: billed = recognised")
