"""Command-line entry points: token, seed-demo, db-upgrade and alembic itself."""
import subprocess

import jwt
import pytest
from sqlalchemy import create_engine, inspect

from app.store.db import normalize_url
from conftest import BIN, SECRET


def test_token_command_mints_a_valid_token(app):
    result = app.test_cli_runner().invoke(args=["token", "u-ada", "--name", "Ada", "--admin", "--ttl", "90"])
    assert result.exit_code == 0, result.output
    claims = jwt.decode(result.output.strip(), SECRET, algorithms=["HS256"])
    assert claims["sub"] == "u-ada" and claims["name"] == "Ada" and claims["adm"] is True


def test_token_command_mints_no_token_the_server_would_refuse(app_factory):
    app = app_factory(TOKEN_MAX_TTL=600)
    assert app.test_cli_runner().invoke(args=["token", "u-ada", "--ttl", "600"]).exit_code == 0
    result = app.test_cli_runner().invoke(args=["token", "u-ada", "--ttl", "601"])
    assert result.exit_code != 0 and "TOKEN_MAX_TTL" in result.output


@pytest.mark.parametrize("user_id", ["bad id", ".", "..", "me"])
def test_token_command_refuses_bad_ids(app, user_id):
    result = app.test_cli_runner().invoke(args=["token", user_id])
    assert result.exit_code != 0
    assert "Invalid value for USER_ID" in result.output


def test_seed_demo_is_idempotent(app, client, auth):
    for _ in range(2):
        assert app.test_cli_runner().invoke(args=["seed-demo"]).exit_code == 0
    body = client.get("/me/communities", headers=auth("u-grace")).json
    assert [(c["id"], c["role"]) for c in body["communities"]] == [("c-design", "admin"), ("c-python", "owner")]


@pytest.mark.parametrize("command", [["alembic", "upgrade", "head"], ["flask", "--app", "wsgi", "db-upgrade"]])
def test_migrations_run_from_the_command_line(database, command):
    env = database.environ(AUTO_MIGRATE="0")
    subprocess.run([str(BIN / command[0]), *command[1:]], env=env, check=True, capture_output=True)
    engine = create_engine(normalize_url(database.url))
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert {"users", "communities", "memberships", "changes", "feed_meta"} <= tables


def test_plain_postgres_urls_use_psycopg2():
    assert normalize_url("postgresql://u@h/db").drivername == "postgresql+psycopg2"
    assert normalize_url("postgres://u@h/db").drivername == "postgresql+psycopg2"
    assert normalize_url("sqlite:///x.db").drivername == "sqlite"
