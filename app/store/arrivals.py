"""Arriving polls' first reads, many at once: what ``feed.read_state`` and
``feed.read_changes`` give each reader alone, in a fixed number of statements.

The waiting machinery's admission (``app/live/admission.py``) reads here the
polls that arrived together; how community-scoped rows are resolved to their
readers is the feed's (``app.store.feed``), applied to each reader's own range.
"""
from collections import defaultdict

from . import queries
from .. import wire
from .cursors import Cursor, earliest, parse_position
from .feed import TOGGLES, State, addressed, merged, read_states
from .models import User
from ..watches import NONE as NO_WATCHES


def read_arrivals(connection, arrivals, most_rows):
    """``read_state`` and ``read_changes`` for many readers at once, in at most five statements.

    ``arrivals``: ``(user_id, cursor or None, watches)``. Gives, in their order,
    ``(State, usable, changes)`` as the two would for each alone, or None
    when more than ``most_rows`` change-log rows follow the oldest usable
    cursor (then each reads alone). The statements: the feed's head, the
    users' states, when their states last changed, every row after the
    oldest cursor (each once; of each community's activity only the newest
    an answer can carry), and the memberships of the users in the
    communities of its community-scoped rows.
    """
    dialect = connection.dialect.name
    head = connection.execute(queries.feed_head(dialect)).one()
    position = Cursor(head.epoch, parse_position(head.position))
    user_ids = sorted({user_id for user_id, _cursor, _watches in arrivals})
    in_users = queries.among(user_ids, dialect)
    states = read_states(connection, user_ids)
    last = {
        row.id: max((at for at in (row.own, row.communities) if at is not None), default=None)
        for row in connection.execute(queries.last_changes_of(in_users(User.id)))
    }
    read = []
    for user_id, cursor, watches in arrivals:
        state = states[user_id]
        state = State(state.communities, state.notifications_unread, state.hash, position,
                      head.pruned_through, wire.utc(last.get(user_id)))
        read.append((user_id, cursor, watches, state, cursor is not None and state.accepts(cursor)))
    behind = [cursor.position for _user_id, cursor, _watches, _state, usable in read if usable]
    if not behind:
        return [(state, False, []) for _user_id, _cursor, _watches, state, _usable in read]
    rows = connection.execute(
        queries.changes_for_answers_after(earliest(behind)).limit(most_rows + 1)
    ).all()
    if len(rows) > most_rows:
        return None
    own, shared, topics = defaultdict(list), defaultdict(list), defaultdict(list)
    for row in rows:
        if not row.shared:
            own[row.user_id].append(row)
        else:
            (shared if row.topic is None else topics)[row.community_id].append(row)
    members = defaultdict(set)
    if shared or topics:
        communities = sorted(set(shared) | set(topics))
        statement = queries.members_among(in_users, queries.among(communities, dialect))
        for user_id, community_id in connection.execute(statement):
            members[user_id].add(community_id)
    return [
        (state, usable,
         changes_since(cursor.position, own[user_id], shared, members[user_id], topics, watches)
         if usable else [])
        for user_id, cursor, watches, state, usable in read
    ]


def changes_since(position, own, shared, communities, topics=None, watches=NO_WATCHES):
    """One reader's changes after ``position``, from a read that started at or before it.

    ``own``: the rows naming the user; ``shared``: community id -> that
    community's community-scoped rows; ``communities``: those the user is a
    member of now (a deleted one's through its tombstone). A community it
    joined or left in the range is among them through its own row; one it
    is not in now and did not join or leave since ``position`` it was not in
    for the whole range. ``addressed`` then keeps what was written while it
    was a member, as for ``read_changes``. ``topics``: community id -> its
    topics' rows, of which the ones ``watches`` cover go to a member, or to
    anyone when the community is public.
    """
    mine = [row for row in own if not position.sees(row)]
    concerned = communities | {row.community_id for row in mine if row.type in TOGGLES}
    theirs = [row for community_id in concerned for row in shared.get(community_id, ())
              if not position.sees(row)]
    watched = [row for community_id in watches.communities for row in (topics or {}).get(community_id, ())
               if watches.takes(row) and (row.public or community_id in concerned) and not position.sees(row)]
    return addressed(merged(mine, theirs, watched))
