"""The one relaxed Content-Security-Policy, for third-party pages only."""

from django.conf import settings
from django.utils.csp import CSP
from django.views.decorators.csp import csp_override

# Pages of third-party apps whose templates carry inline scripts and styles (the RQ dashboard for staff, the API's
# Redoc page): these alone may run inline code (Redoc also runs a blob: worker). Every page of ours keeps the
# strict policy of settings.SECURE_CSP.
THIRD_PARTY_CSP = {**settings.SECURE_CSP, "script-src": [CSP.SELF, CSP.UNSAFE_INLINE],
                   "style-src": [CSP.SELF, CSP.UNSAFE_INLINE], "worker-src": [CSP.SELF, "blob:"]}
third_party = csp_override(THIRD_PARTY_CSP)
