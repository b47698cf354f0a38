"""One NOTIFY per statement on ``changes``, and a switch to turn it off.

PostgreSQL takes one database-wide lock at commit for every transaction that
has called ``pg_notify`` (to queue notifications in commit order, see
``PreCommit_Notify`` in its ``async.c``), so with many concurrent writers
the notifying triggers serialise the platform's commits. Until now every
function that wrote a change-log row also notified. Now the functions only
write the row, and one statement-level trigger on ``changes`` notifies,
unless ``feed_meta.notify`` is false: workers that learn of new rows by
checking the log's head (``WAKE_SOURCE=head``, app/listener.py) set it so,
and workers that LISTEN set it back. Whoever writes (the app, the
platform's raw SQL) then takes the lock or not by that one flag, read by
the trigger in its own statement, with no reconnect or DDL needed.

Upgrading leaves the flag true: workers still listening keep their hints
until the ones set to ``head`` start.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-14
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

NOTIFY = "PERFORM pg_notify('community_sync', '');"

# The two functions that wrote change-log rows (0001, 0003), with or without
# their own NOTIFY.
RECORD = r"""
CREATE OR REPLACE FUNCTION community_sync_record(
    p_user_id text, p_community_id text, p_type text, p_role text
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    -- clock_timestamp(): when the change was made, not when its transaction began.
    INSERT INTO changes (xid, user_id, community_id, type, role, actor, at)
    VALUES (pg_current_xact_id()::text::bigint, p_user_id, p_community_id, p_type, p_role,
            nullif(current_setting('community_sync.actor', true), ''), clock_timestamp());
    {notify}
END $$;

CREATE OR REPLACE FUNCTION community_sync_activity_published() RETURNS trigger
LANGUAGE plpgsql AS $$
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
    {notify}
    -- Moved, not copied: the change log is the one record.
    DELETE FROM activity WHERE id = NEW.id;
    RETURN NULL;
END $$;
"""

NOTIFY_TRIGGER = r"""
CREATE FUNCTION community_sync_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Identical notifications are folded within a transaction: one wake-up
    -- per commit however many rows it wrote.
    IF (SELECT notify FROM feed_meta WHERE id = 1) THEN
        PERFORM pg_notify('community_sync', '');
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER changes_notify AFTER INSERT ON changes
    FOR EACH STATEMENT EXECUTE FUNCTION community_sync_notify();
"""

NOTIFY_DROP = """
DROP TRIGGER IF EXISTS changes_notify ON changes;
DROP FUNCTION IF EXISTS community_sync_notify();
"""


def upgrade():
    op.add_column("feed_meta", sa.Column("notify", sa.Boolean, nullable=False,
                                         server_default=sa.true()))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(RECORD.format(notify=""))
        op.execute(NOTIFY_TRIGGER)


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute(NOTIFY_DROP)
        op.execute(RECORD.format(notify=NOTIFY))
    with op.batch_alter_table("feed_meta") as batch:
        batch.drop_column("notify")
