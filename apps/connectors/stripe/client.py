"""Stripe (billing engine) through the official `stripe` package: customers, invoice items, invoices.

- `stripe.StripeClient(secret key, base_addresses={"api": connection.base_url})`, so the sandbox (or Stripe) is
  whatever the connection says. The package's own retries are off (`max_network_retries=0`): the engine retries
  with backoff and records every try.
- Every HTTP call goes through `RecordingHTTPClient`, which writes an Attempt before the call and completes it
  after, as BaseClient.request does.
- Every POST carries an Idempotency-Key derived from what it creates (e.g. `handoff-ms-<story>-invoice`): Stripe
  replays the first response for a retried key, so a retry after a lost response never creates a second object.
- Stripe errors become DownstreamError: 400/402/404 (and any other 4xx but 408/429) are permanent, carrying
  Stripe's `error.message` and `error.param` as the field; 408/429/5xx and connection errors are transient; a
  Retry-After header is honoured.
"""

from __future__ import annotations

import logging
import time
from urllib.parse import unquote

import stripe
from django.conf import settings
from stripe import StripeError
from stripe._http_client import RequestsClient

from apps.connectors.base import DownstreamError, NullRecorder, elapsed_ms, http_session, parse_retry_after

from .mapping import to_minor

log = logging.getLogger("handoff.http")


class RecordingHTTPClient(RequestsClient):
    """The package's requests-based client, on Handoff's pooled session, recording each call as an Attempt."""

    name = "requests"

    def __init__(self, recorder, base_url: str, system: str = "stripe"):
        super().__init__(timeout=settings.HANDOFF_HTTP_TIMEOUT, session=http_session())
        self.recorder, self.base_url, self.system = recorder, base_url, system

    def request(self, method, url, headers, post_data=None):
        path = url[len(self.base_url):] if url.startswith(self.base_url) else url
        path, _, query = path.partition("?")
        summary = (post_data or "")[:500] if isinstance(post_data, str) else unquote(query)[:500]
        key = (headers or {}).get("Idempotency-Key", "")
        if key and method.lower() == "post":
            summary = f"Idempotency-Key: {key} {summary}"[:500]
        handle = self.recorder.start(system=self.system, method=method.upper(), url=path, summary=summary)
        t0 = time.monotonic()
        try:
            content, status, rheaders = super().request(method, url, headers, post_data)
        except StripeError as exc:
            ms = elapsed_ms(t0)
            self.recorder.finish(handle, status=None, excerpt=str(exc)[:500], duration_ms=ms, outcome="transient")
            raise
        ms = elapsed_ms(t0)
        transient = status in (408, 429) or status >= 500
        outcome = "ok" if status < 400 else ("transient" if transient else "permanent")
        text = content.decode("utf-8", "replace") if isinstance(content, bytes) else str(content)
        self.recorder.finish(handle, status=status, excerpt=text[:1000], duration_ms=ms, outcome=outcome)
        log.info("%s %s %s -> %s in %d ms", self.system, method.upper(), path, status, ms, extra={
            "system": self.system, "http_method": method.upper(), "path": path, "status": status, "duration_ms": ms})
        return content, status, rheaders


class StripeClient:
    """Handoff's Stripe connector (BaseClient-compatible: constructor (connection, recorder), `system`)."""

    system = "stripe"

    def __init__(self, connection, recorder=None):
        self.connection = connection
        self.base_url = connection.base_url.rstrip("/")
        self.recorder = recorder or NullRecorder()
        self.stripe = stripe.StripeClient(
            connection.credentials.get("access_token") or connection.credentials.get("secret_key") or "",
            base_addresses={"api": self.base_url}, max_network_retries=0,
            http_client=RecordingHTTPClient(self.recorder, self.base_url))

    # -------------------------------------------------------------- errors

    def _call(self, fn, *args, **kwargs):
        """Run one package call; StripeError → DownstreamError (permanent or transient, with Stripe's words)."""
        try:
            return fn(*args, **kwargs)
        except StripeError as exc:
            raise self._downstream(exc) from exc

    def _downstream(self, exc: StripeError) -> DownstreamError:
        status = exc.http_status
        err = exc.error
        message = (getattr(err, "message", None) or exc.user_message or "").strip()
        param = getattr(err, "param", None) or getattr(exc, "param", None) or ""
        code = getattr(err, "code", None) or exc.code or (getattr(err, "type", None) or "")
        headers = exc.headers or {}
        retry_after = parse_retry_after(headers.get("Retry-After") or headers.get("retry-after"))
        if status is None:  # connection error or timeout
            return DownstreamError(f"{self.connection.name} could not be reached: {message[:200]}", permanent=False,
                                   system=self.system, retry_after=retry_after)
        transient = status in (408, 409, 429) or status >= 500
        return DownstreamError(message or f"{self.connection.name} answered {status}", permanent=not transient,
                               system=self.system, status=status, field=str(param), code=str(code),
                               retry_after=retry_after)

    # -------------------------------------------------------------- calls

    def probe(self) -> None:
        """A cheap authenticated read (closes an open circuit)."""
        self._call(self.stripe.v1.customers.list, params={"limit": 1})

    def find_customer(self, customer_key: str) -> dict | None:
        """The Stripe customer whose metadata handoff_customer_key is this canonical customer's key."""
        res = self._call(self.stripe.v1.customers.search,
                         params={"query": f"metadata['handoff_customer_key']:'{customer_key}'", "limit": 1})
        return res.data[0].to_dict() if res.data else None

    def create_customer(self, *, customer_key: str, name: str, email: str = "", currency: str = "",
                        idempotency_key: str) -> dict:
        params = {"name": name[:256], "metadata": {"handoff_customer_key": customer_key}}
        if email:
            params["email"] = email
        obj = self._call(self.stripe.v1.customers.create, params=params,
                         options={"idempotency_key": idempotency_key})
        return obj.to_dict()

    def find_or_create_customer(self, *, customer_key: str, name: str, email: str = "") -> dict:
        """Search by metadata first, then create with an Idempotency-Key derived from the customer (so two retries
        within Stripe's key window never make two customers, and a later run finds the first one)."""
        found = self.find_customer(customer_key)
        if found is not None:
            return found
        return self.create_customer(customer_key=customer_key, name=name, email=email,
                                    idempotency_key=f"handoff-customer-{customer_key}")

    def create_invoice(self, params: dict, *, idempotency_key: str) -> dict:
        return self._call(self.stripe.v1.invoices.create, params=params,
                          options={"idempotency_key": idempotency_key}).to_dict()

    def create_invoice_item(self, params: dict, *, idempotency_key: str) -> dict:
        return self._call(self.stripe.v1.invoice_items.create, params=params,
                          options={"idempotency_key": idempotency_key}).to_dict()

    def retrieve_invoice(self, invoice_id: str) -> dict:
        return self._call(self.stripe.v1.invoices.retrieve, invoice_id).to_dict()

    def finalize_invoice(self, invoice_id: str, *, idempotency_key: str) -> dict:
        return self._call(self.stripe.v1.invoices.finalize_invoice, invoice_id, params={"auto_advance": False},
                          options={"idempotency_key": idempotency_key}).to_dict()

    def pay_invoice(self, invoice_id: str, *, idempotency_key: str, payment_method: str = "") -> dict:
        params = {"payment_method": payment_method} if payment_method else {}
        return self._call(self.stripe.v1.invoices.pay, invoice_id, params=params,
                          options={"idempotency_key": idempotency_key}).to_dict()

    def void_invoice(self, invoice_id: str, *, idempotency_key: str) -> dict:
        return self._call(self.stripe.v1.invoices.void_invoice, invoice_id,
                          options={"idempotency_key": idempotency_key}).to_dict()

    def invoice_for_payment_intent(self, payment_intent: str) -> str | None:
        """The id of the invoice a payment intent paid (Stripe's invoice payments, filtered by payment)."""
        res = self._call(self.stripe.v1.invoice_payments.list, params={
            "payment": {"type": "payment_intent", "payment_intent": payment_intent}, "limit": 1})
        return res.data[0].to_dict().get("invoice") if res.data else None

    def invoice_payments(self, invoice_id: str) -> list[dict]:
        """The payments of an invoice (Stripe's invoice payments API)."""
        res = self._call(self.stripe.v1.invoice_payments.list, params={"invoice": invoice_id, "limit": 100})
        return [p.to_dict() for p in res.data]

    def invoice_for_charge(self, charge_id: str) -> str | None:
        """The invoice a charge paid: via the charge's payment intent."""
        charge = self._call(self.stripe.v1.charges.retrieve, charge_id).to_dict()
        pi = charge.get("payment_intent")
        return self.invoice_for_payment_intent(pi) if pi else None

    # -------------------------------------------------------------- the milestone invoice

    def invoice_milestone(self, *, key: str, customer_id: str, currency: str, amount, description: str,
                          days_until_due: int, metadata: dict, context: dict) -> dict:
        """Create (once) and finalize the invoice for one milestone; returns the finalized invoice.

        Steps are checkpointed in `context` (kept by the engine on retry and hold), and each POST has its own
        Idempotency-Key derived from `key` (the milestone), so a retry at any point continues, never duplicates:
        draft invoice → its line (invoice item) → finalize."""
        if not context.get("stripe_invoice_id"):
            inv = self.create_invoice({
                "customer": customer_id, "currency": currency.lower(), "collection_method": "send_invoice",
                "days_until_due": days_until_due, "auto_advance": False, "description": description[:500],
                "pending_invoice_items_behavior": "exclude", "metadata": metadata,
            }, idempotency_key=f"{key}-invoice")
            context["stripe_invoice_id"] = inv["id"]
        invoice_id = context["stripe_invoice_id"]
        if not context.get("stripe_item_id"):
            item = self.create_invoice_item({
                "customer": customer_id, "invoice": invoice_id, "currency": currency.lower(),
                "amount": to_minor(amount, currency), "description": description[:500], "metadata": metadata,
            }, idempotency_key=f"{key}-item")
            context["stripe_item_id"] = item["id"]
        inv = self.retrieve_invoice(invoice_id)
        if inv.get("status") == "draft":
            inv = self.finalize_invoice(invoice_id, idempotency_key=f"{key}-finalize")
        return inv
