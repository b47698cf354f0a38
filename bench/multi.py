"""Scenario 7: a change written through one process reaches a poll waiting on another.

Two "hosts", each a gunicorn master with two gevent workers, share one
PostgreSQL. Polls wait on both (the kernel hands each connection to either
worker of its host); the driver writes through the HTTP API of one host or
the other, as a user joining a public community, and times the write request
and the poll's answer on one clock.
"""
import random
import time
import urllib.request

from harness.polls import bearer_token
from harness.servers import wait_for

from . import stack
from .stack import SECRET, ClientProcess, Server, log, percentile


def run(database, options, users, idle=0, **env):
    """``env``: more settings for both hosts; ``idle``: seconds to measure the held polls' cost first."""
    hosts = [Server(database, target="wsgi:app", workers=2, **env).start() for _ in range(2)]
    client = ClientProcess()
    ports = [host.port for host in hosts]
    try:
        held = client.call("hold", "held", users=users, ports=ports, path="/community-changes/poll",
                           timeout=290, secret=SECRET, ramp=100)
        # Each host's /metrics shows one worker's count; the client's count is the total.
        time.sleep(2.0)
        client.call("report", "report")
        idle_cost = measure_idle(database, hosts, idle) if idle else None
        samples = []
        for number, index in enumerate(random.sample(range(len(users)), options["multi_changes"])):
            time.sleep(random.uniform(0.02, 0.1))
            writer = hosts[number % 2]
            request = urllib.request.Request(
                f"http://127.0.0.1:{writer.port}/communities/c-x{random.randrange(10)}/members/me",
                method="PUT", data=b"{}",
                headers={"Authorization": f"Bearer {bearer_token(SECRET, users[index])}",
                         "Content-Type": "application/json"})
            sent = time.monotonic()
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()
                status = response.status
            done = time.monotonic()
            samples.append({"index": index, "sent": sent, "done": done, "status": status,
                            "writer": writer.port, "poller": ports[index % 2]})
        arrivals = {}
        wanted = {s["index"] for s in samples}
        wait_for(lambda: collect(client, wanted, arrivals) >= len(wanted), 15, interval=0.5)
    finally:
        client.close()
        for host in hosts:
            host.stop()
    for sample in samples:
        arrived = arrivals.get(sample["index"])
        sample["from_send"] = arrived - sample["sent"] if arrived else None
        sample["from_response"] = arrived - sample["done"] if arrived else None
        sample["cross_host"] = sample["writer"] != sample["poller"]
    result = {"waiters": len(users), "held_failures": held["failures"], "writes": len(samples),
              "answered": sum(1 for s in samples if s["from_send"] is not None), "idle": idle_cost}
    for label, chosen in (("all", samples), ("cross_host", [s for s in samples if s["cross_host"]]),
                          ("same_host", [s for s in samples if not s["cross_host"]])):
        from_send = [s["from_send"] for s in chosen if s["from_send"] is not None]
        write = [s["done"] - s["sent"] for s in chosen]
        result[label] = {
            "count": len(chosen),
            "p50": percentile(from_send, 0.5),
            "p99": percentile(from_send, 0.99),
            "max": max(from_send) if from_send else None,
            "write_request_p50": percentile(write, 0.5),
        }
    log(f"two hosts: {result['answered']}/{result['writes']} answered; cross-host p50 "
        f"{result['cross_host']['p50']}, p99 {result['cross_host']['p99']}")
    return result


def measure_idle(database, hosts, seconds):
    """Transactions/s at PostgreSQL and head checks/s by the workers, polls held and nothing written.

    The wake sources' backends are never idle for long, so PostgreSQL's
    statistics trail them by about a second at both ends of the window alike.
    """
    time.sleep(stack.SETTLE)
    checks = "community_sync_head_check_seconds"

    def reading():
        metrics = [host.metrics() for host in hosts]
        return (time.monotonic(), database.transactions()["transactions"],
                sum(m[f"{checks}_count"] for m in metrics), sum(m[f"{checks}_sum"] for m in metrics))

    start = reading()
    time.sleep(seconds)
    end = reading()
    elapsed, count = end[0] - start[0], end[2] - start[2]
    return {"seconds": round(elapsed, 1), "transactions_per_second": (end[1] - start[1]) / elapsed,
            "head_checks_per_second": count / elapsed,
            "head_check_mean": (end[3] - start[3]) / count if count else None}


def collect(client, wanted, arrivals):
    for index, arrived, status, _size in client.call("report", "report")["answers"]:
        if index in wanted and status == "changed":
            arrivals.setdefault(index, arrived)
    return len(arrivals)
