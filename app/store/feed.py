"""The change log as a feed: reading user state and changes at a position.

Positions and cursors (what a reader has seen) are ``app.store.cursors``.

A row is user-scoped (``joined``, ``left``, ``role_changed``: it names its
user) or community-scoped (a rename, a deletion: written once, ``user_id``
NULL). A reader resolves community-scoped rows to the communities its user is
a member of *in the reader's own snapshot*, or left within the range read (a
poll in the statement that reads them, the hub's batched read in a statement
of its own), and keeps those written while the user was a
member (:func:`addressed`). That is exact because, within one community, a
join or leave and a rename or deletion lock the community row against each
other (see the migrations), so their ids follow their commit order: a
snapshot that sees a join sees every earlier row of that community.
"""
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, exists, func, select, update

from . import queries
from .. import wire
from .cursors import Cursor, encode_page, parse_position
from .models import Change, Community, FeedMeta, Membership, User
from ..watches import NONE as NO_WATCHES

@dataclass(frozen=True)
class State:
    """A user's memberships as served, with the feed position they were read at."""

    communities: list
    notifications_unread: int
    hash: str
    cursor: Cursor
    pruned_through: int
    last_change_at: datetime | None

    def accepts(self, cursor):
        """Can changes after ``cursor`` be answered, or must the client reset?"""
        return (
            cursor.epoch == self.cursor.epoch
            and type(cursor.position) is type(self.cursor.position)
            and not cursor.position.pruned_past(self.pruned_through)
        )


def read_notifications(connection, user_id, before, limit):
    """One page of the user's notifications, newest first, and the cursor of the next (or None)."""
    rows = connection.execute(queries.notifications_of(user_id, before, limit + 1)).all()
    page = rows[:limit]
    return page, encode_page(page[-1].id) if len(rows) > limit else None


def read_state(connection, user_id):
    """The user's state and the feed position, in one statement (one snapshot)."""
    statement = queries.snapshot_of(connection.dialect.name)
    rows = connection.execute(statement, {"user_id": user_id}).all()
    head = rows[0]
    communities = wire.sort_communities(
        wire.community_entry(row) for row in rows if row.id is not None
    )
    return State(
        communities=communities,
        notifications_unread=head.notifications_unread,
        hash=wire.user_state_hash(communities, head.notifications_unread),
        cursor=Cursor(head.epoch, parse_position(head.position)),
        pruned_through=head.pruned_through,
        last_change_at=wire.utc(head.last_change_at),
    )


def read_changes(connection, user_id, position, watches=NO_WATCHES):
    """The user's changes after ``position``, community-scoped ones resolved, in id order;
    topics' rows as ``watches`` cover them."""
    return addressed(connection.execute(queries.changes_of(position, user_id, watches)).all())


def nobody_watches(_community_id, _topic):
    """Who watches a topic, where no registry says (``registry.Watching`` does for the hub): nobody."""
    return ()


# The user-scoped rows that start and end a membership.
TOGGLES = ("joined", "left")


def addressed(rows):
    """One user's rows in id order, keeping community-scoped rows only from while it was a member.

    The rows come with the community-scoped rows of every community the user
    is or was a member of in the range read; its own ``joined`` and ``left``
    rows say when: those in the range, and from ``read_changes`` also its
    earlier ones (``history`` rows, which only inform and are not kept). A
    row is kept when the user's last such row before it is a ``joined``;
    before its first one it was a member exactly when that first one is a
    ``left`` (or, with none, when it is a member now: it was read as one).
    Within a community, joins, departures and community-wide changes are
    ordered by the locks their triggers take, so ids follow commit order
    there. A member who joins later receives none of the earlier changes:
    its ``joined`` entry carries the community as it is. A public community's
    topic rows (``public``) are anyone's who watches them, member or not.
    """
    first = {}
    for row in rows:
        if not row.shared and row.type in TOGGLES:
            first.setdefault(row.community_id, row.type)
    member = {community: kind == "left" for community, kind in first.items()}
    kept = []
    for row in rows:
        if row.shared:
            if row.public or member.get(row.community_id, True):
                kept.append(row)
        else:
            if row.type in TOGGLES:
                member[row.community_id] = row.type == "joined"
            if not row.history:
                kept.append(row)
    return kept


def read_position(connection):
    """The current feed position alone (a cheap statement)."""
    return parse_position(connection.scalar(queries.position_now(connection.dialect.name)))


def read_head(connection):
    """The change log's epoch and current position, in one statement."""
    dialect = connection.dialect.name
    row = connection.execute(
        select(FeedMeta.epoch, queries.current_position(dialect)).where(FeedMeta.id == 1)
    ).one()
    return row[0], parse_position(row[1])


@dataclass(frozen=True)
class Batch:
    """What one batched re-read found: each new row once, and who the community rows may concern.

    ``recipients``: community id -> the waiting users who are or were members
    of it in the range (see ``queries.recipients``), for the communities of
    the batch's community-scoped rows only (of a community with only topics'
    rows, among the users watching them).
    """

    rows: list
    recipients: dict
    position: object

    def by_user(self, users, watchers=nobody_watches):
        """``{user_id: rows in id order}`` for the ``users`` with any, before ``addressed()``.

        A user with only one community's rows gets that community's list
        itself, shared with its other members: in a busy community thousands
        of members have the same rows, and ``addressed()`` and coalescing can
        then look at each list once (``per_list``) rather than once a member.
        A topic's rows go to the users ``watchers(community_id, topic)`` names
        (whose polls watch it) who may have them: members, or anyone for a public community.
        """
        shared, topics, own = defaultdict(list), defaultdict(list), defaultdict(list)
        for row in self.rows:
            if row.shared:
                if row.topic is None:
                    shared[row.community_id].append(row)
                else:
                    topics[row.community_id, row.topic].append(row)
            elif row.user_id in users:
                own[row.user_id].append(row)
        found = {}

        def hand(user_id, rows):
            found[user_id] = merged(found[user_id], rows) if user_id in found else rows

        for community_id, rows in shared.items():
            for user_id in self.recipients.get(community_id, ()):
                hand(user_id, rows)
        members = {}
        for (community_id, topic), rows in topics.items():
            if community_id not in members:
                members[community_id] = set(self.recipients.get(community_id, ()))
            for user_id in watchers(community_id, topic):
                if rows[0].public or user_id in members[community_id]:
                    hand(user_id, rows)
        for user_id, rows in own.items():
            hand(user_id, rows)
        return found


def merged(*lists):
    """The rows of several lists, once each, in id order, in a new list."""
    rows = {row.id: row for rows in lists for row in rows}
    return [rows[key] for key in sorted(rows)]


def per_list(function):
    """``function(rows)``, computed once per list object for as long as the returned callable lives."""
    done = {}

    def once(rows):
        key = id(rows)
        if key not in done:
            done[key] = (rows, function(rows))  # the list is kept: its id stays its own
        return done[key][1]

    return once


def read_news(connection, position, waiting_users, watchers=nobody_watches):
    """Every change the position does not see, the position that sees them, and their recipients.

    Three statements whatever the number of users and rows: the position,
    the rows (each once), and the waiting users who are or were members of
    the communities those rows concern.

    ``waiting_users()`` (the hub's live registry) is called only once the
    position is read: a poll that registered before this snapshot is among
    them, and one that registers after it reads the state at a newer snapshot
    itself. Listed earlier, a poll registering in between would have the rows
    of this batch resolved to nobody, and lose them.
    """
    new_position = read_position(connection)
    user_ids = list(waiting_users())
    rows = connection.execute(queries.changes_after(connection.dialect.name), position.bound()).all()
    communities = sorted({row.community_id for row in rows if row.shared and row.topic is None})
    # A community with only topics' rows concerns only the users watching them, however
    # many of its members wait: who of those is a member is all that is asked.
    topics = {(row.community_id, row.topic) for row in rows if row.shared and row.topic is not None}
    topic_only = sorted({community_id for community_id, _topic in topics} - set(communities))
    watching = sorted({user_id for community_id, topic in topics if community_id in topic_only
                       for user_id in watchers(community_id, topic)})
    recipients = defaultdict(list)
    if (communities and user_ids) or (topic_only and watching):
        dialect = connection.dialect.name
        statement = queries.recipients(
            position,
            queries.among(user_ids, dialect),
            queries.among(communities, dialect),
            queries.among(watching, dialect),
            queries.among(topic_only, dialect),
        )
        for user_id, community_id in connection.execute(statement):
            recipients[community_id].append(user_id)
    return Batch(rows, dict(recipients), new_position)


@dataclass(frozen=True)
class UserState:
    """What the hub's batched read gives each user: its state and that state's hash."""

    communities: list
    notifications_unread: int

    @property
    def hash(self):
        return wire.user_state_hash(self.communities, self.notifications_unread)


def read_states(connection, user_ids):
    """Current state of many users in one statement: ``{user_id: UserState}``."""
    grouped = {user_id: [] for user_id in user_ids}
    unread = dict.fromkeys(user_ids, 0)
    dialect = connection.dialect.name
    entry = wire.community_entries()
    for row in connection.execute(queries.states_of(dialect), {"user_ids": queries.bound_list(user_ids, dialect)}):
        unread[row.user_id] = row.notifications_unread
        if row.id is not None:
            grouped[row.user_id].append(entry(row))
    return {user_id: UserState(wire.sort_communities(entries), unread[user_id])
            for user_id, entries in grouped.items()}


def prune(session, cutoff):
    """Delete change-log rows older than ``cutoff``; returns how many went.

    ``pruned_through`` remembers how far the log was cut, so a cursor from
    before the cut is answered with a reset rather than a silent gap.
    """
    key = Change.xid if session.get_bind().dialect.name == "postgresql" else Change.id
    highest = session.scalar(select(func.max(key)).where(Change.at < cutoff))
    if highest is None:
        return 0
    deleted = session.execute(delete(Change).where(Change.at < cutoff)).rowcount
    session.execute(
        update(FeedMeta)
        .where(FeedMeta.id == 1, FeedMeta.pruned_through < highest)
        .values(pruned_through=highest)
    )
    # A deleted community's tombstones are kept only to resolve its
    # community_deleted row; with the row gone, every cursor that had not
    # read it is answered with a reset.
    session.execute(
        delete(Membership)
        .where(
            ~exists().where(Community.id == Membership.community_id),
            ~exists().where(Change.user_id.is_(None), Change.community_id == Membership.community_id,
                            Change.type == "community_deleted"),
        )
        .execution_options(synchronize_session=False)
    )
    return deleted

