"""The sandbox NetSuite account's reference data: its segments (internal id → name).

The one list of them: the sandbox ERP validates time bills and charges against it (time_bills.py), and the demo
firm maps its PSA service codes to these ids by name (the demo app's setup_finance_reference). No imports, so
anything may read it without loading the sandbox's views.
"""

SEGMENTS = {
    "department": {"10": "Consulting", "20": "Engineering", "30": "Advisory", "40": "Training"},
    "class": {"1": "Professional services", "2": "Managed services", "3": "Pass-through expenses"},
    "location": {"1": "New York", "2": "London", "3": "Berlin", "4": "Remote"},
    "subsidiary": {"1": "Handoff Consulting Inc.", "2": "Handoff Consulting Ltd", "3": "Handoff Beratung GmbH"},
    "item": {"100": "Consulting services", "101": "Engineering services", "102": "Training services",
             "200": "Billable expenses"},
}


def segment_id(kind: str, name: str) -> str:
    """The internal id of the segment of this kind with this name (KeyError when the account has none)."""
    for rid, label in SEGMENTS[kind].items():
        if label == name:
            return rid
    raise KeyError(f"the sandbox NetSuite account has no {kind} named {name!r}")


def is_valid(kind: str, rid: str) -> bool:
    return str(rid) in SEGMENTS.get(kind, {})
