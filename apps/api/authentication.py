"""DRF authentication with one guard: credentials holding a NUL byte are refused, not looked up."""

from rest_framework.authentication import BasicAuthentication
from rest_framework.exceptions import AuthenticationFailed


class SafeBasicAuthentication(BasicAuthentication):
    def authenticate_credentials(self, userid, password, request=None):
        if "\x00" in (userid or "") or "\x00" in (password or ""):
            raise AuthenticationFailed("Invalid username/password.")
        return super().authenticate_credentials(userid, password, request)


try:  # document it in the OpenAPI schema as the plain HTTP basic scheme it is
    from drf_spectacular.authentication import BasicScheme

    class SafeBasicScheme(BasicScheme):
        target_class = "apps.api.authentication.SafeBasicAuthentication"
except ImportError:  # pragma: no cover - drf-spectacular is a dependency
    pass
