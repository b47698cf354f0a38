"""The presence statements on PostgreSQL at size: ``python -m bench.presence_queries``.

Not one of ``python -m bench``'s scenarios (no servers, no clients): it fills a
schema of its own with users, communities, memberships and presence rows spread
over several workers, then times the three statements presence adds to the
service, each run many times, and prints the median and 95th percentile:

- the counts of one answer (``queries.online_counts``, 20 communities);
- a community's presence list (``queries.online_members``), of its largest one;
- one worker's refresh (``queries.refresh_worker``), the same whatever its users;
- the live workers (``queries.live_workers``), read once per interval by each worker.

Options: ``--users N`` (200,000), ``--online N`` (20,000), ``--workers N`` (8),
``--runs N`` (200), ``--database-url URL`` (``BENCH_DATABASE_URL``, else the local
``test`` database). The schema is dropped at the end.
"""
import argparse
import os
import secrets
import statistics
import time

from sqlalchemy import create_engine, text

from app.store import queries
from app.store.db import normalize_url
from harness.servers import flask, python_environ

from .stack import DEFAULT_URL, SECRET


def fill(connection, users, online, workers):
    """Users in 1,000 communities: a few huge, most small; ``online`` of them online."""
    connection.execute(text(
        "INSERT INTO communities (id, slug, name) "
        "SELECT 'c-' || n, 'c-' || n, 'Community ' || n FROM generate_series(0, 999) n"))
    connection.execute(text(
        "INSERT INTO users (id, name) SELECT 'u-' || n, 'User ' || n FROM generate_series(0, :users - 1) n"),
        {"users": users})
    # Everyone in c-0 (the big one); each user in 5 more, skewed towards low ids.
    connection.execute(text(
        "INSERT INTO memberships (user_id, community_id) SELECT 'u-' || n, 'c-0' "
        "FROM generate_series(0, :users - 1) n"), {"users": users})
    connection.execute(text(
        "INSERT INTO memberships (user_id, community_id) "
        "SELECT DISTINCT 'u-' || n, 'c-' || (1 + floor(999 * power(random(), 3)))::int "
        "FROM generate_series(0, :users - 1) n, generate_series(1, 5) k ON CONFLICT DO NOTHING"),
        {"users": users})
    connection.execute(text(
        "INSERT INTO presence_workers (id, refreshed_at) "
        "SELECT 'w-' || w, now() FROM generate_series(0, :workers - 1) w"), {"workers": workers})
    connection.execute(text(
        "INSERT INTO presence (user_id, worker_id, since) "
        "SELECT 'u-' || n, 'w-' || (n % :workers), now() FROM generate_series(0, :online - 1) n"),
        {"online": online, "workers": workers})


def timed(connection, statement, runs):
    """Median and 95th percentile of ``runs`` executions, in milliseconds."""
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        connection.execute(statement).all() if statement.is_select else connection.execute(statement)
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--online", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))
    args = parser.parse_args()

    schema = f"bench_presence_{secrets.token_hex(4)}"
    admin = create_engine(normalize_url(args.database_url))
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    url = normalize_url(args.database_url).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        env = python_environ({**os.environ, "DATABASE_URL": url.render_as_string(hide_password=False),
                              "SECRET_KEY": SECRET})
        flask(env, "db-upgrade")
        engine = create_engine(url)
        with engine.begin() as connection:
            fill(connection, args.users, args.online, args.workers)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            # What autovacuum does to a live database: statistics, and the visibility
            # map that lets index-only scans skip the heap.
            connection.execute(text("VACUUM ANALYZE"))
        with engine.connect() as connection:
            # Filling takes a while: the workers refresh now, as live ones would have.
            connection.execute(text("UPDATE presence_workers SET refreshed_at = now()"))
            live = connection.scalars(queries.live_workers(70.0, "postgresql")).all()
            ids = [f"c-{n}" for n in range(20)]
            figures = {
                "counts of 20 communities (c-0 with every user in it)": queries.online_counts(ids, live, "postgresql"),
                "counts of 20 small communities": queries.online_counts([f"c-{n}" for n in range(980, 1000)], live, "postgresql"),
                "presence list of c-0": queries.online_members("c-0", live, 100, "postgresql"),
                "a worker's refresh": queries.refresh_worker("w-0", "postgresql"),
                "the live workers": queries.live_workers(70.0, "postgresql"),
            }
            counted = dict(connection.execute(figures["counts of 20 communities (c-0 with every user in it)"]).all())
            assert counted["c-0"] == args.online, counted  # every one of them is counted
            print(f"{args.users} users, {args.online} online over {args.workers} workers, "
                  f"{args.runs} runs each (ms)")
            for name, statement in figures.items():
                median, p95 = timed(connection, statement, args.runs)
                print(f"  {name:55s} median {median:7.2f}   p95 {p95:7.2f}")
            connection.rollback()
        engine.dispose()
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()


if __name__ == "__main__":
    main()
