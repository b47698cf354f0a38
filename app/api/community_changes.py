"""``GET /community-changes/poll``: the long poll.

The whole story, top to bottom: parse; authenticate; admit (caps, before any
database work); subscribe to the hub *before* reading, so that a change that
commits after the read is sure to be news; read state and changes in one
snapshot; answer at once if there is anything to say; otherwise wait for news,
check it, and answer ``changed`` or, at the timeout, ``unchanged``.
"""
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from flask import Blueprint, current_app, g, jsonify, request

from .. import feed
from ..auth import authenticate, provision
from ..db import read_transaction
from ..errors import Problem
from ..intervals import advise_interval, jittered_wait
from .conditional import etag, strip_validator

bp = Blueprint("community_changes", __name__, url_prefix="/community-changes")

PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*\"?(\d{1,6})\"?", re.IGNORECASE)
# A socket under gunicorn's gevent worker; other servers offer none.
SOCKET_KEYS = ("gunicorn.socket", "gunicorn.sock")


@dataclass(frozen=True)
class PollRequest:
    cursor: feed.Cursor | None
    hash: str | None
    timeout: int
    preference_applied: str | None


def parse_request():
    config = current_app.config
    raw_cursor = request.args.get("cursor")
    try:
        cursor = feed.Cursor.decode(raw_cursor) if raw_cursor is not None else None
    except feed.InvalidCursor as error:
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
    return PollRequest(cursor, client_hash, min(timeout, config["POLL_MAX_TIMEOUT"]), applied)


@bp.get("/poll")
def poll():
    hub = current_app.extensions["hub"]
    identity = authenticate()
    ask = parse_request()
    hub.admit(identity.user_id)
    provision(identity)

    socket = next((request.environ[k] for k in SOCKET_KEYS if k in request.environ), None)
    # A plain check (timeout=0) never waits, so it takes no place in the hub;
    # nor does a poll that reaches a worker shutting down: it gets a prompt
    # answer (and Connection: close) and reconnects to a worker that stays.
    waits = ask.timeout > 0 and not hub.closing
    ticket = hub.subscribe(identity.user_id, socket) if waits else None
    try:
        if ticket is not None and hub.vouches(identity.user_id, ask.cursor, ask.hash):
            # This hub has read every change since before the client's cursor
            # and none was this user's: nothing to read, straight to waiting.
            last_change_at = hub.last_change_served(identity.user_id)
            return wait(hub, ticket, ask, ask.cursor, ask.hash, last_change_at)

        state, usable, changes = read(identity.user_id, ask.cursor)
        if not usable:
            return answer(ask, "reset", state.cursor, state.communities, state.hash,
                          state.last_change_at)
        if changes:
            return answer(ask, "changed", state.cursor, state.communities, state.hash,
                          state.last_change_at, changes)
        if ask.hash is not None and ask.hash != state.hash:
            # Same cursor, different state: the client's copy is not ours.
            return answer(ask, "reset", state.cursor, state.communities, state.hash,
                          state.last_change_at)
        if ticket is None:
            return answer(ask, "unchanged", state.cursor, None, state.hash, state.last_change_at)
        cursor, digest, last_change_at = state.cursor, state.hash, state.last_change_at
        # A waiting poll keeps only what its answer needs (thousands wait at once).
        del state, changes
        return wait(hub, ticket, ask, cursor, digest, last_change_at)
    finally:
        if ticket is not None:
            hub.unsubscribe(ticket)


def wait(hub, ticket, ask, cursor, digest, last_change_at):
    """Wait for news of changes the client's cursor did not see, or the timeout.

    ``cursor`` is where the poll's knowledge stands (its own read, or the
    client's cursor when the hub vouched for it); news from an older snapshot
    says nothing new, and rows the client saw are not sent again.
    """
    seen = ask.cursor.position
    latest = cursor.position
    collected = {}
    deadline = time.monotonic() + jittered_wait(ask.timeout)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or hub.closing or ticket.gone:
            break
        for news in hub.wait(ticket, remaining):
            if not news.position.covers(latest):
                continue
            latest = news.position
            newest = news
            for row in news.rows:
                if not seen.sees(row):
                    collected[row.id] = row
        if collected:
            rows = [collected[key] for key in sorted(collected)]
            current_app.extensions["metrics"].observe_wake(min(feed.utc(r.at) for r in rows))
            return answer(ask, "changed", feed.Cursor(cursor.epoch, latest), newest.communities,
                          newest.hash, None, rows)
    return answer(ask, "unchanged", feed.Cursor(cursor.epoch, latest), None, digest,
                  last_change_at)


def read(user_id, cursor):
    """State, whether the cursor can be answered, and the changes after it: one snapshot.

    A function of its own so its session is gone before the poll waits.
    """
    with read_transaction() as session:
        state = feed.read_state(session, user_id)
        usable = cursor is not None and state.accepts(cursor)
        changes = feed.read_changes(session, user_id, cursor.position) if usable else []
    return state, usable, changes


def answer(ask, status, cursor, communities, state_hash, last_change_at, changes=()):
    now = datetime.now(timezone.utc)
    body = {
        "status": status,
        "cursor": cursor.encode(),
        "hash": state_hash,
        "server_time": feed.iso(now, milliseconds=True),
    }
    if status == "changed":
        added, removed = feed.net_membership(changes)
        body["changes"] = [feed.change_entry(change) for change in changes]
        body["added"] = added
        body["removed"] = removed
    if communities is not None:
        body["communities"] = communities
    last_change = now if status == "changed" else last_change_at
    current_app.extensions["hub"].served_state(g.identity.user_id, state_hash, last_change)
    headers = {
        "X-Poll-Result": status,
        "ETag": etag(state_hash),
        "Cache-Control": "no-store",
        "X-Poll-Interval": str(advise_interval(last_change, now, current_app)),
    }
    if ask.preference_applied:
        headers["Preference-Applied"] = ask.preference_applied
    return jsonify(body), 200, headers
