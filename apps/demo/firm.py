"""The demo firm: legal entities, terms, connections to the sandboxes, demo users. Idempotent."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import Group, User

from apps.canonical.models import Customer, LegalEntity, PaymentTerms
from apps.canonical.services import external_id_link
from apps.sandbox.credentials import CALLBACK_URL_SECRETS, DEFAULT_TOKENS, INBOUND_SECRETS
from apps.sandbox.models import SandboxSystem
from apps.sync.callback_secrets import callback_secret_digest
from apps.sync.models import Connection

SALESFORCE_ORG = "00D5g000004SbxQEAS"
DEMO_USERS = [
    # username, full name, group, staff
    ("alice", "Alice Park (PMO analyst)", "pmo", False),
    ("bob", "Bob Singh (finance ops)", "finance_ops", False),
    ("carol", "Carol Diaz (integration admin)", "integration_admin", True),
    ("dave", "Dave Moreau (viewer)", "viewer", False),
]


def setup_reference_data() -> None:
    for code, name, country, base, enabled, sub in [
        ("US01", "Handoff Consulting Inc.", "US", "USD", ["USD", "CAD"], "1"),
        ("UK01", "Handoff Consulting Ltd", "GB", "GBP", ["GBP", "EUR", "USD"], "2"),
        ("DE01", "Handoff Beratung GmbH", "DE", "EUR", ["EUR", "CHF"], "3"),
    ]:
        LegalEntity.objects.update_or_create(code=code, defaults=dict(
            name=name, country=country, base_currency=base, enabled_currencies=enabled, erp_subsidiary_id=sub))
    for code, name, days, erp in [("DUE_ON_RECEIPT", "Due on receipt", 0, "4"), ("NET15", "Net 15", 15, "1"),
                                  ("NET30", "Net 30", 30, "2"), ("NET45", "Net 45", 45, "5"),
                                  ("NET60", "Net 60", 60, "3")]:
        PaymentTerms.objects.update_or_create(code=code, defaults=dict(name=name, days=days, erp_terms_id=erp))
    # an existing customer, so that a new account with the same name and tax id is flagged as a duplicate
    northwind, _ = Customer.objects.get_or_create(
        name="Northwind Traders", tax_id="GB123456789",
        defaults=dict(country="GB", currency="GBP", legal_entity=LegalEntity.objects.get(code="UK01"),
                      payment_terms=PaymentTerms.objects.get(code="NET30")))
    external_id_link(obj=northwind, system="hubspot", object_type="account", external_id="northwind-legacy")


def setup_connections(sandbox_url: str, hubspot_secret: str | None = None) -> dict[str, Connection]:
    base = sandbox_url.rstrip("/") + "/sandbox"
    out = {}
    for slug, name, kind, role in [("hubspot", "HubSpot (sandbox)", "hubspot", "crm"),
                                   ("salesforce", "Salesforce (sandbox)", "salesforce", "crm"),
                                   ("netsuite", "NetSuite (sandbox)", "netsuite", "erp"),
                                   ("kantata", "Kantata (sandbox)", "kantata", "psa"),
                                   ("stripe", "Stripe (sandbox)", "stripe", "billing"),
                                   ("anaplan", "Anaplan (sandbox)", "anaplan", "forecast")]:
        conn, created = Connection.objects.get_or_create(slug=slug, defaults=dict(
            name=name, kind=kind, role=role, base_url=f"{base}/{kind}",
            credentials={"access_token": DEFAULT_TOKENS[kind]},
            inbound_secret=INBOUND_SECRETS.get(kind) or (
                (hubspot_secret or secrets.token_urlsafe(24)) if kind == "hubspot" else secrets.token_urlsafe(24)),
            organization_id=SALESFORCE_ORG if kind == "salesforce" else "",
            callback_secret_hash=callback_secret_digest(CALLBACK_URL_SECRETS[kind]) if kind in CALLBACK_URL_SECRETS
            else ""))
        if not created:
            conn.base_url = f"{base}/{kind}"
            if hubspot_secret and kind == "hubspot":
                conn.inbound_secret = hubspot_secret
            if kind in CALLBACK_URL_SECRETS and not conn.callback_secret_hash:
                conn.callback_secret_hash = callback_secret_digest(CALLBACK_URL_SECRETS[kind])
            conn.save()
        SandboxSystem.objects.get_or_create(system=kind, defaults={"token": DEFAULT_TOKENS[kind]})
        out[slug] = conn
    return out


def setup_users(credentials_file: Path | None) -> list[tuple[str, str, str]]:
    """Demo users with random passwords, kept in a git-ignored file so they survive restarts."""
    stored = {}
    if credentials_file and credentials_file.exists():
        stored = json.loads(credentials_file.read_text())
    out = []
    for username, full, group, staff in DEMO_USERS:
        password = stored.get(username) or secrets.token_urlsafe(9)
        first, _, last = full.partition(" ")
        user, _ = User.objects.get_or_create(username=username)
        user.first_name, user.last_name = first, last
        user.is_staff = staff
        user.set_password(password)
        user.save()
        user.groups.set([Group.objects.get(name=group)])
        stored[username] = password
        out.append((username, password, group))
    if credentials_file:
        credentials_file.parent.mkdir(parents=True, exist_ok=True)
        credentials_file.write_text(json.dumps(stored, indent=2))
        credentials_file.chmod(0o600)
    return out


def credentials_path() -> Path:
    return Path(settings.BASE_DIR) / ".data" / "run" / "demo-credentials.json"
