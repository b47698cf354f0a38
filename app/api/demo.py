"""Demo-mode token minting for the demo page; absent unless DEMO_MODE is on."""
from flask import Blueprint, current_app, jsonify

from .. import validation
from ..auth import mint_token
from ..cli import DEMO_USERS
from ..errors import Problem

bp = Blueprint("demo", __name__, url_prefix="/demo")
TOKEN_TTL = 3600


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
    body = validation.json_object(("user_id", "name", "admin"), required=("user_id",))
    known = {user_id: (name, admin) for user_id, name, admin in DEMO_USERS}
    if not isinstance(body["user_id"], str) or body["user_id"] not in known:
        raise Problem(422, "unknown-demo-user", "Demo tokens are minted only for the demo users.")
    name, admin = known[body["user_id"]]
    token = mint_token(body["user_id"], name=name, admin=admin, ttl=TOKEN_TTL)
    return jsonify({"token": token, "user_id": body["user_id"], "expires_in": TOKEN_TTL}), 201
