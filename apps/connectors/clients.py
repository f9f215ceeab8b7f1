"""Connection kind → client class."""

import importlib

from .hubspot import HubSpotClient
from .kantata import KantataClient
from .netsuite import NetSuiteClient
from .salesforce import SalesforceClient

CLIENTS = {
    "hubspot": HubSpotClient,
    "salesforce": SalesforceClient,
    "netsuite": NetSuiteClient,
    "kantata": KantataClient,
}
# loaded on first use: "module:Class"
LAZY_CLIENTS = {
    "stripe": "apps.connectors.stripe_billing:StripeClient",
    "anaplan": "apps.connectors.anaplan:AnaplanClient",
}


def client_class(kind: str):
    if kind not in CLIENTS and kind in LAZY_CLIENTS:
        module, _, name = LAZY_CLIENTS[kind].partition(":")
        CLIENTS[kind] = getattr(importlib.import_module(module), name)
    return CLIENTS[kind]
