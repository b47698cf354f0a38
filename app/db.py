"""Engine, per-request session and the declarative ``Model`` base.

The engine lives in ``app.extensions["db"]``; a request gets its session lazily
through :func:`session` and loses it in teardown, so a long poll that is waiting
holds no connection and no transaction.
"""
import functools
from contextlib import contextmanager
from pathlib import Path

from flask import current_app, g
from sqlalchemy import MetaData, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Session

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Model(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def normalize_url(url):
    """Return ``url`` as a SQLAlchemy URL, with plain PostgreSQL URLs on psycopg2.

    Users pass ``postgresql://`` or ``postgres://``; newer SQLAlchemy releases
    map those to psycopg 3, which this service neither installs nor makes
    cooperative under gevent.
    """
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed


def default_sqlite_url(instance_path):
    """The embedded database: a SQLite file under the instance folder."""
    Path(instance_path).mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{Path(instance_path) / 'community-sync.sqlite3'}"


def make_engine(url, pool_size=10, max_overflow=10, pool_timeout=30.0, echo=False):
    url = normalize_url(url)
    if url.get_backend_name() == "sqlite":
        engine = create_engine(url, echo=echo, connect_args={"timeout": 30})
        _configure_sqlite(engine)
        return engine
    _make_psycopg2_cooperative()
    return create_engine(
        url,
        echo=echo,
        pool_size=pool_size,
        max_overflow=max_overflow,
        # How long a request queues for a connection before a 503 (app.errors):
        # long enough to ride out a reconnect storm after a deploy.
        pool_timeout=pool_timeout,
        # No pre-ping: it would cost a round trip on every request. A
        # connection lost to a restart fails one request (503, see
        # app.errors) and the pool replaces it.
        pool_recycle=1800,
    )


def _configure_sqlite(engine):
    # pysqlite only emits BEGIN before DML, so the SELECTs of one read would each
    # see a different database. Taking over BEGIN (the recipe from SQLAlchemy's
    # pysqlite docs) gives every transaction one snapshot under WAL.
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection):
        # Writers ask for IMMEDIATE (see app.writes.writing); reads stay DEFERRED
        # so they never wait for a writer.
        mode = connection.get_execution_options().get("sqlite_begin", "")
        connection.exec_driver_sql(f"BEGIN {mode}".strip())


def _make_psycopg2_cooperative():
    """Let psycopg2 yield to other greenlets while it waits on the network.

    Only when gevent has patched the process (gunicorn's gevent worker does it
    before the app is imported): in a plain process the wait callback would
    only add overhead.
    """
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a hard dependency
        return
    if monkey.is_module_patched("socket"):
        from psycogreen.gevent import patch_psycopg

        patch_psycopg()


def init_app(app):
    engine = make_engine(
        app.config["DATABASE_URL"],
        pool_size=app.config["DB_POOL_SIZE"],
        max_overflow=app.config["DB_MAX_OVERFLOW"],
        pool_timeout=app.config["DB_POOL_TIMEOUT"],
        echo=app.config["SQL_ECHO"],
    )
    app.extensions["db"] = engine
    metrics = app.extensions.get("metrics")
    if metrics is not None:
        event.listen(engine, "before_cursor_execute", lambda *_args: metrics.queries.inc())
    app.teardown_appcontext(close_session)


def engine():
    return current_app.extensions["db"]


def session():
    """The request's session, created on first use and closed in teardown."""
    if "db_session" not in g:
        g.db_session = Session(engine(), expire_on_commit=False)
    return g.db_session


def close_session(_exc=None):
    db_session = g.pop("db_session", None)
    if db_session is not None:
        db_session.close()


@contextmanager
def read_transaction(bind=None, single_statement=False):
    """A short read-only transaction whose statements all see one snapshot.

    PostgreSQL's default READ COMMITTED takes a new snapshot per statement; the
    state, the changes and the cursor of one answer must agree, so reads run
    REPEATABLE READ (a read-only transaction there never fails to serialise).
    A read of ``single_statement`` is consistent on its own and skips the
    BEGIN and COMMIT round trips. Reads are Core statements returning plain
    rows, so they run on a ``Connection``, without an ORM session's
    bookkeeping. The connection goes back to the pool as soon as the block
    ends.
    """
    bind = bind if bind is not None else engine()
    with _reading(bind, single_statement).connect() as connection, connection.begin():
        yield connection


@functools.lru_cache(maxsize=16)
def _reading(bind, single_statement):
    """The engine variant reads run on, made once rather than per request (a process has one engine)."""
    if bind.dialect.name != "postgresql":
        return bind
    return bind.execution_options(
        isolation_level="AUTOCOMMIT" if single_statement else "REPEATABLE READ"
    )


def is_postgres(bind=None):
    bind = bind if bind is not None else engine()
    return bind.dialect.name == "postgresql"

