"""Two-factor login: with HANDOFF_REQUIRE_TOTP_FOR on, Bob (finance ops) and Carol (integration admin) get past
the password only to the enrol / verify pages until they enter a code from their authenticator app; Alice (PMO)
is not asked; with the setting empty (the demo, and the rest of this suite) nobody is."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from base64 import b32encode
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.test import Client, override_settings
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from tests.browser.chromium import chromium_page, chromium_path

pytestmark = pytest.mark.django_db

TOTP_ON = override_settings(HANDOFF_REQUIRE_TOTP_FOR=["finance_ops", "integration_admin"])
ENROL, VERIFY = "/login/two-factor/enrol/", "/login/two-factor/"


def password_login(client, user, next_path: str = "/exceptions/"):
    response = client.post("/login/", {"username": user.username, "password": "pw-" + user.username,
                                       "next": next_path})
    assert response.status_code == 302 and response["Location"] == next_path
    return response


def code_for(device: TOTPDevice, steps: int = 0) -> str:
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = time.time() + steps * device.step
    return f"{totp.token():0{device.digits}d}"


def wrong_code(device: TOTPDevice) -> str:
    valid = {code_for(device, s) for s in (-1, 0, 1)}  # the device accepts one step either side
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in valid)


@TOTP_ON
def test_bob_enrols_at_his_first_login_and_only_a_right_code_lets_him_in(client, bob):
    password_login(client, bob)
    response = client.get("/exceptions/")
    assert response.status_code == 302 and response["Location"] == ENROL + "?next=/exceptions/"
    assert client.get("/api/v1/records/").status_code == 302  # the API's session auth waits for the code too

    page = client.get(response["Location"])
    assert page.status_code == 200
    device = TOTPDevice.objects.get(user=bob, confirmed=False)
    html = page.content.decode()
    secret = b32encode(device.bin_key).decode()
    assert " ".join(re.findall(".{1,4}", secret)) in html
    assert "otpauth://totp/Handoff%3Abob?secret=" + secret in html
    assert '<img class="qr" src="data:image/svg+xml' in html and "<script>" not in html and "style=" not in html
    assert "img-src 'self' data:" in page["Content-Security-Policy"]

    refused = client.post(ENROL, {"token": wrong_code(device), "next": "/exceptions/"})
    assert refused.status_code == 200 and "not right" in refused.content.decode()
    assert client.get("/exceptions/").status_code == 302

    throttled = client.post(ENROL, {"token": code_for(device), "next": "/exceptions/"})
    assert throttled.status_code == 200 and "Too many wrong codes" in throttled.content.decode()
    time.sleep(1.1)  # a first wrong code makes the device wait a second before it checks another
    accepted = client.post(ENROL, {"token": code_for(device), "next": "/exceptions/"})
    assert accepted.status_code == 302 and accepted["Location"] == "/exceptions/"
    assert client.get("/exceptions/").status_code == 200
    assert TOTPDevice.objects.get(user=bob).confirmed


@TOTP_ON
def test_at_the_next_login_bob_enters_a_code_and_cannot_enrol_another_device(client, bob):
    device = TOTPDevice.objects.create(user=bob, name="phone", confirmed=True)
    password_login(client, bob)
    response = client.get("/exceptions/")
    assert response.status_code == 302 and response["Location"] == VERIFY + "?next=/exceptions/"
    assert client.get(ENROL).status_code == 302  # a second device only through an administrator
    assert TOTPDevice.objects.filter(user=bob).count() == 1

    refused = client.post(VERIFY, {"token": wrong_code(device), "next": "/exceptions/"})
    assert refused.status_code == 200 and "not right" in refused.content.decode()
    assert client.get("/exceptions/").status_code == 302

    time.sleep(1.1)
    code = code_for(device)
    accepted = client.post(VERIFY, {"token": code, "next": "/exceptions/"})
    assert accepted.status_code == 302 and accepted["Location"] == "/exceptions/"
    assert client.get("/exceptions/").status_code == 200

    # the same code does not work twice
    client.post("/logout/")
    password_login(client, bob)
    device.refresh_from_db()
    device.throttle_reset()
    assert client.post(VERIFY, {"token": code, "next": "/exceptions/"}).status_code == 200
    assert client.get("/exceptions/").status_code == 302


@TOTP_ON
def test_carol_the_integration_admin_is_asked_too_even_for_the_admin(client, carol):
    password_login(client, carol, next_path="/admin/")
    response = client.get("/admin/")
    assert response.status_code == 302 and response["Location"].startswith(ENROL)


@TOTP_ON
def test_alice_of_the_pmo_is_not_asked(client, alice):
    password_login(client, alice)
    assert client.get("/exceptions/").status_code == 200
    assert client.get(VERIFY).status_code == 302  # nothing to verify: on to the console


@pytest.mark.parametrize("module, asked", [("config.settings.production", ["finance_ops", "integration_admin"]),
                                           ("config.settings.local", [])])
def test_production_asks_finance_and_admins_for_a_code_and_the_demo_asks_nobody(module, asked):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": module, "SECRET_KEY": "only-for-reading-the-settings-" * 2,
           "HANDOFF_SECRET_KEYS": Fernet.generate_key().decode()}
    env.pop("HANDOFF_REQUIRE_TOTP_FOR", None)
    read = "import json; from django.conf import settings; print(json.dumps(settings.HANDOFF_REQUIRE_TOTP_FOR))"
    result = subprocess.run([sys.executable, "-c", read], cwd=Path(__file__).resolve().parents[2], env=env,
                            capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(result.stdout) == asked


def test_with_the_setting_empty_nobody_is_asked(client, bob, carol):
    password_login(client, bob)
    assert client.get("/exceptions/").status_code == 200
    password_login(client, carol, next_path="/admin/")
    assert client.get("/admin/").status_code == 200


@TOTP_ON
def test_the_api_basic_auth_refuses_a_password_alone_for_those_roles(client, alice, bob):
    def basic(user):
        pair = f"{user.username}:pw-{user.username}".encode()
        return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(pair).decode()}

    assert client.get("/api/v1/records/", **basic(bob)).status_code in (401, 403)
    assert client.get("/api/v1/records/", **basic(alice)).status_code == 200


def test_carol_resets_bobs_lost_device_in_the_admin_and_bob_enrols_again(client, bob, carol):
    device = TOTPDevice.objects.create(user=bob, name="phone", confirmed=True)
    admin = Client()
    admin.force_login(carol)
    page = admin.get(f"/admin/otp_totp/totpdevice/{device.pk}/change/")
    assert page.status_code == 200 and device.key not in page.content.decode()  # the secret is never shown back
    assert admin.post(f"/admin/otp_totp/totpdevice/{device.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not TOTPDevice.objects.filter(user=bob).exists()

    with TOTP_ON:
        password_login(client, bob)
        assert client.get("/exceptions/")["Location"].startswith(ENROL)


@pytest.mark.browser
@TOTP_ON
def test_bob_enrols_in_a_real_browser_under_the_strict_csp(transactional_db, live_server, bob, monkeypatch):
    """The QR code is an inline SVG image the Content-Security-Policy lets through; nothing else is inline."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # the ORM beside Playwright's loop (tests/browser)
    from playwright.sync_api import expect

    with chromium_page(chromium_path()) as page:
        refused = []
        page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
        page.goto(live_server.url + "/exceptions/")
        page.get_by_label("Username").fill("bob")
        page.get_by_label("Password").fill("pw-bob")
        page.get_by_role("button", name="Log in").click()

        expect(page.get_by_role("heading", name="Set up two-factor login")).to_be_visible()
        assert page.locator("img.qr").evaluate("img => img.complete && img.naturalWidth > 0")
        secret = page.locator("code.secret").first.inner_text().replace(" ", "")
        code = f"{TOTP(base64.b32decode(secret)).token():06d}"
        page.get_by_label("Code from your authenticator app").fill(code)
        page.get_by_role("button", name="Confirm").click()

        expect(page.get_by_role("heading", name="Exceptions")).to_be_visible()
        assert page.url == live_server.url + "/exceptions/"
        assert not refused, refused
