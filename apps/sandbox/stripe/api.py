"""Stripe's API conventions in the Stripe sandbox: ids, the error shape, form-encoded parameters, and the objects
it keeps (SandboxObject, system "stripe") with Stripe's search query language."""

from __future__ import annotations

import json
import re
import secrets
import string
import time

from django.db.models import F
from django.http import HttpResponse

from ..models import SandboxObject

API_VERSION = "2026-08-26.dahlia"
PREFIX = {"customer": "cus", "invoice": "in", "invoiceitem": "ii", "line_item": "il", "charge": "ch",
          "payment_intent": "pi", "invoice_payment": "inpay", "dispute": "dp", "event": "evt", "request": "req"}
_ALNUM = string.ascii_letters + string.digits


def new_id(kind: str) -> str:
    return f"{PREFIX[kind]}_{''.join(secrets.choice(_ALNUM) for _ in range(24))}"


def now() -> int:
    return int(time.time())


class ApiError(Exception):
    """A request Stripe refuses before executing it (nothing saved under its Idempotency-Key)."""

    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error", code: str = "",
                 param: str = "", extra: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param
        self.extra = extra or {}

    def response(self) -> HttpResponse:
        return error_response(self.status, self.message, type_=self.type, code=self.code, param=self.param,
                              extra=self.extra)


def error_response(status: int, message: str, *, type_: str = "invalid_request_error", code: str = "",
                   param: str = "", extra: dict | None = None, headers: dict | None = None) -> HttpResponse:
    err = {"type": type_, "message": message}
    if code:
        err["code"] = code
        err["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
    if param:
        err["param"] = param
    err.update(extra or {})
    return respond({"error": err}, status, headers)


def respond(data, status: int = 200, headers: dict | None = None) -> HttpResponse:
    resp = HttpResponse(json.dumps(data), status=status, content_type="application/json")
    resp["Request-Id"] = new_id("request")
    resp["Stripe-Version"] = API_VERSION
    for k, v in (headers or {}).items():
        resp[k] = v
    return resp


# ------------------------------------------------------------------ form decoding (what the stripe package sends)


_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


def decode_params(pairs) -> dict:
    """`metadata[k]=v`, `expand[0]=x`, `payment[type]=…` → nested dicts and lists, as Stripe reads them."""
    out: dict = {}
    for key, value in pairs:
        m = _KEY.match(key)
        if not m:
            raise ApiError(400, f"Invalid parameter name: {key}", code="parameter_unknown", param=key)
        parts = [m.group(1)] + re.findall(r"\[([^\[\]]*)\]", m.group(2))
        cur = out
        for i, part in enumerate(parts):
            if i == len(parts) - 1:
                cur[part] = value
            else:
                nxt = cur.setdefault(part, {})
                if not isinstance(nxt, dict):
                    raise ApiError(400, f"Invalid parameter: {key}", code="parameter_invalid", param=key)
                cur = nxt
    return _listify(out)


def _listify(d):
    if isinstance(d, dict):
        d = {k: _listify(v) for k, v in d.items()}
        if d and all(k.isdigit() for k in d):
            return [d[k] for k in sorted(d, key=int)]
    return d


def int_param(params: dict, name: str, *, required: bool = False, default=None):
    if name not in params or params[name] == "":
        if required:
            raise ApiError(400, f"Missing required param: {name}.", code="parameter_missing", param=name)
        return default
    try:
        return int(params[name])
    except (TypeError, ValueError):
        raise ApiError(400, f"Invalid integer: {params[name]}", code="parameter_invalid_integer", param=name)


def bool_param(params: dict, name: str, default: bool | None = None):
    if name not in params:
        return default
    v = str(params[name]).lower()
    if v not in ("true", "false"):
        raise ApiError(400, f"Invalid boolean: {params[name]}", code="parameter_invalid_boolean", param=name)
    return v == "true"


def metadata_param(params: dict) -> dict:
    md = params.get("metadata") or {}
    if md == "":
        return {}
    if not isinstance(md, dict):
        raise ApiError(400, "Invalid metadata: must be an object", code="parameter_invalid", param="metadata")
    return {str(k)[:40]: str(v)[:500] for k, v in md.items()}


# ------------------------------------------------------------------ storage


def get_object(kind: str, obj_id: str, *, lock: bool = False) -> SandboxObject:
    qs = SandboxObject.objects.filter(system="stripe", object_type=kind, external_key=obj_id)
    obj = (qs.select_for_update() if lock else qs).first()
    if obj is None:
        label = {"invoiceitem": "invoice item", "invoice_payment": "invoice payment"}.get(kind, kind)
        raise ApiError(404, f"No such {label}: '{obj_id}'", code="resource_missing", param="id")
    return obj


def create_object(kind: str, data: dict) -> SandboxObject:
    return SandboxObject.objects.create(system="stripe", object_type=kind, external_key=data["id"], data=data)


def save_object(obj: SandboxObject) -> None:
    obj.writes = F("writes") + 1
    obj.save()
    obj.refresh_from_db(fields=["writes"])


def list_of(kind: str, items: list[dict], url: str) -> dict:
    return {"object": "list", "data": items, "has_more": False, "url": url}


_CLAUSE = re.compile(r"^\s*(\w+)(?:\['([^']+)'\])?\s*:\s*'([^']*)'\s*$")


def search(kind: str, query: str, limit: int, url: str) -> dict:
    """Stripe's search query language, the part Handoff uses: `field:'v'`, `metadata['k']:'v'`, joined by AND."""
    if not query:
        raise ApiError(400, "Missing required param: query.", code="parameter_missing", param="query")
    qs = SandboxObject.objects.filter(system="stripe", object_type=kind)
    for clause in re.split(r"\s+AND\s+", query.strip()):
        m = _CLAUSE.match(clause)
        if not m:
            raise ApiError(400, f"Invalid search query: {query!r}", code="parameter_invalid", param="query")
        field, key, value = m.groups()
        lookup = f"data__metadata__{key}" if field == "metadata" and key else f"data__{field}"
        qs = qs.filter(**{lookup: value})
    items = [o.data for o in qs.order_by("-pk")[:limit]]
    return {"object": "search_result", "data": items, "has_more": False, "next_page": None, "url": url}


def simple_get(kind: str):
    def handler(request, params, outbox, m):
        obj = get_object(kind, m.group(1))
        return respond(obj.data["event"] if kind == "event" else obj.data)

    return handler


def listing(kind: str, params: dict, filters: tuple[str, ...], url: str) -> HttpResponse:
    """GET a list: the newest objects of a kind first, filtered on the given top-level fields, at most `limit`."""
    qs = SandboxObject.objects.filter(system="stripe", object_type=kind)
    for f in filters:
        if params.get(f):
            qs = qs.filter(**{f"data__{f}": params[f]})
    limit = min(int_param(params, "limit", default=10), 100)
    return respond(list_of(kind, [o.data for o in qs.order_by("-pk")[:limit]], url))


def search_view(kind: str, url: str):
    """GET …/search?query=…: Stripe's search over one kind of object."""
    def handler(request, params, outbox, m):
        return respond(search(kind, str(params.get("query") or ""), min(int_param(params, "limit", default=10), 100),
                              url))

    return handler


def customer_of(params: dict) -> SandboxObject:
    """The customer a new invoice item or invoice is for (required)."""
    if not params.get("customer"):
        raise ApiError(400, "Missing required param: customer.", code="parameter_missing", param="customer")
    return get_object("customer", params["customer"])
