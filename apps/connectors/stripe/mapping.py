"""Stripe's invoice and amounts ⇄ the canonical invoice view (apps/finance/invoicing.py)."""

from __future__ import annotations

from decimal import Decimal

from apps.finance.invoicing import parse_time, utc_text
from apps.finance.money import exponent

# a Stripe invoice's status → the canonical invoice status
STRIPE_STATUS = {"draft": "draft", "open": "open", "paid": "paid", "void": "void", "uncollectible": "uncollectible"}


def to_minor(amount: Decimal, currency: str) -> int:
    """A decimal amount in Stripe's integer minor units of the currency."""
    return int(amount.scaleb(exponent(currency)).to_integral_value())


def _scale(value: int, currency: str) -> Decimal:
    return Decimal(value).scaleb(-exponent(currency))


def money(value, currency: str) -> str:
    """Stripe's integer minor units → decimal text in the currency ("" when absent)."""
    if value is None or isinstance(value, bool):
        return ""
    try:
        return str(_scale(int(value), currency or "usd"))
    except (TypeError, ValueError):
        return ""


def unix_date(unix) -> str:
    """A Unix time (Stripe's timestamps) as its UTC date, "" when absent."""
    dt = parse_time(unix) if unix not in (None, "") else None
    return dt.date().isoformat() if dt else ""


def invoice_view(obj: dict, status: str) -> dict:
    """The canonical view of a Stripe invoice object, with the status Handoff gives it."""
    cur = str(obj.get("currency") or "").upper()
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    transitions = obj.get("status_transitions") if isinstance(obj.get("status_transitions"), dict) else {}
    return {
        "id": str(obj.get("id") or ""),
        "number": str(obj.get("number") or ""),
        "status": status,
        "currency": cur,
        "total": money(obj.get("total"), cur),
        "amount_paid": money(obj.get("amount_paid"), cur),
        "amount_due": money(obj.get("amount_remaining"), cur),
        "due_on": unix_date(obj.get("due_date")),
        "issued_on": unix_date(transitions.get("finalized_at") or obj.get("created")),
        "paid_at": utc_text(parse_time(transitions["paid_at"])) if transitions.get("paid_at") else "",
        "customer_ref": str(obj.get("customer") or ""),
        "customer_key": str(meta.get("handoff_customer_key") or ""),
        "milestone_ref": str(meta.get("handoff_milestone") or ""),
        "engagement_ref": str(meta.get("handoff_engagement") or ""),
    }
