"""Users as the platform addresses them: ``POST /users/{id}/notifications``."""
from flask import Blueprint, jsonify

from . import validation
from .. import wire
from .writing import writing
from ..store import writes
from ..auth import current_identity

bp = Blueprint("users", __name__, url_prefix="/users")


@bp.post("/<user_id>/notifications")
def notify(user_id):
    """A notification to one user, published by the platform (admin tokens)."""
    identity = current_identity()
    target = validation.user_id(user_id, identity.user_id)
    fields = validation.publication()
    with writing(identity.user_id) as session:
        writes.notify_user(session, identity, target, fields)
    return jsonify(wire.published_body(fields, user_id=target)), 201
