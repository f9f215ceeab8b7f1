"""System of record per canonical object type (DOMAIN.md): only the owner's role may write an object's fields.

CRM owns customer and opportunity/engagement commercial data, the PSA owns project execution and time, the ERP
owns billing, invoices and revenue. Other systems may only *link* their ids to an object, never overwrite it.
"""

SYSTEM_OF_RECORD = {
    "customer": "crm",
    "engagement": "crm",
    "rate_card": "crm",
    "project": "psa",
    "milestone": "psa",
    "time_entry": "psa",
    "expense_entry": "psa",
    "invoice": ("erp", "billing"),  # the ERP, or the billing engine (Stripe) when an engagement bills there
    "payment": ("erp", "billing"),
    "revenue": "erp",
}


class NotSystemOfRecord(Exception):
    """A system tried to write fields of an object type it does not own."""


def assert_may_write(object_type: str, source_role: str) -> None:
    owner = SYSTEM_OF_RECORD[object_type]
    owners = owner if isinstance(owner, tuple) else (owner,)
    if source_role not in owners:
        raise NotSystemOfRecord(
            f"{source_role.upper()} may not write {object_type} fields: the {' or '.join(o.upper() for o in owners)} "
            f"is the system of record"
        )
