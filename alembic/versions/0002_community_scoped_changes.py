"""Community-scoped change rows: a rename or a deletion is recorded once, not once per member.

``changes.user_id`` becomes nullable. User-scoped rows (``joined``, ``left``,
``role_changed``) keep it; community-scoped rows (``community_updated``,
``community_deleted``) leave it NULL and are resolved to the community's
members when read, in the reader's snapshot (``app.store.queries``). Rows written by
0001's fan-out are all user-scoped and stay valid, so cursors issued before
this migration keep working with no gap and no duplicate.

Ids order a community's rows in commit order on PostgreSQL because a join or
a leave locks the community row FOR SHARE and a rename or deletion holds its
row lock: they serialize, and the second to commit takes its id after the
first committed.

A deleted community's ``community_deleted`` must reach its former members,
so their memberships are no longer cascaded away: they stay as tombstones
(every read of state joins ``communities``, which hides them). The foreign key
``memberships.community_id`` is replaced by a trigger that refuses a
membership into a community that does not exist (SQLSTATE 23503 on
PostgreSQL, SQLite's "FOREIGN KEY constraint failed"), taking the same FOR
SHARE lock so that a join racing a deletion either comes first or fails.
Re-creating a community with a deleted one's id first removes its tombstones,
recording nothing; a former member whose cursor still stands before that
deletion then gets a reset rather than the ``community_deleted`` (its state no
longer matches the changes it is given). Pruning removes tombstones whose
``community_deleted`` row has been pruned.

Downgrade is lossy: community-scoped rows and tombstones are deleted (0001's
log has no way to say who they concerned), so cursors taken after the upgrade
may miss renames and deletions made under it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""
import importlib.util
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ID = sa.String(64)
COMMUNITY_FK = "fk_memberships_community_id_communities"
NAMING = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}


def _initial():
    """The 0001 revision module, for its trigger definitions (downgrade restores them)."""
    path = Path(__file__).with_name("0001_initial_schema.py")
    spec = importlib.util.spec_from_file_location("community_sync_0001", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


POSTGRES_TRIGGERS = r"""
CREATE FUNCTION community_sync_membership_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.community_id IS NOT DISTINCT FROM OLD.community_id THEN
        RETURN NEW;
    END IF;
    -- Stands in for the foreign key, which would cascade a deletion and take
    -- the tombstones with it. SHARE, held to the commit, also orders this
    -- join after a rename or deletion of the community, or before it.
    PERFORM 1 FROM communities WHERE id = NEW.community_id FOR SHARE;
    IF NOT FOUND THEN
        RAISE foreign_key_violation USING
            MESSAGE = format('community %L does not exist', NEW.community_id),
            TABLE = 'memberships', CONSTRAINT = 'fk_memberships_community_id_communities';
    END IF;
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION community_sync_membership_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    old_live boolean := false;
BEGIN
    -- A leave or a move locks the community it leaves FOR SHARE, like a join
    -- (memberships_check): a rename's or deletion's row then commits wholly
    -- before or after it, so ids follow commit order within a community and
    -- a reader resolving community rows through memberships is exact.
    -- Not found: the row is a deleted community's tombstone, whose changes
    -- were recorded once as community_deleted.
    IF TG_OP <> 'INSERT' THEN
        PERFORM 1 FROM communities WHERE id = OLD.community_id FOR SHARE;
        old_live := FOUND;
    END IF;
    IF TG_OP = 'INSERT' THEN
        PERFORM community_sync_record(NEW.user_id, NEW.community_id, 'joined', NEW.role);
    ELSIF TG_OP = 'DELETE' THEN
        IF old_live THEN
            PERFORM community_sync_record(OLD.user_id, OLD.community_id, 'left', NULL);
        END IF;
    ELSIF (OLD.user_id, OLD.community_id) IS DISTINCT FROM (NEW.user_id, NEW.community_id) THEN
        IF old_live THEN
            PERFORM community_sync_record(OLD.user_id, OLD.community_id, 'left', NULL);
        END IF;
        PERFORM community_sync_record(NEW.user_id, NEW.community_id, 'joined', NEW.role);
    ELSIF NEW.role IS DISTINCT FROM OLD.role AND old_live THEN
        PERFORM community_sync_record(NEW.user_id, NEW.community_id, 'role_changed', NEW.role);
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION community_sync_community_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- One row for the whole community (user_id NULL), written while this
    -- transaction holds the community's row lock.
    IF TG_OP = 'DELETE' THEN
        -- The memberships stay behind as tombstones: readers resolve this row
        -- to them.
        PERFORM community_sync_record(NULL, OLD.id, 'community_deleted', NULL);
        RETURN OLD;
    END IF;
    IF (NEW.slug, NEW.name, NEW.logo_url, NEW.is_public)
       IS DISTINCT FROM (OLD.slug, OLD.name, OLD.logo_url, OLD.is_public) THEN
        PERFORM community_sync_record(NULL, NEW.id, 'community_updated', NULL);
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION community_sync_community_created() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Tombstones of a deleted community with this id: they must not make
    -- their users members of the new one. Their deletion records nothing
    -- (the community does not exist yet when it runs).
    DELETE FROM memberships WHERE community_id = NEW.id;
    RETURN NEW;
END $$;

CREATE TRIGGER memberships_check BEFORE INSERT OR UPDATE ON memberships
    FOR EACH ROW EXECUTE FUNCTION community_sync_membership_check();
CREATE TRIGGER communities_created BEFORE INSERT ON communities
    FOR EACH ROW EXECUTE FUNCTION community_sync_community_created();
"""

POSTGRES_DROP = """
DROP TRIGGER IF EXISTS communities_created ON communities;
DROP TRIGGER IF EXISTS memberships_check ON memberships;
DROP FUNCTION IF EXISTS community_sync_community_created();
DROP FUNCTION IF EXISTS community_sync_membership_check();
"""

SQLITE_ACTOR = "(SELECT actor FROM change_actor WHERE id = 1)"
SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now')"
SQLITE_COMMUNITY_FIELDS_CHANGED = (
    "OLD.slug IS NOT NEW.slug OR OLD.name IS NOT NEW.name "
    "OR OLD.logo_url IS NOT NEW.logo_url OR OLD.is_public IS NOT NEW.is_public"
)
SQLITE_REFUSE = "SELECT RAISE(ABORT, 'FOREIGN KEY constraint failed');"


def _exists(community):
    return f"EXISTS (SELECT 1 FROM communities WHERE id = {community})"


def _sqlite_insert(user, community, kind, role, when="1"):
    return (
        "INSERT INTO changes (user_id, community_id, type, role, actor, at) "
        f"SELECT {user}, {community}, '{kind}', {role}, {SQLITE_ACTOR}, {SQLITE_NOW} WHERE {when};"
    )


# SQLite has one writer at a time: ids follow commit order with no locks.
SQLITE_TRIGGERS = {
    "memberships_check": f"""CREATE TRIGGER memberships_check BEFORE INSERT ON memberships
    WHEN NOT {_exists("NEW.community_id")} BEGIN {SQLITE_REFUSE} END""",
    "memberships_move_check": f"""CREATE TRIGGER memberships_move_check
    BEFORE UPDATE OF community_id ON memberships
    WHEN OLD.community_id IS NOT NEW.community_id AND NOT {_exists("NEW.community_id")}
    BEGIN {SQLITE_REFUSE} END""",
    "memberships_joined": f"""CREATE TRIGGER memberships_joined AFTER INSERT ON memberships BEGIN
        {_sqlite_insert("NEW.user_id", "NEW.community_id", "joined", "NEW.role")}
    END""",
    # A tombstone's removal is not a leave: community_deleted said it all.
    "memberships_left": f"""CREATE TRIGGER memberships_left AFTER DELETE ON memberships
    WHEN {_exists("OLD.community_id")} BEGIN
        {_sqlite_insert("OLD.user_id", "OLD.community_id", "left", "NULL")}
    END""",
    "memberships_moved": f"""CREATE TRIGGER memberships_moved AFTER UPDATE ON memberships
    WHEN OLD.user_id IS NOT NEW.user_id OR OLD.community_id IS NOT NEW.community_id BEGIN
        {_sqlite_insert("OLD.user_id", "OLD.community_id", "left", "NULL",
                        _exists("OLD.community_id"))}
        {_sqlite_insert("NEW.user_id", "NEW.community_id", "joined", "NEW.role")}
    END""",
    "memberships_role_changed": f"""CREATE TRIGGER memberships_role_changed
    AFTER UPDATE OF role ON memberships
    WHEN OLD.user_id IS NEW.user_id AND OLD.community_id IS NEW.community_id
         AND OLD.role IS NOT NEW.role AND {_exists("NEW.community_id")} BEGIN
        UPDATE memberships SET updated_at = CURRENT_TIMESTAMP
        WHERE user_id = NEW.user_id AND community_id = NEW.community_id;
        {_sqlite_insert("NEW.user_id", "NEW.community_id", "role_changed", "NEW.role")}
    END""",
    "communities_updated": f"""CREATE TRIGGER communities_updated AFTER UPDATE ON communities
    WHEN {SQLITE_COMMUNITY_FIELDS_CHANGED} BEGIN
        UPDATE communities SET updated_at = CURRENT_TIMESTAMP WHERE id = NEW.id;
        {_sqlite_insert("NULL", "NEW.id", "community_updated", "NULL")}
    END""",
    "communities_deleted": f"""CREATE TRIGGER communities_deleted AFTER DELETE ON communities BEGIN
        {_sqlite_insert("NULL", "OLD.id", "community_deleted", "NULL")}
    END""",
    "communities_created": """CREATE TRIGGER communities_created BEFORE INSERT ON communities BEGIN
        DELETE FROM memberships WHERE community_id = NEW.id;
    END""",
}


def _sqlite_sequence():
    return op.get_bind().scalar(sa.text("SELECT seq FROM sqlite_sequence WHERE name = 'changes'"))


def _keep_sqlite_sequence(seq):
    """Rebuilding ``changes`` resets its AUTOINCREMENT mark to the highest id left.

    Ids above it may have been pruned, and cursors stand on them: the mark
    must never go back, or new rows would reuse ids a cursor has seen.
    """
    if seq is None:
        return
    bind = op.get_bind()
    bind.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = 'changes'"))
    bind.execute(
        sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES ('changes', :seq)"),
        {"seq": max(seq, bind.scalar(sa.text("SELECT coalesce(max(id), 0) FROM changes")))},
    )


def _set_user_id_nullable(nullable):
    sqlite = op.get_bind().dialect.name == "sqlite"
    seq = _sqlite_sequence() if sqlite else None
    with op.batch_alter_table("changes", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.alter_column("user_id", existing_type=ID, nullable=nullable)
    _keep_sqlite_sequence(seq)


def upgrade():
    postgres = op.get_bind().dialect.name == "postgresql"
    if not postgres:
        # Rebuilding a table drops its triggers: all of 0001's go now and
        # come back below, rewritten.
        for name in _initial().SQLITE_TRIGGER_NAMES:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    _set_user_id_nullable(True)
    op.create_index(
        "ix_changes_community_id_id", "changes", ["community_id", "id"],
        postgresql_where=sa.text("user_id IS NULL"), sqlite_where=sa.text("user_id IS NULL"),
    )
    if postgres:
        # Snapshot positions select by xid: the range of a community's rows
        # a reader has not seen.
        op.create_index(
            "ix_changes_community_id_xid", "changes", ["community_id", "xid"],
            postgresql_where=sa.text("user_id IS NULL"),
        )
    with op.batch_alter_table("memberships", naming_convention=NAMING) as batch:
        batch.drop_constraint(COMMUNITY_FK, type_="foreignkey")
    if postgres:
        op.execute(POSTGRES_TRIGGERS)
    else:
        for statement in SQLITE_TRIGGERS.values():
            op.execute(statement)


def downgrade():
    postgres = op.get_bind().dialect.name == "postgresql"
    initial = _initial()
    if postgres:
        op.execute(POSTGRES_DROP)
        op.execute(initial.POSTGRES_DROP)
    else:
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.execute("DELETE FROM changes WHERE user_id IS NULL")
    op.execute(
        "DELETE FROM memberships WHERE NOT EXISTS "
        "(SELECT 1 FROM communities WHERE communities.id = memberships.community_id)"
    )
    with op.batch_alter_table("memberships", naming_convention=NAMING) as batch:
        batch.create_foreign_key(
            COMMUNITY_FK, "communities", ["community_id"], ["id"], ondelete="CASCADE"
        )
    if postgres:
        op.drop_index("ix_changes_community_id_xid", table_name="changes")
    op.drop_index("ix_changes_community_id_id", table_name="changes")
    _set_user_id_nullable(False)
    if postgres:
        op.execute(initial.POSTGRES_TRIGGERS)
    else:
        for statement in initial.SQLITE_TRIGGERS:
            op.execute(statement)
