"""``flask --app wsgi ...`` commands: db-upgrade, token, watch, seed-demo, prune."""
import click
from flask import current_app
from flask.cli import with_appcontext

from .store import demo_data, migrations
from . import watch as watching
from .auth import USER_ID_RULE, mint_token, valid_user_id
from .store.db import write_transaction

@click.command("db-upgrade")
@with_appcontext
@click.argument("revision", default="head")
def db_upgrade(revision):
    """Migrate the database named by DATABASE_URL (same as ``alembic upgrade``)."""
    migrations.upgrade(current_app.extensions["db"], revision)
    click.echo(f"database at {revision}")


def _user_id(_ctx, _param, value):
    if not valid_user_id(value):
        raise click.BadParameter(USER_ID_RULE, param_hint="USER_ID")
    return value


def _base_url(_ctx, _param, value):
    try:
        return watching.base_url(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def _watches(_ctx, _param, values):
    try:
        return watching.watch_names(values)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


@click.command("token")
@with_appcontext
@click.argument("user_id", callback=_user_id)
@click.option("--name", help="Display name carried in the token.")
@click.option("--admin", is_flag=True, help="Mint a platform-admin token.")
@click.option("--ttl", type=click.IntRange(1),
              help="Seconds.  [default: 3600, or TOKEN_MAX_TTL if shorter]")
def token(user_id, name, admin, ttl):
    """Print a bearer token for USER_ID, signed with SECRET_KEY."""
    try:
        click.echo(mint_token(user_id, name=name, admin=admin, ttl=ttl))
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="'--ttl'") from None


@click.command("watch")
@with_appcontext
@click.argument("user_id", callback=_user_id)
@click.option("--url", default=watching.DEFAULT_URL, show_default=True, envvar=watching.URL_ENV,
              show_envvar=True, callback=_base_url, help="The server to follow.")
@click.option("--topic", "topics", multiple=True, callback=_watches, metavar="COMMUNITY/TOPIC",
              help="Follow a topic's activity too: c-1/thread:t-9, or c-1/* for every topic of c-1. "
                   f"Repeatable, at most {watching.MAX_WATCHES}.")
@click.option("--json", "json_lines", is_flag=True, help="Print each answer as one JSON line, for jq.")
@click.option("--timeout", default=watching.POLL_TIMEOUT, show_default=True, type=click.IntRange(1),
              help="Seconds each poll may wait (the server caps it).")
def watch(user_id, url, topics, json_lines, timeout):
    """Follow USER_ID's communities on a server: a line per answer, until Ctrl-C.

    The token is minted here with SECRET_KEY, and minted again if the server
    refuses it (expired). With a token of your own: python -m app.watch URL
    --token TOKEN. A --topic the server refuses ends the watch (exit status 1).
    """
    follower = watching.Watch(url, lambda _refresh: mint_token(user_id), watches=topics, json_lines=json_lines,
                              timeout=timeout)
    click.get_current_context().exit(follower.run())


@click.command("seed-demo")
@with_appcontext
def seed_demo():
    """Load the demo users, communities and memberships (idempotent)."""
    with write_transaction() as session:
        demo_data.seed(session)
    current_app.extensions["hub"].notify()
    click.echo(f"demo data loaded: {len(demo_data.USERS)} users, {len(demo_data.COMMUNITIES)} communities")


@click.command("prune")
@with_appcontext
def prune():
    """Delete change-log rows older than CHANGE_RETENTION now."""
    deleted = current_app.extensions["hub"].pruner.prune()
    click.echo(f"pruned {deleted} change-log rows")


def init_app(app):
    for command in (db_upgrade, token, watch, seed_demo, prune):
        app.cli.add_command(command)
