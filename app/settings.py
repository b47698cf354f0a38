"""Every setting read from the environment: its type, its default, and how it is parsed.

Two readers share this table: ``create_app`` (through app/config.py, which
derives the defaults that depend on the database) and gunicorn.conf.py. The
latter runs in the gunicorn master before each gevent worker monkey-patches
the standard library, so this module imports nothing but the standard library
and nothing else from the package: Flask, SQLAlchemy or ssl imported there
first could make that patching warn or misbehave. README.md documents each
setting.
"""
import importlib.util
import ipaddress
import os
import re
from pathlib import Path

# name: (type, default). A default of None means "derived" (app/config.py).
SETTINGS = {
    "DATABASE_URL": (str, None),
    # The wake source's own connections (LISTEN, the watcher's election): PostgreSQL
    # directly when the pool goes through a transaction-mode PgBouncer. Empty: DATABASE_URL.
    "WAKE_DATABASE_URL": (str, ""),
    "SECRET_KEY": (str, None),
    "JWT_ISSUER": (str, ""),
    "JWT_AUDIENCE": (str, ""),
    "TOKEN_MAX_TTL": (int, 30 * 24 * 3600),
    "CORS_ORIGINS": (str, ""),
    "CORS_MAX_AGE": (int, 86400),
    "DEMO_MODE": (bool, None),
    "AUTO_MIGRATE": (bool, None),
    "HUB_AUTOSTART": (bool, True),
    "POLL_DEFAULT_TIMEOUT": (int, 25),
    "POLL_MAX_TIMEOUT": (int, 55),
    "POLL_MAX_WAITING": (int, 12000),
    "POLL_MAX_PER_USER": (int, 10),
    "POLL_INTERVAL_MIN": (int, 2),
    "POLL_INTERVAL_MAX": (int, 120),
    "SAFETY_NET_INTERVAL": (float, None),
    "ACTIVITY_COALESCE": (float, 1.0),
    "ACTIVITY_COALESCE_MAX": (float, 10.0),
    "HOLD_THE_LOOP": (float, 2.0),
    "ADMISSION_READS": (int, 4),
    "WAKE_SOURCE": (str, "watcher"),
    "WAKE_POLL_INTERVAL": (float, 0.05),
    "WATCHER_INTERVAL": (float, 0.005),
    "PRESENCE_TTL": (float, 70.0),
    "PRESENCE_INTERVAL": (float, 10.0),
    "TYPING_TTL": (float, 6.0),
    "CHANGE_RETENTION": (int, 7 * 24 * 3600),
    "PRUNE_INTERVAL": (int, 3600),
    "DB_POOL_SIZE": (int, 10),
    "DB_MAX_OVERFLOW": (int, 10),
    "DB_POOL_TIMEOUT": (float, 30.0),
    "SQL_ECHO": (bool, False),
    "MAX_CONTENT_LENGTH": (int, 16 * 1024),
    "REQUEST_BODY_TIMEOUT": (float, 15.0),
    "RATELIMIT_WRITES": (str, "120 per minute"),
    "RATELIMIT_PLATFORM_WRITES": (str, "6000 per minute"),
    "RATELIMIT_STORAGE_URI": (str, "memory://"),
    "TRUSTED_PROXIES": (int, 0),
}

# app/live/listener.py's wake sources, by WAKE_SOURCE's names.
WAKE_SOURCES = ("notify", "head", "watcher")

# Read by gunicorn.conf.py only (command-line flags override them). A default
# of None means "derived" (see server()).
SERVER_SETTINGS = {
    "BIND": (str, "127.0.0.1:8000"),
    "WEB_CONCURRENCY": (int, 2),
    "WORKER_CONNECTIONS": (int, 15000),
    "GRACEFUL_TIMEOUT": (int, None),
    "WORKER_TIMEOUT": (int, 30),
    "KEEPALIVE": (int, 75),
    "ACCESS_LOG": (bool, False),
    "PARKED_POLLS": (bool, True),
    "LOG_LEVEL": (str, "info"),
    "FORWARDED_ALLOW_IPS": (str, "127.0.0.1"),
    # gunicorn's control socket (gunicornc); empty: none (app/gunicorn_conf.py says why).
    "CONTROL_SOCKET": (str, ""),
    # prometheus_client reads it from the environment itself; gunicorn.conf.py
    # puts a temporary directory there when it is unset.
    "PROMETHEUS_MULTIPROC_DIR": (str, ""),
}



class SettingError(ValueError):
    """A setting that stops the start: its message names the setting and what would fix it.

    The entry points (app/wsgi.py, alembic/env.py) print the message alone,
    without a traceback: it is the operator's to fix, not a bug.
    """


TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off", ""}


def parse(name, kind, raw):
    """One environment value as ``kind``; a ValueError names the setting."""
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered not in TRUE | FALSE:
            raise SettingError(f"{name} must be one of 1/0/true/false, not {raw!r}")
        return lowered in TRUE
    try:
        return kind(raw)
    except ValueError:
        raise SettingError(f"{name} must be a {kind.__name__}, not {raw!r}") from None


def read(table, environ=os.environ):
    """The table's defaults, overridden by whatever the environment sets."""
    return {
        name: parse(name, kind, environ[name]) if name in environ else default
        for name, (kind, default) in table.items()
    }


def server(environ=os.environ):
    """gunicorn's settings, with the graceful timeout above the longest poll."""
    values = read(SERVER_SETTINGS, environ)
    if values["GRACEFUL_TIMEOUT"] is None:
        longest_poll = read({"POLL_MAX_TIMEOUT": SETTINGS["POLL_MAX_TIMEOUT"]}, environ)
        values["GRACEFUL_TIMEOUT"] = longest_poll["POLL_MAX_TIMEOUT"] + 10
    return values


# SQLAlchemy's URL grammar (sqlalchemy.engine.url), read here without
# importing SQLAlchemy: the gunicorn master checks the URL too.
URL = re.compile(r"""
    (?P<name>[\w+]+)://
    (?:(?P<username>[^:/]*)(?::(?P<password>[^@]*))?@)?
    (?:(?:\[(?P<ipv6host>[^/?]+)\]|(?P<ipv4host>[^/:?]+))?(?::(?P<port>[^/?]*))?)?
    (?:/(?P<database>[^?]*))?
    (?:\?(?P<query>.*))?
    """, re.X)
SUPPORTED_URLS = "postgresql://USER:PASSWORD@HOST:PORT/DATABASE or sqlite:///PATH"
# The drivers the service runs on, by the URL's backend, and the module each needs.
DRIVERS = {"postgresql": {"": "psycopg2", "psycopg2": "psycopg2"},
           "postgres": {"": "psycopg2", "psycopg2": "psycopg2"},
           "sqlite": {"": "sqlite3", "pysqlite": "sqlite3"}}


def check_database_url(url, name="DATABASE_URL"):
    """Refuse, with a SettingError, a DATABASE_URL (or the setting ``name``) the service could not start on.

    Each would otherwise fail later and further from its cause: a parse error
    deep in SQLAlchemy, a missing MySQL driver and then a misleading "No such
    command", a lock file that cannot be made. The messages never carry the
    URL's password.
    """
    match = URL.fullmatch(url.strip())
    if match is None:
        raise SettingError(f"{name} is not a database URL: set it to {SUPPORTED_URLS}")
    backend, _, driver = match["name"].partition("+")
    if backend not in DRIVERS:
        raise SettingError(f"{name} names {backend}, which community-sync does not run on: "
                           f"set it to {SUPPORTED_URLS}")
    module = DRIVERS[backend].get(driver)
    if module is None:
        raise SettingError(f"{name} asks for the driver {driver}, which community-sync does not run on: "
                           f"use a plain {backend}:// URL")
    if importlib.util.find_spec(module) is None:
        raise SettingError(f"{name} needs the driver {module}, which is not installed: "
                           f"reinstall community-sync (pip install -c constraints.txt -e .)")
    port = match["port"]
    if port and not port.isdigit():
        raise SettingError(f"{name}'s port must be a number, not {port!r}: set it to {SUPPORTED_URLS}")
    database = match["database"]
    if backend == "sqlite" and database and database != ":memory:":
        directory = Path(database).expanduser().absolute().parent
        if not directory.is_dir():
            raise SettingError(f"{name}'s SQLite file is in {directory}, which does not exist: "
                               "create the directory, or name a file in one that exists")


def check_values(values):
    """Refuse settings that are each well formed but do not go together."""
    if values["POLL_DEFAULT_TIMEOUT"] > values["POLL_MAX_TIMEOUT"]:
        raise SettingError("POLL_DEFAULT_TIMEOUT must not exceed POLL_MAX_TIMEOUT")
    if not 0 < values["PRESENCE_INTERVAL"] < values["PRESENCE_TTL"]:
        # A live worker's rows must be refreshed before they stop counting.
        raise SettingError("PRESENCE_INTERVAL must be above 0 and below PRESENCE_TTL")
    if not values["TYPING_TTL"] >= 2:
        # Typists repeat once a second; below two, one late repeat lets them lapse.
        raise SettingError("TYPING_TTL must be 2 seconds or more")
    if values["WAKE_SOURCE"] not in WAKE_SOURCES:
        raise SettingError(f"WAKE_SOURCE must be one of {', '.join(WAKE_SOURCES)}, "
                           f"not {values['WAKE_SOURCE']!r}")
    if not values["WAKE_POLL_INTERVAL"] > 0:
        raise SettingError("WAKE_POLL_INTERVAL must be above 0")
    if not values["WATCHER_INTERVAL"] > 0:
        raise SettingError("WATCHER_INTERVAL must be above 0")
    if not values["HOLD_THE_LOOP"] >= 0:
        raise SettingError("HOLD_THE_LOOP must be 0 or more seconds")
    if not values["TOKEN_MAX_TTL"] > 0:
        raise SettingError("TOKEN_MAX_TTL must be above 0")


def check(environ=os.environ):
    """What a start would refuse, checked without building the app (the gunicorn master's check)."""
    read(SERVER_SETTINGS, environ)
    check_values(read(SETTINGS, environ))
    if environ.get("DATABASE_URL"):
        check_database_url(environ["DATABASE_URL"])
    if environ.get("WAKE_DATABASE_URL"):
        check_wake_database_url(environ["WAKE_DATABASE_URL"])


def check_wake_database_url(url):
    """Refuse a WAKE_DATABASE_URL that is not a PostgreSQL URL (SQLite has no wake source)."""
    check_database_url(url, "WAKE_DATABASE_URL")
    if not url.strip().startswith(("postgresql", "postgres:")):
        raise SettingError("WAKE_DATABASE_URL must be a postgresql:// URL: the wake source is PostgreSQL's")


def exposure_warning(config, addresses):
    """A warning when demo mode is on and the server listens beyond loopback, else None.

    ``addresses`` are gunicorn's bind addresses: ``(host, port)`` tuples, or
    strings for Unix sockets (which a local proxy may expose to anyone).
    """
    # .get: gunicorn.conf.py asks of any app it serves, the benchmarks' bare ones too.
    if not config.get("DEMO_MODE"):
        return None
    exposed = [address for address in addresses if not _loopback(address)]
    if not exposed:
        return None
    shown = ", ".join(a if isinstance(a, str) else f"{a[0] or '*'}:{a[1]}" for a in exposed)
    return (
        f"DEMO MODE IS ON and the server listens on {shown}, beyond loopback: anyone who "
        "reaches it can get a token for any demo user (never an admin one). Set DEMO_MODE=0 "
        "(or DATABASE_URL) for a server others can reach."
    )


def _loopback(address):
    if isinstance(address, str):
        return False
    host = address[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
