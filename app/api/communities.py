"""Communities and their members: ``/communities/...``."""
from flask import Blueprint, jsonify, url_for
from sqlalchemy import or_, select

from .. import db, feed, validation, writes
from ..auth import current_identity
from ..models import Community, Membership
from .conditional import etag, if_none_match, matches

bp = Blueprint("communities", __name__, url_prefix="/communities")


def community_body(community):
    return {
        "id": community.id,
        "slug": community.slug,
        "name": community.name,
        "logo_url": community.logo_url,
        "is_public": bool(community.is_public),
    }


def membership_body(membership):
    return {
        "user_id": membership.user_id,
        "community_id": membership.community_id,
        "role": membership.role,
        "joined_at": feed.iso(membership.joined_at),
    }


def _target(identity, user_id):
    return identity.user_id if user_id == "me" else validation.path_id(user_id, "user")


@bp.get("")
def index():
    """Public communities, the caller's own, and every one for platform admins."""
    identity = current_identity()
    query = select(Community).order_by(Community.name, Community.id)
    if not identity.is_admin:
        mine = select(Membership.community_id).where(Membership.user_id == identity.user_id)
        query = query.where(or_(Community.is_public, Community.id.in_(mine)))
    communities = db.session().scalars(query)
    return jsonify({"communities": [community_body(c) for c in communities]})


@bp.post("")
def create():
    identity = current_identity()
    body = validation.json_object(
        ("id", "slug", "name", "logo_url", "is_public"), required=("slug", "name")
    )
    fields = validation.community_fields(body)
    with writes.writing(identity.user_id) as session:
        community = writes.create_community(session, identity, fields)
    response = jsonify(community_body(community))
    location = url_for(".show", community_id=community.id)
    return response, 201, {"Location": location}


@bp.get("/<community_id>")
def show(community_id):
    identity = current_identity()
    validation.path_id(community_id, "community")
    session = db.session()
    community = session.get(Community, community_id)
    visible = community is not None and (
        community.is_public
        or identity.is_admin
        or writes.role_of(session, identity.user_id, community_id) is not None
    )
    if not visible:
        # Private communities are not revealed to outsiders.
        raise writes.unknown_community(community_id)
    count = writes.member_count(session, community_id)
    tag = feed.state_hash([community_body(community), count])
    headers = {"ETag": etag(tag), "Cache-Control": "private, no-cache", "Vary": "Authorization"}
    if matches(if_none_match(), tag):
        return "", 304, headers
    return jsonify({**community_body(community), "member_count": count}), 200, headers


@bp.patch("/<community_id>")
def update(community_id):
    identity = current_identity()
    validation.path_id(community_id, "community")
    fields = validation.community_fields(
        validation.json_object(("slug", "name", "logo_url", "is_public"))
    )
    with writes.writing(identity.user_id) as session:
        community = writes.update_community(session, identity, community_id, fields)
    return jsonify(community_body(community))


@bp.delete("/<community_id>")
def destroy(community_id):
    identity = current_identity()
    validation.path_id(community_id, "community")
    with writes.writing(identity.user_id) as session:
        writes.delete_community(session, identity, community_id)
    return "", 204


@bp.put("/<community_id>/members/<user_id>")
def put_member(community_id, user_id):
    identity = current_identity()
    validation.path_id(community_id, "community")
    target = _target(identity, user_id)
    body = validation.json_object(("role",), optional_body=True)
    role = validation.role(body["role"]) if "role" in body else None
    with writes.writing(identity.user_id) as session:
        membership, created = writes.put_membership(session, identity, community_id, target, role)
    headers = {}
    if created:
        headers["Location"] = url_for(".put_member", community_id=community_id, user_id=target)
    return jsonify(membership_body(membership)), 201 if created else 200, headers


@bp.delete("/<community_id>/members/<user_id>")
def delete_member(community_id, user_id):
    identity = current_identity()
    validation.path_id(community_id, "community")
    target = _target(identity, user_id)
    with writes.writing(identity.user_id) as session:
        writes.delete_membership(session, identity, community_id, target)
    return "", 204
