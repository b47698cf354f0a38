"""Settings: defaults, overridden by the environment (documented in README.md)."""
import os
import secrets
from pathlib import Path

from .db import default_sqlite_url

INSTANCE_PATH = Path(__file__).resolve().parent.parent / "instance"

# name: (type, default). A default of None means "derived" (see load()).
SETTINGS = {
    "DATABASE_URL": (str, None),
    "SECRET_KEY": (str, None),
    "JWT_ISSUER": (str, ""),
    "JWT_AUDIENCE": (str, ""),
    "CORS_ORIGINS": (str, ""),
    "CORS_MAX_AGE": (int, 86400),
    "DEMO_MODE": (bool, None),
    "AUTO_MIGRATE": (bool, None),
    "POLL_DEFAULT_TIMEOUT": (int, 25),
    "POLL_MAX_TIMEOUT": (int, 55),
    "POLL_MAX_WAITING": (int, 12000),
    "POLL_MAX_PER_USER": (int, 10),
    "POLL_INTERVAL_MIN": (int, 2),
    "POLL_INTERVAL_MAX": (int, 120),
    "SAFETY_NET_INTERVAL": (float, None),
    "CHANGE_RETENTION": (int, 7 * 24 * 3600),
    "PRUNE_INTERVAL": (int, 3600),
    "DB_POOL_SIZE": (int, 10),
    "DB_MAX_OVERFLOW": (int, 10),
    "DB_POOL_TIMEOUT": (float, 30.0),
    "SQL_ECHO": (bool, False),
    "MAX_CONTENT_LENGTH": (int, 16 * 1024),
    "RATELIMIT_WRITES": (str, "120 per minute"),
    "RATELIMIT_STORAGE_URI": (str, "memory://"),
    "TRUSTED_PROXIES": (int, 0),
}

TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off", ""}


def _parse(name, kind, raw):
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered not in TRUE | FALSE:
            raise ValueError(f"{name} must be one of 1/0/true/false, not {raw!r}")
        return lowered in TRUE
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"{name} must be a {kind.__name__}, not {raw!r}") from None


def database_url(environ=os.environ):
    """The configured database, or the embedded SQLite file when none is set."""
    return environ.get("DATABASE_URL") or default_sqlite_url(INSTANCE_PATH)


def load(environ=os.environ, overrides=None):
    """Return the settings dict: defaults < environment < ``overrides``."""
    config = {name: default for name, (_kind, default) in SETTINGS.items()}
    for name, (kind, _default) in SETTINGS.items():
        if name in environ:
            config[name] = _parse(name, kind, environ[name])
    config.update(overrides or {})

    embedded = not config["DATABASE_URL"]
    if embedded:
        config["DATABASE_URL"] = default_sqlite_url(INSTANCE_PATH)
    is_sqlite = config["DATABASE_URL"].startswith("sqlite")
    if config["DEMO_MODE"] is None:
        config["DEMO_MODE"] = embedded
    if config["AUTO_MIGRATE"] is None:
        config["AUTO_MIGRATE"] = is_sqlite
    if config["SAFETY_NET_INTERVAL"] is None:
        # SQLite has no NOTIFY: other processes' commits are found by this check.
        config["SAFETY_NET_INTERVAL"] = 0.5 if is_sqlite else 5.0
    if not config["SECRET_KEY"]:
        config["SECRET_KEY"] = _instance_secret_key()
    config["CORS_ORIGINS"] = [o.strip() for o in config["CORS_ORIGINS"].split(",") if o.strip()]
    if config["POLL_DEFAULT_TIMEOUT"] > config["POLL_MAX_TIMEOUT"]:
        raise ValueError("POLL_DEFAULT_TIMEOUT must not exceed POLL_MAX_TIMEOUT")
    return config


def _instance_secret_key():
    """A key kept under instance/ so that the server and ``flask token`` agree.

    Fine for the embedded demo; deployments set SECRET_KEY (README.md).
    """
    path = INSTANCE_PATH / "secret-key"
    if not path.exists():
        INSTANCE_PATH.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f"secret-key.{os.getpid()}")
        draft.write_text(secrets.token_urlsafe(48))
        draft.chmod(0o600)
        try:
            # link() fails when the key exists: of several workers starting at
            # once, the first complete key wins and the others read it.
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text().strip()
