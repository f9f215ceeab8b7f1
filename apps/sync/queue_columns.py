"""The exception queue's derived columns: what a record shows, sorts, groups and searches by (title, amount,
business priority, error signature, search keys). They are computed from the payload whenever the engine or a
reconciliation run writes a record, so the queue reads plain indexed columns and never a payload."""

from __future__ import annotations

import hashlib
import re
from decimal import Decimal, InvalidOperation

from .workflows.catalog import get_workflow

MONEY_WORKFLOWS = {"time_to_billing", "milestone_to_invoice", "invoice_payment_to_crm", "reconciliation"}
REFERENCE_WORKFLOWS = {"reference_data"}
# NUMERIC(18, 2): a larger amount would fail the record's UPDATE, so it is left out of the column instead
AMOUNT_LIMIT = Decimal("1e16")


def summary_fields(record, payload: dict, context: dict) -> dict:
    """Columns derived from the payload: what the queue shows, sorts, groups and searches by."""
    out = {}
    wf = get_workflow(record.workflow)
    if wf.summary is not None:
        s = wf.summary(payload)
        title, amount, currency = s.get("title"), s.get("amount"), s.get("currency")
    else:
        title, amount, currency = payload.get("opportunity_name"), payload.get("amount"), payload.get("currency")
    if title:
        out["title"] = str(title)[:300]
    try:
        out["amount"] = Decimal(str(amount)) if amount not in (None, "") else None
    except (InvalidOperation, ValueError):
        out["amount"] = None
    if out.get("amount") is not None and (not out["amount"].is_finite() or abs(out["amount"]) >= AMOUNT_LIMIT):
        out["amount"] = None
    out["currency"] = str(currency or "")[:3]
    if not record.priority_overridden:
        out["priority"], out["priority_reason"] = business_priority(
            workflow=record.workflow, amount=out["amount"], currency=out["currency"],
            title=out.get("title", record.title))
    out["search_keys"] = search_keys({"source_key": record.source_key, "correlation_id": record.correlation_id,
                                      "current_payload": payload, "context": context})
    return out


def money(amount, currency) -> str:
    if amount in (None, ""):
        return ""
    try:
        return f"{Decimal(str(amount)):,.2f} {currency or ''}".strip()
    except Exception:
        return f"{amount} {currency or ''}".strip()


def business_priority(*, workflow: str, amount, currency: str, title: str = "") -> tuple[int, str]:
    """Priority from impact, with its explanation: money postings P1, set-up P2, reference data P3."""
    what = title or workflow.replace("_", " ")
    if workflow in MONEY_WORKFLOWS:
        return 1, f"P1: {workflow.replace('_', ' ')} of {money(amount, currency) or 'unknown amount'} blocked"
    if workflow in REFERENCE_WORKFLOWS:
        return 3, f"P3: reference data ({what})"
    if workflow == "quote_to_project":
        deal = money(amount, currency)
        return 2, f"P2: project set-up blocked for a won deal{' of ' + deal if deal else ''}"
    return 2, f"P2: {what}"


_NORMALISE = [
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I), "<id>"),
    (re.compile(r"“[^”]*”|\"[^\"]*\"|'[^']*'"), "<value>"),
    (re.compile(r"#?\d[\d.,:-]*"), "<n>"),
    (re.compile(r"\s+"), " "),
]


def normalise_message(message: str) -> str:
    """The message with values taken out, so that alike exceptions read the same."""
    text = (message or "").strip()
    for pattern, repl in _NORMALISE:
        text = pattern.sub(repl, text)
    return text[:300]


def error_signature(reason: str, system: str, message: str) -> str:
    """What groups alike exceptions in the queue: the reason, the system and the message without its values."""
    basis = f"{reason}|{system}|{normalise_message(message)}"
    return hashlib.sha1(basis.encode()).hexdigest()[:16]


def search_keys(record_or_fields) -> list[str]:
    """Every id a person might paste into the search box, upper-cased for exact, case-free matching."""
    get = record_or_fields.get if isinstance(record_or_fields, dict) else lambda k, d=None: getattr(
        record_or_fields, k, d)
    payload = get("current_payload") or {}
    context = get("context") or {}
    account = payload.get("account") or {}
    keys = {get("source_key") or "", str(get("correlation_id") or "")}
    keys.add((get("source_key") or "").split(":", 1)[-1])
    for v in (payload.get("opportunity_id"), payload.get("deal_id"), account.get("id"), account.get("tax_id"),
              account.get("name"), payload.get("invoice_number"), payload.get("engagement_code")):
        if v:
            keys.add(str(v))
    for k, v in context.items():
        if k.endswith("_id") or k.endswith("_code") or k.endswith("_number"):
            if v not in (None, ""):
                keys.add(str(v))
    return sorted({k.strip().upper()[:200] for k in keys if k and k.strip()})
