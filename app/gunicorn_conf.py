"""gunicorn settings for long polls; command-line flags override.

From the repository root, ``gunicorn wsgi:app`` reads them through
gunicorn.conf.py there; an installed copy names this module:
``gunicorn -c python:app.gunicorn_conf app.wsgi:app``.

Sized so a worker holds thousands of waiting polls: gevent workers, a
connection limit above POLL_MAX_WAITING (so the over-capacity 503 can still be
answered), and a graceful timeout above the longest wait. Every value can be
set from the environment, parsed by the app's own table (app/settings.py);
README.md lists them.
"""
import gc
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

# Standard library only: this runs in the master, before the gevent workers
# monkey-patch, and must not load Flask or SQLAlchemy there (app/settings.py).
from app import settings

try:
    # Checked here, once, rather than by every worker as it loads the app:
    # gunicorn would print each worker's refusal and then a traceback of its own.
    settings.check()
    _server = settings.server()
except settings.SettingError as error:
    sys.exit(f"Error: {error}")

# Metrics from every worker: prometheus_client keeps per-process files in this
# directory and /metrics sums them. It must be in the environment before any
# process imports prometheus_client, so it is set while this file is read (the
# master reads it again on a reload and then finds it set).
if not _server["PROMETHEUS_MULTIPROC_DIR"]:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="community-sync-metrics-")
    os.environ["COMMUNITY_SYNC_OWN_METRICS_DIR"] = os.environ["PROMETHEUS_MULTIPROC_DIR"]

bind = _server["BIND"]
# gunicorn's gevent worker, answering its own errors as problem+json, where
# waiting polls are parked sockets (PARKED_POLLS, the default) or greenlets (app/live/worker.py).
worker_class = "app.live.worker.ParkingWorker" if _server["PARKED_POLLS"] else "app.live.worker.ProblemWorker"
workers = _server["WEB_CONCURRENCY"]
# Each waiting poll is one connection. Keep this above POLL_MAX_WAITING.
worker_connections = _server["WORKER_CONNECTIONS"]
# The longest poll waits POLL_MAX_TIMEOUT (55 s by default); a reload or a
# SIGTERM answers waiting polls at once (see post_worker_init), and this is
# only the bound for whatever else is in flight.
graceful_timeout = _server["GRACEFUL_TIMEOUT"]
# The gevent worker heartbeats every second whatever its requests do.
timeout = _server["WORKER_TIMEOUT"]
# Longer than a typical load balancer's idle timeout (60 s), so the balancer
# closes idle connections first and never races a reused one.
keepalive = _server["KEEPALIVE"]
# Never preload with gevent: the app (its engine, hub and listener) must be
# built after the fork, in the patched worker.
preload_app = False
accesslog = "-" if _server["ACCESS_LOG"] else None
errorlog = "-"
loglevel = _server["LOG_LEVEL"]
limit_request_line = 8190
limit_request_fields = 100
# Above the application's own limit (8 KiB a field, app/http/request_limits.py), which
# refuses with problem+json; this is only the backstop for larger ones.
limit_request_field_size = 16380
forwarded_allow_ips = _server["FORWARDED_ALLOW_IPS"]
# gunicorn's control socket (gunicornc: worker counts, reload, shutdown) sits
# by default at one path per user ($XDG_RUNTIME_DIR/gunicorn.ctl or
# ~/.gunicorn/gunicorn.ctl): two instances on one host take it from each
# other, and the first to stop removes the other's. Nothing here needs it (a
# deploy drives gunicorn with signals), so there is none unless CONTROL_SOCKET
# names a path, which must then be this instance's own.
control_socket_disable = not _server["CONTROL_SOCKET"]
if _server["CONTROL_SOCKET"]:
    control_socket = _server["CONTROL_SOCKET"]
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "app.logs.JsonFormatter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"},
    },
    "root": {"level": loglevel.upper(), "handlers": ["console"]},
    "loggers": {
        # Each worker checks the embedded database's migrations on start.
        "alembic": {"level": "WARNING"},
        "gunicorn.error": {"level": loglevel.upper(), "handlers": ["console"], "propagate": False},
        "gunicorn.access": {
            "level": "INFO" if accesslog else "WARNING", "handlers": ["console"], "propagate": False,
        },
    },
}


# Container objects allocated (net) between two young collections; Python's default is 700.
GC_YOUNG_THRESHOLD = 50_000


def post_worker_init(worker):
    """Warn when demo mode is reachable from elsewhere; drain on SIGTERM (see below).

    The application is loaded by now: its few hundred thousand objects
    (modules, the ORM's mappings, compiled routes) live as long as the worker,
    so they leave the garbage collector's generations. Otherwise each full
    collection walks them all again; one falling inside a fan-out held every
    answer back for about half a second (docs/benchmarks.md, scenario 3).

    The waiting polls are long-lived too (about 30 tracked objects each), and
    a fan-out allocates a few hundred thousand short-lived ones: at Python's
    default threshold that set off about 280 young and two full collections
    in every fan-out to 10,000, 0.5-1.1 s of it. Young collections every
    ``GC_YOUNG_THRESHOLD`` allocations instead take 3-4 and about 0.1 s, and
    a full one comes every few dozen fan-outs rather than twice in each.
    """
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    app = worker.wsgi if hasattr(worker.wsgi, "extensions") else None
    if app is not None:
        warning = settings.exposure_warning(app.config, worker.cfg.address)
        if warning:
            worker.log.warning(warning)
    _drain_on_sigterm(worker)


def _drain_on_sigterm(worker):
    """Drain on SIGTERM (shutdown, reload) and SIGINT (Ctrl-C) instead of holding or dropping polls.

    gunicorn's own SIGTERM handler only stops accepting and waits for every
    connection to go: waiting polls would sit out their timeout, and idle
    keep-alive connections would hold the worker for the whole graceful
    timeout. Its SIGINT handler is a quick exit, which drops every waiting
    poll (an empty reply to each client); Ctrl-C in a terminal sends SIGINT
    to the master and the workers alike. Draining the hub answers each
    waiting poll ``unchanged`` at once (with ``Connection: close``); once no
    request is in flight the worker leaves, closing the idle connections,
    whose clients simply reconnect. A second SIGINT, while draining, is
    gunicorn's quick exit.
    """
    import gevent

    hub = worker.wsgi.extensions.get("hub") if hasattr(worker.wsgi, "extensions") else None
    if hub is None:
        return
    original = worker.handle_exit
    draining = []

    def drain_and_leave():
        hub.drain(timeout=worker.cfg.graceful_timeout)
        gevent.sleep(0.2)  # let the last answers reach their sockets
        os.kill(os.getpid(), signal.SIGQUIT)

    def handle_exit(sig, frame):
        if draining:
            # Ctrl-C and the master's SIGTERM both arrive: one drain. A
            # second Ctrl-C asks not to wait.
            if sig == signal.SIGINT:
                worker.handle_quit(sig, frame)
            return
        draining.append(sig)
        original(sig, frame)
        gevent.spawn(drain_and_leave)

    signal.signal(signal.SIGTERM, handle_exit)
    signal.signal(signal.SIGINT, handle_exit)


def on_starting(server):
    """Start from empty metrics: files left by an earlier run would be summed in.

    And take SIGINT (Ctrl-C) as SIGTERM: gunicorn's master would otherwise
    quit its workers at once, dropping their waiting polls (see
    _drain_on_sigterm).
    """
    server.handle_int = server.handle_term
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()


def child_exit(server, worker):
    """A worker is gone (exit, crash, SIGKILL): its live gauges stop counting."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    own = os.environ.get("COMMUNITY_SYNC_OWN_METRICS_DIR")
    if own and own == os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        shutil.rmtree(own, ignore_errors=True)
