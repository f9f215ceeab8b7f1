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
    "invoice": "erp",
    "payment": "erp",
}


class NotSystemOfRecord(Exception):
    """A system tried to write fields of an object type it does not own."""


def assert_may_write(object_type: str, source_role: str) -> None:
    owner = SYSTEM_OF_RECORD[object_type]
    if source_role != owner:
        raise NotSystemOfRecord(
            f"{source_role.upper()} may not write {object_type} fields: the {owner.upper()} is the system of record"
        )
