"""Handoff's URLs plus /bench/baseline/ (listed first, so Handoff's callback pays the extra pattern, not the
baseline)."""

from django.contrib.auth.decorators import login_not_required
from django.urls import path

from bench.baseline import BaselineView
from config.urls import urlpatterns as handoff_urlpatterns

urlpatterns = [
    path("bench/baseline/", login_not_required(BaselineView.as_view()), name="bench-baseline"),
    *handoff_urlpatterns,
]
