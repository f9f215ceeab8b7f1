"""Load balancer probes."""

import django_rq
from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache


@never_cache
@login_not_required
def healthz(request):
    """The process is up."""
    return JsonResponse({"status": "ok"})


@never_cache
@login_not_required
def readyz(request):
    """PostgreSQL and Redis are reachable: 200, else 503 saying which is not."""
    checks = {}
    try:
        with connection.cursor() as cur:
            cur.execute("select 1")
        checks["database"] = "ok"
    except Exception as exc:  # any failure means not ready
        checks["database"] = f"error: {exc.__class__.__name__}"
    try:
        django_rq.get_connection("default").ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"error: {exc.__class__.__name__}"
    ok = all(v == "ok" for v in checks.values())
    return JsonResponse({"status": "ok" if ok else "unavailable", **checks}, status=200 if ok else 503)
