"""The DRF API: callbacks from external systems (verified their own way) and read access to sync records."""

from __future__ import annotations

from axes.helpers import get_client_ip_address
from django.http import HttpResponse
from drf_spectacular.plumbing import build_array_type, build_basic_type
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, serializers
from rest_framework.parsers import BaseParser
from rest_framework.permissions import AllowAny, BasePermission, IsAuthenticated
from rest_framework.views import APIView

from apps.core.inputs import BadInput, check_value
from apps.sync import intake, refusals
from apps.sync.models import InboundEvent, SyncRecord
from apps.sync.privacy import masked, may_see_personal_data


def needs(perm: str) -> list[type[BasePermission]]:
    """Permission classes for a read endpoint: logged in (401/403 otherwise) and holding `perm` (the console's
    rule for the same data, apps/core/roles.py)."""

    class HasPerm(BasePermission):
        def has_permission(self, request, view):
            return request.user.has_perm(perm)

    return [IsAuthenticated, HasPerm]


class RawParser(BaseParser):
    """Accept any media type: the callback is verified over its raw bytes, so DRF must not parse it."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        return None


class CallbackErrorSerializer(serializers.Serializer):
    error = serializers.CharField(help_text="Why the callback was refused")


# what each refusal means (JSON {"error": …}; Salesforce: a SOAP fault with the same reason, text/xml)
CALLBACK_REFUSALS = {
    400: "Malformed body (JSON/XML, invalid UTF-8, NaN/Infinity, a key twice in one object), not an event the "
         "system sends, an id not in its system's format, an event id over 200 characters, or a field the workflow "
         "needs missing or malformed",
    401: "Missing, bad or stale signature, or one dated more than the tolerance ahead (HubSpot "
         "X-HubSpot-Signature-v3; Kantata and NetSuite webhook-signature; Stripe Stripe-Signature), no signing "
         "secret configured on the connection; Salesforce: a missing or wrong secret in the callback URL, or a wrong "
         "org id",
    403: "The connection is disabled",
    404: "Unknown connection, one that receives no callbacks (Anaplan), or a secret URL for a signed system",
    413: "Body over HANDOFF_MAX_CALLBACK_BYTES",
    415: "Wrong content type (HubSpot, Kantata, NetSuite, Stripe: application/json; Salesforce: text/xml)",
    429: "Too many refused callbacks from this address (HANDOFF_CALLBACK_REFUSAL_LIMIT per window): refused, and "
         "not stored, for the seconds the Retry-After header gives",
}
# the signature headers, per sending system (all optional in the schema: which ones apply depends on the connection)
CALLBACK_HEADERS = [
    ("X-HubSpot-Signature-v3", "HubSpot: base64(HMAC-SHA256(client secret, POST + full URI + body + timestamp))"),
    ("X-HubSpot-Request-Timestamp", "HubSpot: when it was signed, Unix milliseconds; older than 5 minutes is "
                                    "refused"),
    ("webhook-id", "Kantata, NetSuite (Standard Webhooks): the message id, the same on every retry (a redelivery "
                   "is stored once)"),
    ("webhook-timestamp", "Kantata, NetSuite (Standard Webhooks): Unix seconds; more than 300 s away from now is "
                          "refused"),
    ("webhook-signature", "Kantata, NetSuite (Standard Webhooks): space-separated v1,<base64 HMAC-SHA256(secret, "
                          "<webhook-id>.<webhook-timestamp>.<body>)> entries; any one may match"),
    ("Stripe-Signature", "Stripe: t=<unix seconds>,v1=<hex HMAC-SHA256(whsec_… secret, <t>.<body>)>[,v1=…]; any "
                         "v1 may match; a t older than 300 s is refused"),
]
SALESFORCE_OUTBOUND_EXAMPLE = (
    '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"'
    ' xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
    '<soapenv:Body><notifications xmlns="http://soap.sforce.com/2005/09/outbound">'
    "<OrganizationId>00D5g000004SbxQEAS</OrganizationId><ActionId>04k000000000001</ActionId>"
    '<SessionId xsi:nil="true"/><Notification><Id>04l5g00000ABCDEAA5</Id>'
    '<sObject xsi:type="sf:Opportunity" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">'
    "<sf:Id>0065g00000ABCDEAA5</sf:Id><sf:Name>Northwind Traders - Data platform</sf:Name>"
    "<sf:StageName>Closed Won</sf:StageName><sf:IsWon>true</sf:IsWon><sf:Amount>120000.00</sf:Amount>"
    "<sf:CurrencyIsoCode>USD</sf:CurrencyIsoCode><sf:AccountId>0015g00000ABCDEAA5</sf:AccountId>"
    "<sf:Account_Name__c>Northwind Traders</sf:Account_Name__c><sf:Legal_Entity__c>US01</sf:Legal_Entity__c>"
    "<sf:Billing_Terms__c>NET30</sf:Billing_Terms__c></sObject></Notification></notifications>"
    "</soapenv:Body></soapenv:Envelope>")
SALESFORCE_ACK_EXAMPLE = (
    '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
    '<soapenv:Body><notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound"><Ack>true</Ack>'
    "</notificationsResponse></soapenv:Body></soapenv:Envelope>")


class ApiErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="Why the request was refused (DRF's error body)")


# what the read API answers besides 200: not logged in / wrong credentials (403 with session auth first, 401 when
# a challenge can be sent), unknown record or page
READ_ERRORS = {
    400: OpenApiResponse(ApiErrorSerializer, description="A filter value Handoff cannot use (e.g. a NUL byte)"),
    401: OpenApiResponse(ApiErrorSerializer, description="Not authenticated"),
    403: OpenApiResponse(ApiErrorSerializer, description="Not authenticated, wrong credentials, or no permission"),
    404: OpenApiResponse(ApiErrorSerializer, description="No such record, or a page past the last one"),
}


class CallbackAcceptedSerializer(serializers.Serializer):
    accepted = serializers.IntegerField(help_text="New events stored for processing")
    duplicates = serializers.IntegerField(help_text="Events already received before (not processed again)")
    ignored = serializers.IntegerField(help_text="Verified events no workflow acts on (recorded)")


CALLBACK_SCHEMA = dict(
    # JSON: HubSpot sends an array of events; Kantata, NetSuite and Stripe one event object per request
    request={"application/json": {"oneOf": [build_array_type(build_basic_type(OpenApiTypes.OBJECT)),
                                            build_basic_type(OpenApiTypes.OBJECT)]},
             "text/xml": OpenApiTypes.STR},
    parameters=[OpenApiParameter(name, str, OpenApiParameter.HEADER, required=False, description=text)
                for name, text in CALLBACK_HEADERS],
    responses={
        # HubSpot is answered in JSON; Salesforce in SOAP (the Ack, or a SOAP fault naming the reason)
        (200, "application/json"): OpenApiResponse(
            CallbackAcceptedSerializer, description="All events already known or ignored (HubSpot, Kantata, "
            "NetSuite, Stripe); the SOAP Ack for every Outbound Message taken in, new, redelivered or ignored "
            "(Salesforce, text/xml)"),
        (200, "text/xml"): OpenApiResponse(OpenApiTypes.STR, examples=[OpenApiExample(
            "Salesforce Ack", response_only=True, media_type="text/xml", status_codes=[200],
            value=SALESFORCE_ACK_EXAMPLE)]),
        (202, "application/json"): OpenApiResponse(
            CallbackAcceptedSerializer, description="New events stored (HubSpot, Kantata, NetSuite, Stripe)"),
        **{(code, media): OpenApiResponse(
            CallbackErrorSerializer if media == "application/json" else OpenApiTypes.STR, description=text)
           for code, text in CALLBACK_REFUSALS.items() for media in ("application/json", "text/xml")},
        (404, "text/html"): OpenApiResponse(
            OpenApiTypes.STR, description="The path matches no route (e.g. a connection name with a slash)"),
    },
    examples=[
        OpenApiExample("HubSpot deal closed-won", request_only=True, media_type="application/json", value=[{
            "eventId": 1001, "subscriptionId": 7, "portalId": 62515, "appId": 1, "occurredAt": 1763900000000,
            "subscriptionType": "deal.propertyChange", "attemptNumber": 0, "objectId": 123,
            "propertyName": "dealstage", "propertyValue": "closedwon", "changeSource": "CRM"}]),
        OpenApiExample("Salesforce Outbound Message, opportunity closed-won", request_only=True,
                       media_type="text/xml", value=SALESFORCE_OUTBOUND_EXAMPLE),
    ],
    tags=["callbacks"],
)


class CallbackView(APIView):
    """Receives a source system's native callback for one connection, verified the way that system signs it.

    HubSpot (webhooks v3): a JSON array of events signed with `X-HubSpot-Signature-v3` and
    `X-HubSpot-Request-Timestamp` (milliseconds; refused when older than 5 minutes).

    Salesforce (Outbound Messages, which are not signed): sent to the connection's secret URL
    `/api/v1/callbacks/<connection>/<secret>/` (this URL without the secret is refused with 401); a SOAP
    `notifications` envelope (`text/xml`) whose `OrganizationId` must be the connection's org; answered with the
    SOAP `Ack` (also for redeliveries), or a SOAP fault with a 4xx. A notification is only a trigger: the
    workflow reads the record through Salesforce's REST API.

    Kantata (PSA: approved time and expenses, completed milestones) and NetSuite (ERP: invoices and customer
    payments): one JSON event per request, `{"type": …, "timestamp": …, "data": {…}}`, signed per the
    Standard Webhooks specification with `webhook-id` (the event id: a redelivery is stored once),
    `webhook-timestamp` (Unix seconds, at most 300 s away) and `webhook-signature` (`v1,<base64 HMAC-SHA256 of
    "<id>.<timestamp>.<body>">`, space-separated; any one may match), with the connection's signing secret.

    Stripe (billing): Stripe's native event JSON, verified as Stripe documents it: `Stripe-Signature:
    t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` with the endpoint's `whsec_…` secret (any `v1` may
    match; a `t` older than 300 s is refused).

    JSON callbacks are answered 202 when new events were stored, 200 when every event was a redelivery or
    ignored. Every refusal is a 4xx with the reason, and is stored for the integration admin: 401 bad, missing or
    stale signature, no signing secret configured, or wrong org; 400 malformed JSON/XML or a missing field; 403
    disabled connection; 404 unknown connection; 413 oversize body; 415 wrong content type; 400 with a
    `correlation_id` for an unexpected error (logged with its traceback). Past a number of refusals from one
    address in a minute, refusals are answered 429 with Retry-After and no longer stored. Of a request that did
    not prove its sender (unknown connection, bad signature, …) only the first 2 KB are stored. Processing
    happens in background jobs.
    """

    authentication_classes: list = []
    permission_classes = [AllowAny]
    parser_classes = [RawParser]

    @extend_schema(operation_id="callback_receive", **CALLBACK_SCHEMA)
    def post(self, request, connection: str):
        return _callback(request, connection)


SLUG = r"^[-A-Za-z0-9_]+$"  # a slug and a URL secret (secrets.token_urlsafe) are URL-safe characters only


class SecretCallbackView(CallbackView):
    """The callback URL of a connection whose system does not sign its callbacks (Salesforce Outbound Messages):
    `/api/v1/callbacks/<connection>/<secret>/`, with the connection's secret (Console → Connections, rotate). A
    missing or wrong secret is refused with 401 and stored; a signed system's connection has no such URL (404)."""

    @extend_schema(operation_id="callback_receive_secret_url", **{**CALLBACK_SCHEMA, "parameters": [
        OpenApiParameter("connection", {"type": "string", "pattern": SLUG}, OpenApiParameter.PATH,
                         description="The connection's slug"),
        OpenApiParameter("secret", {"type": "string", "pattern": SLUG}, OpenApiParameter.PATH,
                         description="The connection's callback secret (systems that do not sign: Salesforce)"),
        *CALLBACK_SCHEMA["parameters"]]})
    def post(self, request, connection: str, secret: str):
        return _callback(request, connection, secret)


def _callback(request, connection: str, secret: str | None = None) -> HttpResponse:
    from django.conf import settings

    raw = request._request
    try:
        length = int(raw.META.get("CONTENT_LENGTH") or 0)
    except ValueError:  # as Django reads it: a malformed length is no length (the server usually refuses it first)
        length = 0
    if length > settings.HANDOFF_MAX_CALLBACK_BYTES:
        # refused unread: keep the start for the admin, do not read the rest into memory
        body = raw.read(refusals.EXCERPT_BYTES)
    else:
        body = raw.body
    uris = [raw.build_absolute_uri(), settings.HANDOFF_PUBLIC_URL.rstrip("/") + raw.get_full_path()]
    # the sender's address as the login throttle finds it (REMOTE_ADDR, or the proxies' header when
    # configured): refused callbacks are limited per address (apps/sync/refusals.py)
    source = get_client_ip_address(raw) or raw.META.get("REMOTE_ADDR", "")
    reply = intake.receive(slug=connection, method=raw.method, uris=uris, body=body, headers=raw.headers,
                           source=source, size=max(length, len(body)), url_secret=secret)
    response = HttpResponse(reply.body, status=reply.status, content_type=reply.content_type)
    for name, value in reply.headers.items():
        response[name] = value
    return response


class RecordSerializer(serializers.ModelSerializer):
    source = serializers.CharField(source="source_connection.slug")

    class Meta:
        model = SyncRecord
        fields = ["id", "workflow", "stage", "status", "reason_code", "message", "fault_fields", "failed_system",
                  "owner_team", "priority", "attempts", "next_attempt_at", "correlation_id", "source",
                  "source_key", "title", "amount", "currency", "context", "version", "created_at", "updated_at",
                  "held_at", "completed_at"]


    def to_representation(self, instance):
        """Tax ids are personal data: masked for users without sync.view_personal_data (viewers)."""
        data = super().to_representation(instance)
        request = self.context.get("request")
        if request is not None and not may_see_personal_data(request.user):
            for key in ("message", "title"):
                data[key] = masked(data[key] or "", instance)
        return data


def clean_filter(params, name: str) -> str:
    """A filter value from the query string; one no filter can use (a NUL byte, …) is a 400, not a 500."""
    from rest_framework.exceptions import ValidationError

    value = params.get(name) or ""
    try:
        check_value(f"the {name} filter", value)
    except BadInput as exc:
        raise ValidationError({"detail": str(exc)})
    return value


class RecordList(generics.ListAPIView):
    """Sync records, newest first; filter with ?status=held&workflow=quote_to_project&reason_code=…"""

    serializer_class = RecordSerializer
    permission_classes = needs("sync.view_syncrecord")

    @extend_schema(tags=["records"], parameters=[
        OpenApiParameter("status", str), OpenApiParameter("workflow", str), OpenApiParameter("reason_code", str),
        OpenApiParameter("owner_team", str)], responses={200: RecordSerializer(many=True), **READ_ERRORS})
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        qs = SyncRecord.objects.select_related("source_connection").order_by("-created_at", "-id")
        for f in ("status", "workflow", "reason_code", "owner_team", "stage"):
            if v := clean_filter(self.request.query_params, f):
                qs = qs.filter(**{f: v})
        return qs


class RecordDetail(generics.RetrieveAPIView):
    serializer_class = RecordSerializer
    permission_classes = needs("sync.view_syncrecord")
    queryset = SyncRecord.objects.select_related("source_connection")

    @extend_schema(tags=["records"], responses={
        200: RecordSerializer, **READ_ERRORS,
        (404, "text/html"): OpenApiResponse(OpenApiTypes.STR, description="The id is not a number (no route)")})
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class EventSerializer(serializers.ModelSerializer):
    class Meta:
        model = InboundEvent
        fields = ["id", "connection_slug", "event_id", "event_type", "received_at", "verified", "status",
                  "http_status", "reason", "deliveries", "record", "processed_at"]


class EventList(generics.ListAPIView):
    """Inbound events as received, including every rejection and why (?status=rejected)."""

    serializer_class = EventSerializer
    permission_classes = needs("sync.view_inboundevent")  # rejected callbacks: integration admins only

    @extend_schema(tags=["events"], parameters=[OpenApiParameter("status", str)],
                   responses={200: EventSerializer(many=True), **READ_ERRORS})
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        qs = InboundEvent.objects.order_by("-received_at", "-id")
        if v := clean_filter(self.request.query_params, "status"):
            qs = qs.filter(status=v)
        return qs
