from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import URLPattern, include, path, re_path
from django.utils.csp import CSP
from django.views.decorators.csp import csp_override
from django_rq import urls as rq_urls
from drf_spectacular.views import SpectacularRedocView

from apps.core import views as core_views

# Pages of third-party apps whose templates carry inline scripts and styles (the RQ dashboard for staff, the API's
# Redoc page): these alone may run inline code (Redoc also runs a blob: worker). Every page of ours keeps the
# strict policy of settings.SECURE_CSP.
THIRD_PARTY_CSP = {**settings.SECURE_CSP, "script-src": [CSP.SELF, CSP.UNSAFE_INLINE],
                   "style-src": [CSP.SELF, CSP.UNSAFE_INLINE, "https://fonts.googleapis.com"],
                   "font-src": [CSP.SELF, "https://fonts.gstatic.com"], "worker-src": [CSP.SELF, "blob:"]}
third_party = csp_override(THIRD_PARTY_CSP)
rq_dashboard = ([URLPattern(p.pattern, third_party(p.callback), p.default_args, p.name)
                 for p in rq_urls.urlpatterns], rq_urls.app_name)

urlpatterns = [
    path("healthz", core_views.healthz, name="healthz"),
    path("readyz", core_views.readyz, name="readyz"),
    path("metrics", core_views.metrics, name="metrics"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/rq/", include(rq_dashboard)),
    # the same view as apps/api/urls.py's "docs", matched first so that it gets the third-party policy
    path("api/v1/docs/", third_party(SpectacularRedocView.as_view(url_name="api:schema"))),
    path("admin/", admin.site.urls),
    path("api/v1/", include("apps.api.urls")),
    path("forecast/", include("apps.forecast.urls")),
    path("", include("apps.console.urls")),
    path("", include("apps.reconcile.urls")),
]

if settings.HANDOFF_SANDBOX_ENABLED:
    from apps.sandbox import views as sandbox

    urlpatterns += [
        re_path(r"^sandbox/hubspot/(?P<path>.*)$", sandbox.hubspot),
        re_path(r"^sandbox/salesforce/(?P<path>.*)$", sandbox.salesforce),
        re_path(r"^sandbox/netsuite/(?P<path>.*)$", sandbox.netsuite),
        re_path(r"^sandbox/kantata/(?P<path>.*)$", sandbox.kantata),
        re_path(r"^sandbox/stripe/(?P<path>.*)$", sandbox.lazy_view("apps.sandbox.stripe_api:stripe")),
        re_path(r"^sandbox/anaplan/(?P<path>.*)$", sandbox.lazy_view("apps.sandbox.anaplan_api:anaplan")),
    ]
