"""Single sign-on with OpenID Connect (mozilla-django-oidc), for firms whose people already have an identity provider.

On when OIDC_RP_CLIENT_ID is set. The IdP's groups decide the Handoff roles on every login: the groups claim
(HANDOFF_OIDC_GROUPS_CLAIM) goes through HANDOFF_OIDC_ROLE_MAP, the user's role groups are set to the result (a group
removed at the IdP removes the role here), and someone with no mapped group is refused — or gets the role of "*"
when the map has one. Each role change is logged and written to the admin's history of that user.

What the library leaves to us, done here: the ID token's audience, issuer and expiry (it checks the signature and
the nonce only), the provider's endpoints from its discovery document, and keeping the SSO backend out of password
logins (an IdP that is down must not stop local logins; a code smuggled into a password login is ignored).
"""

from __future__ import annotations

import logging
import time

import requests
from django.conf import settings
from django.contrib import messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.models import Group
from django.core.exceptions import ImproperlyConfigured, SuspiciousOperation
from django.db import transaction
from django.http import Http404
from django.shortcuts import redirect
from django.urls import path
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from .roles import ROLE_NAMES

log = logging.getLogger(__name__)

BACKEND = "apps.core.sso.RoleMappingOIDCBackend"  # what a session logged in through SSO records as its backend
FALLBACK = "*"  # the role map's key for "anyone the IdP lets in"
# settings the provider's discovery document fills in when they are not set
DISCOVERED = {"OIDC_OP_AUTHORIZATION_ENDPOINT": "authorization_endpoint", "OIDC_OP_TOKEN_ENDPOINT": "token_endpoint",
              "OIDC_OP_USER_ENDPOINT": "userinfo_endpoint", "OIDC_OP_JWKS_ENDPOINT": "jwks_uri",
              "OIDC_OP_ISSUER": "issuer"}
DISCOVERY_MAX_AGE = 3600  # seconds: providers rotate keys under the same jwks_uri, the endpoints hardly move
_discovery: dict[str, tuple[float, dict]] = {}


def sso_enabled() -> bool:
    return bool(settings.OIDC_RP_CLIENT_ID)


def discovery_document(url: str) -> dict:
    fetched = _discovery.get(url)
    if fetched is None or time.monotonic() - fetched[0] > DISCOVERY_MAX_AGE:
        response = requests.get(url, timeout=settings.OIDC_TIMEOUT)
        response.raise_for_status()
        fetched = _discovery[url] = (time.monotonic(), response.json())
    return fetched[1]


def oidc_setting(attr: str, *default):
    """A mozilla-django-oidc setting; a provider endpoint left blank comes from OIDC_OP_DISCOVERY_ENDPOINT."""
    value = getattr(settings, attr, None)
    if value in ("", None) and attr in DISCOVERED and settings.OIDC_OP_DISCOVERY_ENDPOINT:
        value = discovery_document(settings.OIDC_OP_DISCOVERY_ENDPOINT).get(DISCOVERED[attr]) or ""
    if value in ("", None) and default:
        return default[0]
    if value is None:
        raise ImproperlyConfigured(f"Setting {attr} not found")
    return value


def roles_for(claims: dict) -> set[str]:
    """The Handoff roles the IdP's groups give; empty: refused."""
    role_map: dict[str, str] = settings.HANDOFF_OIDC_ROLE_MAP
    unknown = set(role_map.values()) - set(ROLE_NAMES)
    if unknown:
        raise ImproperlyConfigured(f"HANDOFF_OIDC_ROLE_MAP names roles Handoff does not have: {sorted(unknown)}")
    groups = claims.get(settings.HANDOFF_OIDC_GROUPS_CLAIM) or []
    if isinstance(groups, str):  # some IdPs send a lone group as a string
        groups = [groups]
    roles = {role_map[g] for g in groups if isinstance(g, str) and g != FALLBACK and g in role_map}
    if not roles and FALLBACK in role_map:
        roles = {role_map[FALLBACK]}
    return roles


def set_roles(user, roles: set[str], *, groups_claim) -> None:
    """Make the user's role groups exactly `roles` (other groups untouched); staff (the admin) follows the
    integration_admin role (superusers stay staff). Every change is logged and put in the admin's history of the
    user."""
    current = set(user.groups.filter(name__in=ROLE_NAMES).values_list("name", flat=True))
    changes = [f"role {r} granted" for r in sorted(roles - current)]
    changes += [f"role {r} removed" for r in sorted(current - roles)]
    staff = "integration_admin" in roles or user.is_superuser
    if user.is_staff != staff:
        changes.append("staff access " + ("granted" if staff else "removed"))
    if not changes:
        return
    with transaction.atomic():
        user.groups.remove(*Group.objects.filter(name__in=current - roles))
        user.groups.add(*Group.objects.filter(name__in=roles - current))
        if user.is_staff != staff:
            user.is_staff = staff
            user.save(update_fields=["is_staff"])
        message = f"Single sign-on (IdP groups {groups_claim!r}): " + "; ".join(changes)
        LogEntry.objects.log_actions(user.pk, [user], CHANGE, change_message=message, single_object=True)
    log.info("sso roles changed", extra={"user_id": user.pk, "changes": changes})


class RoleMappingOIDCBackend(OIDCAuthenticationBackend):
    """mozilla-django-oidc's backend, with the roles taken from the IdP's groups on every login."""

    get_settings = staticmethod(oidc_setting)

    def __init__(self, *args, **kwargs):
        # the provider's settings are read only when an SSO callback arrives: Django builds every backend for
        # every password login, and those must neither wait on the IdP nor fail with it
        self.UserModel = get_user_model()

    def authenticate(self, request, **kwargs):
        # only the callback view passes a nonce, and never a password: a ?code= on a password login is ignored
        if not sso_enabled() or request is None or "nonce" not in kwargs or {"username", "password"} & set(kwargs):
            return None
        super().__init__()
        return super().authenticate(request, **kwargs)

    def verify_token(self, token, **kwargs):
        payload = super().verify_token(token, **kwargs)
        audience = payload.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if self.OIDC_RP_CLIENT_ID not in audiences:
            raise SuspiciousOperation("ID token issued for another client")
        issuer = self.get_settings("OIDC_OP_ISSUER", "")
        if issuer and payload.get("iss") != issuer:
            raise SuspiciousOperation("ID token from another issuer")
        if "exp" not in payload:  # PyJWT checks the expiry only when there is one
            raise SuspiciousOperation("ID token without an expiry")
        return payload

    def get_userinfo(self, access_token, id_token, payload):
        """The ID token's claims and the userinfo endpoint's together (IdPs put groups in one or the other)."""
        info = super().get_userinfo(access_token, id_token, payload) if self.OIDC_OP_USER_ENDPOINT else {}
        if info.get("sub", payload.get("sub")) != payload.get("sub"):
            raise SuspiciousOperation("userinfo is about someone else")
        return {**payload, **info}

    def verify_claims(self, claims):
        return bool(claims.get("email")) and claims.get("email_verified") is not False

    def create_user(self, claims):
        roles = self.refuse_without_roles(claims, users=[])
        user = super().create_user(claims)  # no usable password: this person logs in through the IdP only
        return self.update_user(user, claims, roles=roles)

    def update_user(self, user, claims, roles=None):
        roles = roles if roles is not None else self.refuse_without_roles(claims, users=[user])
        names = {"first_name": str(claims.get("given_name") or "")[:150],
                 "last_name": str(claims.get("family_name") or "")[:150]}
        if any(getattr(user, k) != v for k, v in names.items()):
            self.UserModel.objects.filter(pk=user.pk).update(**names)
            for k, v in names.items():
                setattr(user, k, v)
        set_roles(user, roles, groups_claim=claims.get(settings.HANDOFF_OIDC_GROUPS_CLAIM))
        return user

    def refuse_without_roles(self, claims: dict, *, users: list) -> set[str]:
        roles = roles_for(claims)
        if not roles:
            for user in users:  # the IdP no longer gives this person any Handoff role: take the old ones away
                set_roles(user, set(), groups_claim=claims.get(settings.HANDOFF_OIDC_GROUPS_CLAIM))
            log.warning("sso login refused: no mapped group", extra={"sub": claims.get("sub")})
            raise SuspiciousOperation("no IdP group maps to a Handoff role")
        return roles


class SSOViews:
    """404 while SSO is off; anything refused — a forged or replayed token, an unknown state, nobody with a mapped
    group, an IdP that does not answer — goes back to the login page with a message, not to an error page."""

    get_settings = staticmethod(oidc_setting)

    def dispatch(self, request, *args, **kwargs):
        if not sso_enabled():
            raise Http404("single sign-on is not configured")
        try:
            return super().dispatch(request, *args, **kwargs)
        except (SuspiciousOperation, requests.RequestException) as exc:
            log.warning("sso login refused: %s", exc)
            return refused(request)


def refused(request):
    messages.error(request, f"Sign-in with {settings.HANDOFF_SSO_NAME} did not let you in. If you should have "
                            "access, ask your administrator for a Handoff group.")
    return redirect(settings.LOGIN_URL)


class SSOStart(SSOViews, OIDCAuthenticationRequestView):
    """Sends the browser to the IdP."""

    def __init__(self, *args, **kwargs):
        super(OIDCAuthenticationRequestView, self).__init__(*args, **kwargs)  # endpoints are read in get()

    def get(self, request):
        self.OIDC_OP_AUTH_ENDPOINT = self.get_settings("OIDC_OP_AUTHORIZATION_ENDPOINT")
        self.OIDC_RP_CLIENT_ID = self.get_settings("OIDC_RP_CLIENT_ID")
        return super().get(request)


class SSOCallback(SSOViews, OIDCAuthenticationCallbackView):
    """The IdP sends the browser back here (/oidc/callback/, the redirect URI registered at the IdP)."""

    def login_failure(self):
        return refused(self.request)


class LoginView(auth_views.LoginView):
    """Django's login page, with the "Sign in with …" button when SSO is on."""

    def get_context_data(self, **kwargs):
        return {**super().get_context_data(**kwargs), "sso_name": settings.HANDOFF_SSO_NAME if sso_enabled() else ""}


# names as mozilla-django-oidc reverses them
urlpatterns = [
    path("authenticate/", login_not_required(SSOStart.as_view()), name="oidc_authentication_init"),
    path("callback/", login_not_required(SSOCallback.as_view()), name="oidc_authentication_callback"),
]
