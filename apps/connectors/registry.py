"""Connection kind → client class."""

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


def client_class(kind: str):
    return CLIENTS[kind]
