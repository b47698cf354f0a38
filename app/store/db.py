"""Engine, the declarative ``Model`` base, and the one way into the database.

The engine lives in ``app.extensions["db"]``. Everything reads through
:func:`read_transaction` (a Core connection) and writes through
:func:`write_transaction` (an ORM session); each is a short transaction that
gives its connection back when its block ends, so a long poll that is waiting
holds no connection and no transaction.
"""
import contextvars
import functools
import select
import time
from contextlib import contextmanager
from pathlib import Path

from flask import current_app
from gevent.monkey import get_original, is_module_patched
import orjson
from psycogreen.gevent import gevent_wait_callback
from psycopg2 import extensions
from sqlalchemy import MetaData, create_engine, event, or_
from sqlalchemy.dialects import postgresql, sqlite
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


def address(url):
    """Where ``url`` points, for log lines: ``host:port``, or the SQLite file; never the password."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.database or ":memory:"
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}"


def default_sqlite_url(instance_path):
    """The embedded database: a SQLite file under the instance folder."""
    Path(instance_path).mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{Path(instance_path) / 'community-sync.sqlite3'}"


def compact_json(value):
    """JSON as the engine writes it (activity's ``data``): compact, the size the database checks."""
    return orjson.dumps(value).decode()


def make_engine(url, pool_size=10, max_overflow=10, pool_timeout=30.0, echo=False):
    url = normalize_url(url)
    if url.get_backend_name() == "sqlite":
        engine = create_engine(url, echo=echo, connect_args={"timeout": 30}, json_serializer=compact_json)
        _configure_sqlite(engine)
        return engine
    _make_psycopg2_cooperative()
    return create_engine(
        url,
        echo=echo,
        json_serializer=compact_json,
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
        # Writers ask for IMMEDIATE (see write_transaction); reads stay DEFERRED
        # so they never wait for a writer.
        mode = connection.get_execution_options().get("sqlite_begin", "")
        connection.exec_driver_sql(f"BEGIN {mode}".strip())


def _make_psycopg2_cooperative():
    """Let psycopg2 yield to other greenlets while it waits on the network.

    Only when gevent has patched the process (gunicorn's gevent worker does it
    before the app is imported): in a plain process the wait callback would
    only add overhead.
    """
    if is_module_patched("socket"):
        extensions.set_wait_callback(_wait)


# A poll that blocks the process, not the greenlet (``select`` would refuse the
# descriptors past 1,023 that a worker holding thousands of sockets hands out).
_blocking_poll = get_original("select", "poll")

# Until when this greenlet's database waits may hold the event loop (``holding_the_loop``).
_hold_until = contextvars.ContextVar("hold_until", default=None)


@contextmanager
def holding_the_loop(most):
    """The statements in this block keep the event loop while they wait, for up to ``most``
    seconds in all.

    For the hub's re-read, which every waiting poll's news passes through: each
    cooperative wait resumes only after every greenlet that became ready
    meanwhile has run, and in a worker saturated by answers a read of thousands
    of states, received a chunk per wait, spans seconds that way while the
    changes it carries wait with it. Held, the same read takes the database's
    own time. ``most`` bounds how long a slow database can stall the worker,
    for the whole block and not per statement: a block of many statements that
    each took nearly ``most`` would keep the loop past gunicorn's heartbeat
    (``WORKER_TIMEOUT``), and the worker would be killed. Past it every
    statement waits cooperatively. Greenlets have contexts of their own: the
    block holds only its own statements.
    """
    token = _hold_until.set(time.monotonic() + most)
    try:
        yield
    finally:
        _hold_until.reset(token)


def _wait(connection, timeout=None):
    """psycopg2's wait callback (once per statement): psycogreen's cooperative wait,
    held first inside ``holding_the_loop``."""
    held_until = _hold_until.get() or 0
    while (held := held_until - time.monotonic()) > 0:
        state = connection.poll()
        if state == extensions.POLL_OK:
            return
        waiting = _blocking_poll()
        waiting.register(connection.fileno(), select.POLLIN if state == extensions.POLL_READ else select.POLLOUT)
        waiting.poll(held * 1000)
    gevent_wait_callback(connection, timeout)


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


def engine():
    return current_app.extensions["db"]


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


@contextmanager
def write_transaction(bind=None):
    """An ORM session in a transaction of its own: committed when the block ends, rolled back if it raises.

    Objects stay readable after the commit (``expire_on_commit=False``), so a
    view can shape its answer from them without another query. On SQLite the
    transaction starts IMMEDIATE: a deferred one that reads first can fail to
    upgrade to a write lock instead of waiting for it.
    """
    bind = bind if bind is not None else engine()
    with Session(_writing(bind), expire_on_commit=False) as session, session.begin():
        yield session


@functools.lru_cache(maxsize=16)
def _writing(bind):
    """The engine variant writes run on, made once rather than per request."""
    if bind.dialect.name == "postgresql":
        return bind
    return bind.execution_options(sqlite_begin="IMMEDIATE")


def is_postgres(bind=None):
    bind = bind if bind is not None else engine()
    return bind.dialect.name == "postgresql"


def insert_if_absent(session, model, *rows, **values):
    """Insert rows of ``model`` (dicts, or one row's ``values``) unless one with the same key
    exists: ``INSERT ... ON CONFLICT DO NOTHING``.

    Checking first and then inserting fails (a unique violation that spoils
    the whole transaction) when another transaction inserts the same key in
    between; this waits for that one instead, and does nothing if it commits.
    Both backends speak the same clause.
    """
    session.execute(_insert(session, model).values(list(rows) or [values]).on_conflict_do_nothing())


def insert_or_update(session, model, rows, columns):
    """Insert ``rows`` of ``model`` (dicts, each key once); where a row's key exists, set its
    ``columns`` to the new values if any differ: ``INSERT ... ON CONFLICT DO UPDATE ... WHERE``."""
    statement = _insert(session, model).values(rows)
    table = model.__table__
    session.execute(statement.on_conflict_do_update(
        index_elements=[column.name for column in table.primary_key],
        set_={name: statement.excluded[name] for name in columns},
        where=or_(*(table.c[name].is_distinct_from(statement.excluded[name]) for name in columns)),
    ))


def _insert(session, model):
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return dialect.insert(model)

