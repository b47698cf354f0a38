"""The app's settings: app/settings.py's table, with the defaults that depend on the database."""
import logging
import os
import secrets
import sys
from pathlib import Path

from .store.db import default_sqlite_url
from .settings import SETTINGS, check_database_url, check_values, check_wake_database_url, read



def _instance_path(package=Path(__file__).resolve().parent, prefix=sys.prefix):
    """Where the embedded database and the generated key live.

    In a checkout, instance/ beside the package (the repository root); in an
    installed copy, Flask's place for installed applications,
    ``<prefix>/var/community-sync-instance``, rather than site-packages.
    """
    root = package.parent
    if (root / "setup.cfg").exists():
        return root / "instance"
    return Path(prefix) / "var" / "community-sync-instance"


INSTANCE_PATH = _instance_path()

log = logging.getLogger(__name__)


def database_url(environ=os.environ):
    """The configured database, or the embedded SQLite file when none is set."""
    return environ.get("DATABASE_URL") or default_sqlite_url(INSTANCE_PATH)


def load(environ=os.environ, overrides=None):
    """Return the settings dict: defaults < environment < ``overrides``."""
    config = read(SETTINGS, environ)
    config.update(overrides or {})

    embedded = not config["DATABASE_URL"]
    if embedded:
        config["DATABASE_URL"] = default_sqlite_url(INSTANCE_PATH)
    check_database_url(config["DATABASE_URL"])
    if config["WAKE_DATABASE_URL"]:
        check_wake_database_url(config["WAKE_DATABASE_URL"])
    is_sqlite = config["DATABASE_URL"].startswith("sqlite")
    if config["DEMO_MODE"] is None:
        config["DEMO_MODE"] = embedded
    if config["AUTO_MIGRATE"] is None:
        config["AUTO_MIGRATE"] = is_sqlite
    if config["SAFETY_NET_INTERVAL"] is None:
        # SQLite has no NOTIFY: other processes' commits are found by this check.
        config["SAFETY_NET_INTERVAL"] = 0.5 if is_sqlite else 5.0
    if not config["SECRET_KEY"]:
        if not embedded:
            # Warned, not refused: one host with the generated key works (the
            # server and ``flask token`` share it), but every other host
            # generates its own and refuses the first one's tokens.
            log.warning("SECRET_KEY is not set: tokens are signed with a key generated in %s, "
                        "which no other host shares; set SECRET_KEY, the same on every host",
                        INSTANCE_PATH / "secret-key")
        config["SECRET_KEY"] = _instance_secret_key()
    config["CORS_ORIGINS"] = [o.strip() for o in config["CORS_ORIGINS"].split(",") if o.strip()]
    check_values(config)
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
