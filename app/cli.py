"""``flask --app wsgi ...`` commands: db-upgrade, token, watch, seed-demo, prune."""
import click
from flask import current_app
from flask.cli import with_appcontext

from . import migrations, watch as watching
from .auth import USER_ID_RULE, mint_token, valid_user_id
from .db import write_transaction
from .models import Community, Membership, User

DEMO_USERS = [
    ("u-ada", "Ada Lovelace", False),
    ("u-grace", "Grace Hopper", False),
    ("u-alan", "Alan Turing", False),
    ("u-admin", "Demo Admin", True),
]
DEMO_COMMUNITIES = [
    ("c-rust", "rust", "Rust", True),
    ("c-python", "python", "Python", True),
    ("c-go", "go", "Go", True),
    ("c-design", "design", "Design Guild", False),
    ("c-ops", "ops", "Ops On-Call", False),
]
DEMO_MEMBERSHIPS = [
    ("u-ada", "c-rust", "member"),
    ("u-ada", "c-python", "moderator"),
    ("u-grace", "c-python", "owner"),
    ("u-grace", "c-design", "admin"),
    ("u-alan", "c-go", "member"),
]


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
@click.option("--json", "json_lines", is_flag=True, help="Print each answer as one JSON line, for jq.")
@click.option("--timeout", default=watching.POLL_TIMEOUT, show_default=True, type=click.IntRange(1),
              help="Seconds each poll may wait (the server caps it).")
def watch(user_id, url, json_lines, timeout):
    """Follow USER_ID's communities on a server: a line per answer, until Ctrl-C.

    The token is minted here with SECRET_KEY, and minted again if the server
    refuses it (expired). With a token of your own: python -m app.watch URL
    --token TOKEN.
    """
    follower = watching.Watch(url, lambda _refresh: mint_token(user_id), json_lines=json_lines, timeout=timeout)
    click.get_current_context().exit(follower.run())


@click.command("seed-demo")
@with_appcontext
def seed_demo():
    """Load the demo users, communities and memberships (idempotent)."""
    with write_transaction() as session:
        for user_id, name, _admin in DEMO_USERS:
            session.merge(User(id=user_id, name=name))
        for community_id, slug, name, public in DEMO_COMMUNITIES:
            if session.get(Community, community_id) is None:
                session.add(Community(id=community_id, slug=slug, name=name, is_public=public))
        session.flush()
        for user_id, community_id, role in DEMO_MEMBERSHIPS:
            if session.get(Membership, (user_id, community_id)) is None:
                session.add(Membership(user_id=user_id, community_id=community_id, role=role))
    current_app.extensions["hub"].notify()
    click.echo(f"demo data loaded: {len(DEMO_USERS)} users, {len(DEMO_COMMUNITIES)} communities")


@click.command("prune")
@with_appcontext
def prune():
    """Delete change-log rows older than CHANGE_RETENTION now."""
    deleted = current_app.extensions["hub"].pruner.prune()
    click.echo(f"pruned {deleted} change-log rows")


def init_app(app):
    for command in (db_upgrade, token, watch, seed_demo, prune):
        app.cli.add_command(command)
