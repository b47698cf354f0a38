"""Alembic environment: the metadata and the database URL come from the app."""
import sys

from alembic import context

from app.store import models  # noqa: F401  (registers the tables on Model.metadata)
from app.config import database_url
from app.store.db import Model, make_engine
from app.settings import SettingError, check_database_url

target_metadata = Model.metadata

if context.config.attributes.get("connection") is None:
    # Run as ``alembic upgrade``: refuse a bad DATABASE_URL in one line, as the app does.
    try:
        check_database_url(database_url())
    except SettingError as error:
        sys.exit(f"Error: {error}")


def run_migrations_offline():
    context.configure(url=database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    # The app passes its own connection when it upgrades itself on start.
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(database_url())
    with engine.connect() as connection:
        _run(connection)
    engine.dispose()


def _run(connection):
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
