"""Topics, payloads and latest values: ``topic``, ``data`` and ``collapse`` on activity.

Activity may name a ``topic`` inside its community (``thread:t-9``), carry
``data`` (a JSON object of at most 512 bytes as written) and be ``collapse``d
(only its newest value per key matters: a vote count). The outbox refuses a
bad row with CHECK constraints, whoever writes it, and its trigger carries the
three columns into the change log.

Collapsed activity of one key (community, topic, kind, ref) is published
under a transaction-level advisory lock on that key (PostgreSQL): a second
writer of the key waits for the first to commit before its row gets an id, so
the ids of a key's rows follow their commit order, and a reader that saw a
newer value can never be handed an older one later. SQLite has one writer.

``unread`` counts community-level activity only (no topic), not collapsed,
and not the reader's own: the partial index it counts through is rebuilt on
that condition, with ``actor`` beside the ids on PostgreSQL so that the count
skips a reader's own rows without reading the table.

``activity`` is empty between transactions (its trigger moves every row), so
it is dropped and made again with the new columns and constraints rather
than altered; its triggers come back with it.

Downgrade drops topic activity from the log (0006's readers would hand it to
every member) and the three columns.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""
import importlib.util
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

ID = sa.String(64)
TOPIC_LENGTH = 64
DATA_BYTES = 512
# Activity that counts in ``unread``, as each dialect's queries spell it (app/store/models.py).
COUNTED = {
    "postgresql": "type = 'activity' AND topic IS NULL AND NOT collapse",
    "sqlite": "type = 'activity' AND topic IS NULL AND collapse = 0",
}


def _revision(filename, name):
    """An earlier revision module, for its definitions."""
    path = Path(__file__).with_name(filename)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _activity():
    return _revision("0003_activity.py", "community_sync_0003")


# The shape of a topic (1-64 of [a-z0-9_.:-], a letter first), and of data (a JSON
# object of at most 512 bytes as written), in each dialect.
TOPIC_CHECK = {
    "postgresql": "topic IS NULL OR topic ~ '^[a-z][a-z0-9_.:-]{0,63}$'",
    "sqlite": "topic IS NULL OR (length(topic) BETWEEN 1 AND 64 AND topic GLOB '[a-z]*' "
              "AND topic NOT GLOB '*[^a-z0-9_.:-]*')",
}
DATA_CHECK = {
    "postgresql": f"data IS NULL OR (json_typeof(data) = 'object' AND octet_length(data::text) <= {DATA_BYTES})",
    # json_type() raises on text that is not JSON: json_valid() first.
    "sqlite": "data IS NULL OR CASE WHEN json_valid(data) THEN json_type(data) = 'object' "
              f"AND length(CAST(data AS BLOB)) <= {DATA_BYTES} ELSE 0 END",
}

POSTGRES_FUNCTION = r"""
CREATE OR REPLACE FUNCTION community_sync_activity_published() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.community_id IS NOT NULL THEN
        PERFORM 1 FROM communities WHERE id = NEW.community_id FOR SHARE;
        IF NOT FOUND THEN
            RAISE foreign_key_violation USING
                MESSAGE = format('community %L does not exist', NEW.community_id),
                TABLE = 'activity', CONSTRAINT = 'fk_activity_community_id_communities';
        END IF;
    END IF;
    IF NEW.collapse THEN
        -- One key's values get their ids in commit order (see migration 0007).
        PERFORM pg_advisory_xact_lock(hashtextextended(
            concat_ws('/', NEW.community_id, NEW.topic, NEW.kind, NEW.ref), 7));
    END IF;
    INSERT INTO changes (xid, user_id, community_id, type, kind, ref, actor, at, topic, data, collapse)
    VALUES (pg_current_xact_id()::text::bigint, NEW.user_id, NEW.community_id,
            CASE WHEN NEW.community_id IS NULL THEN 'notification' ELSE 'activity' END,
            NEW.kind, NEW.ref, NEW.actor, clock_timestamp(), NEW.topic, NEW.data, NEW.collapse);
    -- Moved, not copied: the change log is the one record.
    DELETE FROM activity WHERE id = NEW.id;
    RETURN NULL;
END $$;

CREATE TRIGGER activity_published AFTER INSERT ON activity
    FOR EACH ROW EXECUTE FUNCTION community_sync_activity_published();
"""

SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now')"
SQLITE_PUBLISHED = f"""CREATE TRIGGER activity_published AFTER INSERT ON activity BEGIN
        INSERT INTO changes (user_id, community_id, type, kind, ref, actor, at, topic, data, collapse)
        VALUES (NEW.user_id, NEW.community_id,
                CASE WHEN NEW.community_id IS NULL THEN 'notification' ELSE 'activity' END,
                NEW.kind, NEW.ref, NEW.actor, {SQLITE_NOW}, NEW.topic, NEW.data, NEW.collapse);
        DELETE FROM activity WHERE id = NEW.id;
    END"""


def _create_activity(dialect, new):
    """The outbox, as 0003 made it, and with this revision's columns when ``new``."""
    activity = _activity()
    columns = [
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("community_id", ID),
        sa.Column("user_id", ID),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("ref", ID, nullable=False),
        sa.Column("actor", ID),
        sa.CheckConstraint("(community_id IS NULL) <> (user_id IS NULL)", name="one_recipient"),
        sa.CheckConstraint(activity.KIND_CHECK[dialect], name="kind"),
        sa.CheckConstraint(activity.ID_CHECK.format("ref"), name="ref"),
        sa.CheckConstraint(f"actor IS NULL OR {activity.ID_CHECK.format('actor')}", name="actor"),
    ]
    if new:
        columns += [
            sa.Column("topic", sa.String(TOPIC_LENGTH)),
            sa.Column("data", sa.JSON),
            sa.Column("collapse", sa.Boolean, nullable=False, server_default=sa.false()),
            sa.CheckConstraint(TOPIC_CHECK[dialect], name="topic"),
            sa.CheckConstraint(DATA_CHECK[dialect], name="data"),
            # Topics and latest values are a community's; a notification has neither.
            sa.CheckConstraint("community_id IS NOT NULL OR (topic IS NULL AND NOT collapse)",
                               name="community_only"),
        ]
    op.create_table("activity", *columns)
    if dialect == "postgresql":
        op.execute(POSTGRES_FUNCTION if new else activity.POSTGRES_TRIGGERS.replace(
            "CREATE FUNCTION", "CREATE OR REPLACE FUNCTION").replace(
            "    PERFORM pg_notify('community_sync', '');\n", ""))
    else:
        op.execute(activity.SQLITE_TRIGGERS["activity_check"])
        op.execute(SQLITE_PUBLISHED if new else activity.SQLITE_TRIGGERS["activity_published"])


def _activity_index(counted, include=()):
    op.create_index("ix_changes_activity", "changes", ["community_id", "id"],
                    postgresql_where=sa.text(counted["postgresql"]), sqlite_where=sa.text(counted["sqlite"]),
                    postgresql_include=list(include))


def upgrade():
    dialect = op.get_bind().dialect.name
    op.add_column("changes", sa.Column("topic", sa.String(TOPIC_LENGTH)))
    op.add_column("changes", sa.Column("data", sa.JSON))
    op.add_column("changes", sa.Column("collapse", sa.Boolean, nullable=False, server_default=sa.false()))
    op.drop_index("ix_changes_activity", table_name="changes")
    _activity_index(COUNTED, include=["actor"])
    op.drop_table("activity")
    _create_activity(dialect, new=True)


def downgrade():
    dialect = op.get_bind().dialect.name
    op.drop_table("activity")
    _create_activity(dialect, new=False)
    op.execute("DELETE FROM changes WHERE topic IS NOT NULL")
    op.drop_index("ix_changes_activity", table_name="changes")
    _activity_index(dict.fromkeys(COUNTED, "type = 'activity'"))
    # In place on both backends (SQLite 3.35+): a rebuild would drop the triggers on changes.
    for column in ("collapse", "data", "topic"):
        op.execute(f"ALTER TABLE changes DROP COLUMN {column}")
