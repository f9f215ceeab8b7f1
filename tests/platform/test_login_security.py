"""Logging in: throttled on the login page and on the API's basic auth alike, passwords that are not guessable,
a session of a working day that ends sooner when idle, and a CSRF cookie no script can read."""

from __future__ import annotations

import base64
import re
import time

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.test import override_settings

from apps.core.sessions import SEEN, STARTED

pytestmark = pytest.mark.django_db

THROTTLED = override_settings(AXES_ENABLED=True, AXES_FAILURE_LIMIT=3)


def log_in(client, username: str, password: str):
    return client.post("/login/", {"username": username, "password": password}, REMOTE_ADDR="203.0.113.7")


def basic(username: str, password: str) -> dict:
    return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode(),
            "REMOTE_ADDR": "203.0.113.7"}


@THROTTLED
def test_the_login_page_locks_a_username_out_after_three_failures(client, alice, bob):
    for _ in range(2):
        assert log_in(client, "alice", "guess").status_code == 200  # the form again, with its error
    assert log_in(client, "alice", "guess").status_code == 429  # the third failure locks the pair out

    # the right password no longer gets in, from that address
    response = log_in(client, "alice", "pw-alice")
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session
    # a colleague behind the same address is not locked out with her
    assert log_in(client, "bob", "pw-bob").status_code == 302


@THROTTLED
def test_the_api_basic_auth_is_throttled_the_same_way(client, carol):
    assert client.get("/api/v1/records/", **basic("carol", "pw-carol")).status_code == 200
    for _ in range(3):
        assert client.get("/api/v1/records/", **basic("carol", "guess")).status_code in (401, 403)

    locked = client.get("/api/v1/records/", **basic("carol", "pw-carol"))
    assert locked.status_code in (401, 403, 429), locked.status_code


def test_passwords_like_the_username_or_only_digits_are_refused():
    user = User(username="margaret.hale", first_name="Margaret", email="margaret.hale@example.com")
    with pytest.raises(ValidationError, match="too similar"):
        validate_password("margaret.hale1", user)
    with pytest.raises(ValidationError, match="entirely numeric"):
        validate_password("582039174629", user)
    with pytest.raises(ValidationError, match="too short"):
        validate_password("k7#Qp2", user)
    validate_password("plum-orbit-canvas-42", user)  # a good one passes


def test_a_session_lasts_a_working_day_and_ends_sooner_when_idle(client, alice):
    assert 9 * 3600 <= settings.SESSION_COOKIE_AGE <= 10 * 3600
    assert settings.HANDOFF_SESSION_IDLE_SECONDS < settings.SESSION_COOKIE_AGE
    client.force_login(alice)
    assert client.get("/").status_code == 200

    session = client.session
    session[SEEN] = int(time.time()) - settings.HANDOFF_SESSION_IDLE_SECONDS - 5
    session.save()
    assert client.get("/").status_code == 302  # idle too long: back to the login page

    client.force_login(alice)
    assert client.get("/").status_code == 200
    session = client.session
    session[STARTED] = int(time.time()) - settings.SESSION_COOKIE_AGE - 5  # active all along, but a day is over
    session.save()
    response = client.get("/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_the_csrf_cookie_is_http_only_and_htmx_reads_the_token_from_the_page(client, alice):
    client.force_login(alice)
    response = client.get("/exceptions/")
    assert response.cookies["csrftoken"]["httponly"] is True
    [token] = re.findall(r"""hx-headers='\{"X-CSRFToken": "([^"]+)"\}'""", response.content.decode())
    assert token
