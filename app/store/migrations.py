"""Alembic from inside the app: ``flask db-upgrade`` and the embedded default's self-upgrade."""
import fcntl
import sys
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text

# The migration scripts: the checkout's alembic/ (which alembic.ini names too),
# or, in an installed copy (``pip install .``), where setup.cfg's data_files put
# them under the environment's prefix, so it migrates from any directory.
PLACES = (Path(__file__).resolve().parents[2] / "alembic",
          Path(sys.prefix) / "share" / "community-sync" / "alembic")


def scripts():
    """The first of PLACES that holds the migration scripts."""
    for place in PLACES:
        if (place / "env.py").is_file() and (place / "versions").is_dir():
            return place
    raise RuntimeError(f"no migration scripts in {' or '.join(map(str, PLACES))}")


def alembic_config(connection=None):
    """Alembic's configuration for the migration scripts (no alembic.ini needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(scripts()))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine, revision="head"):
    """Bring the database behind ``engine`` to ``revision``."""
    with _migrating(engine) as connection:
        command.upgrade(alembic_config(connection), revision)


def downgrade(engine, revision="base"):
    with _migrating(engine) as connection:
        command.downgrade(alembic_config(connection), revision)


@contextmanager
def _migrating(engine):
    """A transaction that no other process migrates the same database in.

    Several workers starting at once with AUTO_MIGRATE would otherwise all
    create the same tables, and all but one fail to boot. PostgreSQL: an
    advisory lock of the transaction, one per schema. SQLite: a lock file.
    """
    with _file_lock(engine), engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text(
                "SELECT pg_advisory_xact_lock(hashtext('community-sync migrate ' || current_schema()))"
            ))
        yield connection


@contextmanager
def _file_lock(engine):
    """Serialise upgrades of one SQLite file by several workers starting at once."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def init_app(app):
    if app.config["AUTO_MIGRATE"]:
        upgrade(app.extensions["db"])
