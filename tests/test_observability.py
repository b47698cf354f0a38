"""Metrics, request ids, structured logs and the health endpoints."""
import json
from concurrent.futures import ThreadPoolExecutor
import logging
import re
import time

import gevent
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from app.logs import JsonFormatter
from app.observability import Metrics
from conftest import SECRET, eventually, until_blocked
from harness.servers import Server, flask, wait_for

RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
NAMES = [
    "community_sync_waiting_polls",
    "community_sync_parked_polls",
    "community_sync_poll_answers_total",
    "community_sync_wakeups_total",
    "community_sync_wake_source_reconnects_total",
    "community_sync_delivery_lag_seconds",
    "community_sync_oldest_owed_change_seconds",
    "community_sync_db_queries_total",
    "community_sync_hints_total",
    "community_sync_wake_source_up",
    "community_sync_head_check_seconds",
    "community_sync_reread_rows",
]


def samples(text):
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.name + "".join(f"|{k}={v}" for k, v in sorted(sample.labels.items()))
            found[key] = found.get(key, 0) + sample.value
    return found


def test_metrics_are_prometheus_text_with_every_series(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    text = response.get_data(as_text=True)
    families = {family.name for family in text_string_to_metric_families(text)}
    for name in NAMES:
        assert name.removesuffix("_total") in families, name


def test_poll_answers_are_counted_by_result(client, auth):
    ada = auth("u-ada")
    first = client.get("/community-changes/poll?timeout=0", headers=ada).get_json()
    client.get(f"/community-changes/poll?timeout=0&cursor={first['cursor']}", headers=ada)
    client.get("/community-changes/poll?timeout=0&cursor=garbage", headers=ada)
    client.get("/community-changes/poll?timeout=0")
    found = samples(client.get("/metrics").get_data(as_text=True))
    assert found["community_sync_poll_answers_total|result=reset"] == 1
    assert found["community_sync_poll_answers_total|result=unchanged"] == 1
    assert found["community_sync_poll_answers_total|result=error"] == 2
    assert found["community_sync_db_queries_total"] > 0


LAG = "community_sync_delivery_lag_seconds"
OWED = "community_sync_oldest_owed_change_seconds"
AGO = 30  # how old a backdated change is, in seconds


def lag(found, answered):
    """(count, sum) of the delivery lag observed for answers made ``answered``."""
    return (found[f"{LAG}_count|answered={answered}"], found[f"{LAG}_sum|answered={answered}"])


def test_an_answer_at_once_measures_the_lag_of_its_oldest_change(seeded, client, auth, database):
    """A poll whose own read finds changes answers at once: measured from the oldest it carries."""
    ada = auth("u-ada")
    cursor = client.get("/me/communities", headers=ada).get_json()["cursor"]
    database.backdated_activity("c-rust", "p-old", AGO)
    database.psql("INSERT INTO activity (community_id, kind, ref) VALUES ('c-rust', 'post_created', 'p-new')")
    answer = client.get(f"/community-changes/poll?timeout=10&cursor={cursor}", headers=ada).get_json()
    assert [c["ref"] for c in answer["changes"]] == ["p-old", "p-new"]
    found = samples(client.get("/metrics").get_data(as_text=True))
    count, total = lag(found, "at_once")
    assert count == 1 and total >= AGO
    assert lag(found, "after_wait") == (0, 0)


def test_a_woken_poll_measures_the_lag_after_its_wait_and_the_gauges_return_to_zero(
        seeded, client, auth, database):
    ada = auth("u-ada")
    cursor = client.get("/me/communities", headers=ada).get_json()["cursor"]
    poller = until_blocked(seeded.extensions["hub"], gevent.spawn(
        client.get, f"/community-changes/poll?timeout=10&cursor={cursor}", headers=ada))
    assert samples(client.get("/metrics").get_data(as_text=True))["community_sync_waiting_polls"] == 1
    database.backdated_activity("c-rust", "p-old", AGO)
    answer = poller.get(timeout=10)
    assert answer.headers["X-Poll-Result"] == "changed"
    found = samples(client.get("/metrics").get_data(as_text=True))
    count, total = lag(found, "after_wait")
    assert count == 1 and total >= AGO
    assert lag(found, "at_once") == (0, 0)
    assert found["community_sync_wakeups_total"] >= 1
    assert found["community_sync_waiting_polls"] == 0
    assert found[OWED] == 0


def test_activity_held_back_by_a_poll_is_owed_until_answered_and_its_lag_counts_the_pause(
        app_factory, auth, database):
    """A re-poll whose read finds only activity moments after an answer holds it for the
    coalescing window: the worker owes it meanwhile, and the answer's lag includes the pause."""
    # No safety-net re-read: what reports the age meanwhile is the worker's once-a-second report.
    app = app_factory(ACTIVITY_COALESCE=3600, SAFETY_NET_INTERVAL=3600)
    app.test_cli_runner().invoke(args=["seed-demo"])
    hub, client, ada = app.extensions["hub"], app.test_client(), auth("u-ada")

    def owed():
        return samples(client.get("/metrics").get_data(as_text=True))[OWED]

    cursor = client.get("/me/communities", headers=ada).get_json()["cursor"]
    database.psql("INSERT INTO activity (community_id, kind, ref) VALUES ('c-rust', 'post_created', 'p-0')")
    first = client.get(f"/community-changes/poll?timeout=10&cursor={cursor}", headers=ada).get_json()
    assert [c["ref"] for c in first["changes"]] == ["p-0"]  # the window starts
    database.backdated_activity("c-rust", "p-old", AGO)
    poller = until_blocked(hub, gevent.spawn(
        client.get, f"/community-changes/poll?timeout=10&cursor={first['cursor']}", headers=ada))
    assert not poller.dead, "answered at once, inside the window"
    assert eventually(lambda: owed() >= AGO, 5)
    # Anything but activity ends the pause.
    database.psql("INSERT INTO memberships (user_id, community_id) VALUES ('u-ada', 'c-go')")
    hub.reread.refresh()  # SQLite has no wake source
    answer = poller.get(timeout=10).get_json()
    assert [(c["type"], c.get("ref")) for c in answer["changes"]] == [("activity", "p-old"), ("joined", None)]
    assert owed() == 0
    count, total = lag(samples(client.get("/metrics").get_data(as_text=True)), "after_wait")
    assert count == 1 and total >= AGO


def test_deferred_metric_changes_are_applied_once_the_block_is_left_however_it_is_left():
    metrics = Metrics()

    def value(name, **labels):
        return metrics.registry.get_sample_value(name, labels)

    with pytest.raises(RuntimeError):
        with metrics.deferred():
            metrics.add(metrics.waiting, 3)
            metrics.add(metrics.waiting, -1)
            with metrics.deferred():  # a nested block leaves them to the outer one
                metrics.add(metrics.answers.labels("changed"))
            assert value("community_sync_waiting_polls") == 0
            assert value("community_sync_poll_answers_total", result="changed") == 0
            raise RuntimeError
    assert value("community_sync_waiting_polls") == 2
    assert value("community_sync_poll_answers_total", result="changed") == 1
    metrics.add(metrics.waiting, -2)  # outside a block: at once
    assert value("community_sync_waiting_polls") == 0


def test_request_ids_are_echoed_or_made(client):
    echoed = client.get("/healthz", headers={"X-Request-ID": "lb-1234.abc:9"})
    assert echoed.headers["X-Request-ID"] == "lb-1234.abc:9"
    made = client.get("/healthz", headers={"X-Request-ID": "bad id with spaces\u00e9"})
    assert made.headers["X-Request-ID"] not in ("", "bad id with spaces\u00e9")
    assert len(client.get("/healthz").headers["X-Request-ID"]) >= 8


def test_log_lines_are_json_with_the_request_id(app, client):
    formatter = JsonFormatter()
    lines = []

    class Capture(logging.Handler):
        def emit(self, record):
            lines.append(formatter.format(record))

    handler = Capture()
    logger = logging.getLogger("app.test")
    logger.addHandler(handler)

    @app.get("/log-something")
    def log_something():
        logger.warning("something %s", "happened")
        try:
            raise ValueError("inner")
        except ValueError:
            logger.exception("and failed")
        return "", 204

    try:
        client.get("/log-something", headers={"X-Request-ID": "req-42"})
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "something happened"
    assert first["request_id"] == "req-42" and first["level"] == "warning"
    assert second["request_id"] == "req-42" and "ValueError: inner" in second["error"]


def test_gunicorn_access_records_become_json_fields():
    record = logging.LogRecord("gunicorn.access", logging.INFO, __file__, 1, "%(h)s", None, None)
    record.args = {"h": "10.0.0.1", "m": "GET", "U": "/healthz", "s": "200", "D": 1234,
                   "{x-request-id}o": "abc", "B": "-"}
    entry = json.loads(JsonFormatter().format(record))
    assert entry["method"] == "GET" and entry["path"] == "/healthz" and entry["status"] == "200"
    assert entry["request_id"] == "abc" and "bytes" not in entry


def test_log_times_are_utc_rfc3339_to_the_millisecond(monkeypatch):
    # A zone far from UTC, so that a local time could not pass for it.
    monkeypatch.setenv("TZ", "NST+03:30")
    time.tzset()
    try:
        record = logging.makeLogRecord({"msg": "hello", "created": 1795429265.123, "msecs": 123.0})
        entry = json.loads(JsonFormatter().format(record))
    finally:
        monkeypatch.undo()
        time.tzset()
    assert entry["time"] == "2026-11-23T10:21:05.123Z"


def test_readyz_reports_ready_and_shutting_down(app, client):
    deadline = time.monotonic() + 10
    while not app.extensions["hub"].ready and time.monotonic() < deadline:
        gevent.sleep(0.05)  # the listener connects in a greenlet of its own
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["status"] == "ready"
    app.extensions["hub"].close()
    closing = client.get("/readyz")
    assert closing.status_code == 503
    assert closing.get_json()["checks"]["listener"] == "shutting down"
    assert client.get("/healthz").status_code == 200


@pytest.mark.postgres
def test_readyz_reports_an_unreachable_database(pg_database):
    from app import create_app

    app = create_app({
        "TESTING": True, "SECRET_KEY": SECRET, "AUTO_MIGRATE": False, "HUB_AUTOSTART": False,
        "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nowhere",
    })
    try:
        response = app.test_client().get("/readyz")
        assert response.status_code == 503
        checks = response.get_json()["checks"]
        assert checks["database"].startswith("unavailable")
        assert checks["listener"] == "reconnecting"
    finally:
        app.extensions["db"].dispose()


def json_lines(log):
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


def poll_lines(lines):
    return [line for line in lines if line.get("request_id", "").startswith("poll-")]


@pytest.mark.slow
def test_metrics_add_up_across_gunicorn_workers(database, tmp_path):
    """Whichever worker a scrape reaches, it reports every worker's counts."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = database.environ(ACCESS_LOG=1, AUTO_MIGRATE=1, PROMETHEUS_MULTIPROC_DIR=metrics_dir)
    flask(env, "db-upgrade")
    server = Server(env, workers=3, log_path=tmp_path / "gunicorn.log").start()
    try:
        base = server.url
        # Every worker writes its metric files once its app is built: wait for
        # all three, or the requests below could all reach the first one.
        assert wait_for(lambda: len({path.stem.rsplit("_", 1)[-1] for path in metrics_dir.glob("*.db")}) >= 3,
                        30, interval=0.2), server.log()
        import jwt

        token = jwt.encode({"sub": "u-1", "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")
        polls = 0

        def poll(index):
            return index, requests.get(base + "/community-changes/poll?timeout=0",
                                       headers={"Authorization": f"Bearer {token}",
                                                "X-Request-ID": f"poll-{index}",
                                                "Connection": "close"}, timeout=10)

        def answering():
            """The workers whose access lines show a poll."""
            return {line["pid"] for line in poll_lines(json_lines(server.log()))}

        # New connections, several at once, so the requests spread over the workers.
        # One worker can still accept a whole round while the others sleep, so rounds
        # go on until the access log shows a second worker.
        with ThreadPoolExecutor(max_workers=10) as pool:
            for _ in range(30):
                for index, response in pool.map(poll, range(polls, polls + 10)):
                    assert response.status_code == 200
                    assert response.headers["X-Request-ID"] == f"poll-{index}"
                polls += 10
                if wait_for(lambda: len(answering()) > 1, 1, interval=0.1):
                    break
        answered = set()
        for _ in range(10):
            text = requests.get(base + "/metrics", headers={"Connection": "close"}, timeout=5).text
            answered.add(samples(text)["community_sync_poll_answers_total|result=reset"])
        assert answered == {polls}
    finally:
        server.stop()
    lines = json_lines(server.log())
    # The master's lines and the workers' alike.
    assert all(RFC3339_UTC.fullmatch(line["time"]) for line in lines)
    access = poll_lines(lines)
    assert len(access) == polls
    assert all(line["path"] == "/community-changes/poll" and line["status"] == "200" for line in access)
    # More than one worker answered, so the equal counts above were sums.
    assert len({line["pid"] for line in access}) > 1


def wsgi_headers(app, method, path, headers):
    """The status and headers exactly as the app hands them to the server (the test
    client's response object would add a Content-Type of its own)."""
    from werkzeug.test import EnvironBuilder, run_wsgi_app

    environ = EnvironBuilder(path=path, method=method, headers=headers).get_environ()
    app_iter, status, sent = run_wsgi_app(app, environ)
    body = b"".join(app_iter)
    return int(status.split()[0]), sent, body


def test_answers_without_content_carry_no_content_type(seeded, auth):
    """A 204 or a 304 has no content to type: a Content-Type there (text/html) would
    describe nothing, and a cache may take a 304's headers for the stored answer's."""
    ada = auth("u-ada")
    status, headers, body = wsgi_headers(seeded, "DELETE", "/communities/c-python/members/me", ada)
    assert (status, body) == (204, b"") and "Content-Type" not in headers
    tag = seeded.test_client().get("/me/communities", headers=ada).headers["ETag"]
    status, headers, body = wsgi_headers(seeded, "GET", "/me/communities", {**ada, "If-None-Match": tag})
    assert (status, body) == (304, b"") and "Content-Type" not in headers
    assert headers["ETag"] == tag and headers["X-Content-Type-Options"] == "nosniff"
