"""DRF's basic auth with two guards: credentials holding a NUL byte are refused, not looked up; and people whose
local logins need a second factor (apps/core/two_factor.py) cannot use a password alone here — the API is for
service accounts without those roles, or for a browser session that passed its second factor."""

from rest_framework.authentication import BasicAuthentication
from rest_framework.exceptions import AuthenticationFailed

from apps.core.two_factor import totp_required


class SafeBasicAuthentication(BasicAuthentication):
    def authenticate_credentials(self, userid, password, request=None):
        if "\x00" in (userid or "") or "\x00" in (password or ""):
            raise AuthenticationFailed("Invalid username/password.")
        user, auth = super().authenticate_credentials(userid, password, request)
        if totp_required(user):
            raise AuthenticationFailed("This account needs a second factor: use a service account for the API.")
        return user, auth


try:  # document it in the OpenAPI schema as the plain HTTP basic scheme it is
    from drf_spectacular.authentication import BasicScheme

    class SafeBasicScheme(BasicScheme):
        target_class = "apps.api.authentication.SafeBasicAuthentication"
except ImportError:  # pragma: no cover - drf-spectacular is a dependency
    pass
