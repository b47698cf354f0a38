"""The schema: users, communities, memberships and the append-only change log.

Rows of ``changes`` are written only by database triggers (see the
migrations), so a change made with raw SQL is recorded exactly like one made
through the API.

``memberships.community_id`` has no foreign key: a deleted community's
memberships stay behind as tombstones, so that its ``community_deleted`` row
can still be resolved to its former members. A trigger refuses a membership
into a community that does not exist, and every read of state joins
``communities``, which hides tombstones.
"""
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    JSON,
    Index,
    Integer,
    String,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from .db import Model

ROLES = ("member", "moderator", "admin", "owner")
CHANGE_TYPES = ("joined", "left", "role_changed", "community_updated", "community_deleted",
                "activity", "notification", "read")
KIND_LENGTH = 32
ID_LENGTH = 64
TOPIC_LENGTH = 64
# ``data`` on activity: a JSON object of at most this many bytes as written.
DATA_BYTES = 512
# Activity that counts in ``unread``: community-level, not a latest value
# (migration 0007); the partial index's condition, spelt as each dialect's
# queries spell it (SQLite's planner matches the terms as written).
COUNTED_ACTIVITY = {
    "postgresql": "type = 'activity' AND topic IS NULL AND NOT collapse",
    "sqlite": "type = 'activity' AND topic IS NULL AND collapse = 0",
}
NAME_LENGTH = 200

# SQLite keeps AUTOINCREMENT ids monotonic even after pruning; PostgreSQL uses
# an identity column.
ChangeId = BigInteger().with_variant(Integer, "sqlite")


class User(Model):
    __tablename__ = "users"
    __table_args__ = (
        # The few users hidden from presence, looked up by every count (migration 0005);
        # each backend's condition as its queries spell it, or the index goes unused.
        Index("ix_users_presence_hidden", "id", postgresql_where=text("NOT presence_visible"),
              sqlite_where=text("presence_visible = 0")),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # The newest notification change id the user has read (migration 0004).
    notifications_read_through: Mapped[int] = mapped_column(BigInteger, server_default="0")
    # False hides the user from every presence count and list (migration 0005).
    presence_visible: Mapped[bool] = mapped_column(Boolean, server_default="1")


class Community(Model):
    __tablename__ = "communities"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    slug: Mapped[str] = mapped_column(String(ID_LENGTH), unique=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    logo_url: Mapped[str | None] = mapped_column(String(2048))
    is_public: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Membership(Model):
    __tablename__ = "memberships"
    __table_args__ = (
        CheckConstraint("role IN ('member', 'moderator', 'admin', 'owner')", name="role"),
        Index("ix_memberships_community_id", "community_id"),
    )

    user_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    community_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(16), default="member", server_default="member")
    joined_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # The newest change id whose activity the member has read; a trigger sets
    # it at the join, so a new member starts with nothing unread (migration 0004).
    read_through: Mapped[int] = mapped_column(BigInteger, server_default="-1")


class Change(Model):
    """One entry of the change log: user-scoped, or community-scoped.

    A user-scoped row (``joined``, ``left``, ``role_changed``, a
    ``notification``, whose ``community_id`` is NULL) names its
    ``user_id``. A community-wide change (a rename, a deletion, ``activity``) is one
    community-scoped row with ``user_id`` NULL, whatever the community's size;
    a reader resolves it to the community's members as of its own snapshot
    (``app.store.queries.changes_of``). ``xid`` is the writer's transaction id on PostgreSQL (NULL on SQLite), which
    is what cursors are made of there (see ``app.store.feed``).
    """

    __tablename__ = "changes"
    __table_args__ = (
        Index("ix_changes_user_id_id", "user_id", "id"),
        Index("ix_changes_user_id_at", "user_id", "at"),
        Index("ix_changes_xid", "xid"),
        Index("ix_changes_at", "at"),
        Index("ix_changes_community_id_id", "community_id", "id",
              postgresql_where=text("user_id IS NULL"), sqlite_where=text("user_id IS NULL")),
        # unread: a count of the rows above a read marker, at most 100, the reader's own
        # skipped by their actor (beside the ids on PostgreSQL).
        Index("ix_changes_activity", "community_id", "id", postgresql_include=["actor"],
              postgresql_where=text(COUNTED_ACTIVITY["postgresql"]),
              sqlite_where=text(COUNTED_ACTIVITY["sqlite"])),
        Index("ix_changes_notification", "user_id", "id",
              postgresql_where=text("type = 'notification'"),
              sqlite_where=text("type = 'notification'")),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(ChangeId, primary_key=True, autoincrement=True)
    xid: Mapped[int | None] = mapped_column(BigInteger)
    user_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    community_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    type: Mapped[str] = mapped_column(String(24))
    role: Mapped[str | None] = mapped_column(String(16))
    actor: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    kind: Mapped[str | None] = mapped_column(String(KIND_LENGTH))
    ref: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    # Activity's topic inside its community, payload and whether only its newest value per
    # (community, topic, kind, ref) matters (migration 0007).
    topic: Mapped[str | None] = mapped_column(String(TOPIC_LENGTH))
    data: Mapped[dict | None] = mapped_column(JSON)
    collapse: Mapped[bool] = mapped_column(Boolean, server_default="0")


class Activity(Model):
    """The outbox the platform publishes to: ``INSERT INTO activity (...)`` in its own transaction.

    Always empty between transactions: a trigger moves each row into
    ``changes`` as it is inserted (see migration 0003), after the CHECK
    constraints below have refused a bad one. ``community_id`` for a
    community's activity, ``user_id`` for a notification to one user.
    """

    __tablename__ = "activity"
    __table_args__ = (
        CheckConstraint("(community_id IS NULL) <> (user_id IS NULL)", name="one_recipient"),
    )

    id: Mapped[int] = mapped_column(ChangeId, primary_key=True, autoincrement=True)
    community_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    user_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    kind: Mapped[str] = mapped_column(String(KIND_LENGTH))
    ref: Mapped[str] = mapped_column(String(ID_LENGTH))
    actor: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    topic: Mapped[str | None] = mapped_column(String(TOPIC_LENGTH))
    data: Mapped[dict | None] = mapped_column(JSON)
    collapse: Mapped[bool] = mapped_column(Boolean, server_default="0")


class FeedMeta(Model):
    """One row: the identity of this change log and how far it has been pruned.

    ``epoch`` is random per database, so a cursor from a rebuilt database is
    recognised and answered with a reset. ``pruned_through`` is the highest
    change id (SQLite) or transaction id (PostgreSQL) deleted by retention.
    ``notify``: whether writing to the log NOTIFYs (PostgreSQL; see
    ``app/live/listener.py``).
    """

    __tablename__ = "feed_meta"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    epoch: Mapped[str] = mapped_column(String(32))
    pruned_through: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    notify: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")


class ChangeActor(Model):
    """SQLite only: who is writing, for the triggers to record as ``by``.

    SQLite has no session variables; it has one writer at a time, so a row set
    at the start of a write transaction and removed before its commit plays
    that part. PostgreSQL uses ``set_config('community_sync.actor', ...)``.
    """

    __tablename__ = "change_actor"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    actor: Mapped[str | None] = mapped_column(String(ID_LENGTH))


class PresenceWorker(Model):
    """A worker process that reports who is online through it, and when it last said so.

    Its ``presence`` rows count only while ``refreshed_at`` is within
    ``PRESENCE_TTL`` of the database's clock: a worker that dies stops
    refreshing, and its users drop out without anyone deleting a row. On
    PostgreSQL both tables are UNLOGGED (migration 0005): presence is
    rebuilt within one refresh after a crash, so it is not worth WAL.
    """

    __tablename__ = "presence_workers"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    refreshed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Presence(Model):
    """One user online through one worker (a held poll, or a request within ``PRESENCE_TTL``).

    Written only when that changes (the user arrives or leaves there), never
    per request; ``since`` is when it arrived.
    """

    __tablename__ = "presence"
    __table_args__ = (Index("ix_presence_worker_id", "worker_id"),)

    user_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    worker_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Reading(Model):
    """One user reading a topic through one worker: a poll held there watches it (``watch`` is
    ``community/topic``, or ``community/*`` for every topic of the community).

    Written with the worker's presence, on transitions only (migration
    0008), and counted through the same live workers.
    """

    __tablename__ = "reading"
    __table_args__ = (Index("ix_reading_watch", "watch"),)

    worker_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    watch: Mapped[str] = mapped_column(String(ID_LENGTH + 1 + TOPIC_LENGTH), primary_key=True)
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Typing(Model):
    """Where a user is typing, until when: one row per user, rewritten at most every few
    seconds while they type (``app/live/typing.py``, migration 0008)."""

    __tablename__ = "typing"
    __table_args__ = (Index("ix_typing_community_id", "community_id"),)

    user_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    community_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    topic: Mapped[str] = mapped_column(String(TOPIC_LENGTH))
    until: Mapped[datetime] = mapped_column(DateTime(timezone=True))
