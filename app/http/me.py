"""``/me``: the caller's memberships (ETag-conditional), notifications, read markers, presence and typing."""
from datetime import datetime, timezone

from flask import Blueprint, current_app, jsonify

from .writing import writing
from ..store import db, feed, queries, writes
from . import validation
from .. import wire
from ..auth import current_identity
from ..store.db import read_transaction
from ..intervals import advise_interval
from ..live.session import Known
from .conditional import etag, if_none_match, matches

bp = Blueprint("me", __name__, url_prefix="/me")


@bp.get("/communities")
def communities():
    identity = current_identity()
    hub = current_app.extensions["hub"]
    condition = if_none_match()
    if condition is not None:
        # A smart-polling client asking whether its state changed: when this
        # hub has read every change since the state it last served the user,
        # and none was the user's, the answer needs no database.
        served = hub.served_if_current(identity.user_id)
        if served is not None and matches(condition, served.hash):
            hub.keep_reading()
            return "", 304, snapshot_headers(served.hash, served.last_change_at)
        hub.keep_reading()
    with read_transaction(single_statement=True) as connection:
        state = feed.read_state(connection, identity.user_id)
    hub.note_served(identity.user_id, Known(state.cursor, state.hash, state.last_change_at),
                    state.communities)
    headers = snapshot_headers(state.hash, state.last_change_at)
    if matches(condition, state.hash):
        return "", 304, headers
    online = current_app.extensions["online_counts"].counts([c["id"] for c in state.communities])
    cursor = current_app.extensions["cursor_key"].encode(state.cursor)
    body = wire.snapshot_body(identity, state, cursor, datetime.now(timezone.utc), online)
    return jsonify(body), 200, headers


def snapshot_headers(digest, last_change_at):
    """A snapshot's validators and pacing, the same on a ``200`` and a ``304``."""
    now = datetime.now(timezone.utc)
    return {
        "ETag": etag(digest),
        "Cache-Control": "private, no-cache",
        "Vary": "Authorization",
        "X-Poll-Interval": str(advise_interval(last_change_at, now, current_app)),
    }


@bp.get("/presence")
def presence():
    """Whether the caller shows in presence counts and lists."""
    identity = current_identity()
    with read_transaction(single_statement=True) as connection:
        visible = connection.scalar(queries.presence_visible(identity.user_id))
    return jsonify(wire.compose(wire.VISIBILITY, visible=bool(visible)))


@bp.put("/presence")
def set_presence():
    """Show or hide the caller in every presence count and list (from the next refresh on)."""
    identity = current_identity()
    visible = validation.body_fields(wire.VISIBILITY, creating=True)["visible"]
    with db.write_transaction() as session:
        writes.set_presence_visible(session, identity, visible)
    return jsonify(wire.compose(wire.VISIBILITY, visible=visible))


@bp.put("/typing")
def start_typing():
    """The caller types in a community's topic (members only): shown to the polls watching it
    until ``TYPING_TTL`` passes without a repeat."""
    identity = current_identity()
    place = validation.body_fields(wire.TYPING_PLACE, creating=True)
    if not current_app.extensions["typing"].typed(identity.user_id, place["community_id"], place["topic"]):
        raise writes.unknown_community(place["community_id"])
    return "", 204


@bp.delete("/typing")
def stop_typing():
    """The caller stopped typing, wherever it was."""
    identity = current_identity()
    current_app.extensions["typing"].stopped(identity.user_id)
    return "", 204


@bp.put("/communities/<community_id>/read")
def read_community(community_id):
    """Mark the community's activity read, up to now: its entry, ``unread`` 0."""
    identity = current_identity()
    validation.community_id(community_id)
    with writing(identity.user_id) as session:
        entry = writes.mark_community_read(session, identity, community_id)
    return jsonify(wire.community_entry(entry))


@bp.get("/notifications")
def notifications():
    """The caller's notifications, newest first, a page at a time."""
    identity = current_identity()
    before, limit = validation.page()
    with read_transaction(single_statement=True) as connection:
        rows, next_cursor = feed.read_notifications(connection, identity.user_id, before, limit)
    return jsonify(wire.notification_page(rows, next_cursor)), 200, {"Cache-Control": "no-store"}


@bp.put("/notifications/read")
def read_notifications():
    """Mark the caller's notifications read, up to now."""
    identity = current_identity()
    with writing(identity.user_id) as session:
        unread = writes.mark_notifications_read(session, identity)
    return jsonify(wire.compose((wire.NOTIFICATIONS_UNREAD,), notifications_unread=unread))
