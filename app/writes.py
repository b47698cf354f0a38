"""Membership and community writes, with who may do what.

Views call these inside :func:`writing`; the change log itself is written by
the database triggers, never here.
"""
import secrets
from contextlib import contextmanager

from flask import current_app
from sqlalchemy import delete, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from . import db
from .errors import Problem
from .models import ChangeActor, Community, Membership, User

MANAGER_ROLES = ("admin", "owner")


@contextmanager
def writing(actor):
    """A write transaction of its own that records ``actor`` as ``by``, then wakes this process's hub.

    On SQLite the transaction starts IMMEDIATE: a deferred one that reads first
    can fail to upgrade to a write lock instead of waiting for it.
    """
    bind = db.engine()
    postgres = db.is_postgres(bind)
    if not postgres:
        bind = bind.execution_options(sqlite_begin="IMMEDIATE")
    with Session(bind, expire_on_commit=False) as session, session.begin():
        if postgres:
            session.execute(text("SELECT set_config('community_sync.actor', :actor, true)"),
                            {"actor": actor})
        else:
            session.merge(ChangeActor(id=1, actor=actor))
        yield session
        if not postgres:
            session.execute(delete(ChangeActor))
    current_app.extensions["hub"].notify()


def unknown_community(community_id):
    return Problem(404, "unknown-community", f"There is no community {community_id!r}.")


def community_or_404(session, community_id, for_update=False):
    community = session.get(Community, community_id, with_for_update=for_update)
    if community is None:
        raise unknown_community(community_id)
    return community


def role_of(session, user_id, community_id):
    return session.scalar(
        select(Membership.role).where(
            Membership.user_id == user_id, Membership.community_id == community_id
        )
    )


def _authority(session, identity, community_id):
    """'platform', 'owner', 'admin' or None: what the caller may do in the community."""
    if identity.is_admin:
        return "platform"
    own_role = role_of(session, identity.user_id, community_id)
    return own_role if own_role in MANAGER_ROLES else None


def _forbid(detail):
    raise Problem(403, "forbidden", detail)


def ensure_user(session, user_id):
    """Provision a user named in a write: ids belong to the token-issuing platform."""
    if session.get(User, user_id) is None:
        session.add(User(id=user_id))
        session.flush()


def put_membership(session, identity, community_id, user_id, role, retry=True):
    """Add ``user_id`` to the community or set its role. Returns (membership, created)."""
    community = community_or_404(session, community_id)
    authority = _authority(session, identity, community_id)
    # Locked: another writer may change or remove it before our update lands.
    membership = session.get(Membership, (user_id, community_id), with_for_update=True)
    if authority is None:
        if user_id != identity.user_id:
            _forbid("Only platform admins and the community's admins may add other users.")
        if role not in (None, "member"):
            _forbid("You may join only as member.")
        if membership is None and not community.is_public:
            _forbid("This community is not public: ask one of its admins to add you.")
        if membership is not None and role is not None and role != membership.role:
            _forbid("Only platform admins and the community's admins may change roles.")
    touches_owner = role == "owner" or (membership is not None and membership.role == "owner"
                                        and role not in (None, "owner"))
    if touches_owner and authority not in ("platform", "owner"):
        _forbid("Only owners and platform admins may grant or take the owner role.")

    if membership is not None:
        if role is not None and role != membership.role:
            membership.role = role
            session.flush()
        return membership, False
    ensure_user(session, user_id)
    membership = Membership(user_id=user_id, community_id=community_id, role=role or "member")
    try:
        # Added inside the savepoint: entering one flushes what is pending, and
        # a conflict there would spoil the whole transaction.
        with session.begin_nested():
            session.add(membership)
            session.flush()
    except IntegrityError:
        if not retry:
            raise
        # Another writer added it first: go again, now as a PUT on an existing
        # membership (same permission rules, role applied if it differs).
        return put_membership(session, identity, community_id, user_id, role, retry=False)
    session.refresh(membership)
    return membership, True


def delete_membership(session, identity, community_id, user_id):
    """Remove ``user_id`` from the community; nothing to remove is not an error."""
    community_or_404(session, community_id)
    membership = session.get(Membership, (user_id, community_id), with_for_update=True)
    if user_id != identity.user_id:
        authority = _authority(session, identity, community_id)
        if authority is None:
            _forbid("Only platform admins and the community's admins may remove other users.")
        if membership is not None and membership.role == "owner" and authority not in (
            "platform", "owner"
        ):
            _forbid("Only owners and platform admins may remove an owner.")
    if membership is not None:
        session.delete(membership)
        session.flush()


def _ensure_free(session, fields, exclude_id=None):
    if "slug" in fields:
        taken = session.scalar(
            select(Community.id).where(Community.slug == fields["slug"], Community.id != exclude_id)
        )
        if taken is not None:
            raise Problem(409, "slug-taken", f"The slug {fields['slug']!r} is already in use.")


def create_community(session, identity, fields):
    if not identity.is_admin:
        _forbid("Only platform admins may create communities.")
    community_id = fields.pop("id", None) or f"c-{secrets.token_hex(6)}"
    if session.get(Community, community_id) is not None:
        raise Problem(409, "id-taken", f"The community {community_id!r} already exists.")
    _ensure_free(session, fields)
    community = Community(id=community_id, **fields)
    session.add(community)
    session.flush()
    session.refresh(community)
    return community


def update_community(session, identity, community_id, fields):
    community = community_or_404(session, community_id, for_update=True)
    if _authority(session, identity, community_id) is None:
        _forbid("Only platform admins and the community's admins may change it.")
    _ensure_free(session, fields, exclude_id=community_id)
    for name, value in fields.items():
        setattr(community, name, value)
    session.flush()
    session.refresh(community)
    return community


def delete_community(session, identity, community_id):
    if not identity.is_admin:
        _forbid("Only platform admins may delete communities.")
    session.delete(community_or_404(session, community_id, for_update=True))
    session.flush()


def member_count(session, community_id):
    return session.scalar(
        select(func.count()).select_from(Membership).where(Membership.community_id == community_id)
    )
