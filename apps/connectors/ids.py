"""The formats of the external ids callbacks carry, one function per system: an id that is not in its system's
format is refused at intake (400 naming the field), so it never reaches an outbound URL, a query or a record key.

Each function returns the id as text or raises ValueError saying what is wrong; `callbacks.checked_id` turns that
into the callback's refusal (400 naming the field).
"""

from __future__ import annotations

import re

_SF_ID = re.compile(r"[0-9A-Za-z]{15}(?:[0-9A-Z]{3})?")
_SF_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_DIGITS = re.compile(r"[1-9][0-9]{0,18}")  # HubSpot, Kantata, NetSuite: positive integers, no sign or zero pad
_STRIPE_ID = re.compile(r"[a-z]{2,10}_[0-9A-Za-z]{1,190}")


def salesforce_suffix(id15: str) -> str:
    """The 3-character case-safe suffix of a 15-character Salesforce id: for each 5-character chunk, the bits of
    its upper-case letters (first character = lowest bit) index A–Z0–5."""
    out = ""
    for chunk in (id15[0:5], id15[5:10], id15[10:15]):
        bits = sum(1 << i for i, ch in enumerate(chunk) if "A" <= ch <= "Z")
        out += _SF_SUFFIX[bits]
    return out


def salesforce_id18(id15: str) -> str:
    """The case-safe 18-character form of a 15-character Salesforce id."""
    return id15 + salesforce_suffix(id15)


def salesforce_id(value) -> str:
    """A Salesforce record id: 15 case-sensitive characters, or 18 whose last 3 are the checksum of the first 15."""
    text = value.strip() if isinstance(value, str) else ""
    if not _SF_ID.fullmatch(text):
        raise ValueError("is not a Salesforce id (15 or 18 letters and digits)")
    if len(text) == 18 and salesforce_suffix(text[:15]) != text[15:]:
        raise ValueError("is not a Salesforce id (its 18-character checksum does not match)")
    return text


def numeric_id(value, system: str) -> str:
    """HubSpot object ids, Kantata ids and NetSuite internal ids: a positive integer (JSON number or digits)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"is not a {system} id (a positive whole number)")
    text = str(value).strip()
    if not _DIGITS.fullmatch(text):
        raise ValueError(f"is not a {system} id (a positive whole number)")
    return text


def hubspot_id(value) -> str:
    return numeric_id(value, "HubSpot")


def kantata_id(value) -> str:
    return numeric_id(value, "Kantata")


def netsuite_id(value) -> str:
    return numeric_id(value, "NetSuite")


def stripe_id(value, prefix: str = "") -> str:
    """A Stripe object id: `<prefix>_` then letters and digits (evt_…, in_…, dp_…, ch_…, pi_…)."""
    text = value.strip() if isinstance(value, str) else ""
    if not _STRIPE_ID.fullmatch(text) or (prefix and not text.startswith(prefix + "_")):
        want = f"{prefix}_…" if prefix else "prefix_…"
        raise ValueError(f"is not a Stripe id ({want} followed by letters and digits)")
    return text
