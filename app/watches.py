"""Topics and watches: what a poll follows below its communities.

Activity may name a ``topic`` inside its community (``thread:t-9``). A topic's
activity reaches only the polls that watch it (``watch=c-1/thread:t-9``, or
``c-1/*`` for every topic of ``c-1``): never every member, never counted as
unread. What a poll watches is one small value, ``Watches``, which the poll
view parses, the feed's statements read by, and the live side filters
handed rows with.
"""
import re
from dataclasses import dataclass

from .auth import valid_id

TOPIC = re.compile(r"[a-z][a-z0-9_.:-]{0,63}")
TOPIC_RULE = "1 to 64 of a-z 0-9 _ . : -, starting with a letter"
MAX_WATCHES = 20
EVERY_TOPIC = "*"


def valid_topic(value):
    return isinstance(value, str) and TOPIC.fullmatch(value) is not None


class InvalidWatch(ValueError):
    """A watch that is not ``<community_id>/<topic>`` or ``<community_id>/*``, or too many."""


@dataclass(frozen=True)
class Watches:
    """The (community id, topic or ``*``) pairs a poll watches; empty for a poll that watches none."""

    pairs: frozenset = frozenset()

    @classmethod
    def parse(cls, values):
        """``values`` (the ``watch`` parameters as sent) as ``Watches``; ``InvalidWatch`` saying why not."""
        if len(values) > MAX_WATCHES:
            raise InvalidWatch(f"At most {MAX_WATCHES} watches, not {len(values)}.")
        pairs = set()
        for value in values:
            community_id, slash, topic = value.rpartition("/")
            if not slash or not valid_id(community_id) or not (topic == EVERY_TOPIC or valid_topic(topic)):
                raise InvalidWatch(
                    f"Each watch must be <community_id>/<topic> or <community_id>/*, the topic "
                    f"{TOPIC_RULE}: {value[:80]!r} is not."
                )
            pairs.add((community_id, topic))
        return cls(frozenset(pairs))

    def __bool__(self):
        return bool(self.pairs)

    @property
    def communities(self):
        """The ids of the communities watched."""
        return frozenset(community_id for community_id, _topic in self.pairs)

    def names(self):
        """The watches as the poll names them (``c-1/thread:t-9``), sorted."""
        return sorted(f"{community_id}/{topic}" for community_id, topic in self.pairs)

    def covers(self, community_id, topic):
        return (community_id, topic) in self.pairs or (community_id, EVERY_TOPIC) in self.pairs

    def takes(self, row):
        """Whether a poll with these watches gets ``row``: any row without a topic
        (who gets those is decided by membership), a topic's row when it is watched."""
        return row.topic is None or self.covers(row.community_id, row.topic)

    def kept(self, rows):
        """``rows`` without the topic rows these watches do not cover: the list itself when none go."""
        if all(self.takes(row) for row in rows):
            return rows
        return [row for row in rows if self.takes(row)]


NONE = Watches()
