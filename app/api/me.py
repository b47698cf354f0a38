"""``/me``: the caller's memberships (ETag-conditional), notifications and read markers."""
from datetime import datetime, timezone

from flask import Blueprint, current_app, jsonify

from .. import db, feed, queries, validation, wire, writes
from ..auth import current_identity
from ..db import read_transaction
from ..intervals import advise_interval
from .conditional import etag, if_none_match, matches

bp = Blueprint("me", __name__, url_prefix="/me")


@bp.get("/communities")
def communities():
    identity = current_identity()
    with read_transaction(single_statement=True) as connection:
        state = feed.read_state(connection, identity.user_id)
    now = datetime.now(timezone.utc)
    current_app.extensions["hub"].vouching.served_state(
        identity.user_id, state.hash, state.last_change_at, state.communities
    )
    headers = {
        "ETag": etag(state.hash),
        "Cache-Control": "private, no-cache",
        "Vary": "Authorization",
        "X-Poll-Interval": str(advise_interval(state.last_change_at, now, current_app)),
    }
    if matches(if_none_match(), state.hash):
        return "", 304, headers
    online = current_app.extensions["presence"].counts([c["id"] for c in state.communities])
    return jsonify(wire.snapshot_body(identity, state, now, online)), 200, headers


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


@bp.put("/communities/<community_id>/read")
def read_community(community_id):
    """Mark the community's activity read, up to now: its entry, ``unread`` 0."""
    identity = current_identity()
    validation.community_id(community_id)
    with writes.writing(identity.user_id) as session:
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
    with writes.writing(identity.user_id) as session:
        unread = writes.mark_notifications_read(session, identity)
    return jsonify(wire.compose((wire.NOTIFICATIONS_UNREAD,), notifications_unread=unread))
