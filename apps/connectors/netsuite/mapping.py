"""NetSuite's invoice record ⇄ the canonical invoice view (apps/finance/invoicing.py)."""

from __future__ import annotations

from apps.finance.money import MoneyError, to_decimal

# NetSuite invoice status (id or refName, compared without spaces, lower case) → canonical status
NETSUITE_STATUS = {"open": "open", "paidinfull": "paid", "pendingapproval": "draft", "rejected": "void",
                   "voided": "void", "void": "void"}


def amount_text(value) -> str:
    """A NetSuite amount as decimal text ("" when absent or not a number)."""
    if value in (None, ""):
        return ""
    try:
        return str(to_decimal(value))
    except MoneyError:
        return ""


def record_ref(value) -> str:
    """The internal id of a record reference ({"id": …} or the bare id), "" when there is none."""
    if isinstance(value, dict):
        value = value.get("id")
    return str(value).strip()[:64] if isinstance(value, (str, int)) and not isinstance(value, bool) else ""


def currency_code(record: dict) -> str:
    """The record's currency as an ISO code ("" when absent): NetSuite sends a reference whose refName is the code."""
    currency = record.get("currency")
    return str((currency.get("refName") if isinstance(currency, dict) else currency) or "").upper()[:3]


def invoice_status(record: dict) -> str:
    st = record.get("status")
    raw = (st.get("id") or st.get("refName") or "") if isinstance(st, dict) else (st or "")
    status = NETSUITE_STATUS.get(str(raw).replace(" ", "").lower(), "open")
    remaining, total = amount_text(record.get("amountRemaining")), amount_text(record.get("total"))
    if status == "open" and remaining and total and to_decimal(remaining) <= 0 < to_decimal(total):
        status = "paid"
    return status


def invoice_view(record: dict) -> dict:
    """The canonical view of a NetSuite invoice record."""
    ext = str(record.get("externalId") or "")
    return {
        "id": record_ref(record.get("id")),
        "number": str(record.get("tranId") or "")[:100],
        "status": invoice_status(record),
        "currency": currency_code(record),
        "total": amount_text(record.get("total")),
        "amount_paid": amount_text(record.get("amountPaid")),
        "amount_due": amount_text(record.get("amountRemaining")),
        "due_on": str(record.get("dueDate") or "")[:10],
        "issued_on": str(record.get("tranDate") or "")[:10],
        "paid_at": "",
        "customer_ref": record_ref(record.get("entity")),
        "customer_key": "",
        "milestone_ref": ext[6:] if ext.startswith("HO-MS-") else "",
        "engagement_ref": "",
        "project_ref": record_ref(record.get("job")),
        "external_ref": ext[:100],
    }
