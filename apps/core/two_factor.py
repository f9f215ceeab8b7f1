"""Two-factor login (TOTP, django-otp) for local logins of the roles in HANDOFF_REQUIRE_TOTP_FOR.

After the password step such a person must enter a code from their authenticator app (the verify page), or, on
their first login, enrol one (the enrol page shows the otpauth:// URI, its secret as text and a QR code, and is
confirmed with a code). Until then the session reaches only those two pages, login and logout. People who logged in
through single sign-on are not asked: their identity provider does MFA. A second device, or a lost phone, goes
through an administrator: deleting the person's TOTP device in the Django admin lets them enrol again.
"""

from __future__ import annotations

import logging
from base64 import b32encode

import segno
from django import forms
from django.conf import settings
from django.contrib.admin.models import ADDITION, LogEntry
from django.contrib.auth import BACKEND_SESSION_KEY
from django.contrib.auth.views import redirect_to_login
from django.shortcuts import redirect, render, resolve_url
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django_otp import login as otp_login
from django_otp import user_has_device, verify_token
from django_otp.plugins.otp_totp.models import TOTPDevice

from . import sso

log = logging.getLogger(__name__)

# what a session still waiting for its second factor may reach
PENDING_OK = {"two_factor_verify", "two_factor_enrol", "login", "logout", "oidc_authentication_init",
              "oidc_authentication_callback"}


def totp_required(user) -> bool:
    """Whether this person's local logins need a second factor (superusers count as integration admins)."""
    required = set(settings.HANDOFF_REQUIRE_TOTP_FOR)
    if not required or not user.is_authenticated:
        return False
    roles = set(user.groups.values_list("name", flat=True)) | ({"integration_admin"} if user.is_superuser else set())
    return bool(roles & required)


def second_factor_pending(request) -> bool:
    user = request.user
    return (user.is_authenticated and request.session.get(BACKEND_SESSION_KEY) != sso.BACKEND
            and totp_required(user) and not user.is_verified())


class TwoFactorMiddleware:
    """After django_otp's OTPMiddleware and LoginRequiredMiddleware: a session waiting for its second factor is
    sent to the verify page (or the enrol page, when the person has no device yet) from anywhere else."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        if request.resolver_match.view_name in PENDING_OK or not second_factor_pending(request):
            return None
        page = "two_factor_verify" if user_has_device(request.user) else "two_factor_enrol"
        return redirect_to_login(request.get_full_path(), reverse(page))


class CodeForm(forms.Form):
    token = forms.CharField(label="Code from your authenticator app", min_length=6, max_length=8, strip=True,
                            widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric",
                                                          "autofocus": True}))


def next_url(request) -> str:
    wanted = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(wanted, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return wanted
    return resolve_url(settings.LOGIN_REDIRECT_URL)


def passed(request, device) -> None:
    request.session.cycle_key()  # a new session id for the fully logged-in session
    otp_login(request, device)
    log.info("second factor verified", extra={"user_id": request.user.pk})


WRONG_CODE = "That code is not right, or was already used. Wait for the next one and try again."
THROTTLED = "Too many wrong codes: wait a few seconds, then enter the current one."


def refusal(device) -> str:
    """Why a code would be refused now: each wrong code doubles the wait before the device checks another
    (django-otp), and a code sent while it waits is refused unchecked."""
    return WRONG_CODE if device.verify_is_allowed()[0] else THROTTLED


@never_cache
def verify(request):
    if not second_factor_pending(request):
        return redirect(next_url(request))
    device = TOTPDevice.objects.filter(user=request.user, confirmed=True).first()
    if device is None:
        return redirect_to_login(next_url(request), reverse("two_factor_enrol"))
    form = CodeForm(request.POST or None)
    if form.is_valid():
        why_not = refusal(device)
        if verify_token(request.user, device.persistent_id, form.cleaned_data["token"]):
            passed(request, device)
            return redirect(next_url(request))
        form.add_error("token", why_not)
    return render(request, "registration/two_factor_verify.html", {"form": form, "next": next_url(request)})


@never_cache
def enrol(request):
    """A first device only: with one confirmed, a new one needs an administrator (else a password alone would do)."""
    if not second_factor_pending(request):
        return redirect(next_url(request))
    if user_has_device(request.user):
        return redirect_to_login(next_url(request), reverse("two_factor_verify"))
    device = (TOTPDevice.objects.filter(user=request.user, confirmed=False).order_by("pk").first()
              or TOTPDevice.objects.create(user=request.user, name="Authenticator app", confirmed=False))
    form = CodeForm(request.POST or None)
    if form.is_valid():
        why_not = refusal(device)
        if device.verify_token(form.cleaned_data["token"]):
            device.confirmed = True
            device.save(update_fields=["confirmed"])
            LogEntry.objects.log_actions(request.user.pk, [device], ADDITION, change_message="Enrolled at login",
                                         single_object=True)
            passed(request, device)
            return redirect(next_url(request))
        form.add_error("token", why_not)
    secret = b32encode(device.bin_key).decode()
    return render(request, "registration/two_factor_enrol.html", {
        "form": form, "next": next_url(request), "otpauth_uri": device.config_url,
        "secret": " ".join(secret[i:i + 4] for i in range(0, len(secret), 4)),
        "qr": segno.make(device.config_url, error="m").svg_data_uri(scale=4),  # an <img src="data:…">: CSP-safe
    })
