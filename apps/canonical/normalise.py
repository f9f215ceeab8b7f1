"""The one form of a tax id, a country and a currency that Handoff compares and sends.

CRMs hold these as people typed them ("DE 811 907 980", "Germany", "chf"); two spellings of one value must
compare equal (the duplicate-customer rule) and the ERP must receive one form. Each function returns the normalised
value or raises ValueError with a message for the person who fixes the record; a value is never truncated to fit.
"""

from __future__ import annotations

import re

import pycountry

TAX_ID_MAX = 64  # Customer.tax_id's length

# characters people put between the parts of a tax id
_SEPARATORS = re.compile(r"[\s.\-/_,]+")
_ALNUM = re.compile(r"[A-Z0-9]+")

# countries whose VAT ids are written with a prefix (the EU's VIES form: Greece's is EL; Switzerland's UID is CHE)
EU_VAT = {"AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "HR", "HU", "IE", "IT", "LT", "LU",
          "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK"}
VAT_PREFIX = {**{c: c for c in EU_VAT}, "GR": "EL", "GB": "GB", "XI": "XI", "CH": "CHE"}

# countries whose ids are written with a fixed punctuation that the ERP checks: the US EIN is NN-NNNNNNN
WRITTEN_FORM = {"US": (re.compile(r"\d{9}"), lambda c: f"{c[:2]}-{c[2:]}")}

# names people use that ISO 3166 does not list
COUNTRY_ALIASES = {"UK": "GB", "GREAT BRITAIN": "GB", "ENGLAND": "GB", "SCOTLAND": "GB", "WALES": "GB",
                   "NORTHERN IRELAND": "GB", "RUSSIA": "RU", "EL": "GR"}

# codes in ISO 4217 that are not money one can invoice in (testing; "no currency")
NOT_MONEY = {"XTS", "XXX"}


def tax_id(value: str, country: str = "") -> str:
    """The tax id without spaces, dots, dashes or slashes, in capitals; when the country's VAT ids carry a prefix
    and the id is written without one, the prefix is added ("811907980" in DE = "DE811907980"); where the
    country's ids have a fixed written form, that form ("123456789" in the US = "12-3456789")."""
    compact = _SEPARATORS.sub("", value or "").upper()
    if not compact:
        raise ValueError("The tax id is empty.")
    if not _ALNUM.fullmatch(compact):
        raise ValueError(f"The tax id “{value}” has characters other than letters, digits, spaces, dots and dashes.")
    prefix = VAT_PREFIX.get((country or "").strip().upper())
    if prefix and compact[0].isdigit():
        compact = prefix + compact
    pattern, written = WRITTEN_FORM.get((country or "").strip().upper(), (None, None))
    if pattern and pattern.fullmatch(compact):
        compact = written(compact)
    if len(compact) > TAX_ID_MAX:
        raise ValueError(f"The tax id “{value}” is longer than {TAX_ID_MAX} characters.")
    return compact


def country_code(value: str) -> str:
    """The ISO 3166 alpha-2 code of a country given by its alpha-2 or alpha-3 code or its name ("Germany" → DE)."""
    text = " ".join((value or "").split())
    if not text:
        raise ValueError("The country is empty.")
    if alias := COUNTRY_ALIASES.get(text.upper()):
        return alias
    try:
        return pycountry.countries.lookup(text).alpha_2
    except LookupError:
        raise ValueError(f"“{value}” is not a country Handoff recognises: use its ISO 3166 code (DE, GB…) or its "
                         f"English name.") from None


def currency_code(value: str) -> str:
    """The ISO 4217 code of a currency ("chf" → CHF)."""
    text = (value or "").strip().upper()
    found = pycountry.currencies.get(alpha_3=text) if len(text) == 3 else None
    if found is None or text in NOT_MONEY:
        raise ValueError(f"Currency “{value or '(empty)'}” is not an ISO 4217 currency.")
    return found.alpha_3


def is_currency(value: str) -> bool:
    try:
        currency_code(value)
    except ValueError:
        return False
    return True


def country_or_as_given(value: str) -> str:
    """What a connector's mapping stores: the ISO code when the country is recognised, else the value as it came
    (never cut to two letters), which the rules then hold naming the field."""
    try:
        return country_code(value)
    except ValueError:
        return (value or "").strip()
