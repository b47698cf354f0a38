"""The settings table: one parser for the app and gunicorn, every setting documented."""
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from app import config, settings

ROOT = Path(__file__).resolve().parent.parent
BASE = {"SECRET_KEY": "k", "DATABASE_URL": "sqlite:///x.db"}


def test_the_environment_overrides_the_defaults():
    loaded = config.load({**BASE, "POLL_MAX_PER_USER": "3", "SQL_ECHO": "On",
                          "DB_POOL_TIMEOUT": "2.5", "HUB_AUTOSTART": "no"})
    assert loaded["POLL_MAX_PER_USER"] == 3
    assert loaded["SQL_ECHO"] is True
    assert loaded["DB_POOL_TIMEOUT"] == 2.5
    assert loaded["HUB_AUTOSTART"] is False
    assert loaded["POLL_MAX_TIMEOUT"] == 55


def test_derived_defaults_follow_the_database():
    postgres = config.load({**BASE, "DATABASE_URL": "postgresql://db/x", "CORS_ORIGINS": "a, b,"})
    assert postgres["AUTO_MIGRATE"] is False and postgres["DEMO_MODE"] is False
    assert postgres["SAFETY_NET_INTERVAL"] == 5.0
    assert postgres["CORS_ORIGINS"] == ["a", "b"]
    sqlite = config.load({**BASE, "DATABASE_URL": "sqlite:///x.db"})
    assert sqlite["AUTO_MIGRATE"] is True and sqlite["SAFETY_NET_INTERVAL"] == 0.5


@pytest.mark.parametrize("name, raw", [("SQL_ECHO", "maybe"), ("POLL_MAX_WAITING", "many"),
                                       ("ACCESS_LOG", "sometimes"), ("WEB_CONCURRENCY", "2.5")])
def test_a_malformed_value_names_its_setting(name, raw):
    with pytest.raises(ValueError, match=name):
        settings.read(settings.SETTINGS | settings.SERVER_SETTINGS, {name: raw})


def test_the_default_poll_timeout_stays_within_the_longest():
    with pytest.raises(ValueError, match="POLL_DEFAULT_TIMEOUT"):
        config.load({**BASE, "POLL_DEFAULT_TIMEOUT": "60"})


@pytest.mark.parametrize("name, raw", [("WAKE_SOURCE", "trigger"), ("WAKE_SOURCE", "Notify"),
                                       ("WAKE_POLL_INTERVAL", "0"), ("WAKE_POLL_INTERVAL", "-1")])
def test_an_unknown_wake_source_or_a_non_positive_head_check_interval_is_refused(name, raw):
    with pytest.raises(ValueError, match=name):
        config.load({**BASE, name: raw})


@pytest.mark.parametrize("raw", ["-1", "nan"])
def test_a_negative_hold_of_the_event_loop_is_refused(raw):
    with pytest.raises(ValueError, match="HOLD_THE_LOOP"):
        config.load({**BASE, "HOLD_THE_LOOP": raw})


def test_the_hold_of_the_event_loop_reaches_the_re_read(app_factory):
    assert app_factory(HOLD_THE_LOOP=0.25).extensions["hub"].reread.hold_the_loop == 0.25
    assert app_factory().extensions["hub"].reread.hold_the_loop == 2.0


def test_gunicorn_reads_the_same_table(monkeypatch, tmp_path):
    for name, value in {"WEB_CONCURRENCY": "5", "POLL_MAX_TIMEOUT": "30", "ACCESS_LOG": "on",
                        "KEEPALIVE": "90", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("GRACEFUL_TIMEOUT", raising=False)
    conf = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    assert conf["workers"] == 5 and conf["keepalive"] == 90
    assert conf["graceful_timeout"] == 40
    assert conf["accesslog"] == "-"
    assert conf["bind"] == "127.0.0.1:8000"
    monkeypatch.setenv("GRACEFUL_TIMEOUT", "7")
    assert runpy.run_path(str(ROOT / "gunicorn.conf.py"))["graceful_timeout"] == 7


def test_the_gunicorn_master_loads_no_framework(tmp_path):
    """gunicorn.conf.py and its log formatter run before the workers monkey-patch."""
    script = (
        "import logging.config, runpy, sys; conf = runpy.run_path('gunicorn.conf.py');"
        "logging.config.dictConfig(conf['logconfig_dict']);"
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('flask', 'werkzeug', 'sqlalchemy', 'gevent', 'ssl', 'prometheus_client', 'psycopg2'))))"
    )
    env = {"PATH": "/usr/bin:/bin", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    loaded = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                            capture_output=True, text=True, check=True).stdout.split()
    assert loaded == []


def test_every_setting_is_documented():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Configuration"):]
    section = section[:section.index("\n## ", 1)]
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", section))
    missing = (set(settings.SETTINGS) | set(settings.SERVER_SETTINGS)) - documented
    assert not missing


BAD_URLS = {
    "scheme": ("mysql://u:hunter2@db/x", "mysql"),
    "unparsable": ("garbage", "not a database URL"),
    "missing-directory": ("sqlite:////nonexistent/dir/x.db", "/nonexistent/dir"),
    "driver": ("postgresql+pg8000://u:hunter2@db/x", "pg8000"),
}


@pytest.mark.parametrize("url, says", BAD_URLS.values(), ids=BAD_URLS.keys())
def test_a_bad_database_url_is_refused_with_what_would_fix_it(url, says):
    with pytest.raises(settings.SettingError) as refused:
        config.load({**BASE, "DATABASE_URL": url})
    message = str(refused.value)
    assert message.startswith("DATABASE_URL") and says in message and "\n" not in message
    assert "postgresql://" in message or "create the directory" in message
    assert "hunter2" not in message


@pytest.mark.parametrize("url, says", [("sqlite:///x.db", "postgresql://"), ("mysql://u:hunter2@db/x", "mysql"),
                                       ("garbage", "not a database URL")])
def test_a_wake_database_url_that_is_not_postgresql_is_refused_by_its_name(url, says):
    with pytest.raises(settings.SettingError) as refused:
        config.load({**BASE, "DATABASE_URL": "postgresql://pgbouncer:6432/x", "WAKE_DATABASE_URL": url})
    message = str(refused.value)
    assert message.startswith("WAKE_DATABASE_URL") and says in message and "hunter2" not in message
    assert config.load({**BASE, "WAKE_DATABASE_URL": "postgresql://db:5432/x"})["WAKE_DATABASE_URL"]


def test_an_unset_secret_key_warns_outside_the_embedded_demo(monkeypatch, caplog):
    """Each host would generate a key of its own: tokens minted on one fail on the others."""
    monkeypatch.setattr(config, "_instance_secret_key", lambda: "generated")
    config.load({"DATABASE_URL": "postgresql://db/x"})
    warned = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warned) == 1 and "SECRET_KEY is not set" in warned[0]
    caplog.clear()
    config.load({})  # the embedded demo: one machine, one key, nothing to say
    config.load({"DATABASE_URL": "postgresql://db/x", "SECRET_KEY": "k"})
    assert not [record for record in caplog.records if record.levelname == "WARNING"]


def test_a_driver_that_is_not_installed_is_named(monkeypatch):
    monkeypatch.setattr(settings.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(settings.SettingError, match="driver psycopg2, which is not installed"):
        settings.check_database_url("postgresql://u:hunter2@db/x")


@pytest.mark.parametrize("url, says", BAD_URLS.values(), ids=BAD_URLS.keys())
@pytest.mark.parametrize("command", [["flask", "--app", "wsgi", "db-upgrade"], ["alembic", "upgrade", "head"]],
                         ids=["flask", "alembic"])
def test_a_command_with_a_bad_database_url_says_one_line_and_no_traceback(tmp_path, command, url, says):
    env = {**os.environ, "DATABASE_URL": url, "SECRET_KEY": "k"}
    finished = subprocess.run([str(Path(sys.executable).parent / command[0]), *command[1:]], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)
    assert finished.returncode != 0
    assert "Traceback" not in finished.stderr and "No such command" not in finished.stderr, finished.stderr
    lines = finished.stderr.strip().splitlines()
    assert len(lines) == 1 and "DATABASE_URL" in lines[0] and says in lines[0], finished.stderr


@pytest.mark.slow
def test_gunicorn_with_a_bad_setting_stops_with_one_line(tmp_path):
    """Each worker would load the app and fail: the operator reads the reason once, without a traceback."""
    env = {**os.environ, "DATABASE_URL": "sqlite:////nonexistent/dir/x.db", "SECRET_KEY": "k",
           "WEB_CONCURRENCY": "2"}
    finished = subprocess.run([sys.executable, "-m", "gunicorn", "wsgi:app", "--bind", "127.0.0.1:0"], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=60)
    assert finished.returncode != 0
    assert "Traceback" not in finished.stderr, finished.stderr
    assert finished.stderr.count("DATABASE_URL") == 1, finished.stderr
