"""Connection secrets are encrypted at rest: the database and its dumps hold Fernet tokens only, every reader sees
the values, rotation re-encrypts everything with the newest key, and production refuses to start without a key.
Carol (integration admin) looks at a connection in the admin and sees whether a secret is set, never the secret;
the access log does not carry the secret of a Salesforce callback URL."""

from __future__ import annotations

import importlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.core.management import call_command
from django.db import connection as db
from django.test import override_settings

from apps.core.encryption import SecretUnreadable
from apps.sandbox.credentials import DEFAULT_TOKENS, INBOUND_SECRETS
from apps.sync.models import Connection

from tests.callbacks import HUBSPOT_SECRET

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
KEY_A, KEY_B = Fernet.generate_key().decode(), Fernet.generate_key().decode()
SECRETS = [*DEFAULT_TOKENS.values(), *INBOUND_SECRETS.values(), HUBSPOT_SECRET]


def raw_rows() -> dict[str, tuple[str, str]]:
    with db.cursor() as cursor:
        cursor.execute("SELECT slug, credentials, inbound_secret FROM sync_connection")
        return {slug: (credentials, inbound) for slug, credentials, inbound in cursor.fetchall()}


def assert_no_secret_in(text: str):
    for secret in SECRETS:
        assert secret not in text


def test_the_columns_hold_no_secret_in_clear(connections):
    rows = raw_rows()
    assert len(rows) == 6
    assert_no_secret_in(json.dumps(rows))
    for credentials, inbound in rows.values():
        assert credentials.startswith("gAAAAA") and inbound.startswith("gAAAAA")  # Fernet tokens (version 0x80)


def test_every_reader_gets_the_values_back(connections):
    stripe = Connection.objects.get(slug="stripe")
    assert stripe.credentials == {"access_token": DEFAULT_TOKENS["stripe"]}
    assert stripe.inbound_secret == INBOUND_SECRETS["stripe"]
    assert Connection.objects.get(slug="hubspot").inbound_secret == HUBSPOT_SECRET
    assert dict(Connection.objects.values_list("slug", "credentials"))["anaplan"] == {
        "access_token": DEFAULT_TOKENS["anaplan"]}
    # written by an UPDATE as well as by save()
    Connection.objects.filter(slug="anaplan").update(credentials={"access_token": "new", "refresh_token": "r"})
    assert Connection.objects.get(slug="anaplan").credentials == {"access_token": "new", "refresh_token": "r"}
    assert "new" not in raw_rows()["anaplan"][0]


def test_no_secret_is_stored_empty_and_found_as_empty(connections):
    Connection.objects.filter(slug="salesforce").update(inbound_secret="", credentials={})
    assert raw_rows()["salesforce"] == ("", "")
    salesforce = Connection.objects.get(slug="salesforce")
    assert salesforce.inbound_secret == "" and salesforce.credentials == {}
    assert list(Connection.objects.filter(inbound_secret="").values_list("slug", flat=True)) == ["salesforce"]


def test_the_dump_holds_no_secret_in_clear_and_loads_back(connections, tmp_path):
    out = io.StringIO()
    call_command("dumpdata", "sync.connection", indent=1, stdout=out)
    dump = out.getvalue()
    assert_no_secret_in(dump)
    assert all(row["fields"]["credentials"].startswith("gAAAAA") for row in json.loads(dump))
    # the dump restores the secrets (loaddata decrypts the tokens and stores them encrypted again)
    (tmp_path / "connections.json").write_text(dump)
    Connection.objects.update(inbound_secret="", credentials={})
    call_command("loaddata", str(tmp_path / "connections.json"), verbosity=0)
    kantata = Connection.objects.get(slug="kantata")
    assert kantata.inbound_secret == INBOUND_SECRETS["kantata"]
    assert kantata.credentials == {"access_token": DEFAULT_TOKENS["kantata"]}
    assert_no_secret_in(json.dumps(raw_rows()))


def test_rotation_re_encrypts_everything_with_the_newest_key(firm):
    from apps.demo.firm import setup_connections

    with override_settings(HANDOFF_SECRET_KEYS=[KEY_A]):
        setup_connections("http://127.0.0.1:9", hubspot_secret=HUBSPOT_SECRET)
    before = raw_rows()
    with override_settings(HANDOFF_SECRET_KEYS=[KEY_B, KEY_A]):
        out = io.StringIO()
        call_command("rotate_secret_keys", stdout=out)
    assert "sync.Connection.credentials: 6 re-encrypted" in out.getvalue()
    assert "12 secrets re-encrypted" in out.getvalue()
    after = raw_rows()
    only_b, only_a = Fernet(KEY_B), Fernet(KEY_A)
    for slug, tokens in after.items():
        for old, new in zip(before[slug], tokens):
            assert new != old
            assert only_b.decrypt(new.encode()) == only_a.decrypt(old.encode())
            with pytest.raises(InvalidToken):
                only_a.decrypt(new.encode())
    with override_settings(HANDOFF_SECRET_KEYS=[KEY_B]):  # the old key can now be dropped
        assert Connection.objects.get(slug="netsuite").inbound_secret == INBOUND_SECRETS["netsuite"]


def test_a_secret_no_configured_key_reads_fails_clearly(firm):
    from apps.demo.firm import setup_connections

    with override_settings(HANDOFF_SECRET_KEYS=[KEY_A]):
        setup_connections("http://127.0.0.1:9")
    with override_settings(HANDOFF_SECRET_KEYS=[KEY_B]), pytest.raises(SecretUnreadable, match="HANDOFF_SECRET_KEYS"):
        Connection.objects.get(slug="stripe")


def test_the_migration_encrypts_the_values_stored_in_clear(connections):
    migration = importlib.import_module("apps.sync.migrations.0015_secrets_encrypted_at_rest")
    editor = SimpleNamespace(connection=db)
    migration.decrypt_rows(None, editor)  # the values as the previous schema kept them (jsonb read as text)
    rows = raw_rows()
    assert json.loads(rows["netsuite"][0]) == {"access_token": DEFAULT_TOKENS["netsuite"]}
    assert rows["netsuite"][1] == INBOUND_SECRETS["netsuite"]
    migration.encrypt_rows(None, editor)
    assert_no_secret_in(json.dumps(raw_rows()))
    assert Connection.objects.get(slug="netsuite").credentials == {"access_token": DEFAULT_TOKENS["netsuite"]}


def test_carol_sees_in_the_admin_whether_a_secret_is_set_never_the_secret(connections, client, carol):
    client.force_login(carol)
    stripe = Connection.objects.get(slug="stripe")
    page = client.get(f"/admin/sync/connection/{stripe.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    for state in ("credentials_state", "inbound_secret_state"):
        assert re.search(rf'field-{state}".*?<div class="readonly">set</div>', html, re.S)
    assert_no_secret_in(html)
    # nor any token of it (a token is not the secret, but nothing about the secret is shown)
    assert raw_rows()["stripe"][1] not in html


def production_check(**env) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if k != "HANDOFF_SECRET_KEYS"},
           "DJANGO_SETTINGS_MODULE": "config.settings.production", "SECRET_KEY": "x" * 50, **env}
    return subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("keys, says", [(None, "HANDOFF_SECRET_KEYS is not set"),
                                        ("not-a-key", "not a Fernet key"),
                                        ("_ffxHZQ25jWl-dxDoWXf_tv9BAj59XsqgZAx81T0IbQ=", "development key")])
def test_production_refuses_to_start_without_its_own_key(keys, says):
    result = production_check(**({"HANDOFF_SECRET_KEYS": keys} if keys else {}))
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and says in result.stderr


def test_production_starts_with_a_key():
    result = production_check(HANDOFF_SECRET_KEYS=f"{KEY_B},{KEY_A}")
    assert result.returncode == 0, result.stderr


def test_the_access_log_shows_no_callback_url_secret():
    from datetime import timedelta

    from gunicorn.config import Config

    from apps.core.access_log import AccessLogger

    secret = "sandbox-salesforce-callback-url-secret"
    environ = {"REQUEST_METHOD": "POST", "RAW_URI": f"/api/v1/callbacks/salesforce/{secret}/?x=1",
               "PATH_INFO": f"/api/v1/callbacks/salesforce/{secret}/", "SERVER_PROTOCOL": "HTTP/1.1"}
    atoms = AccessLogger(Config()).atoms(SimpleNamespace(status="200 OK", sent=10, headers=[]), {}, environ,
                                         timedelta(milliseconds=5))
    assert atoms["r"] == "POST /api/v1/callbacks/salesforce/[redacted]/?x=1 HTTP/1.1"
    assert atoms["U"] == "/api/v1/callbacks/salesforce/[redacted]/"
    assert not [value for value in atoms.values() if secret in str(value)]
    unsigned = dict(environ, RAW_URI="/api/v1/callbacks/hubspot/", PATH_INFO="/api/v1/callbacks/hubspot/")
    assert AccessLogger(Config()).atoms(SimpleNamespace(status="200 OK", sent=10, headers=[]), {}, unsigned,
                                        timedelta(milliseconds=5))["U"] == "/api/v1/callbacks/hubspot/"
