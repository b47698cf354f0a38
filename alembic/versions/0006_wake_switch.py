"""One NOTIFY per statement on ``changes``, and a switch to turn it off.

PostgreSQL takes one database-wide lock at commit for every transaction that
has called ``pg_notify`` (to queue notifications in commit order, see
``PreCommit_Notify`` in its ``async.c``), so with many concurrent writers
the notifying triggers serialise the platform's commits. Until now every
function that wrote a change-log row also notified. Now the functions only
write the row, and one statement-level trigger on ``changes`` notifies,
unless ``feed_meta.notify`` is false: workers that learn of new rows by
checking the log's head (``WAKE_SOURCE=head``, app/live/listener.py) set it so,
and workers that LISTEN set it back. Whoever writes (the app, the
platform's raw SQL) then takes the lock or not by that one flag, read by
the trigger in its own statement, with no reconnect or DDL needed.

Upgrading leaves the flag true: workers still listening keep their hints
until the ones set to ``head`` start.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-14
"""
import importlib.util
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

NOTIFY = "PERFORM pg_notify('community_sync', '');"


def _revision(filename, name):
    """An earlier revision module, for its function definitions."""
    path = Path(__file__).with_name(filename)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _function(sql, name):
    """The ``CREATE FUNCTION name`` statement of an earlier revision's SQL, as CREATE OR REPLACE."""
    start = sql.index(f"CREATE FUNCTION {name}(")
    end = sql.index("END $$;", start) + len("END $$;")
    return "CREATE OR REPLACE" + sql[start + len("CREATE"):end]


def _writers():
    """The two functions that wrote change-log rows, each with its own NOTIFY, as last defined
    (0001, 0003)."""
    initial = _revision("0001_initial_schema.py", "community_sync_0001")
    activity = _revision("0003_activity.py", "community_sync_0003")
    return (_function(initial.POSTGRES_TRIGGERS, "community_sync_record") + "\n"
            + _function(activity.POSTGRES_TRIGGERS, "community_sync_activity_published"))


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
        writers = _writers()
        assert writers.count(NOTIFY) == 2, "the functions to change are not as expected"
        op.execute(writers.replace(NOTIFY, ""))
        op.execute(NOTIFY_TRIGGER)


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute(NOTIFY_DROP)
        op.execute(_writers())
    with op.batch_alter_table("feed_meta") as batch:
        batch.drop_column("notify")
