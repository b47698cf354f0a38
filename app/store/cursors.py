"""Positions and cursors: which change-log rows a reader has seen, and how a client carries it.

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

A cursor is a position with the change log's identity (``epoch``), opaque to
clients (base64url) and signed (:class:`CursorKey`): a position decides which
rows a poll reads, so the server reads only positions it issued itself. Page
cursors of the notification list are opaque too, and unsigned: they only
choose where a page of the caller's own notifications starts.
"""
import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass

from . import queries

CURSOR_VERSION = "2"
# Change ids and transaction ids are 64-bit signed integers on both backends.
LARGEST_NUMBER = 2**63 - 1
MAX_CURSOR_LENGTH = 4096
SNAPSHOT_PATTERN = re.compile(r"(\d{1,19}):(\d{1,19}):((?:\d{1,19})(?:,\d{1,19})*)?")
POSITION = r"s\d{1,19}|x[0-9:,]{3,3900}"
# version | epoch | position | key id | signature
CURSOR_PATTERN = re.compile(rf"2\|([0-9a-f]{{1,32}})\|({POSITION})\|([0-9a-f]{{8}})\|([0-9a-f]{{32}})")
# Unsigned cursors issued before signing: answered with a reset, never read from.
LEGACY_PATTERN = re.compile(rf"1\|[0-9a-f]{{1,32}}\|(?:{POSITION})")
PAGE_PATTERN = re.compile(r"n1\|([1-9]\d{0,18})")


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

    def bound(self):
        """The parameters of ``queries.unseen_by_bound``."""
        return {"last_id": self.last_id}

    def pruned_past(self, pruned_through):
        return self.last_id < pruned_through

    def token(self):
        return f"s{self.last_id}"

    def numbers(self):
        return (self.last_id,)


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
        in_progress = table.xid.in_(sorted(self.xip)) if self.xip else None
        return queries.unseen_by_snapshot(table.xid, self.xmin, self.xmax, in_progress)

    def bound(self):
        """The parameters of ``queries.unseen_by_bound``."""
        return {"xmin": self.xmin, "xmax": self.xmax, "xip": sorted(self.xip)}

    def pruned_past(self, pruned_through):
        # Pruned rows have xids up to pruned_through; all of them are seen only
        # when every one of those transactions had ended before this snapshot.
        return pruned_through >= self.xmin

    def numbers(self):
        return (self.xmin, self.xmax, *self.xip)

    def token(self):
        return f"x{self.xmin}:{self.xmax}:{','.join(str(x) for x in sorted(self.xip))}"


def earliest(positions):
    """One position that sees only what every one of ``positions`` sees (of one kind, at least one).

    Rows after it are a superset of the rows after each of them: a batched
    read of several readers reads from it once, and each reader then drops
    the rows its own position sees.
    """
    first = positions[0]
    if isinstance(first, SequencePosition):
        return SequencePosition(min(p.last_id for p in positions))
    xmin = min(p.xmin for p in positions)
    xmax = min(p.xmax for p in positions)
    # A transaction one of them did not see stays unseen: below xmax only if listed.
    xip = frozenset(x for p in positions for x in p.xip if xmin <= x < xmax)
    return SnapshotPosition(xmin, xmax, xip)


def parse_position(raw):
    """A position from its text: ``pg_current_snapshot()`` output or a sequence number."""
    match = SNAPSHOT_PATTERN.fullmatch(raw)
    if match:
        xmin, xmax = int(match[1]), int(match[2])
        xip = frozenset(int(x) for x in match[3].split(",")) if match[3] else frozenset()
        if xmin > xmax or any(not xmin <= x < xmax for x in xip):
            raise InvalidCursor("the cursor's snapshot is inconsistent")
        position = SnapshotPosition(xmin, xmax, xip)
    elif raw.isdigit():
        position = SequencePosition(int(raw))
    else:
        raise InvalidCursor("the cursor's position is not recognised")
    # 19 digits fit a cursor, more than a 64-bit id or transaction id: no
    # position this service issued, and SQLite could not even bind one.
    if max(position.numbers()) > LARGEST_NUMBER:
        raise InvalidCursor("the cursor's position is out of range")
    return position


@dataclass(frozen=True)
class Cursor:
    epoch: str
    position: object


class CursorKey:
    """Signs the cursors this service issues and checks the ones clients send back.

    The key is derived from ``SECRET_KEY`` (an HMAC of a fixed label, so it
    is never the token-signing key itself) and named by a short id carried
    in the cursor. A cursor whose signature does not match under the current
    key was altered or made up: refused (:class:`InvalidCursor`). A cursor
    signed under another key id (``SECRET_KEY`` was changed) or issued before
    cursors were signed says nothing the server can trust, but its client did
    nothing wrong: :meth:`decode` gives None and the poll answers as to a
    client with no cursor, a ``reset`` with the full state.
    """

    def __init__(self, secret):
        self._key = hmac.digest(secret.encode(), b"community-sync cursor signing key", "sha256")
        self.id = hashlib.sha256(self._key).hexdigest()[:8]

    def _signature(self, key_id, epoch, token):
        message = f"{CURSOR_VERSION}|{key_id}|{epoch}|{token}".encode()
        return hmac.digest(self._key, message, "sha256")[:16].hex()

    def encode(self, cursor):
        """The opaque, signed text of ``cursor``."""
        token = cursor.position.token()
        signature = self._signature(self.id, cursor.epoch, token)
        raw = f"{CURSOR_VERSION}|{cursor.epoch}|{token}|{self.id}|{signature}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def decode(self, text):
        """The cursor ``text`` stands for; None when it is from another key or an older version.

        Raises :class:`InvalidCursor` for anything this service did not issue.
        """
        raw = _opaque(text, MAX_CURSOR_LENGTH)
        if LEGACY_PATTERN.fullmatch(raw):
            return None
        match = CURSOR_PATTERN.fullmatch(raw)
        if not match:
            raise InvalidCursor("the cursor is not one this service issued")
        epoch, token, key_id, signature = match.groups()
        if key_id != self.id:
            return None
        if not hmac.compare_digest(signature, self._signature(key_id, epoch, token)):
            raise InvalidCursor("the cursor is not one this service issued")
        return Cursor(epoch, parse_position(token[1:]))


def init_app(app):
    """The application's cursor key, from its ``SECRET_KEY``."""
    app.extensions["cursor_key"] = CursorKey(app.config["SECRET_KEY"])


def _opaque(text, max_length):
    """The text inside an opaque (base64url) token, or :class:`InvalidCursor`."""
    if not text or len(text) > max_length:
        raise InvalidCursor("the cursor is empty or too long")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidCursor("the cursor is not valid base64url") from None


def encode_page(before):
    """An opaque cursor for the page of notifications with ids below ``before``."""
    return base64.urlsafe_b64encode(f"n1|{before}".encode()).decode().rstrip("=")


def decode_page(text):
    """The id a page cursor continues below, or :class:`InvalidCursor`."""
    match = PAGE_PATTERN.fullmatch(_opaque(text, 64))
    if not match:
        raise InvalidCursor("the cursor is not one this service issued")
    return int(match[1])
