"""Scenario 6: requests per client-hour and staleness, per way of keeping fresh.

Four groups of idle users run side by side on one server for a window:
long polling (the browser client's default ``timeout=25``), smart polling
(``If-None-Match`` at the server's ``X-Poll-Interval`` advice), and fixed-interval
snapshot polling without ETags every 10 s and every 5 minutes. A few changes
are committed to random users of each group at random moments.

Requests per client-hour are measured: tabs start at random phases, so a
window shorter than an interval still counts them fairly. Staleness (commit
to the client holding the new state) is measured where the interval fits in
the window; where it does not (5 minutes, and smart polling's advice for
users quiet for a day), it is computed from the interval, a change falling
at a uniformly random moment of it, and the 10 s group shows measurement and
model agreeing.
"""
import random
import time

from .stack import SECRET, ClientProcess, Server, log, median, percentile

LONG_POLL_TIMEOUT = 25


def run(database, options, users):
    size = options["freshness_users"]
    window = options["freshness_seconds"]
    groups = {
        "long_poll": users[0:size],
        "smart_poll": users[size:2 * size],
        "fixed_10s": users[2 * size:3 * size],
        "fixed_5min": users[3 * size:4 * size],
    }
    # Earlier scenarios touched these users (a rename reaches everyone): idle them again.
    database.backdate()
    server = Server(database, target="wsgi:app").start()
    client = ClientProcess()
    periodic = {
        "smart_poll": {"path": "/me/communities", "etag": True, "interval": None, "spread": 120},
        "fixed_10s": {"path": "/me/communities", "etag": False, "interval": 10},
        "fixed_5min": {"path": "/me/communities", "etag": False, "interval": 300},
    }
    try:
        client.send(cmd="hold", users=groups["long_poll"], ports=[server.port],
                    path="/community-changes/poll", timeout=LONG_POLL_TIMEOUT, secret=SECRET, ramp=100)
        started = time.monotonic()
        for name, spec in periodic.items():
            client.send(cmd="periodic", users=groups[name], port=server.port, secret=SECRET,
                        duration=window, tag=name, **spec)
        commits = {name: {} for name in groups}
        connection = database.connect()
        schedule = sorted(
            (random.uniform(0.2, 0.7) * window, name, user)
            for name in groups
            for user in random.sample(groups[name], options["freshness_changes"])
        )
        with connection.cursor() as cursor:
            for moment, name, user in schedule:
                time.sleep(max(0.0, started + moment - time.monotonic()))
                cursor.execute(
                    "INSERT INTO memberships (user_id, community_id, role) VALUES (%s, 'c-x0', 'member')",
                    (user,))
                connection.commit()
                commits[name][user] = time.monotonic()
        connection.close()
        logs = {}
        for _ in periodic:
            message = client.expect("periodic")
            logs[message["tag"]] = message
        ended = time.monotonic()
        answers = client.call("report", "report")
    finally:
        client.close()
        server.stop()
    elapsed = ended - started
    result = {"window_seconds": round(elapsed, 1), "users_per_group": size, "strategies": {}}
    result["strategies"]["long_poll"] = long_poll_figures(answers, groups["long_poll"], commits["long_poll"],
                                                          started)
    for name, spec in periodic.items():
        result["strategies"][name] = periodic_figures(
            logs[name], groups[name], commits[name], elapsed, spec)
    for name, figures in result["strategies"].items():
        log(f"{name}: {figures['requests_per_client_hour']:.1f} requests/client-hour, staleness "
            f"mean {figures['staleness_mean']:.3f} s ({figures['staleness_source']})")
    return result


def long_poll_figures(report, users, commits, started):
    per_user = {}
    for index, arrived, status, size in report["answers"]:
        per_user.setdefault(index, []).append((arrived, status, size))
    gaps = []
    staleness = []
    body_bytes = []
    seen = set()
    for index, entries in per_user.items():
        user = users[index]
        previous = None
        for arrived, status, size in entries:
            body_bytes.append(size)
            if status == "unchanged" and previous is not None:
                gaps.append(arrived - previous)
            if status == "changed" and user in commits and user not in seen and arrived >= commits[user]:
                staleness.append(arrived - commits[user])
                seen.add(user)
            previous = arrived
    hold = median(gaps) or LONG_POLL_TIMEOUT
    return {
        "requests_per_client_hour": 3600 / hold,
        "median_hold_seconds": hold,
        "bytes_per_request": median(body_bytes),
        "staleness_mean": sum(staleness) / len(staleness) if staleness else None,
        "staleness_p50": percentile(staleness, 0.5),
        "staleness_max": max(staleness) if staleness else None,
        "staleness_observed": len(staleness),
        "staleness_source": "measured",
        "failures": len(report["failures"]),
    }


def periodic_figures(message, users, commits, elapsed, spec):
    entries = message["log"]
    requests_per_hour = len(entries) / (len(users) * elapsed) * 3600
    first_hash = {}
    seen = {}
    advice = [float(e[5]) for e in entries if e[5]]
    for index, arrived, status, digest, size, _advice in entries:
        user = users[index]
        if status == 200:
            first_hash.setdefault(user, digest)
            if user in commits and user not in seen and arrived >= commits[user] and digest != first_hash[user]:
                seen[user] = arrived - commits[user]
    interval = spec["interval"] or median(advice) or 10
    observed = list(seen.values())
    fits = interval <= elapsed / 3
    modelled_mean = interval / 2
    return {
        "requests_per_client_hour": requests_per_hour,
        "interval_seconds": interval,
        "advised_interval_median": median(advice),
        "bytes_per_request": median([e[4] for e in entries]),
        "staleness_mean": (sum(observed) / len(observed)) if fits and observed else modelled_mean,
        "staleness_p50": percentile(observed, 0.5) if fits and observed else modelled_mean,
        "staleness_max": max(observed) if fits and observed else interval,
        "staleness_observed": len(observed),
        "staleness_measured_mean": (sum(observed) / len(observed)) if observed else None,
        "staleness_model_mean": modelled_mean,
        "staleness_source": "measured" if fits and observed else "model (interval/2)",
        "errors": message["error_count"],
    }
