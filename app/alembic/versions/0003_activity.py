"""Activity and notifications: the ``activity`` outbox table, feeding the change log.

The platform publishes with a plain ``INSERT INTO activity (community_id,
kind, ref, actor)`` (or ``user_id`` instead of ``community_id`` for a
notification to one user) in its own transaction: delivered if and only if
that transaction commits, like every other change-log row.

``activity`` is an outbox, not a second record. A trigger *moves* each row
into the change log: one community-scoped ``activity`` row in ``changes``
(``user_id`` NULL, resolved to the community's members when read, like a
rename) or one user-scoped ``notification`` row, carrying ``kind``, ``ref``
and ``actor``, and then deletes the ``activity`` row in the same
transaction. So ``changes`` is the one copy of the truth: retention prunes it
like the rest of the log, and nothing can disagree with it. The trigger runs
AFTER the insert so that the table's CHECK constraints (exactly one of
``community_id`` and ``user_id``; the shape of ``kind`` and ``ref``) refuse
a bad row first, whoever writes it.

A community's activity locks the community FOR SHARE, like a join: a
deletion (which holds its row lock) comes wholly before it, and the activity
then fails as a membership would (SQLSTATE 23503 / "FOREIGN KEY constraint
failed"), or wholly after it. It does not serialize with joins, which take
the same shared lock: activity committed concurrently with a join may reach
the new member or not, either of which is right.

``changes.community_id`` becomes nullable, for notifications. On SQLite that
rebuilds the table, which drops its triggers: 0002's come back as they were.

Downgrade deletes activity and notification rows from the log (0002's log
has no columns for them) and drops the table.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""
import importlib.util
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ID = sa.String(64)


def _revision(filename, name):
    """An earlier revision module, for its trigger definitions and helpers."""
    path = Path(__file__).with_name(filename)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _scoped():
    return _revision("0002_community_scoped_changes.py", "community_sync_0002")


POSTGRES_TRIGGERS = r"""
CREATE FUNCTION community_sync_activity_published() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.community_id IS NOT NULL THEN
        PERFORM 1 FROM communities WHERE id = NEW.community_id FOR SHARE;
        IF NOT FOUND THEN
            RAISE foreign_key_violation USING
                MESSAGE = format('community %L does not exist', NEW.community_id),
                TABLE = 'activity', CONSTRAINT = 'fk_activity_community_id_communities';
        END IF;
    END IF;
    INSERT INTO changes (xid, user_id, community_id, type, kind, ref, actor, at)
    VALUES (pg_current_xact_id()::text::bigint, NEW.user_id, NEW.community_id,
            CASE WHEN NEW.community_id IS NULL THEN 'notification' ELSE 'activity' END,
            NEW.kind, NEW.ref, NEW.actor, clock_timestamp());
    PERFORM pg_notify('community_sync', '');
    -- Moved, not copied: the change log is the one record.
    DELETE FROM activity WHERE id = NEW.id;
    RETURN NULL;
END $$;

CREATE TRIGGER activity_published AFTER INSERT ON activity
    FOR EACH ROW EXECUTE FUNCTION community_sync_activity_published();
"""

POSTGRES_DROP = """
DROP TRIGGER IF EXISTS activity_published ON activity;
DROP FUNCTION IF EXISTS community_sync_activity_published();
"""

SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now')"
SQLITE_TRIGGERS = {
    "activity_check": """CREATE TRIGGER activity_check BEFORE INSERT ON activity
    WHEN NEW.community_id IS NOT NULL
         AND NOT EXISTS (SELECT 1 FROM communities WHERE id = NEW.community_id)
    BEGIN SELECT RAISE(ABORT, 'FOREIGN KEY constraint failed'); END""",
    "activity_published": f"""CREATE TRIGGER activity_published AFTER INSERT ON activity BEGIN
        INSERT INTO changes (user_id, community_id, type, kind, ref, actor, at)
        VALUES (NEW.user_id, NEW.community_id,
                CASE WHEN NEW.community_id IS NULL THEN 'notification' ELSE 'activity' END,
                NEW.kind, NEW.ref, NEW.actor, {SQLITE_NOW});
        DELETE FROM activity WHERE id = NEW.id;
    END""",
}

# The shape of kind (1-32 of [a-z0-9_.-], a letter first) in each dialect:
# SQLite has GLOB but no regular expressions.
KIND_CHECK = {
    "postgresql": "kind ~ '^[a-z][a-z0-9_.-]{0,31}$'",
    "sqlite": "length(kind) BETWEEN 1 AND 32 AND kind GLOB '[a-z]*' "
              "AND kind NOT GLOB '*[^a-z0-9_.-]*'",
}
ID_CHECK = "length({0}) BETWEEN 1 AND 64"


def _rebuild_changes(alter):
    """Alter ``changes`` in one rebuild on SQLite, keeping its AUTOINCREMENT mark (see 0002)."""
    scoped = _scoped()
    sqlite = op.get_bind().dialect.name == "sqlite"
    seq = scoped._sqlite_sequence() if sqlite else None
    with op.batch_alter_table("changes", table_kwargs={"sqlite_autoincrement": True}) as batch:
        alter(batch)
    if sqlite:
        scoped._keep_sqlite_sequence(seq)


def _drop_sqlite_triggers(names):
    for name in names:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")


def _recreate_sqlite_scoped(scoped):
    """What a rebuild of ``changes`` took away on SQLite: 0002's partial index and triggers."""
    op.create_index(
        "ix_changes_community_id_id", "changes", ["community_id", "id"],
        sqlite_where=sa.text("user_id IS NULL"),
    )
    for statement in scoped.SQLITE_TRIGGERS.values():
        op.execute(statement)


def upgrade():
    postgres = op.get_bind().dialect.name == "postgresql"
    scoped = _scoped()
    if not postgres:
        _drop_sqlite_triggers(scoped.SQLITE_TRIGGERS)
        # Rebuilt with the table below; partial indexes may not survive it.
        op.drop_index("ix_changes_community_id_id", table_name="changes")
    op.add_column("changes", sa.Column("kind", sa.String(32)))
    op.add_column("changes", sa.Column("ref", ID))
    _rebuild_changes(lambda batch: batch.alter_column("community_id", existing_type=ID, nullable=True))
    if not postgres:
        _recreate_sqlite_scoped(scoped)
    op.create_table(
        "activity",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("community_id", ID),
        sa.Column("user_id", ID),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("ref", ID, nullable=False),
        sa.Column("actor", ID),
        sa.CheckConstraint("(community_id IS NULL) <> (user_id IS NULL)", name="one_recipient"),
        sa.CheckConstraint(KIND_CHECK["postgresql" if postgres else "sqlite"], name="kind"),
        sa.CheckConstraint(ID_CHECK.format("ref"), name="ref"),
        sa.CheckConstraint(f"actor IS NULL OR {ID_CHECK.format('actor')}", name="actor"),
    )
    if postgres:
        op.execute(POSTGRES_TRIGGERS)
    else:
        for statement in SQLITE_TRIGGERS.values():
            op.execute(statement)


def downgrade():
    postgres = op.get_bind().dialect.name == "postgresql"
    scoped = _scoped()
    if postgres:
        op.execute(POSTGRES_DROP)
    else:
        _drop_sqlite_triggers(SQLITE_TRIGGERS)
        _drop_sqlite_triggers(scoped.SQLITE_TRIGGERS)
        op.drop_index("ix_changes_community_id_id", table_name="changes")
    op.drop_table("activity")
    op.execute("DELETE FROM changes WHERE type IN ('activity', 'notification')")

    def restore(batch):
        batch.alter_column("community_id", existing_type=ID, nullable=False)
        batch.drop_column("ref")
        batch.drop_column("kind")

    _rebuild_changes(restore)
    if not postgres:
        _recreate_sqlite_scoped(scoped)
