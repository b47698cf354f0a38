"""The designs the long poll is measured against, served by the same gunicorn setup.

- ``gunicorn 'bench.baselines:naive_app()'`` is the real application plus
  ``GET /bench/naive-poll``: the long poll such projects write first, which
  re-reads the user's state from the database every second while it waits.
  It answers like the real poll (``status``, ``hash``, ``cursor``,
  ``communities``) so the same load generator drives both.
- ``gunicorn 'bench.baselines:hello_app()'`` is a bare Flask app with one view
  returning a short text (and ``/readyz``, for the harness): the framework's
  ceiling for request throughput.
  ``/bench/hello`` on the first is the same view behind this application's
  request hooks.
"""
import time

import gevent
from flask import Blueprint, Flask, current_app, jsonify, request

from app import create_app
from app.store import feed
from app.auth import authenticate, provision
from app.store.db import read_transaction

bp = Blueprint("bench", __name__, url_prefix="/bench")

RECHECK_INTERVAL = 1.0


@bp.get("/hello")
def hello_in_app():
    return "Hello, World!"


@bp.get("/naive-poll")
def naive_poll():
    """Wait by asking the database again every second: one query per waiter per second."""
    identity = authenticate()
    provision(identity)
    client_hash = request.args.get("hash")
    timeout = min(int(request.args.get("timeout", "25")), current_app.config["POLL_MAX_TIMEOUT"])
    deadline = time.monotonic() + timeout
    gauge = current_app.extensions["metrics"].waiting
    key = current_app.extensions["cursor_key"]
    gauge.inc()
    try:
        while True:
            with read_transaction() as session:
                state = feed.read_state(session, identity.user_id)
            if client_hash != state.hash:
                status = "changed" if client_hash else "reset"
                return jsonify({
                    "status": status, "cursor": key.encode(state.cursor), "hash": state.hash,
                    "communities": state.communities,
                })
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return jsonify({"status": "unchanged", "cursor": key.encode(state.cursor), "hash": state.hash})
            gevent.sleep(min(RECHECK_INTERVAL, remaining))
    finally:
        gauge.dec()


def naive_app():
    application = create_app()
    application.register_blueprint(bp)
    return application


def bare_flask():
    """A Flask app with nothing but ``/readyz``, which the harness waits for before using any server."""
    application = Flask(__name__)
    application.add_url_rule("/readyz", "readyz", lambda: "ready")
    return application


def hello_app():
    application = bare_flask()

    @application.get("/bench/hello")
    def hello_view():
        return "Hello, World!"

    return application


def bare_wait_app():
    """The floor for a held request: a bare Flask view that only waits on an event.

    ``GET /bench/wait?timeout=N`` answers like a poll (``status``, ``cursor``,
    ``hash``) after N seconds, at once when N is 0; ``POST /bench/wake`` wakes
    every waiting one, which answers ``changed`` (the floor for a fan-out);
    the waiting ones are counted in the service's metric, which the harness
    reads from the server's metrics directory.
    """
    from gevent.event import Event
    from prometheus_client import CollectorRegistry, Gauge

    application = bare_flask()
    wake = [Event()]
    waiting = Gauge("community_sync_waiting_polls", "Views waiting.", registry=CollectorRegistry(),
                    multiprocess_mode="livesum")

    @application.get("/bench/wait")
    def wait_view():
        timeout = int(request.args.get("timeout", "25"))
        status = "reset"
        if timeout:
            with waiting.track_inprogress():
                status = "changed" if wake[0].wait(timeout) else "unchanged"
        return jsonify({"status": status, "cursor": "c", "hash": "h"})

    @application.post("/bench/wake")
    def wake_view():
        woken, wake[0] = wake[0], Event()
        woken.set()
        return "", 204

    return application
