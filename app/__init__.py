"""community-sync: live community membership for browser sidebars over plain HTTP."""


def create_app(test_config=None):
    """Build the application: defaults, then environment, then each concern."""
    # Imported here, not at the top: gunicorn.conf.py imports app.settings in
    # the gunicorn master, which must not load Flask or SQLAlchemy before the
    # gevent workers monkey-patch (app/settings.py).
    from flask import Flask

    from . import config

    app = Flask(__name__, instance_path=str(config.INSTANCE_PATH))
    app.config.from_mapping(config.load(overrides=test_config))
    app.json.sort_keys = False

    from . import auth, errors, observability
    from .http import cors, ratelimit, request_limits
    from .store import cursors, db, migrations
    from .live import hub

    errors.init_app(app)
    observability.init_app(app)
    db.init_app(app)
    migrations.init_app(app)
    auth.init_app(app)
    cursors.init_app(app)
    cors.init_app(app)
    # The size limits first: a request they refuse counts against no rate limit.
    request_limits.init_app(app)
    ratelimit.init_app(app)
    hub.init_app(app)

    from .http import client, communities, community_changes, demo, docs, health, me, pages, users

    for module in (health, me, communities, users, community_changes, demo, pages, client, docs):
        app.register_blueprint(module.bp)
    ratelimit.limit_blueprints(app, reads=(me.bp, community_changes.bp, health.bp, pages.bp),
                               writes=(communities.bp, users.bp, demo.bp))

    from . import cli

    cli.init_app(app)
    return app
