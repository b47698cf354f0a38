"""Membership and community writes, with who may do what.

Views call these inside ``app.http.writing.writing``: an :func:`acting`
transaction (a :func:`app.store.db.write_transaction` that names its actor)
that then wakes the hub; the change log itself is written by the database
triggers, never here. A write its rules refuse raises a ``Refused``
(``NotFound``, ``Forbidden``, ``Conflict``), which the HTTP layer answers
with its problem type.

A little over the usual module size: the permission rules of every write sit
together, so who may do what reads in one place.
"""
import secrets
from contextlib import contextmanager

from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from . import db, queries
from .refusals import Conflict, Forbidden, NotFound, PreconditionFailed, Refused
from .models import Activity, ChangeActor, Community, Membership, User

MANAGER_ROLES = ("admin", "owner")


@contextmanager
def acting(actor):
    """A write transaction of its own that records ``actor`` as ``by`` on the rows it writes."""
    postgres = db.is_postgres()
    with db.write_transaction() as session:
        if postgres:
            session.execute(text("SELECT set_config('community_sync.actor', :actor, true)"),
                            {"actor": actor})
        else:
            session.merge(ChangeActor(id=1, actor=actor))
        yield session
        if not postgres:
            session.execute(delete(ChangeActor))


def unknown_community(community_id):
    return NotFound("unknown-community", f"There is no community {community_id!r}.")


def not_a_member(community_id):
    return NotFound("not-a-member", f"You are not a member of {community_id!r}.")


def role_of(session, user_id, community_id):
    return session.scalar(queries.role_in(user_id, community_id))


def _community_for(session, identity, community_id, for_update=False):
    """The community and the caller's authority in it: 'platform', 'owner', 'admin' or None.

    A private community is absent (404, the very answer an unknown id gets)
    to whoever is neither in it nor a platform admin, whatever the request:
    a 403 would tell outsiders that it exists. The community and the
    caller's role are read in one statement, so that the work (and the time)
    is the same too. A platform admin's role does not matter: the community
    comes from the session's identity map when it holds it (a bulk change
    asks once per entry).
    """
    if identity.is_admin:
        community = session.get(Community, community_id, with_for_update=for_update)
        if community is None:
            raise unknown_community(community_id)
        return community, "platform"
    statement = select(Community, queries.role_here(identity.user_id)).where(Community.id == community_id)
    if for_update:
        statement = statement.with_for_update(of=Community)
    found = session.execute(statement).one_or_none()
    if found is None or (found.role is None and not found.Community.is_public):
        raise unknown_community(community_id)
    return found.Community, found.role if found.role in MANAGER_ROLES else None


def _forbid(detail):
    raise Forbidden("forbidden", detail)


def ensure_user(session, user_id):
    """Provision a user named in a write: ids belong to the token-issuing platform.

    Others may provision the same id at the same moment (its token's first
    request, or admins adding it to other communities): whoever comes second
    finds it there.
    """
    db.insert_if_absent(session, User, id=user_id)


def _lock_owners_first(session, identity, community_id, user_id):
    """Lock the community's owners before the target row when the target is one of them.

    Two owners demoting each other at once must not both see the other as the
    one who stays; locking the owners (in id order, before any single row)
    serializes them without a deadlock. A platform admin may leave a community
    ownerless, and most writes touch no owner, so they lock nothing more.
    """
    if identity.is_admin or role_of(session, user_id, community_id) != "owner":
        return
    _lock_owners(session, community_id)


def _lock_owners(session, community_id):
    session.scalars(
        select(Membership.user_id)
        .where(Membership.community_id == community_id, Membership.role == "owner")
        .order_by(Membership.user_id)
        .with_for_update()
    ).all()


def _keep_an_owner(session, identity, membership):
    """409 when removing or demoting ``membership`` would leave its community without an owner."""
    if identity.is_admin or membership is None or membership.role != "owner":
        return
    others = session.scalar(
        select(func.count()).select_from(Membership).where(
            Membership.community_id == membership.community_id,
            Membership.role == "owner",
            Membership.user_id != membership.user_id,
        )
    )
    if not others:
        raise Conflict(
            "last-owner",
            f"{membership.user_id!r} is the last owner of {membership.community_id!r}: "
            "make someone else owner first (or ask a platform admin).",
        )


def put_membership(session, identity, community_id, user_id, role, retry=True):
    """Add ``user_id`` to the community or set its role.

    Returns (membership, outcome): ``"created"``, ``"updated"`` (its role set)
    or ``"unchanged"``.
    """
    community, authority = _community_for(session, identity, community_id)
    _lock_owners_first(session, identity, community_id, user_id)
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
            _keep_an_owner(session, identity, membership)
            membership.role = role
            session.flush()
            return membership, "updated"
        return membership, "unchanged"
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
        # Another writer added it first, or deleted the community: go again,
        # now as a PUT on an existing membership (same permission rules, role
        # applied if it differs) or on a community that is gone. What this
        # session has loaded predates that writer's commit: read it afresh.
        session.expire_all()
        return put_membership(session, identity, community_id, user_id, role, retry=False)
    session.refresh(membership)
    return membership, "created"


def delete_membership(session, identity, community_id, user_id):
    """Remove ``user_id`` from the community: ``"removed"``, or ``"unchanged"`` when it was not a member."""
    _, authority = _community_for(session, identity, community_id)
    _lock_owners_first(session, identity, community_id, user_id)
    membership = session.get(Membership, (user_id, community_id), with_for_update=True)
    if user_id != identity.user_id:
        if authority is None:
            _forbid("Only platform admins and the community's admins may remove other users.")
        if membership is not None and membership.role == "owner" and authority not in (
            "platform", "owner"
        ):
            _forbid("Only owners and platform admins may remove an owner.")
    if membership is None:
        return "unchanged"
    _keep_an_owner(session, identity, membership)
    session.delete(membership)
    session.flush()
    return "removed"


SYNC_OUTCOMES = ("created", "updated", "unchanged", "removed")


def sync_memberships(session, identity, community_id, additions, removals):
    """Apply many membership changes in the caller's transaction: all of them, or none.

    ``additions`` are (pointer, user_id, role or None), ``removals`` (pointer,
    user_id), each user named once (app.http.validation). Every entry goes through
    :func:`put_membership` or :func:`delete_membership`, so it meets the very
    rules, provisioning and triggers of the single-member writes; one refused
    entry raises its problem, naming the entry by its pointer, and the
    transaction rolls back. Returns how many entries had each outcome.

    Locks are taken in one order, the community's owners first (as a single
    write that touches an owner does), then the targets by user id, so the
    batches of a community's managers wait for each other instead of
    deadlocking. A platform admin's batch takes no owner lock, as its single
    writes do not: if it meets a manager's batch in the other order,
    PostgreSQL refuses one of them, a 503 write-conflict to retry.
    """
    _, authority = _community_for(session, identity, community_id)
    if authority is None:
        _forbid("Only platform admins and the community's admins may change its members in bulk.")
    if authority != "platform":
        _lock_owners(session, community_id)
    entries = [(user_id, pointer, role, True) for pointer, user_id, role in additions]
    entries += [(user_id, pointer, None, False) for pointer, user_id in removals]
    counts = dict.fromkeys(SYNC_OUTCOMES, 0)
    for user_id, pointer, role, adding in sorted(entries):
        try:
            if adding:
                _, outcome = put_membership(session, identity, community_id, user_id, role)
            else:
                outcome = delete_membership(session, identity, community_id, user_id)
        except Refused as refusal:
            refusal.errors = refusal.errors or [{"pointer": pointer, "detail": refusal.detail}]
            raise
        counts[outcome] += 1
    return counts


def _ensure_free(session, community_id, fields, creating):
    """409 when the id (``creating``) or the slug in ``fields`` belongs to another community."""
    if creating and session.get(Community, community_id) is not None:
        raise Conflict("id-taken", f"The community {community_id!r} already exists.")
    if "slug" in fields:
        taken = session.scalar(
            select(Community.id).where(Community.slug == fields["slug"], Community.id != community_id)
        )
        if taken is not None:
            raise Conflict("slug-taken", f"The slug {fields['slug']!r} is already in use.")


@contextmanager
def _claiming_keys(session, community_id, fields, creating):
    """Write a community's id and slug in a savepoint, answering 409 if they are taken, first or last.

    The check before the write sees only committed rows: another transaction
    may take the same id or slug before this one writes, which then fails on
    the unique key once that one commits. Checked again after it (the winner
    is visible then), the loser gets the same 409 as if it had come second;
    a conflict the check cannot explain is raised as it is.
    """
    _ensure_free(session, community_id, fields, creating)
    try:
        # The writes go inside the savepoint: entering one flushes what is
        # pending, and a conflict there would spoil the whole transaction.
        with session.begin_nested():
            yield
            session.flush()
    except IntegrityError:
        _ensure_free(session, community_id, fields, creating)
        raise


def create_community(session, identity, fields):
    if not identity.is_admin:
        _forbid("Only platform admins may create communities.")
    community_id = fields.pop("id", None) or f"c-{secrets.token_hex(6)}"
    community = Community(id=community_id, **fields)
    with _claiming_keys(session, community_id, fields, creating=True):
        session.add(community)
    session.refresh(community)
    return community


def update_community(session, identity, community_id, fields, version=None):
    """Change the community's ``fields``; with ``version`` (``version(community, member_count)``:
    whether the caller's ``If-Match`` names the community as it is, and the version it is), only
    while it is that one."""
    community, authority = _community_for(session, identity, community_id, for_update=True)
    if authority is None:
        _forbid("Only platform admins and the community's admins may change it.")
    _require_version(session, community, version)
    with _claiming_keys(session, community_id, fields, creating=False):
        for name, value in fields.items():
            setattr(community, name, value)
    session.refresh(community)
    return community


def delete_community(session, identity, community_id, version=None):
    community, authority = _community_for(session, identity, community_id, for_update=True)
    if authority != "platform":
        _forbid("Only platform admins may delete communities.")
    _require_version(session, community, version)
    session.delete(community)
    session.flush()


def _require_version(session, community, version):
    """Refuse the write unless ``version`` accepts the community as it is now.

    Checked under the community's row lock (``_community_for(for_update=True)``):
    two editors holding the same version are serialised there, and the second
    finds the first's change, so exactly one of them writes over it.
    """
    if version is None:
        return
    named, current = version(community, member_count(session, community.id))
    if not named:
        raise PreconditionFailed(current)


def member_count(session, community_id):
    return session.scalar(queries.member_count(community_id))


def publish_activity(session, identity, community_id, fields):
    """Publish activity in a community (platform admins): one row of the outbox."""
    _, authority = _community_for(session, identity, community_id)
    if authority != "platform":
        _forbid("Only platform admins may publish activity.")
    _publish(session, fields, community_id=community_id)


def notify_user(session, identity, user_id, fields):
    """Publish a notification to one user (platform admins), provisioning the user."""
    if not identity.is_admin:
        _forbid("Only platform admins may publish notifications.")
    ensure_user(session, user_id)
    _publish(session, fields, user_id=user_id)


def _publish(session, fields, **recipient):
    """Insert into ``activity`` as any platform writer would; its trigger records the change."""
    try:
        with session.begin_nested():
            session.execute(insert(Activity).values(**recipient, **fields))
    except IntegrityError:
        # Only a community can be missing: deleted since it was read.
        raise unknown_community(recipient.get("community_id")) from None


def mark_community_read(session, identity, community_id):
    """Move the caller's read marker in the community to its newest activity.

    Returns the caller's entry for the community, read after the move
    (``unread`` 0). A marker that does not move records nothing; one that
    does records a ``read`` change (a trigger), which wakes the user's other
    tabs and devices.
    """
    newest = queries.newest("activity", community_id=community_id).scalar_subquery()
    session.execute(
        update(Membership)
        .where(Membership.user_id == identity.user_id, Membership.community_id == community_id,
               Membership.read_through < newest)
        .values(read_through=newest)
        .execution_options(synchronize_session=False)
    )
    entry = session.execute(queries.entry_of(identity.user_id, community_id)).one_or_none()
    if entry is None:
        # Rolled back with the transaction: a tombstone's marker stays put.
        raise not_a_member(community_id)
    return entry


def mark_notifications_read(session, identity):
    """Move the caller's notification read marker to its newest; the unread count after it."""
    newest = queries.newest("notification", user_id=identity.user_id).scalar_subquery()
    session.execute(
        update(User)
        .where(User.id == identity.user_id, User.notifications_read_through < newest)
        .values(notifications_read_through=newest)
        .execution_options(synchronize_session=False)
    )
    marker = select(User.notifications_read_through).where(User.id == identity.user_id)
    return session.scalar(
        select(queries.unread_notifications(identity.user_id, marker.scalar_subquery()))
    )


def set_presence_visible(session, identity, visible):
    """The caller's own choice to show in presence counts and lists, or not.

    Not a change of anyone's state: no change-log row, no poll woken.
    Counts cached by the workers follow within ``PRESENCE_INTERVAL``. A
    hidden user who shows themselves is online from now on: their presence
    rows start again, so no one learns how long they were online hidden.
    """
    if visible:
        session.execute(queries.presence_shown(identity.user_id, session.get_bind().dialect.name))
    session.execute(update(User).where(User.id == identity.user_id).values(presence_visible=visible))
