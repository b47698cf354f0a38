"""Operations: liveness, readiness and metrics."""
from flask import Blueprint, current_app, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from ..db import engine

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """The process is alive and answering; touches nothing else."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    """The database answers and, on PostgreSQL, the change listener is connected."""
    checks = {"database": "ok", "listener": "ok"}
    try:
        with engine().connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as error:  # any failure means "not ready", with the reason
        checks["database"] = f"unavailable: {error.__class__.__name__}"
    hub = current_app.extensions["hub"]
    if hub.closing:
        checks["listener"] = "shutting down"
    elif not hub.ready:
        checks["listener"] = "reconnecting"
    ready = all(value == "ok" for value in checks.values())
    return jsonify({"status": "ready" if ready else "unavailable", "checks": checks}), (
        200 if ready else 503
    )


@bp.get("/metrics")
def metrics():
    registry = current_app.extensions["metrics"].registry
    return generate_latest(registry), 200, {"Content-Type": CONTENT_TYPE_LATEST}
