"""Functions that build the ``select()``s the feed and the views run.

Longer than most modules on purpose: every SQL statement the service reads
with is here, so the indexes (``app.store.models``, the migrations) can be checked
against one file, and each statement's cost is stated next to it.
"""
import functools
import json

from sqlalchemy import (
    BigInteger,
    Text,
    and_,
    any_,
    bindparam,
    case,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    literal_column,
    not_,
    or_,
    select,
    text,
    tuple_,
    union,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import aliased

from .models import Change, Community, FeedMeta, Membership, Presence, PresenceWorker, Reading, Typing, User
from ..watches import EVERY_TOPIC, NONE as NO_WATCHES
from ..wire import MAX_PUBLISHED_PER_ANSWER

# unread counts stop here: "100" means 100 or more, and a count costs at most
# 100 index entries however far behind a reader is.
UNREAD_CAP = 100


def of_type(change_type):
    """``changes.type = '<change_type>'`` as a literal: partial indexes match it, a parameter not."""
    return Change.type == literal_column(f"'{change_type}'")


def capped_count(rows):
    """How many rows ``rows`` (a select) gives, counting no further than UNREAD_CAP."""
    return select(func.count()).select_from(rows.limit(UNREAD_CAP).subquery()).scalar_subquery()


def counted_activity(changes=Change):
    """Activity that counts in ``unread``: community-level (no topic), not a collapsed value.

    As the partial index ``ix_changes_activity`` spells it (``COUNTED_ACTIVITY``),
    so that each planner reads through it. ``changes``: the table, or an alias of it.
    """
    return and_(changes.type == literal_column("'activity'"), changes.topic.is_(None), not_(changes.collapse))


def unread_activity(newest=None):
    """The member's unread activity in the community, for a row of ``live_memberships()``: not
    its own (its other tabs show it, but its author has read it); counted no further than the
    id ``newest`` (a column of a table joined to it), when given."""
    rows = select(literal(1)).where(counted_activity(), Change.community_id == Membership.community_id,
                                    Change.id > Membership.read_through,
                                    Change.actor.is_distinct_from(Membership.user_id))
    if newest is None:
        return capped_count(rows.correlate(Membership))
    return capped_count(rows.where(Change.id <= newest).correlate(Membership, newest.table))


def last_activity_at():
    """When the community's newest activity that counts was published (one probe of its newest id)."""
    return (
        select(Change.at)
        .where(counted_activity(), Change.community_id == Membership.community_id)
        .order_by(Change.id.desc())
        .limit(1)
        .scalar_subquery()
    )


def unread_notifications(user_id, read_through):
    """The user's notifications above its read marker, capped."""
    return capped_count(
        select(literal(1))
        .where(of_type("notification"), Change.user_id == user_id, Change.id > read_through)
        .correlate(User)
    )


STATE_COLUMNS = (
    Membership.user_id,
    Community.id,
    Community.slug,
    Community.name,
    Community.logo_url,
    Community.is_public,
    Membership.role,
    Membership.joined_at,
    unread_activity().label("unread"),
    last_activity_at().label("last_activity_at"),
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


def json_values(values, dialect):
    """``values`` as a one-column select, from one bound parameter (a JSON array)."""
    return _json_elements(literal(json.dumps(list(values)), Text), dialect)


def _json_elements(payload, dialect):
    """The elements of the JSON array ``payload`` (a text expression) as a one-column select ``value``."""
    if dialect == "postgresql":
        return select(func.jsonb_array_elements_text(cast(payload, JSONB)).label("value"))
    return select(func.json_each(payload).table_valued("value").c.value)


def in_json_list(column, values, dialect):
    """``column IN (values)`` as one bound parameter, however many values.

    The statement count of a batched read must not grow with the number of
    waiters, and SQLite limits bound parameters; a JSON array is one parameter
    on both backends.
    """
    return column.in_(json_values(values, dialect))


def in_bound_list(column, name, dialect):
    """``column IN (:name)``, in a statement built once and run with ``{name: bound_list(values, dialect)}``.

    As ``in_planned_list``: on PostgreSQL an array whose values the planner
    sees (a JSON array hid them: a few users' states were read by two
    sequential scans of ``users``), on SQLite a JSON array.
    """
    return _in_list_parameter(column, bindparam(name, type_=_LIST_TYPES[dialect]), dialect)


def bound_list(values, dialect):
    """``values`` as an ``in_bound_list`` parameter takes them."""
    return list(values) if dialect == "postgresql" else json.dumps(list(values))


# What a list parameter is bound as: an array the planner sees on PostgreSQL, a JSON array on SQLite.
_LIST_TYPES = {"postgresql": ARRAY(Text), "sqlite": Text()}


def _in_list_parameter(column, parameter, dialect):
    """``column IN`` the values of ``parameter``, a list bound as ``_LIST_TYPES`` says."""
    if dialect == "postgresql":
        return column == any_(parameter)
    return column.in_(_json_elements(parameter, dialect))


def among(values, dialect):
    """``column -> column IN (values)``: a condition to apply to a column, as ``recipients`` takes them."""
    return lambda column: in_json_list(column, values, dialect)


def role_here(user_id):
    """The user's role in the community of the enclosing statement (NULL for none), correlated."""
    return (
        select(Membership.role)
        .where(Membership.community_id == Community.id, Membership.user_id == user_id)
        .scalar_subquery()
        .label("role")
    )


def community_and_role(community_id, user_id):
    """The community's own columns and ``role``, the user's role in it: no row for an unknown id.

    One statement, whether the community is unknown, private to others or
    the user's: an outsider's request for a private community does the very
    work an unknown id's does, so the time it takes cannot tell them apart.
    """
    return select(Community.__table__, role_here(user_id)).where(Community.id == community_id)


def communities_and_roles(community_ids, user_id):
    """``community_and_role`` for several communities in one statement: a row for each known one."""
    return select(Community.id, Community.is_public, role_here(user_id)).where(
        Community.id.in_(sorted(community_ids)))


def communities_visible_to(user_id, is_admin):
    """Public communities and the user's own (every one for platform admins), by name."""
    query = select(Community.__table__).order_by(Community.name, Community.id)
    if not is_admin:
        mine = select(Membership.community_id).where(Membership.user_id == user_id)
        query = query.where(or_(Community.is_public, Community.id.in_(mine)))
    return query


def live_memberships():
    """Memberships joined to their communities: a deleted community's tombstones drop out."""
    return Membership.__table__.join(Community.__table__, Community.id == Membership.community_id)


def role_in(user_id, community_id):
    """The user's role in the community; no row when the user is not a member."""
    return (
        select(Membership.role)
        .select_from(live_memberships())
        .where(Membership.user_id == user_id, Membership.community_id == community_id)
    )


def community_ids_of(user_id):
    """The ids of the user's communities."""
    return (
        select(Membership.community_id)
        .select_from(live_memberships())
        .where(Membership.user_id == user_id)
    )


def member_count(community_id):
    return (
        select(func.count())
        .select_from(live_memberships())
        .where(Membership.community_id == community_id)
    )


@functools.cache
def states_of(dialect):
    """The state of the users listed in the ``user_ids`` parameter (``bound_list``).

    One row per membership, or one with NULL community columns for a user
    with none; ``notifications_unread`` on every row. Built once per dialect:
    building the statement and its cache key took longer than PostgreSQL's
    plan and run of it for a few users (5 ms against 1), on the path of every
    woken poll's news.

    What depends on the community alone is read once per community, not once
    per member (``community_horizons``): a busy community's thousands of
    members woken by its activity cost a probe of its newest rows, then a
    comparison each, where each used to count up to UNREAD_CAP rows of its own
    (half a million index entries for 5,000 members, seconds while writers
    keep the database busy). A member whose read marker is within the newest
    UNREAD_CAP rows still counts them, up to the newest row this snapshot
    sees: past it the index holds only rows committed since, which a count
    would go through one by one only to find them invisible. In a burst that
    was thousands per member, tens of millions for the members of one
    community, and the read took the whole burst. A member who wrote one of
    the newest UNREAD_CAP rows counts too: its own rows are not unread.
    """
    user_clause = in_bound_list(User.id, "user_ids", dialect)
    horizons = community_horizons(user_clause, dialect)
    wrote_lately = _among_authors(Membership.user_id, horizons.c.authors, dialect)
    unread = case((and_(Membership.read_through < horizons.c.horizon, not_(wrote_lately)), UNREAD_CAP),
                  else_=unread_activity(newest=horizons.c.newest))
    return (
        select(
            User.id.label("user_id"),
            unread_notifications(User.id, User.notifications_read_through)
            .label("notifications_unread"),
            *STATE_COLUMNS[1:-2],
            unread.label("unread"),
            horizons.c.last_activity_at,
        )
        .select_from(User.__table__.outerjoin(
            live_memberships().join(horizons, horizons.c.community_id == Membership.community_id),
            Membership.user_id == User.id))
        .where(user_clause)
    )


def community_horizons(user_clause, dialect):
    """For each community of the users ``user_clause`` picks: ``horizon``, the id of its
    UNREAD_CAP-th newest activity that counts (NULL with fewer: a member whose read marker is
    below it, and who wrote none of them, has UNREAD_CAP unread), ``newest``, the id of its
    newest, ``authors``, who wrote those UNREAD_CAP (a list), and ``last_activity_at``.

    Materialized, so that each is worked out once per community whatever the
    number of members joined to it.
    """
    def newest_first(column):
        return (select(column).where(counted_activity(), Change.community_id == Community.id)
                .order_by(Change.id.desc()).correlate_except(Change))

    horizon = newest_first(Change.id).offset(UNREAD_CAP - 1).limit(1).scalar_subquery()
    recent = aliased(Change)  # the horizon's own subquery reads ``changes`` itself
    if dialect == "postgresql":
        authors = func.array_agg(recent.actor).filter(recent.actor.is_not(None))
    else:
        authors = func.json_group_array(recent.actor)
    lately = select(authors).where(counted_activity(recent), recent.community_id == Community.id,
                                   recent.id >= horizon)
    communities = select(Membership.community_id).join(User, User.id == Membership.user_id).where(user_clause)
    return (
        select(
            Community.id.label("community_id"),
            horizon.label("horizon"),
            newest_first(Change.id).limit(1).scalar_subquery().label("newest"),
            lately.scalar_subquery().label("authors"),
            newest_first(Change.at).limit(1).scalar_subquery().label("last_activity_at"),
        )
        .where(Community.id.in_(communities))
        .cte("horizons")
        .prefix_with("MATERIALIZED")
    )


def _among_authors(user_id, authors, dialect):
    """Whether ``user_id`` is in ``authors`` (``community_horizons``'s list); false for none."""
    if dialect == "postgresql":
        return func.coalesce(user_id == any_(authors), False)
    listed = func.json_each(authors).table_valued("value")
    return exists(select(literal(1)).select_from(listed).where(listed.c.value == user_id))


def entry_of(user_id, community_id):
    """The user's entry for one community it is a member of; no row otherwise."""
    return (
        select(*STATE_COLUMNS)
        .select_from(live_memberships())
        .where(Membership.user_id == user_id, Membership.community_id == community_id)
    )


def newest(change_type, **where):
    """The id of the newest change of ``change_type`` matching ``where`` (0 when none)."""
    conditions = [getattr(Change, column) == value for column, value in where.items()]
    return select(func.coalesce(func.max(Change.id), 0)).where(of_type(change_type), *conditions)


@functools.cache
def snapshot_of(dialect):
    """One statement: the feed's identity and position, a user's last change and memberships.

    One statement means one snapshot on every backend, and one query for a
    conditional GET. Built once per dialect (it runs on every snapshot
    request); execute it with ``{"user_id": ...}``.
    """
    user_id = bindparam("user_id")
    notifications_read = select(User.notifications_read_through).where(User.id == user_id)
    return (
        select(
            FeedMeta.epoch,
            FeedMeta.pruned_through,
            current_position(dialect).label("position"),
            last_change_of(user_id).label("last_change_at"),
            unread_notifications(user_id, func.coalesce(notifications_read.scalar_subquery(), 0))
            .label("notifications_unread"),
            *STATE_COLUMNS[1:],
        )
        .select_from(FeedMeta.__table__.outerjoin(live_memberships(), Membership.user_id == user_id))
        .where(FeedMeta.id == 1)
    )


@functools.cache
def position_now(dialect):
    """The current position alone (``current_position``), built once per dialect: the re-read's first statement."""
    return select(current_position(dialect))


def feed_head(dialect):
    """The change log's epoch, how far it was pruned, and the current position, in one row."""
    position = current_position(dialect).label("position")
    return select(FeedMeta.epoch, FeedMeta.pruned_through, position).where(FeedMeta.id == 1)


def community_latest(community_id):
    """When the community's newest community-scoped row was written (one probe of its newest id)."""
    return (
        select(Change.at)
        .where(Change.user_id.is_(None), Change.community_id == community_id)
        .order_by(Change.id.desc())
        .limit(1)
        .scalar_subquery()
    )


def last_changes_of(user_clause):
    """``(user_id, own, communities')``: when each user's own rows and its communities last changed.

    ``last_change_of`` for many users at once: the later of the two is when
    the user's state last changed (either may be NULL). One probe per user and
    one per membership, as there.
    """
    member = Membership.__table__.alias("last_member")
    latest = community_latest(member.c.community_id)
    own = select(func.max(Change.at)).where(Change.user_id == User.id).scalar_subquery()
    communities = select(func.max(latest)).where(member.c.user_id == User.id).scalar_subquery()
    return select(User.id, own.label("own"), communities.label("communities")).where(user_clause)


def last_change_of(user_id):
    """When the user's state last changed: its own rows, or its communities' latest.

    A community's latest row is one index probe (its newest id), so this
    costs one probe per membership however busy the communities are.
    """
    member = Membership.__table__.alias("last_member")
    latest = community_latest(member.c.community_id)
    moments = union_all(
        select(func.max(Change.at).label("at")).where(Change.user_id == user_id),
        select(latest.label("at")).where(member.c.user_id == user_id),
    ).subquery()
    return select(func.max(moments.c.at)).scalar_subquery()


def _change_columns(recipient, history=False):
    """A change as one recipient reads it: ``shared`` marks a community-scoped row.

    ``history`` marks a row read only to know when the recipient was a
    member (``changes_of``), never delivered.
    """
    return (
        Change.id,
        Change.xid,
        recipient.label("user_id"),
        Change.community_id,
        Change.type,
        Change.role,
        Change.actor,
        Change.at,
        Change.kind,
        Change.ref,
        Change.topic,
        # The stored text, carried into answers verbatim (and rows stay hashable).
        cast(Change.data, Text).label("data"),
        Change.collapse,
        Change.user_id.is_(None).label("shared"),
        literal(history).label("history"),
        _public_topic().label("public"),
    )


def _public_topic():
    """For a topic's row: whether its community is public as of this snapshot (a non-member
    watching it may then have it); false for every other row, without a probe."""
    public = select(Community.is_public).where(Community.id == Change.community_id).scalar_subquery()
    return case((Change.topic.is_not(None), func.coalesce(public, False)), else_=False)


def _everything(_column):
    return literal(True)


def recipients(position, user_clause, community_clause=_everything, *more):
    """Who may have been a member when a community-scoped row was written, among the users picked
    (and among those of each further pair of clauses in ``more``, in the same statement).

    ``(user_id, community_id)`` pairs: members as of this snapshot (a deleted
    community's through its tombstones), and those whose leaving the position
    has not seen yet: they were members before it. Which rows each one was a
    member for is decided from its own rows (``app.store.feed.addressed``).
    """
    parts = []
    for users, communities in ((user_clause, community_clause), *zip(more[::2], more[1::2])):
        left = aliased(Change)
        departed = select(left.user_id.label("user_id"), left.community_id.label("community_id")).where(
            left.type == "left", users(left.user_id), communities(left.community_id), position.unseen(left),
        )
        parts += [members_among(users, communities), departed]
    return union(*parts)


def members_among(user_clause, community_clause=_everything):
    """``(user_id, community_id)`` memberships as of this snapshot, a deleted community's tombstones included."""
    return select(Membership.user_id, Membership.community_id).where(
        user_clause(Membership.user_id), community_clause(Membership.community_id)
    )


def changes_of(position, user_id, watches=NO_WATCHES):
    """The user's changes the position does not see, in sequence order.

    Its own rows, and the community-scoped rows of the communities it is or
    was a member of in the range (see ``recipients``); those from while it
    was not a member are dropped afterwards (``app.store.feed.addressed``), by its
    joins and departures in those communities: the ones in the range and,
    as ``history`` rows, the ones before it. Which rows a user was a member
    for is so read from the log itself, never from where the range starts:
    a position that leaves a join out of the range cannot make its user a
    member from before it. Each branch is an index range.

    Topics' rows only as ``watches`` (``app.watches.Watches``) cover them: of
    communities the user is or was a member of (kept as above), or public
    ones, which anyone may watch (``public`` says so on the row).
    """
    own = select(*_change_columns(Change.user_id)).where(
        Change.user_id == user_id, position.unseen(Change)
    )
    members = recipients(position, lambda column: column == user_id).subquery("recipients")
    history = select(*_change_columns(Change.user_id, history=True)).where(
        Change.user_id == user_id,
        Change.type.in_(("joined", "left")),
        Change.community_id.in_(select(members.c.community_id)),
        not_(position.unseen(Change)),
    )
    shared = (
        select(*_change_columns(members.c.user_id))
        .join(members, members.c.community_id == Change.community_id)
        .where(Change.user_id.is_(None), Change.topic.is_(None), position.unseen(Change))
    )
    # An answer carries the newest MAX_PUBLISHED_PER_ANSWER activity rows: read
    # one more than that (so it still knows it dropped some), not every one
    # since an old cursor: in a busy community that is thousands a poll.
    branches = [own, history, shared.where(Change.type != "activity"),
                _newest_of(shared.where(Change.type == "activity"), "activity")]
    if watches:
        topics = select(*_change_columns(literal(user_id))).where(
            Change.user_id.is_(None),
            Change.community_id.in_(sorted(watches.communities)),
            Change.topic.is_not(None),
            position.unseen(Change),
            or_((Change.community_id + "/" + Change.topic).in_(watches.names()),
                (Change.community_id + "/*").in_(watches.names())),
            or_(Change.community_id.in_(select(members.c.community_id)), _public_topic()),
        )
        branches.append(_newest_of(topics, "topics"))
    return union_all(*branches).order_by(literal_column("id"))


def _newest_of(rows, name):
    """The newest MAX_PUBLISHED_PER_ANSWER + 1 of ``rows`` (a select of ``_change_columns``)."""
    newest = rows.order_by(Change.id.desc()).limit(MAX_PUBLISHED_PER_ANSWER + 1).subquery(name)
    return select(*newest.c)


@functools.cache
def changes_after(dialect):
    """Every change-log row a position does not see, each once, in sequence order.

    Built once per dialect (the hub's re-read runs it on every hint, and
    building it took longer than PostgreSQL's run of it); execute it with the
    position's ``bound()`` numbers.

    A community-scoped row comes with ``user_id`` NULL, however many members
    it concerns: who they are is a statement of its own (``recipients``), so
    a burst of activity in a big community is read as rows, not as rows
    times members.
    """
    # Plain rows, not ORM objects: the hub may hold thousands of them briefly.
    return select(*_change_columns(Change.user_id)).where(unseen_by_bound(Change, dialect)).order_by(Change.id)


def changes_for_answers_after(position):
    """``changes_after``, but of each community's activity only the newest rows an answer can carry.

    An answer carries the newest MAX_PUBLISHED_PER_ANSWER activity rows
    (``changes_of`` reads one more, to know it dropped some); the newest that
    many of each community hold the newest that many of any set of
    communities. So a batch of readers far behind a busy community reads a
    few hundred rows, not the whole burst they missed.
    """
    columns = _change_columns(Change.user_id)
    others = select(*columns).where(
        position.unseen(Change), or_(Change.user_id.is_not(None), not_(of_type("activity")))
    )
    # A topic's rows apart from its community's: each reaches other polls.
    newest_first = func.row_number().over(partition_by=(Change.community_id, Change.topic),
                                          order_by=Change.id.desc())
    ranked = (
        select(*columns, newest_first.label("rank"))
        .where(position.unseen(Change), Change.user_id.is_(None), of_type("activity"))
        .subquery("ranked")
    )
    activity = select(*(ranked.c[column.name] for column in columns)).where(
        ranked.c.rank <= MAX_PUBLISHED_PER_ANSWER + 1
    )
    return union_all(others, activity).order_by(literal_column("id"))


def unseen_by_bound(table, dialect):
    """``position.unseen(table)`` for any position of the dialect, its numbers bound at execution
    (``position.bound()``)."""
    if dialect == "postgresql":
        xid = table.xid
        return unseen_by_snapshot(xid, bindparam("xmin", type_=BigInteger), bindparam("xmax", type_=BigInteger),
                                  xid == any_(bindparam("xip", type_=ARRAY(BigInteger))))
    return unseen_by_sequence(table.id, bindparam("last_id", type_=BigInteger))


def unseen_by_sequence(column_id, last_id):
    return column_id > last_id


def unseen_by_snapshot(column_xid, xmin, xmax, in_progress=None):
    """What a snapshot does not see: xids from ``xmax`` on, and those ``in_progress`` (a condition) names."""
    clause = column_xid >= xmax
    if in_progress is not None:
        clause = or_(clause, in_progress)
    return and_(column_xid >= xmin, clause)


def notifications_of(user_id, before, limit):
    """The user's notifications with ids below ``before`` (None: from the newest), newest first.

    ``unread`` says whether each is above the user's read marker.
    """
    marker = select(User.notifications_read_through).where(User.id == user_id).scalar_subquery()
    query = (
        select(Change.id, Change.kind, Change.ref, Change.actor, Change.at,
               (Change.id > func.coalesce(marker, 0)).label("unread"))
        .where(of_type("notification"), Change.user_id == user_id)
        .order_by(Change.id.desc())
        .limit(limit)
    )
    return query if before is None else query.where(Change.id < before)


# -- presence (app/live/presence.py, app/live/online_counts.py) -----------------
# Times are the database's own clock, so that the workers of every host
# write and compare them with one clock. SQLite's text has the format of the
# change log's times (migration 0004), to the millisecond.
SQLITE_NOW = "%Y-%m-%d %H:%M:%f"


def database_now(dialect):
    if dialect == "postgresql":
        return func.now()
    return func.strftime(SQLITE_NOW, "now")


def database_ago(seconds, dialect):
    if dialect == "postgresql":
        return func.now() - func.make_interval(0, 0, 0, 0, 0, 0, float(seconds))
    return func.strftime(SQLITE_NOW, "now", f"-{float(seconds)} seconds")


def refresh_worker(worker_id, dialect):
    """The worker's refresh: one row, whatever the number of its users (0 rows: not registered)."""
    return (
        update(PresenceWorker)
        .where(PresenceWorker.id == worker_id)
        .values(refreshed_at=database_now(dialect))
    )


def register_worker(worker_id, dialect):
    return insert(PresenceWorker).values(id=worker_id, refreshed_at=database_now(dialect))


def arrive(worker_id, user_ids, dialect):
    """Users online through the worker from now: one statement, one parameter for them all."""
    users = json_values(sorted(user_ids), dialect).subquery()
    rows = (
        select(users.c.value, literal(worker_id), database_now(dialect))
        # SQLite reads "INSERT ... SELECT ... ON CONFLICT" only with a WHERE.
        .where(literal_column("1") == 1)
    )
    dialect_insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        dialect_insert(Presence)
        .from_select(["user_id", "worker_id", "since"], rows)
        .on_conflict_do_nothing()
    )


def depart(worker_id, user_ids, dialect):
    """Users no longer online through the worker: one statement for them all."""
    return delete(Presence).where(
        Presence.worker_id == worker_id,
        in_json_list(Presence.user_id, sorted(user_ids), dialect),
    )


def presence_shown(user_id, dialect):
    """A hidden user shows themselves: their rows are online from now, not from while hidden.

    A no-op for a user already shown (their ``since`` stays put).
    """
    hidden = select(literal(1)).where(User.id == user_id, ~User.presence_visible)
    return (
        update(Presence)
        .where(Presence.user_id == user_id, hidden.exists())
        .values(since=database_now(dialect))
        .execution_options(synchronize_session=False)
    )


def forget_worker(worker_id):
    """A worker that stops: its users, what they read there, and its own row."""
    return (
        delete(Presence).where(Presence.worker_id == worker_id),
        delete(Reading).where(Reading.worker_id == worker_id),
        delete(PresenceWorker).where(PresenceWorker.id == worker_id),
    )


def sweep_dead_workers(age, dialect):
    """Workers not refreshed for ``age`` seconds, then every presence row without its worker.

    In that order: a worker refreshed meanwhile keeps its row and its users;
    one whose row went writes all of its users again (``WorkerPresence.refresh``).
    """
    return (
        delete(PresenceWorker).where(PresenceWorker.refreshed_at < database_ago(age, dialect)),
        delete(Presence).where(~exists().where(PresenceWorker.id == Presence.worker_id)),
        delete(Reading).where(~exists().where(PresenceWorker.id == Reading.worker_id)),
        delete(Typing).where(Typing.until < database_ago(age, dialect)),
    )


def analyze(tables, dialect):
    """PostgreSQL's statistics of ``tables`` (models) read again, unless another session is at it
    (None on SQLite, which plans these reads without them)."""
    if dialect != "postgresql":
        return None
    return text(f"ANALYZE (SKIP_LOCKED) {', '.join(table.__tablename__ for table in tables)}")


def presence_visible(user_id):
    return select(User.presence_visible).where(User.id == user_id)


def live_workers(ttl, dialect):
    """The workers refreshed within ``ttl``: those whose presence rows count."""
    return select(PresenceWorker.id).where(PresenceWorker.refreshed_at > database_ago(ttl, dialect))


def in_planned_list(column, values, dialect):
    """``column IN (values)`` as one bound parameter whose values the planner sees.

    On PostgreSQL an array: its statistics then tell a community of ten
    members from one of a million, and pick the plan for each (a JSON array
    hides them). SQLite, which plans without such statistics, gets a JSON
    array, as ``in_bound_list`` does.
    """
    parameter = bindparam(None, bound_list(values, dialect), type_=_LIST_TYPES[dialect])
    return _in_list_parameter(column, parameter, dialect)


def _online(workers, dialect):
    """Presence rows that count: through one of the live ``workers``, of a user not hidden.

    The live workers are named rather than joined by their refresh time: a
    time that only moves forward defeats the planner's statistics (it would
    take every count for a handful of rows), while the rows of named workers
    it estimates well. A user online through several workers has several
    rows. Hidden users are few: they are looked up in a partial index of them
    alone (migration 0005), not by a probe of ``users`` per online user.
    """
    hidden = select(literal(1)).where(User.id == Presence.user_id, ~User.presence_visible)
    return select(Presence.user_id, Presence.since).where(
        in_planned_list(Presence.worker_id, workers, dialect), ~hidden.exists()
    )


def online_counts(community_ids, workers, dialect):
    """(community id, members online) of the given communities that have any: one statement.

    Small communities are read through their memberships' index and matched
    against ``presence``; one with more members than there are users online
    is counted from the online users through the memberships' primary key.
    The planner picks by the sizes (``in_planned_list``); a count costs at
    most one probe per member or one per online user.
    """
    online = _online(workers, dialect).subquery("online")
    return (
        select(Membership.community_id, func.count(func.distinct(online.c.user_id)))
        .join(online, online.c.user_id == Membership.user_id)
        .where(in_planned_list(Membership.community_id, community_ids, dialect))
        .group_by(Membership.community_id)
    )


def online_members(community_id, workers, limit, dialect):
    """The community's members online, longest online first, at most ``limit`` (``_listed``)."""
    return _listed(_online(workers, dialect).subquery("online"), community_id, limit)


def _listed(online, community_id, limit):
    """The community's members among ``online`` (user id, since), longest first, at most ``limit``.

    ``total`` on every row counts them all (a window over the groups, before
    the limit), so the list and its count come from one snapshot.
    """
    since = func.min(online.c.since)
    return (
        select(User.id, User.name, since.label("since"), func.count().over().label("total"))
        .select_from(online)
        .join(User, User.id == online.c.user_id)
        .join(Membership, and_(Membership.user_id == online.c.user_id,
                               Membership.community_id == community_id))
        .group_by(User.id, User.name)
        .order_by(since, User.id)
        .limit(limit)
    )


# -- who is reading, who is typing (app/live/presence.py, app/live/typing.py) ----

def json_pairs(pairs, dialect):
    """``pairs`` as a two-column select (``first``, ``second``), from one bound parameter."""
    payload = json.dumps([list(pair) for pair in pairs])
    if dialect == "postgresql":
        elements = func.jsonb_array_elements(cast(literal(payload, Text), JSONB)).table_valued("value")
        item = elements.c.value
        return select(item.op("->>")(literal_column("0")).label("first"),
                      item.op("->>")(literal_column("1")).label("second"))
    item = func.json_each(payload).table_valued("value").c.value
    return select(func.json_extract(item, "$[0]").label("first"),
                  func.json_extract(item, "$[1]").label("second"))


def start_reading(worker_id, reads, dialect):
    """(user id, watch) pairs read through the worker from now: one statement for them all."""
    pairs = json_pairs(sorted(reads), dialect).subquery()
    rows = (
        select(literal(worker_id), pairs.c.first, pairs.c.second, database_now(dialect))
        .where(literal_column("1") == 1)
    )
    dialect_insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        dialect_insert(Reading)
        .from_select(["worker_id", "user_id", "watch", "since"], rows)
        .on_conflict_do_nothing()
    )


def stop_reading(worker_id, reads, dialect):
    """(user id, watch) pairs no longer read through the worker: one statement."""
    pairs = json_pairs(sorted(reads), dialect)
    return delete(Reading).where(
        Reading.worker_id == worker_id,
        tuple_(Reading.user_id, Reading.watch).in_(pairs),
    )


def topic_readers(community_id, topic, workers, limit, dialect):
    """The community's members reading ``topic`` (a held poll watches it, by name or by ``*``)
    through one of the live ``workers``, hidden users left out: listed as ``online_members``."""
    watches = [f"{community_id}/{topic}", f"{community_id}/{EVERY_TOPIC}"]
    hidden = select(literal(1)).where(User.id == Reading.user_id, ~User.presence_visible)
    reading = select(Reading.user_id, Reading.since).where(
        in_planned_list(Reading.worker_id, workers, dialect), Reading.watch.in_(watches), ~hidden.exists(),
    )
    return _listed(reading.subquery("reading"), community_id, limit)


def database_later(seconds, dialect):
    if dialect == "postgresql":
        return func.now() + func.make_interval(0, 0, 0, 0, 0, 0, float(seconds))
    return func.strftime(SQLITE_NOW, "now", f"+{float(seconds)} seconds")


def start_typing(user_id, community_id, topic, ttl, dialect):
    """The user types in the community's topic for ``ttl`` seconds from now, if a member:
    one statement that checks and writes (no row written: not a member, or no such community)."""
    member = select(literal(1)).select_from(live_memberships()).where(
        Membership.user_id == user_id, Membership.community_id == community_id)
    row = select(literal(user_id), literal(community_id), literal(topic),
                 database_later(ttl, dialect)).where(member.exists())
    dialect_insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = dialect_insert(Typing).from_select(["user_id", "community_id", "topic", "until"], row)
    return statement.on_conflict_do_update(
        index_elements=[Typing.user_id],
        set_={name: statement.excluded[name] for name in ("community_id", "topic", "until")},
    )


def stop_typing(user_id):
    return delete(Typing).where(Typing.user_id == user_id)


def typists(community_ids, dialect):
    """Who types now in these communities: (community id, topic, user id, name), in topic
    then user order. Members only, hidden users left out, lapsed rows ignored."""
    return (
        select(Typing.community_id, Typing.topic, User.id, User.name)
        .join(User, User.id == Typing.user_id)
        .join(Membership, and_(Membership.user_id == Typing.user_id,
                               Membership.community_id == Typing.community_id))
        .join(Community, Community.id == Typing.community_id)
        .where(in_planned_list(Typing.community_id, community_ids, dialect),
               Typing.until > database_now(dialect), User.presence_visible)
        .order_by(Typing.community_id, Typing.topic, User.id)
    )
