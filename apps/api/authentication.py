"""DRF authentication with one guard: credentials holding a NUL byte are refused, not looked up."""

from rest_framework.authentication import BasicAuthentication
from rest_framework.exceptions import AuthenticationFailed


class SafeBasicAuthentication(BasicAuthentication):
    def authenticate_credentials(self, userid, password, request=None):
        if "\x00" in (userid or "") or "\x00" in (password or ""):
            raise AuthenticationFailed("Invalid username/password.")
        return super().authenticate_credentials(userid, password, request)
