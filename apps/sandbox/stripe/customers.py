"""Stripe customers: create, list (by email), search, read, update (`/v1/customers…`)."""

from __future__ import annotations

import secrets
import string

from .api import create_object, get_object, listing, metadata_param, new_id, now, respond, save_object, search_view


def customers(request, params, outbox, m):
    if request.method == "POST":
        email = str(params.get("email") or "") or None
        data = {"id": new_id("customer"), "object": "customer", "address": None, "balance": 0, "created": now(),
                "currency": None, "default_source": None, "delinquent": False,
                "description": params.get("description") or None, "email": email,
                "invoice_prefix": "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(8)),
                "invoice_settings": {"custom_fields": None, "default_payment_method": None, "footer": None,
                                     "rendering_options": None},
                "livemode": False, "metadata": metadata_param(params), "name": params.get("name") or None,
                "next_invoice_sequence": 1, "phone": params.get("phone") or None, "preferred_locales": [],
                "shipping": None, "tax_exempt": "none", "test_clock": None}
        return respond(create_object("customer", data).data)
    return listing("customer", params, ("email",), "/v1/customers")


customer_search = search_view("customer", "/v1/customers/search")


def customer(request, params, outbox, m):
    obj = get_object("customer", m.group(1), lock=request.method == "POST")
    if request.method == "POST":
        for f in ("name", "email", "description", "phone"):
            if f in params:
                obj.data[f] = params[f] or None
        if "metadata" in params:
            obj.data["metadata"] = {**obj.data.get("metadata", {}), **metadata_param(params)}
        save_object(obj)
    return respond(obj.data)
