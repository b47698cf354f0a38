"""Initial schema: users, communities, memberships, the change log and its triggers.

Change capture lives in the database so that every writer, the API or an
operator's SQL console, produces the same change-log rows in the same
transaction as the change. On PostgreSQL the triggers also NOTIFY
``community_sync`` so every worker's listener learns of the commit at once.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""
import secrets

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.String(64)
NOW = sa.func.now()

POSTGRES_TRIGGERS = r"""
CREATE FUNCTION community_sync_record(
    p_user_id text, p_community_id text, p_type text, p_role text
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    -- clock_timestamp(): when the change was made, not when its transaction began.
    INSERT INTO changes (xid, user_id, community_id, type, role, actor, at)
    VALUES (pg_current_xact_id()::text::bigint, p_user_id, p_community_id, p_type, p_role,
            nullif(current_setting('community_sync.actor', true), ''), clock_timestamp());
    -- Identical notifications are folded within a transaction: one wake-up
    -- per commit however many rows it wrote.
    PERFORM pg_notify('community_sync', '');
END $$;

CREATE FUNCTION community_sync_membership_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.role IS DISTINCT FROM OLD.role THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END $$;

CREATE FUNCTION community_sync_membership_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- A rename fans out to the members it can see. A join only takes KEY SHARE
    -- on the community (the foreign key), which does not conflict with the
    -- rename's row lock: without this lock a join could commit between the
    -- rename's fan-out and its commit, and the new member's state would change
    -- with no change-log row. SHARE conflicts, so one waits for the other and
    -- whichever commits second sees the first.
    PERFORM 1 FROM communities WHERE id = coalesce(NEW.community_id, OLD.community_id) FOR SHARE;
    IF TG_OP = 'INSERT' THEN
        PERFORM community_sync_record(NEW.user_id, NEW.community_id, 'joined', NEW.role);
    ELSIF TG_OP = 'DELETE' THEN
        -- A membership removed because its community is being deleted was
        -- already recorded as community_deleted.
        IF EXISTS (SELECT 1 FROM communities WHERE id = OLD.community_id) THEN
            PERFORM community_sync_record(OLD.user_id, OLD.community_id, 'left', NULL);
        END IF;
    ELSIF (OLD.user_id, OLD.community_id) IS DISTINCT FROM (NEW.user_id, NEW.community_id) THEN
        PERFORM community_sync_record(OLD.user_id, OLD.community_id, 'left', NULL);
        PERFORM community_sync_record(NEW.user_id, NEW.community_id, 'joined', NEW.role);
    ELSIF NEW.role IS DISTINCT FROM OLD.role THEN
        PERFORM community_sync_record(NEW.user_id, NEW.community_id, 'role_changed', NEW.role);
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION community_sync_community_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.slug, NEW.name, NEW.logo_url, NEW.is_public)
       IS DISTINCT FROM (OLD.slug, OLD.name, OLD.logo_url, OLD.is_public) THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END $$;

CREATE FUNCTION community_sync_community_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        -- BEFORE DELETE: the members are still there to be told.
        PERFORM community_sync_record(m.user_id, OLD.id, 'community_deleted', NULL)
        FROM memberships AS m WHERE m.community_id = OLD.id;
        RETURN OLD;
    END IF;
    IF (NEW.slug, NEW.name, NEW.logo_url, NEW.is_public)
       IS DISTINCT FROM (OLD.slug, OLD.name, OLD.logo_url, OLD.is_public) THEN
        PERFORM community_sync_record(m.user_id, NEW.id, 'community_updated', m.role)
        FROM memberships AS m WHERE m.community_id = NEW.id;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER memberships_touch BEFORE UPDATE ON memberships
    FOR EACH ROW EXECUTE FUNCTION community_sync_membership_touch();
CREATE TRIGGER memberships_change AFTER INSERT OR UPDATE OR DELETE ON memberships
    FOR EACH ROW EXECUTE FUNCTION community_sync_membership_change();
CREATE TRIGGER communities_touch BEFORE UPDATE ON communities
    FOR EACH ROW EXECUTE FUNCTION community_sync_community_touch();
CREATE TRIGGER communities_deleted BEFORE DELETE ON communities
    FOR EACH ROW EXECUTE FUNCTION community_sync_community_change();
CREATE TRIGGER communities_updated AFTER UPDATE ON communities
    FOR EACH ROW EXECUTE FUNCTION community_sync_community_change();
"""

POSTGRES_DROP = """
DROP TRIGGER IF EXISTS communities_updated ON communities;
DROP TRIGGER IF EXISTS communities_deleted ON communities;
DROP TRIGGER IF EXISTS communities_touch ON communities;
DROP TRIGGER IF EXISTS memberships_change ON memberships;
DROP TRIGGER IF EXISTS memberships_touch ON memberships;
DROP FUNCTION IF EXISTS community_sync_community_change();
DROP FUNCTION IF EXISTS community_sync_community_touch();
DROP FUNCTION IF EXISTS community_sync_membership_change();
DROP FUNCTION IF EXISTS community_sync_membership_touch();
DROP FUNCTION IF EXISTS community_sync_record(text, text, text, text);
"""

# SQLite: one writer at a time, so change ids are assigned in commit order and
# need no transaction id. The actor comes from the change_actor row that the
# API sets inside its write transaction.
SQLITE_ACTOR = "(SELECT actor FROM change_actor WHERE id = 1)"
SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now')"
SQLITE_COMMUNITY_FIELDS_CHANGED = (
    "OLD.slug IS NOT NEW.slug OR OLD.name IS NOT NEW.name "
    "OR OLD.logo_url IS NOT NEW.logo_url OR OLD.is_public IS NOT NEW.is_public"
)


def _sqlite_insert(user, community, kind, role):
    return (
        "INSERT INTO changes (user_id, community_id, type, role, actor, at) "
        f"VALUES ({user}, {community}, '{kind}', {role}, {SQLITE_ACTOR}, {SQLITE_NOW});"
    )


SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER memberships_joined AFTER INSERT ON memberships BEGIN
        {_sqlite_insert("NEW.user_id", "NEW.community_id", "joined", "NEW.role")}
    END""",
    f"""CREATE TRIGGER memberships_left AFTER DELETE ON memberships
    WHEN EXISTS (SELECT 1 FROM communities WHERE id = OLD.community_id) BEGIN
        {_sqlite_insert("OLD.user_id", "OLD.community_id", "left", "NULL")}
    END""",
    f"""CREATE TRIGGER memberships_moved AFTER UPDATE ON memberships
    WHEN OLD.user_id IS NOT NEW.user_id OR OLD.community_id IS NOT NEW.community_id BEGIN
        {_sqlite_insert("OLD.user_id", "OLD.community_id", "left", "NULL")}
        {_sqlite_insert("NEW.user_id", "NEW.community_id", "joined", "NEW.role")}
    END""",
    f"""CREATE TRIGGER memberships_role_changed AFTER UPDATE OF role ON memberships
    WHEN OLD.user_id IS NEW.user_id AND OLD.community_id IS NEW.community_id
         AND OLD.role IS NOT NEW.role BEGIN
        UPDATE memberships SET updated_at = CURRENT_TIMESTAMP
        WHERE user_id = NEW.user_id AND community_id = NEW.community_id;
        {_sqlite_insert("NEW.user_id", "NEW.community_id", "role_changed", "NEW.role")}
    END""",
    f"""CREATE TRIGGER communities_updated AFTER UPDATE ON communities
    WHEN {SQLITE_COMMUNITY_FIELDS_CHANGED} BEGIN
        UPDATE communities SET updated_at = CURRENT_TIMESTAMP WHERE id = NEW.id;
        INSERT INTO changes (user_id, community_id, type, role, actor, at)
        SELECT m.user_id, NEW.id, 'community_updated', m.role, {SQLITE_ACTOR}, {SQLITE_NOW}
        FROM memberships AS m WHERE m.community_id = NEW.id;
    END""",
    f"""CREATE TRIGGER communities_deleted BEFORE DELETE ON communities BEGIN
        INSERT INTO changes (user_id, community_id, type, role, actor, at)
        SELECT m.user_id, OLD.id, 'community_deleted', NULL, {SQLITE_ACTOR}, {SQLITE_NOW}
        FROM memberships AS m WHERE m.community_id = OLD.id;
    END""",
]
SQLITE_TRIGGER_NAMES = [
    "memberships_joined",
    "memberships_left",
    "memberships_moved",
    "memberships_role_changed",
    "communities_updated",
    "communities_deleted",
]


def upgrade():
    op.create_table(
        "users",
        sa.Column("id", ID, primary_key=True),
        sa.Column("name", sa.String(200)),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
    )
    op.create_table(
        "communities",
        sa.Column("id", ID, primary_key=True),
        sa.Column("slug", ID, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("logo_url", sa.String(2048)),
        sa.Column("is_public", sa.Boolean, server_default=sa.true(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.UniqueConstraint("slug", name="uq_communities_slug"),
    )
    op.create_table(
        "memberships",
        sa.Column("user_id", ID, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
        sa.Column(
            "community_id", ID, sa.ForeignKey("communities.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("role", sa.String(16), server_default="member", nullable=False),
        sa.Column("joined_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.CheckConstraint("role IN ('member', 'moderator', 'admin', 'owner')", name="role"),
    )
    op.create_index("ix_memberships_community_id", "memberships", ["community_id"])
    op.create_table(
        "changes",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("xid", sa.BigInteger),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("community_id", ID, nullable=False),
        sa.Column("type", sa.String(24), nullable=False),
        sa.Column("role", sa.String(16)),
        sa.Column("actor", ID),
        sa.Column("at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_changes_user_id_id", "changes", ["user_id", "id"])
    op.create_index("ix_changes_user_id_at", "changes", ["user_id", "at"])
    op.create_index("ix_changes_xid", "changes", ["xid"])
    op.create_index("ix_changes_at", "changes", ["at"])
    feed_meta = op.create_table(
        "feed_meta",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("epoch", sa.String(32), nullable=False),
        sa.Column("pruned_through", sa.BigInteger, server_default="0", nullable=False),
        sa.CheckConstraint("id = 1", name="single_row"),
    )
    op.create_table(
        "change_actor",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("actor", ID),
        sa.CheckConstraint("id = 1", name="single_row"),
    )
    op.bulk_insert(feed_meta, [{"id": 1, "epoch": secrets.token_hex(8), "pruned_through": 0}])

    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRES_TRIGGERS)
    else:
        for statement in SQLITE_TRIGGERS:
            op.execute(statement)


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRES_DROP)
    else:
        for name in SQLITE_TRIGGER_NAMES:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    for table in ("change_actor", "feed_meta", "changes", "memberships", "communities", "users"):
        op.drop_table(table)
