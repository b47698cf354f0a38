"""Who is typing where: written on transitions, read back once a second by each worker.

Typing is ephemeral: never in the change log, never part of a state's hash.
``PUT /me/typing`` says a user types in a community's topic; ``DELETE
/me/typing`` ends it; without a repeat it lapses after ``TYPING_TTL``.

Writing (``typed``, ``stopped``): one row per typist in the ``typing`` table
(migration 0008), written with the membership check in one statement when
the user starts typing or moves elsewhere, and rewritten only once this
worker's last write of it is ``REWRITE_AFTER`` seconds old. A typist's client
repeats once a second; the repeats in between are accepted and cost nothing.

Reading (``refresh``): while polls here watch topics, one greenlet reads the
typists of the watched communities once every ``TICK``: one statement per
worker, whatever the number of watchers and typists, and none while nobody
here watches a topic (or was answered about one within ``ASKED_KEPT``). An
answer about a community that the last tick did not read reads it first. It compares them with what it read before, and wakes
the polls that watch a topic whose typists changed (never a typist's own
polls for their own typing alone): at most once a second per topic, on every
worker and host, whichever of them wrote it.

What an answer carries (``shown``) is read from memory. Each change read is
numbered (a generation); a poll that starts waiting after a change its
client was not shown answers at once (``moved``), so a change between an
answer and the next poll is not missed.
"""
import logging
import random
import time

import gevent

from ..cache import LRU
from ..store import queries
from ..store.db import read_transaction, write_transaction
from ..watches import EVERY_TOPIC

log = logging.getLogger(__name__)

# Seconds between two reads of the typists (and so between two wake-ups of a topic's polls).
TICK = 1.0
# A typist's row is rewritten once this worker's last write of it is this old
# (a third of TYPING_TTL at most): repeats in between change nothing.
REWRITE_AFTER = 2.0
# Changes remembered for polls that start waiting after them, in generations.
KEPT_CHANGES = 600
# Seconds a community an answer showed stays read by the ticks, with no poll
# here watching it: a client that polls with timeout=0 finds it in memory.
ASKED_KEPT = 30.0
# Clients (user and watches) whose last answer's generation is remembered.
CACHED_CLIENTS = 100_000


class Typing:
    """The typists of the communities that polls here watch, and who to wake when they change.

    ``watching`` is the hub's index of who watches what
    (``app.live.registry.Watching``); ``users`` its waiting polls by user.
    ``typists``: community id -> topic -> the typists there, as (id, name)
    pairs. ``changes``: community id -> topic -> (generation, the ids that
    came or went) of the last change read there.
    """

    def __init__(self, engine, watching, users, *, ttl=6.0, interval=TICK):
        self.engine = engine
        self.watching = watching
        self.users = users
        self.ttl = ttl
        self.interval = interval
        self.rewrite_after = min(REWRITE_AFTER, ttl / 3)
        self.written = {}
        self.typists = {}
        self.changes = {}
        self.generation = 0
        self.shown_to = LRU(CACHED_CLIENTS)
        # The communities the typists were read in, and those answers asked for lately.
        self.covered = set()
        self.asked = {}
        self._greenlet = None

    # -- what the API writes -------------------------------------------------------

    def typed(self, user_id, community_id, topic):
        """The user types in the community's topic: False when they are not one of its members.

        Written when it is new or moved, or when this worker's last write of it
        is ``rewrite_after`` old; otherwise accepted as it stands.
        """
        now = time.monotonic()
        written = self.written.get(user_id)
        if written is not None and written[:2] == (community_id, topic) and now - written[2] < self.rewrite_after:
            return True
        with write_transaction(self.engine) as session:
            statement = queries.start_typing(user_id, community_id, topic, self.ttl,
                                             session.get_bind().dialect.name)
            if not session.execute(statement).rowcount:
                return False
        self.written[user_id] = (community_id, topic, now)
        return True

    def stopped(self, user_id):
        """The user stopped typing, wherever it was."""
        self.written.pop(user_id, None)
        with write_transaction(self.engine) as session:
            session.execute(queries.stop_typing(user_id))

    # -- what answers carry ---------------------------------------------------------

    def shown(self, user_id, watches, communities):
        """``{"community/topic": [typist, ...]}`` for the topics ``watches`` covers in the user's
        ``communities`` (ids), the user left out, topics with nobody typing left out; noted
        as shown to this client."""
        communities = watches.communities & set(communities)
        self._cover(communities)
        shown = {}
        for community_id, topic in sorted(watches.pairs):
            if community_id not in communities:
                continue
            topics = self.typists.get(community_id, {})
            for name in (sorted(topics) if topic == EVERY_TOPIC else (topic,)):
                typists = [{"id": id_, "name": typist} for id_, typist in topics.get(name, ())
                           if id_ != user_id]
                if typists:
                    shown[f"{community_id}/{name}"] = typists
        self.shown_to.put((user_id, watches), self.generation)
        return shown

    def _cover(self, communities):
        """Read the typists of those of ``communities`` the last tick did not (nobody here
        watched them): one statement, and the ticks read them too for ``ASKED_KEPT``."""
        now = time.monotonic()
        self.asked.update((community_id, now) for community_id in communities)
        uncovered = communities - self.covered
        if uncovered:
            self.typists.update(self._read(uncovered))
            self.covered |= uncovered

    def _read(self, communities):
        """community id -> topic -> its typists, in these communities: one statement."""
        read = {}
        with read_transaction(self.engine, single_statement=True) as connection:
            statement = queries.typists(sorted(communities), connection.dialect.name)
            for community_id, topic, user_id, name in connection.execute(statement):
                read.setdefault(community_id, {}).setdefault(topic, []).append((user_id, name))
        return {c: {t: tuple(typists) for t, typists in topics.items()} for c, topics in read.items()}

    def since(self, user_id, watches):
        """The generation this client was last shown (the current one for a client never shown any)."""
        shown = self.shown_to.get((user_id, watches))
        return self.generation if shown is None else shown

    def moved(self, user_id, watches, since):
        """Whether typing changed after generation ``since`` in a topic ``watches`` covers,
        other than by the user alone."""
        if self.generation <= since:
            return False
        for community_id, topic in watches.pairs:
            changes = self.changes.get(community_id, {})
            for generation, who in (changes.values() if topic == EVERY_TOPIC else
                                    filter(None, (changes.get(topic),))):
                if generation > since and who != {user_id}:
                    return True
        return False

    # -- reading it back ---------------------------------------------------------------

    def refresh(self):
        """Read the typists of the watched communities, and wake the polls of the topics that changed."""
        now = time.monotonic()
        for community_id in [c for c, at in self.asked.items() if now - at >= ASKED_KEPT]:
            del self.asked[community_id]
        communities = {community_id for community_id, _topic in self.watching.users} | set(self.asked)
        read = self._read(communities) if communities else {}
        changed = []
        # A community read for the first time counts its typists as news: its
        # watchers here were never shown them.
        for community_id in communities:
            before, after = self.typists.get(community_id, {}), read.get(community_id, {})
            for topic in before.keys() | after.keys():
                who = {u for u, _ in before.get(topic, ())} ^ {u for u, _ in after.get(topic, ())}
                if who or before.get(topic, ()) != after.get(topic, ()):
                    changed.append((community_id, topic, who))
        self.typists, self.covered = read, communities
        if changed:
            self.generation += 1
            for community_id, topic, who in changed:
                self.changes.setdefault(community_id, {})[topic] = (self.generation, who)
            self._wake(changed)
        self._forget()

    def _wake(self, changed):
        for community_id, topic, who in changed:
            for user_id in self.watching(community_id, topic):
                waiters = self.users.get(user_id)
                if waiters is not None and who != {user_id}:
                    waiters.wake()

    def _forget(self):
        """Drop old changes, and this worker's notes of typists whose rows have lapsed."""
        oldest = self.generation - KEPT_CHANGES
        for community_id in list(self.changes):
            topics = self.changes[community_id]
            for topic in [t for t, (generation, _who) in topics.items() if generation < oldest]:
                del topics[topic]
            if not topics:
                del self.changes[community_id]
        now = time.monotonic()
        for user_id in [u for u, (_c, _t, at) in self.written.items() if now - at >= self.ttl]:
            del self.written[user_id]

    def start(self):
        """Read once every ``interval`` in a greenlet of its own (returned)."""
        self._greenlet = gevent.spawn(self._run)
        return self._greenlet

    def stop(self):
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None

    def _run(self):
        failures = 0
        while True:
            gevent.sleep(self.interval)
            try:
                self.refresh()
                failures = 0
            except Exception:
                failures += 1
                delay = min(10.0, 0.1 * 2**failures)
                log.exception("reading who is typing failed; retrying in %.1fs", delay)
                gevent.sleep(delay * random.uniform(0.5, 1.0))
