from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import URLPattern, include, path
from django_rq import urls as rq_urls

from apps.core import sso, two_factor
from apps.core import views as core_views
from apps.core.csp import third_party

rq_dashboard = ([URLPattern(p.pattern, third_party(p.callback), p.default_args, p.name)
                 for p in rq_urls.urlpatterns], rq_urls.app_name)

urlpatterns = [
    path("healthz", core_views.healthz, name="healthz"),
    path("readyz", core_views.readyz, name="readyz"),
    path("metrics", core_views.metrics, name="metrics"),
    path("login/", sso.LoginView.as_view(), name="login"),
    path("login/two-factor/", two_factor.verify, name="two_factor_verify"),
    path("login/two-factor/enrol/", two_factor.enrol, name="two_factor_enrol"),
    path("oidc/", include(sso.urlpatterns)),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/rq/", include(rq_dashboard)),
    path("admin/", admin.site.urls),
    path("api/v1/", include("apps.api.urls")),
    path("forecast/", include("apps.forecast.urls")),
    path("", include("apps.console.urls")),
    path("", include("apps.reconcile.urls")),
]

if settings.HANDOFF_SANDBOX_ENABLED:
    urlpatterns += [path("", include("apps.sandbox.urls"))]
