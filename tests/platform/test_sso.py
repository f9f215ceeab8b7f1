"""Single sign-on, end to end against a tiny OpenID Connect provider on localhost (tests/platform/oidc_provider.py):
the IdP's groups decide the roles on every login, someone without a mapped group is refused (or a viewer when the
map says "*"), and a token that is forged or answers another login is refused.

Fiona is in finance at the firm: her IdP account is in the "Finance" group.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import requests
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django.test import Client, override_settings

from tests.platform.oidc_provider import CLIENT_ID, Provider, new_key

pytestmark = pytest.mark.django_db

ROLE_MAP = {"Finance": "finance_ops", "PMO": "pmo", "IT-Integrations": "integration_admin"}
FIONA = {"sub": "idp-fiona", "email": "fiona@firm.example", "given_name": "Fiona", "family_name": "Grant"}


@pytest.fixture
def provider(roles):
    with Provider() as p:
        p.person = {**FIONA, "groups": ["Finance"]}
        with override_settings(OIDC_RP_CLIENT_ID=CLIENT_ID, OIDC_RP_CLIENT_SECRET="test-client-secret",
                               OIDC_OP_DISCOVERY_ENDPOINT=p.discovery, HANDOFF_OIDC_ROLE_MAP=ROLE_MAP,
                               HANDOFF_SSO_NAME="Firm ID"):
            yield p


def sso_login(client: Client, provider: Provider, next_path: str = "/exceptions/"):
    """The browser's round trip: Handoff → the IdP's authorize page → back to /oidc/callback/, then on."""
    start = client.get("/oidc/authenticate/", {"next": next_path})
    assert start.status_code == 302 and start["Location"].startswith(provider.url + "/authorize?")
    back = requests.get(start["Location"], allow_redirects=False, timeout=5)
    callback = urlsplit(back.headers["Location"])
    assert callback.path == "/oidc/callback/"
    return client.get(f"{callback.path}?{callback.query}", follow=True)


def roles_of(email: str) -> set[str]:
    return set(User.objects.get(email=email).groups.values_list("name", flat=True))


def logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def test_the_login_page_offers_single_sign_on_only_when_it_is_configured(client, provider):
    assert "Sign in with Firm ID" in client.get("/login/").content.decode()
    with override_settings(OIDC_RP_CLIENT_ID=""):
        assert "Sign in with" not in client.get("/login/").content.decode()
        assert client.get("/oidc/authenticate/").status_code == 404
        assert client.get("/oidc/callback/", {"code": "x", "state": "y"}).status_code == 404


def test_the_finance_group_at_the_idp_logs_fiona_in_as_finance_ops(client, provider):
    response = sso_login(client, provider)

    assert response.status_code == 200 and response.redirect_chain[-1][0] == "/exceptions/"
    fiona = User.objects.get(email="fiona@firm.example")
    assert roles_of("fiona@firm.example") == {"finance_ops"}
    assert (fiona.first_name, fiona.last_name, fiona.has_usable_password()) == ("Fiona", "Grant", False)
    assert not fiona.is_staff
    [entry] = LogEntry.objects.filter(object_id=str(fiona.pk))
    assert "role finance_ops granted" in entry.change_message


def test_a_group_removed_at_the_idp_removes_the_role_at_the_next_login(client, provider):
    provider.person["groups"] = ["Finance", "IT-Integrations"]
    sso_login(client, provider)
    assert roles_of("fiona@firm.example") == {"finance_ops", "integration_admin"}
    assert User.objects.get(email="fiona@firm.example").is_staff  # the admin follows the integration_admin role

    provider.person["groups"] = ["Finance"]
    response = sso_login(Client(), provider)

    assert response.redirect_chain[-1][0] == "/exceptions/"
    assert roles_of("fiona@firm.example") == {"finance_ops"}
    fiona = User.objects.get(email="fiona@firm.example")
    assert not fiona.is_staff
    assert LogEntry.objects.filter(object_id=str(fiona.pk), change_message__contains="role integration_admin removed")


def test_someone_with_no_mapped_group_is_refused_and_loses_the_roles_they_had(client, provider):
    sso_login(Client(), provider)
    assert roles_of("fiona@firm.example") == {"finance_ops"}

    provider.person["groups"] = ["Sales"]
    response = sso_login(client, provider)

    assert not logged_in(client)
    assert response.redirect_chain[-1][0] == "/login/"
    assert "did not let you in" in response.content.decode()
    assert roles_of("fiona@firm.example") == set()

    provider.person = {"sub": "idp-sam", "email": "sam@firm.example", "groups": ["Sales"]}
    sso_login(client, provider)
    assert not logged_in(client)
    assert not User.objects.filter(email="sam@firm.example").exists()  # nobody is created without a role


def test_with_a_fallback_in_the_map_someone_with_no_mapped_group_is_a_viewer(client, provider):
    provider.person["groups"] = ["Sales"]
    with override_settings(HANDOFF_OIDC_ROLE_MAP={**ROLE_MAP, "*": "viewer"}):
        response = sso_login(client, provider)

    assert logged_in(client) and response.redirect_chain[-1][0] == "/exceptions/"
    assert roles_of("fiona@firm.example") == {"viewer"}


def test_an_id_token_signed_with_another_key_is_refused(client, provider):
    provider.sign_with = new_key()
    response = sso_login(client, provider)

    assert response.status_code == 200 and response.redirect_chain[-1][0] == "/login/"
    assert not logged_in(client)
    assert not User.objects.filter(email="fiona@firm.example").exists()


def test_an_id_token_with_another_nonce_is_refused(client, provider):
    provider.nonce = "a-nonce-from-another-login"
    response = sso_login(client, provider)

    assert response.redirect_chain[-1][0] == "/login/"
    assert not logged_in(client)


def test_an_id_token_for_another_client_is_refused(client, provider):
    provider.audience = "some-other-app"
    response = sso_login(client, provider)

    assert response.redirect_chain[-1][0] == "/login/"
    assert not logged_in(client)


def test_a_code_sent_along_with_a_password_login_is_not_used(client, provider, bob):
    response = client.post("/login/?code=stolen&state=anything", {"username": "bob", "password": "wrong"})
    assert response.status_code == 200 and not logged_in(client)


@override_settings(HANDOFF_REQUIRE_TOTP_FOR=["finance_ops", "integration_admin"])
def test_sso_logins_are_not_asked_for_a_second_factor(client, provider):
    response = sso_login(client, provider)

    assert response.redirect_chain[-1][0] == "/exceptions/" and response.status_code == 200


def test_an_idp_that_does_not_answer_sends_people_back_to_the_login_page(client, provider):
    start = client.get("/oidc/authenticate/")
    back = urlsplit(requests.get(start["Location"], allow_redirects=False, timeout=5).headers["Location"])
    provider.server.shutdown()
    provider.server.server_close()  # the token endpoint is gone

    response = client.get(f"{back.path}?{back.query}", follow=True)

    assert response.redirect_chain[-1][0] == "/login/" and "did not let you in" in response.content.decode()
    assert not logged_in(client)
