"""Demo mode: tokens for the demo page; absent unless DEMO_MODE is on.

Demo mode must never hand out admin rights to whoever reaches the port:
``/demo/tokens`` mints tokens without ``adm`` for every demo user, and the
demo admin's token (the page's admin panel needs it) is given only to the
demo page itself when it is opened from the server's own machine (see
:func:`admin_token_for_this_client`). Publishing activity is a platform
power too: ``/demo/sql-activity`` answers only that same machine.
"""
import ipaddress

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from ..store import db, writes
from ..store.demo_data import USERS as DEMO_USERS
from . import validation
from .. import wire
from ..auth import default_ttl, mint_token
from ..errors import Problem

bp = Blueprint("demo", __name__, url_prefix="/demo")
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "[::1]"}
# Set by proxies: a request that carries one comes from elsewhere, whatever
# the address of the proxy that delivered it.
FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Real-IP")


@bp.before_request
def demo_only():
    if not current_app.config["DEMO_MODE"]:
        # Indistinguishable from a route that does not exist.
        raise Problem(404, "not-found", "The requested URL was not found on the server.",
                      title="Not Found")


@bp.get("/users")
def users():
    return jsonify({"users": [{"id": i, "name": n, "admin": a} for i, n, a in DEMO_USERS]})


@bp.post("/tokens")
def tokens():
    """A token for a demo user, never with admin rights (not even the demo admin's)."""
    body = validation.json_object(("user_id", "name", "admin"), required=("user_id",))
    known = {user_id: name for user_id, name, _admin in DEMO_USERS}
    if not isinstance(body["user_id"], str) or body["user_id"] not in known:
        raise Problem(422, "unknown-demo-user", "Demo tokens are minted only for the demo users.")
    ttl = default_ttl()
    token = mint_token(body["user_id"], name=known[body["user_id"]], ttl=ttl)
    return jsonify({"token": token, "user_id": body["user_id"], "expires_in": ttl}), 201


# The outbox path exactly as the platform would take it: plain SQL.
PUBLISH_SQL = text(
    "INSERT INTO activity (community_id, user_id, kind, ref, actor, topic, data, collapse) "
    "VALUES (:community_id, :user_id, :kind, :ref, :actor, :topic, :data, :collapse)"
)


@bp.post("/sql-activity")
def sql_activity():
    """Publish activity or a notification with a raw ``INSERT INTO activity``.

    A platform power: only for requests from the server's own machine, like
    the demo admin's token.
    """
    if not from_this_machine():
        raise Problem(403, "forbidden",
                      "Demo publishing is open only to the server's own machine.")
    fields = validation.publication(wire.ACTIVITY_PUBLICATION, recipients=("community_id", "user_id"))
    values = {"community_id": None, "user_id": None, "actor": None, "topic": None, "data": None,
              "collapse": False, **fields}
    data = None if values["data"] is None else db.compact_json(values["data"])
    try:
        with db.write_transaction() as session:
            session.execute(PUBLISH_SQL, {**values, "data": data})
    except IntegrityError:
        # The trigger refuses activity in a community that does not exist.
        raise writes.unknown_community(values["community_id"]) from None
    current_app.extensions["hub"].notify()
    return jsonify(wire.compose(wire.PUBLISHED, **fields)), 201


def from_this_machine():
    """Whether the request comes straight from the server's own machine.

    The peer must be a loopback address, with no proxy's forwarding header
    (behind a proxy on the same host every client would look local), and the
    Host a loopback name: a page of another site that reaches 127.0.0.1 by
    DNS rebinding still names its own host.
    """
    try:
        if not ipaddress.ip_address(request.remote_addr or "").is_loopback:
            return False
    except ValueError:  # a Unix socket: a local proxy serving anyone
        return False
    if any(name in request.headers for name in FORWARDING_HEADERS):
        return False
    host = request.host.lower()
    host = host[: host.find("]") + 1] if host.startswith("[") else host.partition(":")[0]
    return host in LOOPBACK_HOSTS


def admin_token_for_this_client():
    """The demo admin's token for the demo page opened on the server's machine, else None."""
    if not current_app.config["DEMO_MODE"] or not from_this_machine():
        return None
    admins = [(user_id, name) for user_id, name, admin in DEMO_USERS if admin]
    if not admins:
        return None
    user_id, name = admins[0]
    return mint_token(user_id, name=name, admin=True)
