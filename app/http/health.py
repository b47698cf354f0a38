"""Operations: liveness, readiness, metrics and the API description."""
from flask import Blueprint, current_app, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from ..store.db import engine
from ..errors import problem_response
from .openapi import document

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
    if any(value != "ok" for value in checks.values()):
        # An error like any other (problem details), with the checks as an extension.
        return problem_response(
            503, "Not ready: " + ", ".join(f"{k} {v}" for k, v in checks.items() if v != "ok") + ".",
            "not-ready", checks=checks,
        )
    return jsonify({"status": "ready", "checks": checks})


@bp.get("/metrics")
def metrics():
    """Prometheus text format; under several workers, the sum of all of them."""
    registry = current_app.extensions["metrics"].exposition_registry()
    headers = {"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"}
    return generate_latest(registry), 200, headers


@bp.get("/openapi.json")
def openapi():
    """The OpenAPI 3.1 description of every endpoint."""
    return jsonify(document(current_app)), 200, {"Cache-Control": "no-cache"}
