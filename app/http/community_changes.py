"""``GET /community-changes/poll``: the long poll.

The whole story, top to bottom (``poll()``): authenticate; parse, and check
that the user may follow the topics it watches (``check_watches``); admit and
subscribe to the hub in one step (caps taken before any database work, and
the subscription made *before* reading, so that a change that commits after
the read is sure to be news); read state and changes
in one snapshot, alone or batched with other arriving polls (``hub.look``,
``app/live/admission.py``), or skip the read when the hub vouches for the
client's cursor, once a re-read in flight has noted its rows; answer at once if there is anything to say; otherwise wait for news,
check it, and answer ``changed`` or, at the timeout, ``unchanged``; every
answer carries the online counts of the user's communities, read after the
wait (``app/live/online_counts.py``), and a poll that watches topics who types
in them (``app/live/typing.py``). How the poll waits, in this greenlet or parked,
is its session's story (``app/live/session.py``).
"""
import random
import re
from contextlib import contextmanager
from datetime import datetime, timezone

import orjson
from flask import Blueprint, current_app, request

from ..store import cursors, queries, writes
from .. import wire
from ..auth import authenticate, provision
from ..store.db import read_transaction
from ..errors import Problem, handle_database_unavailable
from ..live.registry import OverCapacity, TooManyPolls
from ..intervals import advise_interval
from ..live.parking import PARKABLE_KEY, PARKED_HEADER, PARKED_KEY
from ..live.session import Ask, Known
from .validation import whole_number
from ..watches import InvalidWatch, Watches
from .conditional import etag, strip_validator

bp = Blueprint("community_changes", __name__, url_prefix="/community-changes")

# The value of a ``wait`` preference, whatever it is (``whole_number`` judges it).
PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\"?)([^\s,;\"]*)\1(?=$|[\s,;])", re.IGNORECASE)
# The longest a re-poll waits for an in-flight re-read to note its rows, so
# that it can be vouched for (``Vouching.settle``); then it reads.
SETTLE_TIMEOUT = 2.0
# A socket under gunicorn's gevent worker; other servers offer none.
SOCKET_KEYS = ("gunicorn.socket", "gunicorn.sock")


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
        timeout = whole_number(raw_timeout)
        if timeout is None:
            raise Problem(
                400, "invalid-timeout",
                f"timeout must be whole seconds from 0 to {config['POLL_MAX_TIMEOUT']}.",
            )
    else:
        # RFC 7240: a preference the server cannot read is ignored, not refused.
        preferred = PREFER_WAIT.search(request.headers.get("Prefer", ""))
        timeout = whole_number(preferred[2]) if preferred else None
        if timeout is None:
            timeout = config["POLL_DEFAULT_TIMEOUT"]
        else:
            applied = f"wait={min(timeout, config['POLL_MAX_TIMEOUT'])}"
    try:
        watches = Watches.parse(request.args.getlist("watch"))
    except InvalidWatch as error:
        raise Problem(400, "invalid-watch", str(error)) from None
    # Longer than the server allows is clamped rather than refused: a client
    # cannot know each deployment's maximum.
    return Ask(Known(cursor, client_hash), min(timeout, config["POLL_MAX_TIMEOUT"]), applied, watches)


def check_watches(hub, user_id, watches):
    """Refuse a watch of a community the user may not follow: the unknown id's ``404``.

    Members watch any topic of their communities; anyone watches a public
    community's. One statement for all the watches, whichever of them is
    refused and why, so that neither the answer nor its time tells a private
    community from an unknown one; none when the hub last served the user
    every watched community (a member's re-poll).
    """
    served = hub.vouching.communities_served(user_id)
    if not watches or (served is not None and watches.communities <= set(served)):
        return
    with read_transaction(single_statement=True) as connection:
        rows = connection.execute(queries.communities_and_roles(watches.communities, user_id)).all()
    followed = {row.id for row in rows if row.is_public or row.role is not None}
    refused = sorted(watches.communities - followed)
    if refused:
        raise writes.unknown_community(refused[0])


@bp.get("/poll")
def poll():
    hub = current_app.extensions["hub"]
    identity = authenticate()
    ask = parse_request()
    check_watches(hub, identity.user_id, ask.watches)

    if ask.timeout == 0 or hub.closing:
        # A plain check never waits, so it takes no place in the hub; nor does
        # a poll that reaches a worker shutting down: it gets a prompt answer
        # (and Connection: close) and reconnects to a worker that stays.
        with caps_as_problems():
            hub.admit(identity.user_id)
        provision(identity)
        reply = hub.look(identity.user_id, ask.known, ask.watches)
    else:
        # Admitted and counted in one step, before any database work.
        with caps_as_problems(), hub.poll(identity.user_id, ask, request_socket()) as session:
            provision(identity)
            # When the hub has read every change since before the client's
            # cursor and none was this user's: nothing to read.
            reply = session.vouched(SETTLE_TIMEOUT) or hub.look(identity.user_id, ask.known, ask.watches)
            if not session.waits(reply):
                reply = session.finish(reply)
            elif PARKABLE_KEY in request.environ:
                # Waits as its socket and a record (app/live/parking.py), not a greenlet.
                return park(hub, session)
            else:
                reply = session.hold()

    # A poll woken with a community's rows: what its answer costs widens the
    # coalescing window while answering takes much of the worker's time.
    with hub.measured(reply):
        data, headers = conclude(hub, identity.user_id, ask, reply)
    return current_app.response_class(data, mimetype="application/json"), 200, headers


@bp.record_once
def register_renderer(state):
    """The hub's answerer makes parked polls' answers here, in this app's context."""
    state.app.extensions["hub"].answer_parked_with(render_parked, state.app)


def conclude(hub, user_id, ask, reply):
    """The answer for ``reply``: its body and headers, the state noted for vouching."""
    now = datetime.now(timezone.utc)
    reply = hub.conclude(user_id, reply, now)
    ids = community_ids(user_id, reply)
    online = current_app.extensions["online_counts"].counts(ids)
    # Typists are shown to members only, never to a follower of a public community.
    typing = hub.typing.shown(user_id, ask.watches, ids) if ask.watches else None
    return answer(ask, reply, now, online, typing)


def park(hub, session):
    """Leave the poll to the hub's answerer: the worker keeps its socket (app/live/parking.py).

    What the client is answered now is a stand-in, which the worker takes
    the framework's headers from and never sends.
    """
    request.environ[PARKED_KEY] = hub.park(session)
    return current_app.response_class(b"", mimetype="application/json"), 200, {PARKED_HEADER: "1"}


def render_parked(session):
    """The answer to a parked poll, as (status line, body, headers); run by the hub's answerer."""
    hub = current_app.extensions["hub"]
    try:
        reply = session.finish(session.reply())
        data, headers = conclude(hub, session.user_id, session.ask, reply)
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


def community_ids(user_id, reply):
    """The ids of the user's communities as of ``reply`` (read after any wait, never during it)."""
    if reply.communities is not None:
        return [entry["id"] for entry in reply.communities]
    if reply.community_ids is not None:
        return reply.community_ids
    with read_transaction(single_statement=True) as connection:
        return connection.scalars(queries.community_ids_of(user_id)).all()


def answer(ask, reply, now, online, typing=None):
    """The body and headers for ``reply``, as of ``now``, with ``online`` counts (and who is
    ``typing`` in the watched topics) beside the state."""
    known = reply.known
    cursor = current_app.extensions["cursor_key"].encode(known.cursor)
    body = wire.poll_body(reply, cursor, now, online, typing)
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
