"""Every setting read from the environment: its type, its default, and how it is parsed.

Two readers share this table: ``create_app`` (through app/config.py, which
derives the defaults that depend on the database) and gunicorn.conf.py. The
latter runs in the gunicorn master before each gevent worker monkey-patches
the standard library, so this module imports nothing but the standard library
and nothing else from the package: Flask, SQLAlchemy or ssl imported there
first could make that patching warn or misbehave. README.md documents each
setting.
"""
import os

# name: (type, default). A default of None means "derived" (app/config.py).
SETTINGS = {
    "DATABASE_URL": (str, None),
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
    "WAKE_SOURCE": (str, "head"),
    "WAKE_POLL_INTERVAL": (float, 0.05),
    "PRESENCE_TTL": (float, 70.0),
    "PRESENCE_INTERVAL": (float, 10.0),
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

TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off", ""}


def parse(name, kind, raw):
    """One environment value as ``kind``; a ValueError names the setting."""
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered not in TRUE | FALSE:
            raise ValueError(f"{name} must be one of 1/0/true/false, not {raw!r}")
        return lowered in TRUE
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"{name} must be a {kind.__name__}, not {raw!r}") from None


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
