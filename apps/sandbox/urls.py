"""The sandboxes' URLs: /sandbox/<system>/<the vendor's own path>, one view per vendor (each dispatches on the path
as the vendor's API does). Mounted by config/urls.py only when HANDOFF_SANDBOX_ENABLED."""

from django.urls import path, re_path

from . import fault_panel
from .anaplan.views import anaplan
from .hubspot.views import hubspot
from .kantata.views import kantata
from .netsuite.views import netsuite
from .salesforce.views import salesforce
from .stripe.views import stripe

urlpatterns = [
    re_path(r"^sandbox/hubspot/(?P<path>.*)$", hubspot),
    re_path(r"^sandbox/salesforce/(?P<path>.*)$", salesforce),
    re_path(r"^sandbox/netsuite/(?P<path>.*)$", netsuite),
    re_path(r"^sandbox/kantata/(?P<path>.*)$", kantata),
    re_path(r"^sandbox/stripe/(?P<path>.*)$", stripe),
    re_path(r"^sandbox/anaplan/(?P<path>.*)$", anaplan),
    # the fault-injection form on the console's connections page (templates/sandbox/connection_faults.html)
    path("connections/<int:pk>/faults/", fault_panel.connection_faults, name="sandbox_connection_faults"),
]
