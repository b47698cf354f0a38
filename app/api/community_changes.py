"""``GET /community-changes/poll``: the long poll.

The whole story, top to bottom (``poll()``): authenticate; parse; admit and
subscribe to the hub in one step (caps taken before any database work, and
the subscription made *before* reading, so that a change that commits after
the read is sure to be news); read state and changes
in one snapshot (or skip the read when the hub vouches for the client's
cursor, once a re-read in flight has noted its rows); answer at once if there is anything to say; otherwise wait for news,
check it, and answer ``changed`` or, at the timeout, ``unchanged``; every
answer carries the online counts of the user's communities, read after the
wait (``app/presence.py``). The hub's side of the wait is ``app/hub.py``.
"""
import random
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone

import orjson
from flask import Blueprint, current_app, request

from .. import cursors, feed, queries, wire
from ..auth import authenticate, provision
from ..coalescing import coalescable
from ..db import read_transaction
from ..errors import Problem, handle_database_unavailable
from ..hub import OverCapacity, TooManyPolls
from ..intervals import advise_interval, jittered_wait
from ..parking import PARKABLE_KEY, PARKED_HEADER, PARKED_KEY
from .conditional import etag, strip_validator

bp = Blueprint("community_changes", __name__, url_prefix="/community-changes")

PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*\"?(\d{1,6})\"?", re.IGNORECASE)
# The longest a re-poll waits for an in-flight re-read to note its rows, so
# that it can be vouched for (``Vouching.settle``); then it reads.
SETTLE_TIMEOUT = 2.0
# A socket under gunicorn's gevent worker; other servers offer none.
SOCKET_KEYS = ("gunicorn.socket", "gunicorn.sock")


@dataclass(frozen=True)
class Known:
    """What a client knows: its cursor, the hash of its state, when that state last changed."""

    cursor: cursors.Cursor | None
    hash: str | None
    last_change_at: datetime | None = None


@dataclass(frozen=True)
class PollRequest:
    known: Known
    timeout: int
    preference_applied: str | None


@dataclass(frozen=True)
class Reply:
    """An answer to give: its status, what the client will know, and what it brings."""

    status: str
    known: Known
    communities: list | None = None
    changes: tuple = ()
    notifications_unread: int | None = None
    # Without ``communities`` (``unchanged``): their ids, for the online
    # counts; None when this process does not know them.
    community_ids: tuple | None = None


def parse_request():
    config = current_app.config
    raw_cursor = request.args.get("cursor")
    try:
        # None for a cursor of another key or an older version: a reset.
        key = current_app.extensions["cursor_key"]
        cursor = key.decode(raw_cursor) if raw_cursor is not None else None
    except cursors.InvalidCursor as error:
        raise Problem(400, "invalid-cursor", f"The cursor cannot be used: {error}.") from None

    raw_hash = request.args.get("hash") or request.headers.get("If-None-Match")
    client_hash = strip_validator(raw_hash) if raw_hash else None
    if client_hash is not None and len(client_hash) > 128:
        raise Problem(400, "invalid-hash", "The hash is too long.")

    raw_timeout = request.args.get("timeout")
    applied = None
    if raw_timeout is not None:
        if not re.fullmatch(r"\d{1,6}", raw_timeout):
            raise Problem(
                400, "invalid-timeout",
                f"timeout must be whole seconds from 0 to {config['POLL_MAX_TIMEOUT']}.",
            )
        timeout = int(raw_timeout)
    else:
        preferred = PREFER_WAIT.search(request.headers.get("Prefer", ""))
        timeout = int(preferred[1]) if preferred else config["POLL_DEFAULT_TIMEOUT"]
        if preferred:
            applied = f"wait={min(timeout, config['POLL_MAX_TIMEOUT'])}"
    # Longer than the server allows is clamped rather than refused: a client
    # cannot know each deployment's maximum.
    return PollRequest(Known(cursor, client_hash), min(timeout, config["POLL_MAX_TIMEOUT"]), applied)


@bp.get("/poll")
def poll():
    hub = current_app.extensions["hub"]
    identity = authenticate()
    ask = parse_request()

    if ask.timeout == 0 or hub.closing:
        # A plain check never waits, so it takes no place in the hub; nor does
        # a poll that reaches a worker shutting down: it gets a prompt answer
        # (and Connection: close) and reconnects to a worker that stays.
        with caps_as_problems():
            hub.admit(identity.user_id)
        provision(identity)
        reply = look(identity.user_id, ask.known)
    else:
        # Admitted and counted in one step, before any database work.
        with caps_as_problems(), hub.waiting(identity.user_id, request_socket()) as ticket:
            provision(identity)
            hub.vouching.settle(identity.user_id, SETTLE_TIMEOUT)
            if hub.vouching.vouches(identity.user_id, ask.known.cursor, ask.known.hash):
                # This hub has read every change since before the client's
                # cursor and none was this user's: nothing to read, straight
                # to waiting.
                last_change_at = hub.vouching.last_change_served(identity.user_id)
                reply = Reply("unchanged", replace(ask.known, last_change_at=last_change_at),
                              community_ids=hub.vouching.communities_served(identity.user_id))
            else:
                reply = look(identity.user_id, ask.known)
            coalescing = hub.reread.coalescing
            if reply.status == "unchanged" and PARKABLE_KEY in request.environ:
                # Waits as its socket and a record (app/parking.py), not a greenlet.
                return park(hub, ticket, ask, reply)
            if reply.status == "unchanged":
                waited = wait(hub, ticket, ask, reply.known)
                if waited.status == "unchanged":
                    waited = replace(waited, community_ids=reply.community_ids)
                reply = waited
            elif pause := coalescing.pause(identity.user_id, reply.changes):
                # Only activity, for a user answered moments ago: gather for
                # the rest of its window rather than answer at the burst's rate.
                reply = wait(hub, ticket, ask, reply.known, held=reply, pause=pause)
            if reply.status == "changed":
                coalescing.answered(identity.user_id)

    data, headers = conclude(hub, identity.user_id, ask, reply)
    return current_app.response_class(data, mimetype="application/json"), 200, headers


def conclude(hub, user_id, ask, reply):
    """The answer for ``reply``: its body and headers, the state noted for vouching."""
    now = datetime.now(timezone.utc)
    if reply.status == "changed":
        # The client's state changes with this very answer.
        reply = replace(reply, known=replace(reply.known, last_change_at=now))
    # Noted for vouching for this client's next poll.
    hub.vouching.served_state(user_id, reply.known.hash, reply.known.last_change_at,
                              reply.communities, reply.known.cursor)
    return answer(ask, reply, now, online_counts(user_id, reply))


def park(hub, ticket, ask, reply):
    """Leave the poll to the hub's answerer: the worker keeps its socket (app/parking.py).

    What the client is answered now is a stand-in, which the worker takes
    the framework's headers from and never sends.
    """
    deadline = time.monotonic() + jittered_wait(ask.timeout)
    record = hub.parking.park(ticket, ask, Waiting(ask, reply.known), reply.community_ids,
                              deadline, (prepare_parked, respond_parked), current_app._get_current_object())
    request.environ[PARKED_KEY] = record
    return current_app.response_class(b"", mimetype="application/json"), 200, {PARKED_HEADER: "1"}


def prepare_parked(records):
    """Before a batch of parked polls is answered: their communities' online counts, read at once.

    The answers of a fan-out find their users' communities stale together;
    answered one after another by one greenlet, each would read its own.
    """
    wanted = set()
    for record in records:
        wanted.update(record.community_ids or ())
        wanted.update(entry["id"] for entry in record.waiting.communities() or ())
    current_app.extensions["presence"].counts(wanted)


def respond_parked(record):
    """The answer to a parked poll, as (status line, body, headers); run by the hub's answerer."""
    hub = current_app.extensions["hub"]
    user_id = record.ticket.user_id
    try:
        reply = record.waiting.reply()
        if reply.status == "unchanged":
            reply = replace(reply, community_ids=record.community_ids)
        else:
            hub.reread.coalescing.answered(user_id)
        data, headers = conclude(hub, user_id, record.ask, reply)
        status = "200 OK"
    except Exception as error:
        # As the view's error handlers would answer it (a database outage: 503).
        response = handle_database_unavailable(error)
        status, data = response.status, response.get_data()
        headers = {name: value for name, value in response.headers.items() if name != "Content-Length"}
    metrics = current_app.extensions["metrics"]
    metrics.add(metrics.answers.labels(headers.get("X-Poll-Result", "error")))
    return status, data, headers


@contextmanager
def caps_as_problems():
    """The hub's caps, answered as the contract says: 503 for the worker, 429 for the user."""
    try:
        yield
    except OverCapacity:
        raise Problem(
            503, "over-capacity", "This worker holds as many waiting polls as it can.",
            headers={"Retry-After": str(random.randint(2, 10))},
        ) from None
    except TooManyPolls as refusal:
        raise Problem(
            429, "too-many-polls",
            f"At most {refusal.limit} polls may wait for one user at once.",
            headers={"Retry-After": "5"},
        ) from None


def request_socket():
    """The client's socket, to notice a hang-up mid-wait; None where the server offers none."""
    return next((request.environ[k] for k in SOCKET_KEYS if k in request.environ), None)


def look(user_id, known):
    """Read, and say what the client must be told now, or ``unchanged`` (then a poll may wait).

    A waiting poll keeps only what its answer needs (thousands wait at once):
    an ``unchanged`` reply holds no state, only what the client will know.
    """
    state, usable, changes = read(user_id, known.cursor)
    now_known = Known(state.cursor, state.hash, state.last_change_at)
    unread = state.notifications_unread
    if not usable:
        return Reply("reset", now_known, state.communities, notifications_unread=unread)
    if changes:
        return Reply("changed", now_known, state.communities, changes, unread)
    if known.hash is not None and known.hash != state.hash:
        # Same cursor, different state: the client's copy is not ours.
        return Reply("reset", now_known, state.communities, notifications_unread=unread)
    return Reply("unchanged", now_known, community_ids=tuple(c["id"] for c in state.communities))


def wait(hub, ticket, ask, known, held=None, pause=0.0):
    """Wait for news of changes the client's cursor did not see, or the timeout.

    ``held``: a ``changed`` reply of activity only, held back for ``pause``
    seconds; news meanwhile joins it, and anything but activity ends the
    pause at once.
    """
    waiting = Waiting(ask, known, held)
    deadline = time.monotonic() + (pause if held else jittered_wait(ask.timeout))
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or hub.closing or ticket.gone:
            break
        if waiting.take(hub.wait(ticket, remaining)):
            break
    return waiting.reply()


class Waiting:
    """What a waiting poll has gathered so far, whether it waits in a greenlet or parked.

    ``known`` is where the poll's knowledge stands (its own read, or what the
    client sent when the hub vouched for it); news from an older snapshot
    says nothing new, and rows the client saw are not sent again.
    """

    __slots__ = ("seen", "known", "latest", "state", "collected", "held")

    def __init__(self, ask, known, held=None):
        self.seen = ask.known.cursor.position
        self.known = known
        self.latest = known.cursor.position
        self.held = held
        # The newest state seen: (hash, communities, notifications_unread).
        self.state = (held.known.hash, held.communities, held.notifications_unread) if held else None
        self.collected = {row.id: row for row in held.changes} if held else {}

    def take(self, fresh):
        """Take news from the hub; True when the poll has something to answer now."""
        for news in fresh:
            if not news.position.covers(self.latest):
                continue
            self.latest = news.position
            self.state = (news.hash, news.communities, news.notifications_unread)
            for row in news.rows:
                if not self.seen.sees(row):
                    self.collected[row.id] = row
        return bool(self.collected) and not (self.held and coalescable(self.collected.values()))

    def communities(self):
        """The communities of the newest state the news brought, or None."""
        return self.state[1] if self.state else None

    def reply(self):
        """The answer as of now: ``changed`` with what was gathered, else ``unchanged``."""
        cursor = cursors.Cursor(self.known.cursor.epoch, self.latest)
        if self.collected:
            rows = [self.collected[key] for key in sorted(self.collected)]
            if not self.held:
                current_app.extensions["metrics"].observe_wake(min(wire.utc(r.at) for r in rows))
            digest, communities, unread = self.state
            return Reply("changed", Known(cursor, digest), communities, rows, unread)
        return Reply("unchanged", replace(self.known, cursor=cursor))


def read(user_id, cursor):
    """State, whether the cursor can be answered, and the changes after it: one snapshot.

    A function of its own so its connection is gone before the poll waits.
    """
    with read_transaction() as connection:
        state = feed.read_state(connection, user_id)
        usable = cursor is not None and state.accepts(cursor)
        changes = feed.read_changes(connection, user_id, cursor.position) if usable else []
    return state, usable, changes


def online_counts(user_id, reply):
    """Members online in each of the reply's communities (read after any wait, never during it)."""
    if reply.communities is not None:
        ids = [entry["id"] for entry in reply.communities]
    elif reply.community_ids is not None:
        ids = reply.community_ids
    else:
        with read_transaction(single_statement=True) as connection:
            ids = connection.scalars(queries.community_ids_of(user_id)).all()
    return current_app.extensions["presence"].counts(ids)


def answer(ask, reply, now, online):
    """The body and headers for ``reply``, as of ``now``, with ``online`` counts beside the state."""
    known = reply.known
    cursor = current_app.extensions["cursor_key"].encode(known.cursor)
    body = wire.poll_body(reply.status, cursor, known.hash, now,
                          reply.communities, reply.changes, reply.notifications_unread, online)
    headers = {
        "Content-Type": "application/json",
        "X-Poll-Result": reply.status,
        "ETag": etag(known.hash),
        "Cache-Control": "no-store",
        "X-Poll-Interval": str(advise_interval(known.last_change_at, now, current_app)),
    }
    if ask.preference_applied:
        headers["Preference-Applied"] = ask.preference_applied
    # orjson rather than the framework's encoder: a fan-out serialises
    # thousands of answers in a row (about 4 µs a body against 17 µs).
    return orjson.dumps(body, option=orjson.OPT_APPEND_NEWLINE), headers
