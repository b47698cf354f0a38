"""Functions that build the ``select()``s the feed and the views run."""
import functools
import json

from sqlalchemy import Text, and_, bindparam, cast, func, literal, literal_column, or_, select, text

from sqlalchemy.dialects.postgresql import JSONB

from .models import Change, Community, FeedMeta, Membership

STATE_COLUMNS = (
    Membership.user_id,
    Community.id,
    Community.slug,
    Community.name,
    Community.logo_url,
    Community.is_public,
    Membership.role,
    Membership.joined_at,
)


def current_position(dialect):
    """The position every change committed so far is behind, as text.

    PostgreSQL: the statement's snapshot (``xmin:xmax:xip``), which says exactly
    which transactions it sees. SQLite: the AUTOINCREMENT high-water mark, which
    survives pruning.
    """
    if dialect == "postgresql":
        return cast(func.pg_current_snapshot(), Text)
    return cast(
        func.coalesce(
            select(literal_column("seq"))
            .select_from(text("sqlite_sequence"))
            .where(literal_column("name") == "changes")
            .scalar_subquery(),
            0,
        ),
        Text,
    )


def in_json_list(column, values, dialect):
    """``column IN (values)`` as one bound parameter, however many values.

    The statement count of a batched read must not grow with the number of
    waiters, and SQLite limits bound parameters; a JSON array is one parameter
    on both backends.
    """
    payload = json.dumps(list(values))
    if dialect == "postgresql":
        ids = cast(literal(payload, Text), JSONB)
        return column.in_(select(func.jsonb_array_elements_text(ids)))
    return column.in_(select(func.json_each(payload).table_valued("value").c.value))


def memberships_of(user_clause):
    """Membership rows joined to their communities, for the users ``user_clause`` picks."""
    return (
        select(*STATE_COLUMNS)
        .join(Community, Community.id == Membership.community_id)
        .where(user_clause)
    )


@functools.cache
def snapshot_of(dialect):
    """One statement: the feed's identity and position, a user's last change and memberships.

    One statement means one snapshot on every backend, and one query for a
    conditional GET. Built once per dialect (it runs on every snapshot
    request); execute it with ``{"user_id": ...}``.
    """
    user_id = bindparam("user_id")
    joined = Membership.__table__.join(
        Community.__table__, Community.id == Membership.community_id
    )
    last_change = select(func.max(Change.at)).where(Change.user_id == user_id).scalar_subquery()
    return (
        select(
            FeedMeta.epoch,
            FeedMeta.pruned_through,
            current_position(dialect).label("position"),
            last_change.label("last_change_at"),
            *STATE_COLUMNS[1:],
        )
        .select_from(FeedMeta.__table__.outerjoin(joined, Membership.user_id == user_id))
        .where(FeedMeta.id == 1)
    )


def changes_after(position, user_id=None):
    """Change-log rows the position does not see, in sequence order."""
    # Plain rows, not ORM objects: the hub may hold thousands of them briefly.
    query = select(Change.__table__).where(position.unseen(Change)).order_by(Change.id)
    if user_id is not None:
        query = query.where(Change.user_id == user_id)
    return query


def unseen_by_sequence(column_id, last_id):
    return column_id > last_id


def unseen_by_snapshot(column_xid, xmin, xmax, xip):
    clause = column_xid >= xmax
    if xip:
        clause = or_(clause, column_xid.in_(sorted(xip)))
    return and_(column_xid >= xmin, clause)
