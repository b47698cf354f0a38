"""What the hub has read, kept so that a quiet client's re-poll needs no read.

While polls wait, the hub reads the change log continuously from a position
it took (``since``), noting whose rows it read (``recent``, and
``recent_communities`` for community-scoped rows); it also notes the hash
and the communities it last served each user (``served``). A re-poll whose
cursor covers ``since``, whose user and communities have no row the cursor
did not see, and whose hash is the one last served can wait at once
(``vouches``).

This state is updated between database calls, without a lock, by the re-read
greenlet and by polls subscribing and leaving. Its correctness rests on where
those greenlets yield: a re-read notes a batch's rows (``advance``) before its
next query yields, a poll that subscribes after a re-read listed the waiting
users and before it noted its rows is not vouched for (that batch resolved
none of its community's rows to it, and they are not noted yet: it may wait
for them, ``settle``), and a position is taken by one greenlet at a time while the others wait for it
(``ensure_position``). ``check()`` states what must
hold at every yield; tests switch it on (``Vouching.checking``).

``Vouching`` is one class of some 200 lines, most of them the reasoning its
fields rest on: they change together, and ``check()`` can only state their
invariants if one object holds them all.
"""
import itertools
import time
from dataclasses import dataclass
from datetime import datetime

from gevent.event import Event

from ..cache import LRU
from .. import wire
from .coalescing import coalescable

# How much is remembered to vouch for re-polls' cursors (users, communities and
# their kept rows counted together for the reads noted since ``since``).
RECENT_USERS = 100_000
RECENT_SECONDS = 600
# A user with more rows than this since ``since`` is not worth tracking row by row.
ROWS_PER_USER = 8
# A community's activity is kept whole for longer: its members' re-polls are
# handed what their cursors did not see (``unseen``) instead of reading it.
ROWS_PER_COMMUNITY = 5_000
# What a community's cursors missed, remembered per cursor (``Vouching._missed``).
MISSED_LOOKUPS = 1_000


@dataclass(frozen=True)
class Served:
    """The state last served to a user: its hash, when it last changed, its
    communities' ids (None: unknown), and the cursor it is the state at (None: unknown)."""

    hash: str
    last_change_at: datetime | None
    community_ids: frozenset | None
    cursor: object | None


class Vouching:
    """The hub's read position and what it read since, for ``vouches()``.

    ``position``: where the next re-read starts (None once nobody has waited for a
    safety interval, ``Reread.refresh``).
    ``epoch``: the change log's identity when the position was taken.
    ``since``: from where every row read was noted in ``recent`` (None: no vouching).
    ``recent``: user id -> the rows read since ``since`` (None: too many to keep).
    ``recent_communities``: community id -> the community-scoped rows read since
    ``since``, by id (None: too many to keep); ``kept``: how many rows it holds.
    ``served``: user id -> the ``Served`` state last served.
    ``listing``: a re-read has listed the waiting users and not noted its rows yet.
    ``unlisted``: the users who subscribed meanwhile (not among that list).
    ``listing_ended``: set when that re-read has noted its rows (or failed).
    """

    # Off in production (one attribute test per update); the test suite turns it on.
    checking = False

    def __init__(self, read_head):
        self.read_head = read_head
        self.position = None
        self.epoch = None
        self.since = None
        self.since_at = 0.0
        self.recent = {}
        self.recent_communities = {}
        self.kept = 0
        self.served = LRU(RECENT_USERS)
        self._missed_by = LRU(MISSED_LOOKUPS)
        self._owed_by = LRU(MISSED_LOOKUPS)
        self.listing = False
        self.unlisted = set()
        self.listing_ended = Event()
        self._positioning = None
        # This process's writes, counted as they commit, and how many of them
        # the last re-read to note its rows began after (``current``).
        self.writes = 0
        self.writes_read = 0

    # -- the position -----------------------------------------------------------

    def ensure_position(self):
        """Take a read position if there is none; one greenlet reads, others wait for it.

        Called as a poll subscribes, before it reads: the position is then no
        newer than the poll's own read, so a change after that read is news.
        """
        while self.position is None:
            if self._positioning is not None:
                self._positioning.wait()
                continue
            self._positioning = Event()
            try:
                epoch, position = self.read_head()
                # A re-read may have set a position while this one was read.
                if self.position is None:
                    self.position = position
                    self.epoch = epoch
                    self._track_from(position)
            finally:
                event, self._positioning = self._positioning, None
                event.set()
        self._checked()

    def subscribed(self, user_id):
        """A poll of the user subscribes (before it asks ``vouches()``)."""
        if self.listing:
            self.unlisted.add(user_id)
        self._checked()

    def listed(self):
        """A re-read lists the waiting users: who subscribes from now on is not among them."""
        self.listing = True
        # A new event each time: a poll waiting for this listing to end must
        # not miss it because the next one began before it woke.
        self.listing_ended = Event()
        self._checked()

    def settle(self, user_id, timeout):
        """Wait (at most ``timeout`` seconds) until no re-read in flight left the user unlisted.

        A poll that subscribed while a re-read's query ran cannot be vouched
        for until that re-read has noted its rows. During a fan-out the
        answered clients poll again while the hub re-reads: waiting here, the
        few milliseconds the re-read takes, lets them be vouched for instead
        of each reading the database at once.
        """
        if user_id in self.unlisted:
            self.listing_ended.wait(timeout)

    def wrote(self):
        """This process committed a write: no ``current()`` until a re-read has read it."""
        self.writes += 1

    def advance(self, rows, position, writes=None):
        """A re-read returned ``rows`` and ``position``: note them before anything yields.

        ``writes``: this process's write count when the re-read began; its
        snapshot saw those writes.
        """
        self.position = position
        if writes is not None:
            self.writes_read = max(self.writes_read, writes)
        self._listed_done()
        if self.since is not None:
            tracked = len(self.recent) + len(self.recent_communities) + self.kept
            if tracked > RECENT_USERS or time.monotonic() - self.since_at > RECENT_SECONDS:
                # Start over from here: older cursors simply get a read again.
                self._track_from(position)
            else:
                for row in rows:
                    if row.shared:
                        self._keep(row)
                    else:
                        _note(self.recent, row.user_id, row)
        self._checked()

    def rewind(self, start, position):
        """A re-read from ``start`` delivered nothing: back to ``start``.

        ``position`` is where it advanced to (None: it failed before that).

        Only while the position is still that re-read's (it may have been
        forgotten and taken again meanwhile). The rows it noted stay noted:
        that only makes a refusal to vouch more likely.
        """
        if position is not None and self.position == position:
            self.position = start
        self._listed_done()
        self._checked()

    def _listed_done(self):
        self.listing = False
        self.unlisted.clear()
        self.listing_ended.set()

    def forget(self):
        """Nobody has waited for a while: drop the position rather than read from a stale one later."""
        self.position = None
        self._track_from(None)
        self._checked()

    def _track_from(self, position):
        self.since = position
        self.since_at = time.monotonic()
        self.recent = {}
        self.recent_communities = {}
        self.kept = 0
        self._missed_by = LRU(MISSED_LOOKUPS)
        self._owed_by = LRU(MISSED_LOOKUPS)

    # -- vouching ---------------------------------------------------------------

    def served_state(self, user_id, known, communities=None):
        """Note the state this process just gave the user (see vouches() and current()).

        ``known``: what the client holds now (its cursor, hash, last change
        time; the cursor None when unknown). ``communities``: its entries,
        when the answer carried them; an answer that did not (``unchanged``)
        keeps those of the same hash served before, or leaves them unknown.
        """
        ids = None
        if communities is not None:
            ids = frozenset(entry["id"] for entry in communities)
        else:
            before = self.served.get(user_id)
            ids = before.community_ids if before is not None and before.hash == known.hash else None
        self.served.put(user_id, Served(known.hash, known.last_change_at, ids, known.cursor))

    def last_change_served(self, user_id):
        """When the state last served to the user last changed, as that answer said."""
        served = self.served.get(user_id)
        return served.last_change_at if served else None

    def hash_served(self, user_id):
        """The hash of the state last served to the user, or None."""
        served = self.served.get(user_id)
        return served.hash if served else None

    def current(self, user_id, client_hash):
        """Is ``client_hash`` the user's state as of this hub's position, with no read?

        Yes when it is the hash last served to the user, at a cursor that
        vouches() accepts: every change since before that cursor has been
        read and none was the user's or its communities'. What answers a
        conditional snapshot ``304`` without the database. As fresh as the
        hub's last re-read: a change committed since by another process is
        found by the next one (one hint later), and the ``304`` after that is a
        ``200``; one of this process's own writes refuses it until read.
        """
        served = self.served.get(user_id)
        if served is None or served.cursor is None:
            return False
        if self.writes != self.writes_read:
            # A write of this process is not read yet: it may be this user's,
            # and the client that made it is owed what it wrote.
            return False
        return self.vouches(user_id, served.cursor, client_hash)

    def communities_served(self, user_id):
        """The ids of the communities last served to the user, or None when unknown."""
        served = self.served.get(user_id)
        return tuple(sorted(served.community_ids)) if served and served.community_ids is not None else None

    def vouches(self, user_id, cursor, client_hash):
        """Can a poll with this cursor and hash wait without reading the database?

        Yes when every change since before the cursor (``since``) has been
        read and none of them was this user's unless the cursor saw it: then
        the client's state is current, and whatever comes next reaches the
        poll as news, since it subscribed before asking. This is what makes a
        quiet client's re-poll, every POLL_MAX_TIMEOUT, cost no query.
        """
        return self._missed_parts(user_id, cursor, client_hash) == []

    def unseen(self, user_id, cursor, client_hash, watched=frozenset()):
        """What a poll with this cursor and hash, watching topics of the ``watched`` communities,
        is owed without a read: rows, () for nothing, None when it must read the database.

        () as ``vouches``. Rows when the cursor missed only community activity,
        in communities last served to the user, and the hub kept every such row:
        a member answered moments ago in a busy community polls again with
        the cursor of that answer, and is handed the rows read since with
        its community's next batch (``Reread.hand``) rather than read them again.
        Topics' rows are kept with their community's: a poll watching a
        community last served to the user is handed them too (and keeps those
        its watches cover); one watching any other community (a public one it
        follows) reads.
        """
        served = self.served.get(user_id)
        if watched and (served is None or served.community_ids is None or not watched <= served.community_ids):
            return None
        parts = self._missed_parts(user_id, cursor, client_hash)
        return None if parts is None else self._owed(parts)

    def _missed_parts(self, user_id, cursor, client_hash):
        """The rows the cursor missed, a tuple per community of those last served
        to the user ([] for none); None when only a read can tell."""
        if self.since is None or cursor is None or client_hash is None:
            return None
        if user_id in self.unlisted:
            # A re-read in flight resolved none of its rows to this poll, and
            # has not noted them yet: they may be this user's.
            return None
        # The hash must be one this process served the user: a stale or forged
        # one goes the long way, and is answered with a reset there.
        served = self.served.get(user_id)
        if served is None or served.hash != client_hash:
            return None
        if cursor.epoch != self.epoch or not cursor.position.covers(self.since):
            return None
        if not _saw_all(cursor, self.recent.get(user_id, ())):
            return None
        if served.community_ids is None:
            # Its communities' renames and deletions are news too; with its
            # communities unknown, any of them may be.
            saw = all(rows is not None and _saw_all(cursor, rows.values())
                      for rows in self.recent_communities.values())
            return [] if saw else None
        parts = []
        for community_id in served.community_ids:
            rows = self.recent_communities.get(community_id, {})
            if rows is None:
                return None
            part = self._missed(community_id, rows, cursor.position)
            if part:
                parts.append(part)
        return parts

    def _owed(self, parts):
        """The rows owed for the communities' missed ``parts``: () for none, None when one is not activity.

        One tuple for every member whose cursor missed the same rows (the
        members a fan-out answered): shared, what is worked out from the rows
        (their order, their urgency, their age) is worked out once for all of them.
        """
        if not parts:
            return ()
        # The parts are kept with the answer: while it is remembered, no other
        # object can take their ids.
        key = tuple(sorted(map(id, parts)))
        known = self._owed_by.get(key)
        if known is not None:
            return known[1]
        missed = [row for part in parts for row in part]
        owed = None
        if coalescable(missed):  # else a rename or a deletion: the state itself changed, read it
            owed = tuple(wire.newest(sorted(missed, key=lambda row: row.id)))
        self._owed_by.put(key, (parts, owed))
        return owed

    def _missed(self, community_id, rows, position):
        """The rows of ``rows`` (a community's, kept) that ``position`` does not see.

        The members a fan-out answered poll again with one cursor: each kept
        row is looked at once per cursor, not once per member. Rows are only
        ever added to a kept community, in order: those added since the last
        look are looked at.
        """
        key = (community_id, position)
        looked, missed = self._missed_by.get(key) or (0, ())
        if looked < len(rows):
            missed += tuple(row for row in itertools.islice(rows.values(), looked, None) if not position.sees(row))
            self._missed_by.put(key, (len(rows), missed))
        return missed

    def _keep(self, row):
        """Add a community-scoped ``row`` to its community's kept rows (by id), or mark the
        community as too busy to keep once it has ``ROWS_PER_COMMUNITY``."""
        kept = self.recent_communities.get(row.community_id, {})
        if kept is None or row.id in kept:
            return
        if len(kept) >= ROWS_PER_COMMUNITY:
            self.recent_communities[row.community_id] = None
            self.kept -= len(kept)
            return
        kept[row.id] = row
        self.recent_communities[row.community_id] = kept
        self.kept += 1

    # -- invariants -------------------------------------------------------------

    def check(self):
        """Assert what vouches() rests on; run after every update when ``checking``.

        A re-read started before a position was forgotten and taken again may
        still advance the new one: ``position`` then need not cover ``since``,
        and ``recent`` may hold rows ``since`` already saw. Both only make a
        later read or a refusal to vouch more likely, never a wrong vouch.
        """
        assert self.listing or not self.unlisted, "users unlisted with no re-read listing"
        if self.since is None:
            assert not self.recent, "rows noted with nothing to vouch from"
            assert not self.recent_communities, "rows noted with nothing to vouch from"
            return
        assert self.position is not None, "vouching from a position that was forgotten"
        assert self.epoch is not None, "a position without the change log's epoch"
        for user_id, rows in self.recent.items():
            if rows is None:
                continue
            assert 0 < len(rows) <= ROWS_PER_USER, f"{user_id}: {len(rows)} rows kept"
            assert all(row.user_id == user_id for row in rows), f"{user_id}: another user's row"
            assert not any(row.shared for row in rows), f"{user_id}: a community row"
        for community_id, rows in self.recent_communities.items():
            if rows is None:
                continue
            assert 0 < len(rows) <= ROWS_PER_COMMUNITY, f"{community_id}: {len(rows)} rows kept"
            assert all(key == row.id for key, row in rows.items()), f"{community_id}: a row kept under another id"
            assert all(row.shared and row.community_id == community_id for row in rows.values()), (
                f"{community_id}: a row of another community"
            )
        assert self.kept == sum(len(rows) for rows in self.recent_communities.values() if rows is not None), (
            "kept rows miscounted"
        )

    def _checked(self):
        if self.checking:
            self.check()


def _note(recent, key, row):
    """Add ``row`` to ``recent[key]`` once, or mark the key as too busy to track."""
    seen = recent.get(key, ())
    if seen is not None and any(kept.id == row.id for kept in seen):
        return
    many = seen is None or len(seen) >= ROWS_PER_USER
    recent[key] = None if many else (*seen, row)


def _saw_all(cursor, rows):
    """Whether the cursor saw every one of ``rows`` (None: too many were read to tell)."""
    return rows is not None and all(cursor.position.sees(row) for row in rows)
