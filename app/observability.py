"""Request ids, security headers and Prometheus metrics (the JSON log lines: app/logs.py).

Metrics under several gunicorn workers: each worker is its own process, so a
scrape reaching one of them would see only its share. With
``PROMETHEUS_MULTIPROC_DIR`` set (gunicorn.conf.py sets it when the
environment does not), prometheus_client keeps every value in a per-process
file there and ``/metrics`` adds them up across the live and dead workers;
gauges count only live ones (``livesum``), or show the worst live one (``livemax``).
"""
import collections
import os
import re
import secrets
import time
from contextlib import contextmanager

from flask import g, request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess, values

from .live.parking import PARKED_KEY

REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
POLL_ENDPOINT = "community_changes.poll"

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "cross-origin",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' https: data:; style-src 'self'; "
        "script-src 'self'; connect-src 'self'; frame-ancestors *; base-uri 'none'"
    ),
    # Only honoured over HTTPS, where a deployment behind TLS wants it.
    "Strict-Transport-Security": "max-age=31536000",
}
SECURITY_HEADER_NAMES = {name.lower(): name for name in SECURITY_HEADERS}


def multiprocess_dir():
    """The shared metrics directory of a multi-worker server, or None."""
    return os.environ.get(MULTIPROC_ENV) or None


class Metrics:
    """The service's metrics, in a registry of the app's own."""

    def __init__(self):
        if multiprocess_dir() and values.ValueClass is values.MutexValue:
            # prometheus_client picks its value store when first imported; if
            # that happened before the directory was set, pick again so this
            # worker's values reach the shared files.
            values.ValueClass = values.get_value_class()
        self.registry = CollectorRegistry()
        self._deferred = None  # see deferred()
        self.waiting = Gauge(
            "community_sync_waiting_polls", "Long polls waiting, across live workers.",
            registry=self.registry, multiprocess_mode="livesum",
        )
        self.parked = Gauge(
            "community_sync_parked_polls",
            "Of the waiting polls, those parked as a socket and a record (PARKED_POLLS), across live workers.",
            registry=self.registry, multiprocess_mode="livesum",
        )
        self.answers = Counter(
            "community_sync_poll_answers_total",
            "Poll answers by result: changed, unchanged, reset; refused (429/503) and error.",
            ["result"], registry=self.registry,
        )
        self.wakeups = Counter(
            "community_sync_wakeups_total", "Users woken by a batched re-read.",
            registry=self.registry,
        )
        # What the capacity plan in docs/operations.md reads.
        self.hints = Counter(
            "community_sync_hints_total",
            "Hints that the change log may have grown, by source: notify (LISTEN), head "
            "(a head check that found rows), write (this worker's own write).",
            ["source"], registry=self.registry,
        )
        self.wake_source_reconnects = Counter(
            "community_sync_wake_source_reconnects_total",
            "Times the wake source's connection (LISTEN, head check, or head-watch candidate) was lost.",
            registry=self.registry,
        )
        self.wake_source_up = Gauge(
            "community_sync_wake_source_up",
            "Workers whose wake source is connected, by source (notify, head, watcher; head-watch: "
            "the watcher's candidates).",
            ["source"], registry=self.registry, multiprocess_mode="livesum",
        )
        self.head_checks = Histogram(
            "community_sync_head_check_seconds",
            "How long one check of the change log's head took (WAKE_SOURCE=head, or the watcher's).",
            buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=self.registry,
        )
        self.head_watcher = Gauge(
            "community_sync_head_watcher",
            "1 in the worker elected to watch the log's head for the deployment (WAKE_SOURCE=watcher).",
            registry=self.registry, multiprocess_mode="livesum",
        )
        self.rereads = Histogram(
            "community_sync_reread_rows",
            "Change-log rows read by each batched re-read (its count: re-reads).",
            buckets=(0, 1, 2, 5, 10, 50, 100, 500, 1000, 5000),
            registry=self.registry,
        )
        self.admission_reads = Histogram(
            "community_sync_admission_read_polls",
            "Arriving polls read by each admission read: 1 alone, more when arrivals queued "
            "for a batch (its count: admission reads).",
            buckets=(1, 2, 5, 10, 50, 100, 500, 1000, 2000),
            registry=self.registry,
        )
        self.delivery_lag = Histogram(
            "community_sync_delivery_lag_seconds",
            "From a change being recorded (its row's at: the writing transaction's start, by the "
            "database's clock) to the poll answer that carries it being made; once per answer "
            "that carries changes, for its oldest. answered: at_once (the poll's own read found "
            "it) or after_wait (woken, held for a coalescing window, in a greenlet or parked).",
            ["answered"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        for answered in ("at_once", "after_wait"):
            self.delivery_lag.labels(answered)  # both series from the start, for ratios
        self.oldest_owed = Gauge(
            "community_sync_oldest_owed_change_seconds",
            "Age of the oldest change a worker knows of and has not yet answered a waiting poll "
            "with (0: it owes nothing); the worst live worker.",
            registry=self.registry, multiprocess_mode="livemax",
        )
        self.coalesce_window = Gauge(
            "community_sync_activity_coalesce_seconds",
            "The window a burst of activity is held to one wake-up per user in: ACTIVITY_COALESCE, "
            "wider (up to ACTIVITY_COALESCE_MAX) while answering woken polls costs a worker more "
            "than half its time; the widest live worker.",
            registry=self.registry, multiprocess_mode="livemax",
        )
        self.queries = Counter(
            "community_sync_db_queries_total", "SQL statements sent to the database.",
            registry=self.registry,
        )

    def add(self, metric, amount=1):
        """``metric.inc(amount)`` (a gauge's may be negative): now, or as ``deferred()`` ends."""
        if self._deferred is None:
            metric.inc(amount)
        else:
            self._deferred[metric] += amount

    @contextmanager
    def deferred(self):
        """Hold back what ``add()`` is given meanwhile, and apply it once a metric on leaving.

        Each change of a value is a write under a lock to this worker's file
        under ``PROMETHEUS_MULTIPROC_DIR``: the answerer answering a batch of
        ten thousand parked polls changes three of them once each, not ten
        thousand times. Whatever the block does, the changes are applied.
        """
        if self._deferred is not None:
            yield  # the outermost block applies them
            return
        self._deferred = collections.Counter()
        try:
            yield
        finally:
            held, self._deferred = self._deferred, None
            for metric, amount in held.items():
                if amount:
                    metric.inc(amount)

    def exposition_registry(self):
        """What ``/metrics`` serves: every worker's values when they share a directory."""
        if multiprocess_dir():
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return registry
        return self.registry

    def observe_poll(self, response):
        """Count a poll's answer by its result."""
        result = response.headers.get("X-Poll-Result")
        if result is None:
            result = "refused" if response.status_code in (429, 503) else "error"
        self.add(self.answers.labels(result))

    def observe_delivery(self, oldest, now, waited):
        """An answer made at ``now`` carries changes, the oldest recorded at ``oldest``."""
        answered = "after_wait" if waited else "at_once"
        self.delivery_lag.labels(answered).observe(max(0.0, (now - oldest).total_seconds()))


def init_app(app):
    app.extensions["metrics"] = Metrics()

    @app.before_request
    def assign_request_id():
        supplied = request.headers.get("X-Request-ID", "")
        g.request_id = supplied if REQUEST_ID.fullmatch(supplied) else secrets.token_hex(8)
        g.started = time.perf_counter()

    @app.after_request
    def finish(response):
        headers = response.headers
        headers["X-Request-ID"] = g.get("request_id", "")
        # Those the view did not set, found in one pass over the headers (a
        # fan-out answers thousands of polls in a row).
        missing = dict(SECURITY_HEADER_NAMES)
        for name in headers.keys():
            missing.pop(name.lower(), None)
        headers.extend((name, SECURITY_HEADERS[name]) for name in missing.values())
        if response.status_code in (204, 304):
            # No content to type: Flask's default (text/html) would describe
            # nothing, and a cache may take a 304's headers for its stored answer's.
            headers.pop("Content-Type", None)
        # A parked poll is counted when the hub answers it (app/live/parking.py).
        if request.endpoint == POLL_ENDPOINT and PARKED_KEY not in request.environ:
            app.extensions["metrics"].observe_poll(response)
        return response
