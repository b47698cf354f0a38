"""Scenario 5: conditional snapshots (304) against the framework's ceiling.

Three servers run side by side, each one gunicorn gevent worker: the service,
a bare Flask hello-world and the hello-world view inside the service (its
request hooks included). The load generator keeps ``connections`` keep-alive
connections busy on one of them at a time, the targets taking turns round
after round, in reverse order every other round (A B C C B A ...), so that the
machine's noise and its drift fall on all of them alike. Each round's ratios
compare that round's figures.
"""
import time

from . import stack
from .stack import SECRET, ClientProcess, Server, log, median

USERS = [f"u{i}" for i in range(64)]


def run(database, options):
    servers = {
        "snapshot_304": Server(database, target="wsgi:app"),
        "hello_bare": Server(database, target="bench.baselines:hello_app()"),
        "hello_in_app": Server(database, target="bench.baselines:naive_app()"),
    }
    paths = {"snapshot_304": "/me/communities", "hello_bare": "/bench/hello", "hello_in_app": "/bench/hello"}
    rounds = {name: [] for name in servers}
    served = 0
    client = ClientProcess()
    try:
        for server in servers.values():
            server.start()
        time.sleep(stack.SETTLE)
        transactions = database.transactions()
        for number in range(options["runs"] + 1):
            order = list(servers.items())
            for name, server in (order if number % 2 == 0 else order[::-1]):
                statements = server.queries() if name == "snapshot_304" else 0
                cpu = server.cpu()
                outcome = client.call(
                    "load", "load", port=server.port, path=paths[name], users=USERS, secret=SECRET,
                    connections=options["connections"], duration=options["load_seconds"],
                    conditional=name == "snapshot_304",
                )
                if name == "snapshot_304":
                    # Every request counts here, the first 200 of each connection too.
                    served += outcome["requests"] + options["connections"] + 1
                if number == 0:
                    continue  # the first round warms every server up
                entry = {
                    "requests": outcome["requests"],
                    "rps": outcome["requests"] / outcome["elapsed"],
                    "statuses": outcome["counts"],
                    "p50": outcome["p50"],
                    "p99": outcome["p99"],
                    "errors": outcome["errors"],
                    "worker_cpu_us_per_request": 1e6 * (server.cpu() - cpu) / max(1, outcome["requests"]),
                }
                if name == "snapshot_304":
                    entry["statements_per_request"] = (server.queries() - statements) / max(1, outcome["requests"])
                rounds[name].append(entry)
                log(f"{name}: {entry['rps']:.0f} requests/s, statuses {entry['statuses']}, "
                    f"{entry['worker_cpu_us_per_request']:.0f} us worker CPU each")
        time.sleep(stack.SETTLE)
        after = database.transactions()
    finally:
        client.close()
        for server in servers.values():
            server.stop()
    result = {"rounds": rounds, "connections": options["connections"], "load_seconds": options["load_seconds"]}
    for name, entries in rounds.items():
        result[name] = {
            "rps": median([e["rps"] for e in entries]),
            "p50": median([e["p50"] for e in entries]),
            "p99": median([e["p99"] for e in entries]),
            "worker_cpu_us_per_request": median([e["worker_cpu_us_per_request"] for e in entries]),
        }
    result["ratios"] = [
        s["rps"] / h["rps"] for s, h in zip(rounds["snapshot_304"], rounds["hello_bare"]) if h["rps"]
    ]
    result["ratios_in_app"] = [
        s["rps"] / h["rps"] for s, h in zip(rounds["snapshot_304"], rounds["hello_in_app"]) if h["rps"]
    ]
    result["ratio"] = median(result["ratios"])
    result["ratio_in_app"] = median(result["ratios_in_app"])
    result["statements_per_request"] = median([e["statements_per_request"] for e in rounds["snapshot_304"]])
    result["transactions"] = after["transactions"] - transactions["transactions"]
    result["snapshot_requests"] = served
    result["transactions_per_request"] = result["transactions"] / max(1, served)
    log(f"304 at {result['ratio']:.0%} of bare hello-world, {result['ratio_in_app']:.0%} of in-app hello")
    return result
