"""The change log as a feed: positions, cursors, user state and its hash.

A *position* says which change-log rows a reader has already seen.

On PostgreSQL two transactions can commit in the opposite order of the ids
their rows were given, so "every id up to N" is not a safe position: a reader
that advanced past an id whose transaction had not committed yet would never
see that row. A position there is the reader's MVCC snapshot
(``pg_current_snapshot()``: xmin, xmax and the transactions in progress), and
"after the position" means "written by a transaction that snapshot did not
see". Visibility only grows, so every committed row is delivered exactly once
to a reader that follows its positions, whatever order the commits came in.

On SQLite there is one writer at a time and ids are given in commit order, so
a position is the highest id seen.
"""
import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import delete, func, select, update

from . import queries
from .models import Change, FeedMeta

CURSOR_VERSION = "1"
MAX_CURSOR_LENGTH = 4096
SNAPSHOT_PATTERN = re.compile(r"(\d{1,19}):(\d{1,19}):((?:\d{1,19})(?:,\d{1,19})*)?")
CURSOR_PATTERN = re.compile(r"1\|([0-9a-f]{1,32})\|(s\d{1,19}|x[0-9:,]{3,3900})")


class InvalidCursor(ValueError):
    """The cursor cannot be decoded: a client error, not a reason to reset."""


@dataclass(frozen=True)
class SequencePosition:
    """SQLite: every change with an id up to ``last_id`` has been seen."""

    last_id: int

    def sees(self, change):
        return change.id <= self.last_id

    def covers(self, other):
        return isinstance(other, SequencePosition) and self.last_id >= other.last_id

    def unseen(self, table):
        return queries.unseen_by_sequence(table.id, self.last_id)

    def pruned_past(self, pruned_through):
        return self.last_id < pruned_through

    def token(self):
        return f"s{self.last_id}"


@dataclass(frozen=True)
class SnapshotPosition:
    """PostgreSQL: the changes of the transactions this snapshot saw have been seen."""

    xmin: int
    xmax: int
    xip: frozenset

    def sees(self, change):
        xid = change.xid
        return xid < self.xmin or (xid < self.xmax and xid not in self.xip)

    def covers(self, other):
        """True when this snapshot sees everything ``other`` sees."""
        if not isinstance(other, SnapshotPosition):
            return False
        return (
            self.xmin >= other.xmin
            and self.xmax >= other.xmax
            and all(x in other.xip or x >= other.xmax for x in self.xip)
        )

    def unseen(self, table):
        return queries.unseen_by_snapshot(table.xid, self.xmin, self.xmax, self.xip)

    def pruned_past(self, pruned_through):
        # Pruned rows have xids up to pruned_through; all of them are seen only
        # when every one of those transactions had ended before this snapshot.
        return pruned_through >= self.xmin

    def token(self):
        return f"x{self.xmin}:{self.xmax}:{','.join(str(x) for x in sorted(self.xip))}"


def parse_position(raw):
    """A position from its text: ``pg_current_snapshot()`` output or a sequence number."""
    match = SNAPSHOT_PATTERN.fullmatch(raw)
    if match:
        xmin, xmax = int(match[1]), int(match[2])
        xip = frozenset(int(x) for x in match[3].split(",")) if match[3] else frozenset()
        if xmin > xmax or any(not xmin <= x < xmax for x in xip):
            raise InvalidCursor("the cursor's snapshot is inconsistent")
        return SnapshotPosition(xmin, xmax, xip)
    if raw.isdigit():
        return SequencePosition(int(raw))
    raise InvalidCursor("the cursor's position is not recognised")


@dataclass(frozen=True)
class Cursor:
    epoch: str
    position: object

    def encode(self):
        raw = f"{CURSOR_VERSION}|{self.epoch}|{self.position.token()}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text):
        """Parse an opaque cursor or raise :class:`InvalidCursor`."""
        if not text or len(text) > MAX_CURSOR_LENGTH:
            raise InvalidCursor("the cursor is empty or too long")
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise InvalidCursor("the cursor is not valid base64url") from None
        match = CURSOR_PATTERN.fullmatch(raw)
        if not match:
            raise InvalidCursor("the cursor is not one this service issued")
        return cls(match[1], parse_position(match[2][1:]))


@dataclass(frozen=True)
class State:
    """A user's memberships as served, with the feed position they were read at."""

    communities: list
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


def utc(moment):
    """Datetimes from SQLite come back naive; every stored time is UTC."""
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def iso(moment, milliseconds=False):
    if moment is None:
        return None
    moment = utc(moment).astimezone(timezone.utc)
    if milliseconds:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def community_entry(row):
    return {
        "id": row.id,
        "slug": row.slug,
        "name": row.name,
        "logo_url": row.logo_url,
        "is_public": bool(row.is_public),
        "role": row.role,
        # Seconds: both backends store at least that, so equal lists hash equally.
        "joined_at": iso(row.joined_at),
    }


def sort_communities(entries):
    return sorted(entries, key=lambda entry: (entry["name"].casefold(), entry["id"]))


def state_hash(communities):
    """A digest of exactly the ``communities`` list as served (canonical JSON)."""
    canonical = json.dumps(communities, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def change_entry(change):
    entry = {
        "type": change.type,
        "community_id": change.community_id,
        "at": iso(change.at, milliseconds=True),
        "by": change.actor,
    }
    if change.role is not None:
        entry["role"] = change.role
    return entry


REMOVING = ("left", "community_deleted")


def net_membership(changes):
    """Which communities a run of changes added and removed, net of each other.

    The first change of a community says whether the user was a member before
    the run (only a join can come first for a non-member); the last says
    whether the user is one after it.
    """
    first, last = {}, {}
    for change in changes:
        first.setdefault(change.community_id, change.type)
        last[change.community_id] = change.type
    added = [cid for cid in first if first[cid] == "joined" and last[cid] not in REMOVING]
    removed = [cid for cid in first if first[cid] != "joined" and last[cid] in REMOVING]
    return added, removed


def read_state(connection, user_id):
    """The user's state and the feed position, in one statement (one snapshot)."""
    statement = queries.snapshot_of(connection.dialect.name)
    rows = connection.execute(statement, {"user_id": user_id}).all()
    head = rows[0]
    communities = sort_communities(community_entry(row) for row in rows if row.id is not None)
    return State(
        communities=communities,
        hash=state_hash(communities),
        cursor=Cursor(head.epoch, parse_position(head.position)),
        pruned_through=head.pruned_through,
        last_change_at=utc(head.last_change_at),
    )


def read_changes(connection, user_id, position):
    return connection.execute(queries.changes_after(position, user_id)).all()


def read_position(connection):
    """The current feed position alone (a cheap statement)."""
    dialect = connection.dialect.name
    return parse_position(connection.scalar(select(queries.current_position(dialect))))


def read_head(connection):
    """The change log's epoch and current position, in one statement."""
    dialect = connection.dialect.name
    row = connection.execute(
        select(FeedMeta.epoch, queries.current_position(dialect)).where(FeedMeta.id == 1)
    ).one()
    return row[0], parse_position(row[1])


def read_news(connection, position):
    """Every change the position does not see, and the position that sees them."""
    new_position = read_position(connection)
    return connection.execute(queries.changes_after(position)).all(), new_position


def read_states(connection, user_ids):
    """Current memberships of many users in one statement: ``{user_id: communities}``."""
    grouped = {user_id: [] for user_id in user_ids}
    clause = queries.in_json_list(queries.STATE_COLUMNS[0], user_ids, connection.dialect.name)
    for row in connection.execute(queries.memberships_of(clause)):
        grouped[row.user_id].append(community_entry(row))
    return {user_id: sort_communities(entries) for user_id, entries in grouped.items()}


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
    return deleted
