"""Alembic from inside the app: ``flask db-upgrade`` and the embedded default's self-upgrade."""
import fcntl
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config

ROOT = Path(__file__).resolve().parent.parent


def alembic_config(connection=None):
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "alembic"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine, revision="head"):
    """Bring the database behind ``engine`` to ``revision``."""
    with _migration_lock(engine), engine.begin() as connection:
        command.upgrade(alembic_config(connection), revision)


def downgrade(engine, revision="base"):
    with _migration_lock(engine), engine.begin() as connection:
        command.downgrade(alembic_config(connection), revision)


@contextmanager
def _migration_lock(engine):
    """Serialise upgrades of one SQLite file by several workers starting at once.

    PostgreSQL deployments migrate once, before starting the workers (README.md).
    """
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
