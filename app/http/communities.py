"""Communities and their members: ``/communities/...``."""
import math
from contextlib import contextmanager

from flask import Blueprint, current_app, jsonify, url_for

from .writing import writing
from ..store import queries, writes
from . import request_limits, validation
from .. import wire
from ..auth import current_identity
from ..errors import Problem
from ..store.refusals import PreconditionFailed
from ..store.db import read_transaction
from .conditional import etag, if_match, if_none_match, matches, matches_strongly

bp = Blueprint("communities", __name__, url_prefix="/communities")


@bp.get("")
def index():
    """Public communities, the caller's own, and every one for platform admins."""
    identity = current_identity()
    query = queries.communities_visible_to(identity.user_id, identity.is_admin)
    with read_transaction(single_statement=True) as connection:
        communities = [wire.community_body(row) for row in connection.execute(query)]
    return jsonify(wire.compose(wire.COMMUNITY_LIST, communities=communities))


@bp.post("")
def create():
    identity = current_identity()
    fields = validation.community_fields(creating=True)
    with writing(identity.user_id) as session:
        community = writes.create_community(session, identity, fields)
    response = jsonify(wire.community_body(community))
    location = url_for(".show", community_id=community.id)
    return response, 201, {"Location": location}


@bp.get("/<community_id>")
def show(community_id):
    identity = current_identity()
    validation.community_id(community_id)
    with read_transaction() as connection:
        community = connection.execute(queries.community_and_role(community_id, identity.user_id)).one_or_none()
        visible = community is not None and (
            community.is_public or identity.is_admin or community.role is not None
        )
        if not visible:
            # Private communities are not revealed to outsiders.
            raise writes.unknown_community(community_id)
        count = connection.scalar(queries.member_count(community_id))
    tag = wire.community_version(community, count)
    headers = {"ETag": etag(tag), "Cache-Control": "private, no-cache", "Vary": "Authorization"}
    if matches(if_none_match(), tag):
        return "", 304, headers
    return jsonify(wire.community_detail(community, count)), 200, headers


@bp.get("/<community_id>/presence")
def presence(community_id):
    """Who of the community's members is online now, or with ``topic``, reading that topic
    (a poll held watches it): members only (else the unknown id's 404)."""
    identity = current_identity()
    validation.community_id(community_id)
    topic = validation.topic_parameter()
    online_counts = current_app.extensions["online_counts"]
    with read_transaction() as connection:
        if connection.scalar(queries.role_in(identity.user_id, community_id)) is None:
            raise writes.unknown_community(community_id)
        online, rows = online_counts.members(connection, community_id, topic)
    body = wire.presence_body(online, rows)
    tag = wire.state_hash(body)
    headers = {
        "ETag": etag(tag), "Cache-Control": "private, no-cache", "Vary": "Authorization",
        # Who is online is written within a moment of arriving or leaving,
        # and refreshed every PRESENCE_INTERVAL: asking more often finds the same.
        "X-Poll-Interval": str(max(1, math.ceil(online_counts.interval))),
    }
    if matches(if_none_match(), tag):
        return "", 304, headers
    return jsonify(body), 200, headers


@bp.patch("/<community_id>")
def update(community_id):
    """Change a community; with ``If-Match``, only the version it names (else ``412``)."""
    identity = current_identity()
    validation.community_id(community_id)
    fields = validation.community_fields(creating=False)
    with versioned(), writing(identity.user_id) as session:
        community = writes.update_community(session, identity, community_id, fields, required_version())
        tag = wire.community_version(community, writes.member_count(session, community_id))
    return jsonify(wire.community_body(community)), 200, {"ETag": etag(tag)}


@bp.delete("/<community_id>")
def destroy(community_id):
    identity = current_identity()
    validation.community_id(community_id)
    with versioned(), writing(identity.user_id) as session:
        writes.delete_community(session, identity, community_id, required_version())
    return "", 204


def required_version():
    """What ``If-Match`` accepts, as ``writes`` asks it (None without the header: the last writer wins).

    RFC 9110: strong comparison, so a weak validator (``W/"..."``, what a
    gzipping proxy makes of ours) never matches; a list matches when one of its
    tags does, and ``*`` matches any current version.
    """
    header = if_match()
    if header is None:
        return None

    def named(community, member_count):
        current = wire.community_version(community, member_count)
        return matches_strongly(header, current), current

    return named


@contextmanager
def versioned():
    """A write refused for its ``If-Match`` as ``412``, naming the current version in its ``ETag``."""
    try:
        yield
    except PreconditionFailed as refusal:
        raise Problem(412, "precondition-failed", refusal.detail,
                      headers={"ETag": etag(refusal.current)}) from None


@bp.put("/<community_id>/members/<user_id>")
def put_member(community_id, user_id):
    identity = current_identity()
    validation.community_id(community_id)
    target = validation.user_id(user_id, identity.user_id)
    body = validation.json_object(("role",), optional_body=True)
    role = validation.role(body["role"]) if "role" in body else None
    with writing(identity.user_id) as session:
        membership, outcome = writes.put_membership(session, identity, community_id, target, role)
    if outcome != "created":
        return jsonify(wire.membership_body(membership))
    location = url_for(".put_member", community_id=community_id, user_id=target)
    return jsonify(wire.membership_body(membership)), 201, {"Location": location}


@bp.delete("/<community_id>/members/<user_id>")
def delete_member(community_id, user_id):
    identity = current_identity()
    validation.community_id(community_id)
    target = validation.user_id(user_id, identity.user_id)
    with writing(identity.user_id) as session:
        writes.delete_membership(session, identity, community_id, target)
    return "", 204


@bp.patch("/<community_id>/members")
@request_limits.larger_body(request_limits.BULK_MAX_CONTENT_LENGTH)
def sync_members(community_id):
    """Add, re-role and remove many members at once (the platform's sync): all or nothing."""
    identity = current_identity()
    validation.community_id(community_id)
    additions, removals = validation.membership_changes()
    with writing(identity.user_id) as session:
        counts = writes.sync_memberships(session, identity, community_id, additions, removals)
    return jsonify(wire.compose(wire.MEMBERSHIP_SYNC, **counts))


@bp.post("/<community_id>/activity")
def publish_activity(community_id):
    """Activity in the community, published by the platform (admin tokens)."""
    identity = current_identity()
    validation.community_id(community_id)
    fields = validation.publication(wire.ACTIVITY_PUBLICATION)
    with writing(identity.user_id) as session:
        writes.publish_activity(session, identity, community_id, fields)
    return jsonify(wire.published_body(fields, community_id=community_id)), 201
