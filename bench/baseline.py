"""The baseline for the callback-intake benchmark: the least a DRF endpoint doing the same job can do.

It validates a HubSpot-like JSON body with a serializer, inserts one row with raw SQL and enqueues one RQ job
per request: no signature check, no de-duplication, no debounce. Handoff's real callback endpoint is measured
against it under the same gunicorn, settings, middleware and load (bench/run.py).
"""

from __future__ import annotations

import json

import django_rq
from django.db import connection
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

CREATE_TABLE_SQL = """
CREATE TABLE IF NOT EXISTS bench_baseline (
    id bigserial PRIMARY KEY,
    event_id bigint NOT NULL,
    object_id bigint NOT NULL,
    body jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
)
"""


def create_table() -> None:
    with connection.cursor() as cur:
        cur.execute(CREATE_TABLE_SQL)


def noop(event_id: int) -> int:
    """The job the baseline enqueues (never run during the benchmark: the queue is flushed)."""
    return event_id


class EventSerializer(serializers.Serializer):
    eventId = serializers.IntegerField(min_value=0)
    subscriptionId = serializers.IntegerField()
    portalId = serializers.IntegerField()
    appId = serializers.IntegerField()
    occurredAt = serializers.IntegerField()
    subscriptionType = serializers.CharField(max_length=60)
    attemptNumber = serializers.IntegerField()
    objectId = serializers.IntegerField(min_value=0)
    propertyName = serializers.CharField(max_length=100, required=False)
    propertyValue = serializers.CharField(max_length=100, required=False)
    changeSource = serializers.CharField(max_length=40, required=False)


class BaselineView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    def post(self, request):
        ser = EventSerializer(data=request.data, many=True, allow_empty=False)
        ser.is_valid(raise_exception=True)
        event = ser.validated_data[0]
        with connection.cursor() as cur:
            cur.execute("INSERT INTO bench_baseline (event_id, object_id, body) VALUES (%s, %s, %s)",
                        [event["eventId"], event["objectId"], json.dumps(event)])
        django_rq.get_queue("default").enqueue(noop, event["eventId"])
        return Response({"accepted": 1}, status=202)
