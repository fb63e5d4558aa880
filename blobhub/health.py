"""`/healthz`: whether the database, the broker and the object storage answer."""

import logging

from django.db import connection
from django.http import HttpRequest, JsonResponse

logger = logging.getLogger("blobhub.health")


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def check_broker() -> None:
    from blobhub.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)


# Apps add their own: the blobs app registers "storage" (its backend's check) from ready().
CHECKS = {"database": check_database, "broker": check_broker}


def healthz(request: HttpRequest) -> JsonResponse:
    checks, failed = {}, []
    for name, check in CHECKS.items():
        try:
            check()
            checks[name] = "ok"
        except Exception as exc:  # any failure means unhealthy; the log has the reason
            logger.warning("health check %s failed: %s", name, type(exc).__name__)
            checks[name] = "failed"
            failed.append({"path": name, "message": f"The {name} does not answer."})
    if failed:
        body = {
            "status": "error",
            "error": "unhealthy",
            "message": "Some dependencies do not answer.",
            "details": failed,
            "checks": checks,
        }
        return JsonResponse(body, status=503)
    return JsonResponse({"status": "success", "checks": checks})
