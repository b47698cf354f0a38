"""Presence: who is online through which worker, and users who hide from it.

``presence_workers`` holds one row per worker process with the time it last
refreshed; ``presence`` one row per user online through a worker. A worker
writes a ``presence`` row when a user arrives there and deletes it when the
user leaves, and refreshes its own ``presence_workers`` row every
``PRESENCE_INTERVAL``; readers count a row only while its worker's refresh is
within ``PRESENCE_TTL``, so a worker that dies takes its users with it.

On PostgreSQL both tables are UNLOGGED: no WAL for rows rewritten every few
seconds, and after a crash they come back empty, which is right (the workers
that wrote them are gone too). Neither has a foreign key: a presence row may
briefly precede its user's provisioning, and users are never deleted.

``users.presence_visible`` (default true) is the user's own choice, read by
every count and list through a partial index of the hidden users.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-09
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

ID = sa.String(64)


def upgrade():
    postgres = op.get_bind().dialect.name == "postgresql"
    prefixes = ["UNLOGGED"] if postgres else []
    op.add_column("users", sa.Column("presence_visible", sa.Boolean, nullable=False,
                                     server_default=sa.true()))
    # Counts leave hidden users out by looking them up here: a few rows, not
    # one probe of ``users`` per online user. Each backend's condition as its
    # queries spell it, or the planner does not use the index.
    op.create_index("ix_users_presence_hidden", "users", ["id"],
                    postgresql_where=sa.text("NOT presence_visible"),
                    sqlite_where=sa.text("presence_visible = 0"))
    op.create_table(
        "presence_workers",
        sa.Column("id", ID, primary_key=True),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        prefixes=prefixes,
    )
    op.create_table(
        "presence",
        sa.Column("user_id", ID, primary_key=True),
        sa.Column("worker_id", ID, primary_key=True),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        prefixes=prefixes,
    )
    op.create_index("ix_presence_worker_id", "presence", ["worker_id"])


def downgrade():
    op.drop_index("ix_presence_worker_id", table_name="presence")
    op.drop_table("presence")
    op.drop_table("presence_workers")
    op.drop_index("ix_users_presence_hidden", table_name="users")
    # In place on both backends (SQLite 3.35+), as in 0004.
    op.execute("ALTER TABLE users DROP COLUMN presence_visible")
