"""Console inputs: one guard for every request, and the parsers every view uses for its query values.

The guard (`InputGuardMiddleware`) refuses, with a 400 in plain words, what no screen can use: a path or query
string that is not UTF-8, a NUL or other control character (PostgreSQL text cannot hold NUL; none belongs in
a filter, a search box or an id), a query value longer than MAX_VALUE_CHARS. Form fields are held to the same
rule about control characters, except that a text area may hold tabs and line breaks. The DRF views (the API)
are left to themselves: they authenticate inside the view, after every middleware, so an anonymous caller must
get its 401 before any word about its input; the read API checks its filters with `check_value` once it knows
the caller, and the callbacks store every refusal, whatever its bytes, for the admin.

Past the guard, a value that is well-formed but unusable (`?v=abc`, `?to=9999-12-31`, `?run=²`) is never an
error: `param_int`, `param_date`, `param_decimal` and `param_choice` return the view's default instead, and
clamp numbers and dates into a range the database and the date arithmetic can hold.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal, InvalidOperation
from html import escape
from urllib.parse import parse_qsl

from django.http import HttpResponse

MAX_VALUE_CHARS = 2000
# dates a person can mean in this product; outside them `date + 1 day` (or a year 1 start) overflows
EARLIEST_DATE = date(2000, 1, 1)
LATEST_DATE = date(2100, 12, 31)
# a PostgreSQL bigint; larger ids cannot exist
MAX_ID = 2**63 - 1
# C0 controls, DEL and C1 controls: no filter, search or id holds one
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# form posts: a text area may hold tabs and line breaks (never NUL)
_FORM_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_BROKEN_UTF8 = re.compile(r"%[89A-F][0-9A-F]")
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class BadInput(ValueError):
    """A request input no view can use; the guard answers it with a 400 naming `where`."""

    def __init__(self, where: str, why: str):
        super().__init__(f"{where} {why}")
        self.where, self.why = where, why


def check_value(where: str, value: str, control=_CONTROL, max_chars: int | None = MAX_VALUE_CHARS) -> None:
    """Raise BadInput if `value` holds a control character or is over-long."""
    if control.search(value):
        raise BadInput(where, "contains a control character (such as NUL)")
    if max_chars is not None and len(value) > max_chars:
        raise BadInput(where, f"is longer than {max_chars} characters")


def check_request(request) -> None:
    """Raise BadInput for the first unusable part of the request's path, query string or form fields."""
    path = request.path_info
    # Django re-percent-encodes the bytes of a path that are not UTF-8 (`%FF`); no route or id holds an escaped
    # byte of 0x80 or above, so one in the decoded path was not UTF-8
    if _BROKEN_UTF8.search(path):
        raise BadInput("the address", "is not valid UTF-8")
    check_value("the address", path)
    try:
        pairs = parse_qsl(request.META.get("QUERY_STRING", ""), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise BadInput("the query string", "is not valid UTF-8")
    for key, value in pairs:
        check_value(f"the parameter {key[:40]!r}" if not _CONTROL.search(key) else "a parameter name", key)
        check_value(f"the value of {key[:40]!r}", value)
    if request.method == "POST" and request.content_type in _FORM_TYPES:
        for key, values in request.POST.lists():
            for value in values:
                # no length limit: a payload edited as JSON, a bulk selection of 10,000 ids are long on purpose
                check_value(f"the form field {key[:40]!r}", value, _FORM_CONTROL, max_chars=None)


def _refusal(exc: BadInput) -> HttpResponse:
    message = f"This request was refused: {exc.where} {exc.why}."
    page = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>Bad request</title></head><body>"
            f"<h1>Bad request</h1><p>{escape(message)}</p>"
            f"<p>Check the address or the form you sent, then try again. <a href=\"/\">Back to Handoff</a></p>"
            f"</body></html>")
    return HttpResponse(page, status=400, content_type="text/html; charset=utf-8")


class InputGuardMiddleware:
    """Runs after URL resolution (process_view), so a view can be exempted and the login redirect comes first."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        from rest_framework.views import APIView

        view_class = getattr(view_func, "view_class", None)
        if isinstance(view_class, type) and issubclass(view_class, APIView):
            return None
        try:
            check_request(request)
        except BadInput as exc:
            return _refusal(exc)
        return None


# ---------------------------------------------------------------- parsers for query values


def param_int(params, key: str, default: int | None = None, *, lo: int = 0, hi: int = MAX_ID) -> int | None:
    """An integer from the query (ASCII digits, optional sign), clamped to [lo, hi]; `default` otherwise."""
    raw = (params.get(key) or "").strip()
    if not re.fullmatch(r"[+-]?[0-9]{1,30}", raw):
        return default
    return min(max(int(raw), lo), hi)


def param_id(params, key: str) -> int | None:
    """A database id (1 … bigint) from the query, or None (also for a number past any id)."""
    value = param_int(params, key, None, lo=0, hi=MAX_ID + 1)
    return value if value is not None and 1 <= value <= MAX_ID else None


def param_page(params, key: str = "page") -> int:
    """A page number (1 by default); a page past the last is the paginator's to handle (get_page: the last)."""
    return param_int(params, key, 1, lo=1, hi=1_000_000)


def param_date(params, key: str, default: date | None = None) -> date | None:
    """A YYYY-MM-DD date from the query, clamped to [EARLIEST_DATE, LATEST_DATE]; `default` when not a date."""
    from django.utils.dateparse import parse_date

    raw = (params.get(key) or "").strip()
    try:
        value = parse_date(raw) if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", raw) else None
    except ValueError:  # well-formed but not a day (2024-02-30)
        value = None
    if value is None:
        return default
    return min(max(value, EARLIEST_DATE), LATEST_DATE)


def param_decimal(params, key: str, *, limit: Decimal = Decimal("1e15")) -> Decimal | None:
    """A finite decimal within ±limit (what a money column holds) from the query, or None."""
    raw = (params.get(key) or "").strip()
    if len(raw) > 40:
        return None
    try:
        value = Decimal(raw)
    except (InvalidOperation, ValueError):
        return None
    if not value.is_finite() or abs(value) > limit:
        return None
    return value


def param_choice(params, key: str, choices, default: str = "") -> str:
    """The value if it is one of `choices` (a container of strings), else `default`."""
    value = params.get(key) or ""
    return value if value in choices else default
