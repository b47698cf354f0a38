"""Read markers: how far each member has read its community's activity, and each user its notifications.

``memberships.read_through`` and ``users.notifications_read_through`` are
change ids: ``unread`` counts the activity (notification) rows above them,
at most 100, one index range each (the partial indexes below). Pruning only
removes rows, so a count never goes negative nor counts a row twice.

A join starts its marker at the newest change id, so a new member's
``unread`` starts at 0. SQLite cannot set a column in a BEFORE trigger: a new
membership is inserted with the marker at -1 ("not set yet") and an AFTER
trigger sets it; the read trigger ignores that first step. (A membership
moved to another community by an UPDATE starts afresh on PostgreSQL; on
SQLite it keeps its marker.)

Moving a marker is a change of the user's state: a trigger records a
user-scoped ``read`` row (``community_id`` NULL for notifications) so every
tab and device of the user is woken and sees its count drop.

On PostgreSQL ids follow the order rows were written, not committed: an
activity row written before a read marker was moved and committed after it
counts as read. That is at most the activity racing the click on "read".

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

NEWEST = "(SELECT coalesce(max(id), 0) FROM changes)"

POSTGRES_TRIGGERS = f"""
CREATE FUNCTION community_sync_read_from_join() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.community_id IS DISTINCT FROM OLD.community_id THEN
        NEW.read_through := {NEWEST};
    END IF;
    RETURN NEW;
END $$;

CREATE FUNCTION community_sync_read_marker() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'users' THEN
        PERFORM community_sync_record(NEW.id, NULL, 'read', NULL);
    ELSIF (NEW.user_id, NEW.community_id) = (OLD.user_id, OLD.community_id) THEN
        PERFORM community_sync_record(NEW.user_id, NEW.community_id, 'read', NULL);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER memberships_read_from_join BEFORE INSERT OR UPDATE OF community_id ON memberships
    FOR EACH ROW EXECUTE FUNCTION community_sync_read_from_join();
CREATE TRIGGER memberships_read AFTER UPDATE OF read_through ON memberships
    FOR EACH ROW WHEN (NEW.read_through IS DISTINCT FROM OLD.read_through)
    EXECUTE FUNCTION community_sync_read_marker();
CREATE TRIGGER users_read AFTER UPDATE OF notifications_read_through ON users
    FOR EACH ROW WHEN (NEW.notifications_read_through IS DISTINCT FROM OLD.notifications_read_through)
    EXECUTE FUNCTION community_sync_read_marker();
"""

POSTGRES_DROP = """
DROP TRIGGER IF EXISTS users_read ON users;
DROP TRIGGER IF EXISTS memberships_read ON memberships;
DROP TRIGGER IF EXISTS memberships_read_from_join ON memberships;
DROP FUNCTION IF EXISTS community_sync_read_marker();
DROP FUNCTION IF EXISTS community_sync_read_from_join();
"""

SQLITE_ACTOR = "(SELECT actor FROM change_actor WHERE id = 1)"
SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now')"


def _sqlite_read(user, community):
    return (
        "INSERT INTO changes (user_id, community_id, type, actor, at) "
        f"VALUES ({user}, {community}, 'read', {SQLITE_ACTOR}, {SQLITE_NOW});"
    )


SQLITE_TRIGGERS = {
    "memberships_read_from_join": f"""CREATE TRIGGER memberships_read_from_join
    AFTER INSERT ON memberships BEGIN
        UPDATE memberships SET read_through = {NEWEST}
        WHERE user_id = NEW.user_id AND community_id = NEW.community_id;
    END""",
    "memberships_read": f"""CREATE TRIGGER memberships_read AFTER UPDATE OF read_through ON memberships
    WHEN OLD.read_through >= 0 AND NEW.read_through IS NOT OLD.read_through
         AND OLD.user_id IS NEW.user_id AND OLD.community_id IS NEW.community_id BEGIN
        {_sqlite_read("NEW.user_id", "NEW.community_id")}
    END""",
    "users_read": f"""CREATE TRIGGER users_read AFTER UPDATE OF notifications_read_through ON users
    WHEN NEW.notifications_read_through IS NOT OLD.notifications_read_through BEGIN
        {_sqlite_read("NEW.id", "NULL")}
    END""",
}


def upgrade():
    postgres = op.get_bind().dialect.name == "postgresql"
    op.add_column("memberships", sa.Column("read_through", sa.BigInteger, nullable=False,
                                           server_default="-1"))
    op.add_column("users", sa.Column("notifications_read_through", sa.BigInteger, nullable=False,
                                     server_default="0"))
    # What is there already has been seen: nobody starts with old activity unread.
    op.execute(f"UPDATE memberships SET read_through = {NEWEST}")
    op.execute(f"UPDATE users SET notifications_read_through = {NEWEST}")
    op.create_index("ix_changes_activity", "changes", ["community_id", "id"],
                    postgresql_where=sa.text("type = 'activity'"),
                    sqlite_where=sa.text("type = 'activity'"))
    op.create_index("ix_changes_notification", "changes", ["user_id", "id"],
                    postgresql_where=sa.text("type = 'notification'"),
                    sqlite_where=sa.text("type = 'notification'"))
    if postgres:
        op.execute(POSTGRES_TRIGGERS)
    else:
        for statement in SQLITE_TRIGGERS.values():
            op.execute(statement)


def downgrade():
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute(POSTGRES_DROP)
    else:
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.execute("DELETE FROM changes WHERE type = 'read'")
    op.drop_index("ix_changes_notification", table_name="changes")
    op.drop_index("ix_changes_activity", table_name="changes")
    # In place on both backends (SQLite 3.35+): a rebuild would drop the
    # memberships triggers of 0002.
    op.execute("ALTER TABLE users DROP COLUMN notifications_read_through")
    op.execute("ALTER TABLE memberships DROP COLUMN read_through")
