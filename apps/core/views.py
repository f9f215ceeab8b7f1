"""Load balancer probes and the Prometheus scrape endpoint."""

import hmac

import django_rq
from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache

# A queue must not be a cache: with any other policy Redis may evict queued jobs and wake-up keys under memory
# pressure. (Nothing is lost — the sweeper re-sends wake-ups from PostgreSQL — but work stalls silently.)
REQUIRED_REDIS_POLICY = "noeviction"


@never_cache
@login_not_required
def healthz(request):
    """The process is up."""
    return JsonResponse({"status": "ok"})


def redis_maxmemory_policy(conn) -> str:
    """Redis's `maxmemory-policy`, or "unknown" when CONFIG is not allowed (e.g. a managed Redis renames it)."""
    from redis.exceptions import ResponseError

    try:
        return str(conn.config_get("maxmemory-policy").get("maxmemory-policy") or "unknown")
    except ResponseError:
        return "unknown"


@never_cache
@login_not_required
def readyz(request):
    """PostgreSQL and Redis are reachable, Redis will not evict jobs, and at least HANDOFF_MIN_LIVE_WORKERS workers
    have a live heartbeat: 200, else 503 saying what is wrong (naming the workers whose heartbeat stopped)."""
    from .workers import worker_liveness

    checks = {}
    try:
        with connection.cursor() as cur:
            cur.execute("select 1")
        checks["database"] = "ok"
    except Exception as exc:  # any failure means not ready
        checks["database"] = f"error: {exc.__class__.__name__}"
    policy = "unknown"
    extra = {}
    try:
        conn = django_rq.get_connection("default")
        conn.ping()
        policy = redis_maxmemory_policy(conn)
        if policy in (REQUIRED_REDIS_POLICY, "unknown"):
            checks["redis"] = "ok"
        else:
            checks["redis"] = (f"error: maxmemory-policy is {policy!r}; it must be {REQUIRED_REDIS_POLICY!r} "
                               f"(a queue must not be a cache: Redis could evict queued jobs)")
        live, dead = worker_liveness(conn)
        needed = settings.HANDOFF_MIN_LIVE_WORKERS
        checks["workers"] = "ok" if len(live) >= needed else f"error: {len(live)} live, at least {needed} needed"
        extra.update(workers_live=len(live), workers_dead=dead)
    except Exception as exc:
        checks["workers" if "redis" in checks else "redis"] = f"error: {exc.__class__.__name__}"
    ok = all(v == "ok" for v in checks.values())
    return JsonResponse({"status": "ok" if ok else "unavailable", **checks, "redis_maxmemory_policy": policy, **extra},
                        status=200 if ok else 503)


def _metrics_refusal(status: int, message: str) -> HttpResponse:
    response = HttpResponse(message + "\n", status=status, content_type="text/plain; charset=utf-8")
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="handoff-metrics"'
    return response


@never_cache
@login_not_required
def metrics(request):
    """Prometheus text format 0.0.4. Readable with `Authorization: Bearer <one of HANDOFF_METRICS_TOKEN>`, or by a
    staff user's session (the only way when no token is configured); 401 without credentials or with a wrong
    token, 403 for a user who is not staff."""
    from .metrics import CONTENT_TYPE, collect

    tokens = [t.strip() for t in settings.HANDOFF_METRICS_TOKEN.split(",") if t.strip()]  # several: rotation
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        given_bytes = given.strip().encode()
        # compare with every token (no early exit), in constant time
        if not given_bytes or not sum(hmac.compare_digest(given_bytes, t.encode()) for t in tokens):
            return _metrics_refusal(401, "invalid bearer token")
    elif not request.user.is_authenticated:
        return _metrics_refusal(401, "authentication required: a bearer token or a staff session")
    elif not request.user.is_staff:
        return _metrics_refusal(403, "only staff users may read the metrics")
    return HttpResponse(collect(), content_type=CONTENT_TYPE)
