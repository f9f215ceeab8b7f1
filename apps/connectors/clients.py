"""Connection kind → the client class that talks to that system's API."""

from apps.connectors.anaplan.client import AnaplanClient
from apps.connectors.hubspot.client import HubSpotClient
from apps.connectors.kantata.client import KantataClient
from apps.connectors.netsuite.client import NetSuiteClient
from apps.connectors.salesforce.client import SalesforceClient
from apps.connectors.stripe.client import StripeClient

# Imported eagerly: `stripe` (~0.1 s) is loaded by the callback intake anyway (apps/connectors/stripe/inbound.py
# verifies its webhooks with it), so a process that runs the engine pays for it once, at start-up, not on a
# record's first Stripe call.
CLIENTS = {
    "hubspot": HubSpotClient,
    "salesforce": SalesforceClient,
    "netsuite": NetSuiteClient,
    "kantata": KantataClient,
    "stripe": StripeClient,
    "anaplan": AnaplanClient,
}
