"""Request ids, structured logs, security headers and Prometheus metrics."""
import json
import logging
import re
import secrets
import time

from flask import g, request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "cross-origin",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' https: data:; style-src 'self'; "
        "script-src 'self'; connect-src 'self'; frame-ancestors *; base-uri 'none'"
    ),
}


class Metrics:
    """The service's metrics, in a registry of the app's own."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.waiting = Gauge(
            "community_sync_waiting_polls", "Long polls waiting in this process.",
            registry=self.registry, multiprocess_mode="livesum",
        )
        self.answers = Counter(
            "community_sync_poll_answers_total", "Poll answers by result.", ["result"],
            registry=self.registry,
        )
        self.wakeups = Counter(
            "community_sync_wakeups_total", "Users woken by a batched re-read.",
            registry=self.registry,
        )
        self.listener_reconnects = Counter(
            "community_sync_listener_reconnects_total", "Times the LISTEN connection was lost.",
            registry=self.registry,
        )
        self.wake_latency = Histogram(
            "community_sync_wake_latency_seconds", "From a change's commit to its poll answer.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.queries = Counter(
            "community_sync_db_queries_total", "SQL statements sent to the database.",
            registry=self.registry,
        )


class JsonFormatter(logging.Formatter):
    def format(self, record):
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def init_app(app):
    app.extensions["metrics"] = Metrics()

    @app.before_request
    def assign_request_id():
        supplied = request.headers.get("X-Request-ID", "")
        g.request_id = supplied if REQUEST_ID.fullmatch(supplied) else secrets.token_hex(8)
        g.started = time.perf_counter()

    @app.after_request
    def finish(response):
        response.headers["X-Request-ID"] = g.get("request_id", "")
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        result = response.headers.get("X-Poll-Result")
        if result:
            app.extensions["metrics"].answers.labels(result).inc()
        return response
