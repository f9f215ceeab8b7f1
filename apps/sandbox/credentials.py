"""The sandbox accounts' secrets: the API token each sandbox accepts, and the secret each signs its callbacks
with. The demo firm's connections are set up with the same values (the demo app's set-up), so the two ends
agree without configuration. No imports, so anything may read them without loading the sandboxes."""

DEFAULT_TOKENS = {s: f"sandbox-{s}-token" for s in ("hubspot", "salesforce", "netsuite", "kantata", "anaplan")}
DEFAULT_TOKENS["stripe"] = "sk_test_sandbox_handoff"  # Stripe secret keys look like sk_test_…

# callback signing secrets of the sandboxes that send callbacks; HubSpot's is random per install unless given
INBOUND_SECRETS = {"kantata": "sandbox-kantata-webhook-secret", "netsuite": "sandbox-netsuite-webhook-secret",
                   "stripe": "whsec_sandbox_handoff"}
# the secret in the callback URL of the sandboxes whose callbacks are not signed (Salesforce Outbound Messages)
CALLBACK_URL_SECRETS = {"salesforce": "sandbox-salesforce-callback-url-secret"}
