"""``GET /me/communities``: the caller's memberships, ETag-conditional."""
from datetime import datetime, timezone

from flask import Blueprint, current_app, jsonify

from .. import feed
from ..auth import current_identity
from ..db import read_transaction
from ..intervals import advise_interval
from .conditional import etag, if_none_match, matches

bp = Blueprint("me", __name__, url_prefix="/me")


@bp.get("/communities")
def communities():
    identity = current_identity()
    with read_transaction(single_statement=True) as session:
        state = feed.read_state(session, identity.user_id)
    now = datetime.now(timezone.utc)
    current_app.extensions["hub"].served_state(identity.user_id, state.hash, state.last_change_at)
    headers = {
        "ETag": etag(state.hash),
        "Cache-Control": "private, no-cache",
        "Vary": "Authorization",
        "X-Poll-Interval": str(advise_interval(state.last_change_at, now, current_app)),
    }
    if matches(if_none_match(), state.hash):
        return "", 304, headers
    body = {
        "user": {"id": identity.user_id, "name": identity.name},
        "communities": state.communities,
        "hash": state.hash,
        "cursor": state.cursor.encode(),
        "server_time": feed.iso(now, milliseconds=True),
    }
    return jsonify(body), 200, headers
