"""Observability: structured logs that carry the record's correlation id (and no personal data), the Prometheus
metrics at /metrics (right values, protected, constant cost), and a readiness probe that refuses a Redis
configured as a cache."""

from __future__ import annotations

import io
import json
import logging
import random
import re
from datetime import timedelta

import django_rq
import pytest
from django.db import connection as db
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from redis.exceptions import ResponseError
from rest_framework.test import APIClient
from rq import SimpleWorker

from apps.core import metrics as metrics_module
from apps.core.logging import JsonFormatter, PlainFormatter, log_context, make_formatter
from apps.demo.deals import make_opportunity
from apps.sync import wakeup
from apps.sync.intake import process_inbox
from apps.sync.models import Attempt, Connection, InboundEvent, SyncRecord

from tests.callbacks import outbound, post_salesforce


# ------------------------------------------------------------------ helpers


class Capture:
    """Every log line written anywhere (root logger) while active, formatted as production formats it."""

    def __init__(self, formatter: logging.Formatter | None = None):
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(formatter or JsonFormatter())
        self.root = logging.getLogger()

    def __enter__(self):
        self.level = self.root.level
        self.root.addHandler(self.handler)
        self.root.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc):
        self.root.removeHandler(self.handler)
        self.root.setLevel(self.level)

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    @property
    def entries(self) -> list[dict]:
        return [json.loads(line) for line in self.text.splitlines() if line.strip()]


def log_one(formatter: logging.Formatter, message: str, *args, **kw) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger("handoff.test.observability")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(message, *args, **kw)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    return stream.getvalue()


# ------------------------------------------------------------------ log format


def test_the_json_formatter_writes_one_object_per_line_with_the_context_and_extra_fields():
    with log_context(correlation_id="c0ffee", record_id=42):
        with log_context(connection="hubspot"):
            line = log_one(JsonFormatter(), "stage %s failed\nsecond line", "erp_customer",
                           extra={"duration_ms": 12, "payload": {"tax_id": "DE123456789"}})
        outside_inner = log_one(JsonFormatter(), "after")
    outside = log_one(JsonFormatter(), "later")

    assert line.count("\n") == 1  # one line, even for a message with a newline
    entry = json.loads(line)
    assert entry["message"] == "stage erp_customer failed\nsecond line"
    assert entry["level"] == "WARNING" and entry["logger"] == "handoff.test.observability"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])
    assert entry["correlation_id"] == "c0ffee" and entry["record_id"] == 42 and entry["connection"] == "hubspot"
    assert entry["duration_ms"] == 12
    assert entry["payload"] == "[redacted]" and "DE123456789" not in line  # payloads never reach a log
    # the context ends with its block, the outer one is restored
    assert json.loads(outside_inner)["correlation_id"] == "c0ffee" and "connection" not in json.loads(outside_inner)
    assert "correlation_id" not in json.loads(outside)


def test_a_request_on_a_log_line_is_written_without_its_query_string(rf):
    request = rf.get("/search/", {"q": "DE123456789"})
    line = log_one(JsonFormatter(), "Not Found: %s", request.path, extra={"request": request, "status_code": 404})
    entry = json.loads(line)
    assert entry["request"] == "GET /search/" and entry["status_code"] == 404
    assert "DE123456789" not in line


def test_the_json_formatter_keeps_the_traceback_in_the_same_object():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("handoff.test.exc")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("it failed")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    [line] = stream.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["level"] == "ERROR" and "ValueError: boom" in entry["exception"]


def test_the_plain_formatter_appends_the_context_as_key_values():
    with log_context(correlation_id="abc", record_id=7):
        line = log_one(PlainFormatter(), "hello")
    assert "WARNING handoff.test.observability hello correlation_id=abc record_id=7" in line


def test_log_format_follows_the_environment_and_defaults_to_json_unless_debug(monkeypatch):
    with override_settings(LOG_FORMAT="", DEBUG=False):
        assert isinstance(make_formatter(), JsonFormatter)
    with override_settings(LOG_FORMAT="", DEBUG=True):
        assert isinstance(make_formatter(), PlainFormatter)
    with override_settings(LOG_FORMAT="json", DEBUG=True):
        assert isinstance(make_formatter(), JsonFormatter)
    with override_settings(LOG_FORMAT="plain", DEBUG=False):
        assert isinstance(make_formatter(), PlainFormatter)


def test_a_processed_records_log_lines_carry_its_correlation_id_and_no_tax_id(deliverer):
    """A Salesforce opportunity (its Account's tax id in the payload the fetch stage reads from the sandbox) goes
    through intake and a real RQ worker job: the outbound call to the ERP fails (nothing listens on the ERP
    connection's address) and the record is retried."""
    Connection.objects.filter(slug="netsuite").update(base_url="http://127.0.0.1:9")
    opp = make_opportunity(random.Random(5), "good")
    opp_id, fields = deliverer.create_salesforce(opp)
    body = outbound([(f"04l{opp_id[3:]}", fields)])
    with Capture() as capture:
        response = post_salesforce(APIClient(), body)
        assert response.status_code == 200
        process_inbox()
        record = SyncRecord.objects.get()
        queue = wakeup.PRIORITY_QUEUE[record.priority]
        wakeup.enqueue_now(f"records:{queue}")  # unless the inbox job's commit has queued it already
        q = django_rq.get_queue(queue)
        SimpleWorker([q], connection=q.connection).work(burst=True)

    record.refresh_from_db()
    assert record.status == "retrying" and record.failed_system == "netsuite"
    assert opp.tax_id and opp.tax_id in json.dumps(record.current_payload)  # the payload does hold it…
    assert opp.tax_id not in capture.text  # …no log line does
    mine = [e for e in capture.entries if e.get("record_id") == record.pk]
    assert mine, capture.text
    assert all(e["correlation_id"] == str(record.correlation_id) for e in mine)
    assert all(e["connection"] == "salesforce" for e in mine)
    calls = [e for e in mine if e["logger"] == "handoff.http"]
    assert [(c["system"], c["http_method"]) for c in calls[:2]] == [("salesforce", "GET")] * 2  # opp, account
    calls = calls[2:]
    assert calls and calls[0]["http_method"] == "PUT" and calls[0]["system"] == "netsuite"
    assert calls[0]["path"].startswith("/services/rest/record/v1/customer/eid:HO-")
    assert isinstance(calls[0]["duration_ms"], int) and calls[0]["status"] is None
    # written inside the RQ job: the job id is on the line
    job_ids = {e.get("job_id") for e in mine}
    assert len(job_ids) == 1 and None not in job_ids
    # lines of other work carry no record's id
    assert not [e for e in capture.entries if e.get("correlation_id") and e.get("record_id") != record.pk]


# ------------------------------------------------------------------ readiness


@pytest.mark.django_db
def test_readyz_reports_the_redis_eviction_policy(client):
    response = client.get("/readyz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["redis"] == "ok"
    assert body["redis_maxmemory_policy"] in ("noeviction", "unknown")


class _Redis:
    def __init__(self, policy=None, error=None):
        self.policy, self.error = policy, error

    def ping(self):
        return True

    def smembers(self, key):  # no worker registered
        return set()

    def config_get(self, name):
        if self.error:
            raise self.error
        return {name: self.policy}


@pytest.mark.django_db
def test_readyz_is_not_ready_when_redis_may_evict_jobs(client, monkeypatch):
    monkeypatch.setattr(django_rq, "get_connection", lambda *a, **k: _Redis("allkeys-lru"))

    response = client.get("/readyz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable" and body["database"] == "ok"
    assert body["redis_maxmemory_policy"] == "allkeys-lru"
    assert "noeviction" in body["redis"] and "allkeys-lru" in body["redis"]


@pytest.mark.django_db
def test_readyz_stays_ready_when_config_is_not_allowed(client, monkeypatch):
    monkeypatch.setattr(django_rq, "get_connection",
                        lambda *a, **k: _Redis(error=ResponseError("unknown command 'CONFIG'")))

    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json()["redis_maxmemory_policy"] == "unknown"


# ------------------------------------------------------------------ metrics

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (-?[0-9.e+-]+|NaN|\+Inf|-Inf)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> dict:
    """{(name, ((label, value), …)): value} from the text format, checking every line's syntax on the way."""
    assert text.endswith("\n")
    out, typed = {}, set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "summary", "histogram", "untyped")
            assert name not in typed, f"{name} typed twice"
            typed.add(name)
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, _, labels, value = match.groups()
        assert name in typed or re.sub(r"_(sum|count)$", "", name) in typed, f"{name} has no TYPE"
        key = (name, tuple(sorted(LABEL.findall(labels or ""))))
        assert key not in out, f"duplicate sample {key}"
        out[key] = float(value)
    return out


def value(samples: dict, name: str, **labels) -> float:
    return samples[(name, tuple(sorted((k, str(v)) for k, v in labels.items())))]


@pytest.fixture
def data_set(connections):
    """A small, known world: callbacks of every status, records in several states, attempts, a paused system."""
    now = timezone.now()
    hubspot, salesforce = connections["hubspot"], connections["salesforce"]

    def event(conn, status, n=1, age=0, slug=None):
        for i in range(n):
            ev = InboundEvent.objects.create(connection=conn, connection_slug=slug or conn.slug, status=status,
                                             http_status=202, verified=status != "rejected",
                                             event_id=f"{status}-{i}-{random.random()}")
            if age:
                InboundEvent.objects.filter(pk=ev.pk).update(received_at=now - timedelta(seconds=age))

    event(hubspot, "processed", 3)
    event(hubspot, "rejected", 2)
    event(hubspot, "received", 1, age=90)
    event(hubspot, "received", 1, age=10)
    event(salesforce, "ignored", 1)
    event(None, "rejected", 2, slug="no-such-system")

    seq = iter(range(1000))

    def record(status, priority=2, due=None, lease=None, sla="ok", workflow="quote_to_project"):
        return SyncRecord.objects.create(workflow=workflow, stage="validate", status=status, priority=priority,
                                         source_connection=hubspot, source_key=f"deal:{next(seq)}",
                                         next_attempt_at=due, lease_expires_at=lease, sla_state=sla)

    record("pending", priority=2, due=now - timedelta(seconds=300))  # due for 5 minutes: the oldest
    record("pending", priority=2, due=now - timedelta(seconds=20))
    record("retrying", priority=2, due=now + timedelta(seconds=60))  # backing off: not due
    record("in_progress", priority=1, lease=now - timedelta(seconds=45))  # its worker died
    record("in_progress", priority=1, lease=now + timedelta(seconds=60))  # being worked on
    record("held", sla="breached")
    record("held", sla="breached")
    record("held", sla="due_soon")
    record("succeeded", sla="breached")  # done: no longer an open breach
    record("dead")

    r = SyncRecord.objects.filter(status="held").first()
    for system, outcome, ms in [("netsuite", "ok", 100), ("netsuite", "ok", 200), ("netsuite", "ok", 300),
                                ("netsuite", "transient", 5000), ("kantata", "permanent", 50),
                                ("kantata", "started", None)]:
        Attempt.objects.create(record=r, stage="erp_customer", system=system, method="PUT", url="/x",
                               duration_ms=ms, outcome=outcome)
    old = Attempt.objects.create(record=r, stage="erp_customer", system="netsuite", method="PUT", url="/x",
                                 duration_ms=99999, outcome="ok")
    Attempt.objects.filter(pk=old.pk).update(started_at=now - timedelta(hours=2))  # outside the window

    Connection.objects.filter(slug="netsuite").update(paused=True, paused_by="circuit", consecutive_failures=5)
    Connection.objects.filter(slug="kantata").update(paused=True, paused_by="admin")

    low = django_rq.get_queue("low", commit_mode="auto")  # now, not after a commit the test never makes
    low.enqueue("apps.sync.jobs.sweep")
    low.enqueue("apps.sync.jobs.sweep")
    return now


@pytest.mark.django_db
def test_metrics_values_are_computed_from_the_database_and_redis(data_set):
    samples = parse(metrics_module.collect(now=data_set))

    # callbacks, with every unknown slug under one label
    assert value(samples, "handoff_callbacks_total", connection="hubspot", status="processed") == 3
    assert value(samples, "handoff_callbacks_total", connection="hubspot", status="rejected") == 2
    assert value(samples, "handoff_callbacks_total", connection="hubspot", status="received") == 2
    assert value(samples, "handoff_callbacks_total", connection="salesforce", status="ignored") == 1
    assert value(samples, "handoff_callbacks_total", connection="_unknown", status="rejected") == 2
    assert value(samples, "handoff_callbacks_total", connection="netsuite", status="rejected") == 0
    # records by workflow and status (zeros included, so an alert sees 0 and not "no data")
    wf = "quote_to_project"
    assert value(samples, "handoff_records", workflow=wf, status="pending") == 2
    assert value(samples, "handoff_records", workflow=wf, status="in_progress") == 2
    assert value(samples, "handoff_records", workflow=wf, status="held") == 3
    assert value(samples, "handoff_records", workflow=wf, status="ignored") == 0
    assert value(samples, "handoff_sla_breaches", workflow=wf) == 2
    assert value(samples, "handoff_dead_letters") == 1
    # the backlog: due rows per queue and the age of the oldest
    assert value(samples, "handoff_due_records", queue="default") == 2
    assert value(samples, "handoff_due_records", queue="high") == 1
    assert value(samples, "handoff_due_records", queue="low") == 0
    assert value(samples, "handoff_oldest_due_seconds", queue="default") == pytest.approx(300, abs=1)
    assert value(samples, "handoff_oldest_due_seconds", queue="high") == pytest.approx(45, abs=1)
    assert value(samples, "handoff_oldest_due_seconds", queue="low") == 0
    assert value(samples, "handoff_inbox_pending") == 2
    assert value(samples, "handoff_inbox_oldest_seconds") == pytest.approx(90, abs=1)
    # calls over the last hour (the two-hour-old one is not counted)
    assert value(samples, "handoff_attempts_total", system="netsuite", outcome="ok") == 3
    assert value(samples, "handoff_attempts_total", system="netsuite", outcome="transient") == 1
    assert value(samples, "handoff_attempts_total", system="kantata", outcome="started") == 1
    assert value(samples, "handoff_attempts_total", system="hubspot", outcome="transient") == 0
    assert value(samples, "handoff_attempt_duration_seconds", system="netsuite", quantile="0.5") == \
        pytest.approx(0.25)
    assert value(samples, "handoff_attempt_duration_seconds_count", system="netsuite") == 4
    assert value(samples, "handoff_attempt_duration_seconds_sum", system="netsuite") == pytest.approx(5.6)
    assert value(samples, "handoff_attempt_duration_seconds_count", system="kantata") == 1  # "started": no time
    # systems
    assert value(samples, "handoff_connection_paused", connection="netsuite") == 1
    assert value(samples, "handoff_connection_paused", connection="kantata") == 1
    assert value(samples, "handoff_connection_paused", connection="hubspot") == 0
    assert value(samples, "handoff_connection_circuit_open", connection="netsuite") == 1
    assert value(samples, "handoff_connection_circuit_open", connection="kantata") == 0
    assert value(samples, "handoff_connection_consecutive_failures", connection="netsuite") == 5
    # Redis
    assert value(samples, "handoff_redis_up") == 1
    assert value(samples, "handoff_queue_depth", queue="low") == 2
    assert value(samples, "handoff_queue_depth", queue="high") == 0


def test_label_values_and_help_are_escaped():
    m = metrics_module.Exposition()
    m.family("x_total", "gauge", "a \\ back\nslash")
    m.add("x_total", 1.5, {"connection": 'we"ird\\slug\n'})
    text = m.render()
    assert text == ('# HELP x_total a \\\\ back\\nslash\n# TYPE x_total gauge\n'
                    'x_total{connection="we\\"ird\\\\slug\\n"} 1.5\n')
    assert parse(text)


@pytest.mark.django_db
def test_metrics_cost_a_constant_number_of_queries(data_set, connections):
    with CaptureQueriesContext(db) as small:
        metrics_module.collect()
    # ten times the data, more workflows' worth of statuses, more systems: the same queries
    hubspot = connections["hubspot"]
    SyncRecord.objects.bulk_create([
        SyncRecord(workflow="quote_to_project", stage="validate", status=s, source_connection=hubspot,
                   source_key=f"bulk:{i}", next_attempt_at=timezone.now(), priority=1 + i % 3)
        for i, s in enumerate(["pending", "held", "retrying", "succeeded"] * 25)])
    r = SyncRecord.objects.first()
    Attempt.objects.bulk_create([Attempt(record=r, stage="x", system=f"system{i % 7}", method="GET", url="/",
                                         duration_ms=i, outcome="ok") for i in range(100)])
    with CaptureQueriesContext(db) as large:
        text = metrics_module.collect()
    assert len(large.captured_queries) == len(small.captured_queries) <= 8
    assert 'system="system6"' in text


@pytest.mark.django_db
def test_metrics_answer_without_redis(connections, monkeypatch):
    from redis.exceptions import ConnectionError as RedisConnectionError

    def down(*a, **k):
        raise RedisConnectionError("down")

    monkeypatch.setattr(django_rq, "get_queue", down)
    samples = parse(metrics_module.collect())
    assert value(samples, "handoff_redis_up") == 0
    assert value(samples, "handoff_dead_letters") == 0


@pytest.mark.django_db
def test_metrics_need_a_staff_session_when_no_token_is_configured(client, alice, carol):
    anonymous = client.get("/metrics")
    assert anonymous.status_code == 401  # not a redirect to the login page
    assert anonymous["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer anything").status_code == 401

    client.force_login(alice)  # PMO, not staff
    assert client.get("/metrics").status_code == 403

    client.force_login(carol)  # integration admin, staff
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "no-cache" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]
    assert "# TYPE handoff_due_records gauge" in response.content.decode()


@pytest.mark.django_db
@override_settings(HANDOFF_METRICS_TOKEN="scrape-secret-1")
def test_metrics_accept_the_configured_bearer_token(client, connections):
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret-1")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = parse(response.content.decode())
    assert value(samples, "handoff_connection_paused", connection="hubspot") == 0

    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret-2").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret-1é").status_code == 401
    assert client.get("/metrics").status_code == 401


@pytest.mark.django_db
@override_settings(HANDOFF_METRICS_TOKEN="old-token, new-token")
def test_two_metrics_tokens_are_accepted_while_one_is_rotated(client, connections):
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer old-token").status_code == 200
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer new-token").status_code == 200
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer old-token, new-token").status_code == 401
