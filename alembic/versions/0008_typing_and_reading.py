"""Typing and who is reading: two ephemeral tables, never in the change log.

``typing`` holds one row per user typing somewhere (a community's topic) and
until when: the API writes it when a user starts typing or moves, rewrites it
at most every few seconds while they go on, and deletes it when they stop;
readers ignore a row past its ``until``. ``reading`` holds one row per user,
worker and watch (``community/topic``, or ``community/*``) that a poll held
there follows, written by the worker's presence on transitions and counted,
like ``presence``, only through live workers.

On PostgreSQL both are UNLOGGED, as the presence tables (0005): they are
rebuilt within moments after a crash, and not worth WAL. Neither has a
foreign key, for the same reasons.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

ID = sa.String(64)
TOPIC = sa.String(64)
WATCH = sa.String(64 + 1 + 64)


def upgrade():
    prefixes = ["UNLOGGED"] if op.get_bind().dialect.name == "postgresql" else []
    op.create_table(
        "reading",
        sa.Column("worker_id", ID, primary_key=True),
        sa.Column("user_id", ID, primary_key=True),
        sa.Column("watch", WATCH, primary_key=True),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        prefixes=prefixes,
    )
    op.create_index("ix_reading_watch", "reading", ["watch"])
    op.create_table(
        "typing",
        sa.Column("user_id", ID, primary_key=True),
        sa.Column("community_id", ID, nullable=False),
        sa.Column("topic", TOPIC, nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        prefixes=prefixes,
    )
    op.create_index("ix_typing_community_id", "typing", ["community_id"])


def downgrade():
    op.drop_index("ix_typing_community_id", table_name="typing")
    op.drop_table("typing")
    op.drop_index("ix_reading_watch", table_name="reading")
    op.drop_table("reading")
