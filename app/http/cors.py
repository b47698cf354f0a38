"""CORS for the configured origins only, cheap for long-poll loops."""
from flask_cors import CORS

EXPOSED = ["ETag", "X-Poll-Interval", "X-Poll-Result", "Retry-After", "Preference-Applied",
           "X-Request-ID", "Location", "RateLimit-Policy", "RateLimit"]
# If-Match: a conflict-safe edit from another origin (PATCH /communities/{id}).
ALLOWED = ["Authorization", "If-None-Match", "If-Match", "Prefer", "Content-Type", "X-Request-ID"]


def init_app(app):
    origins = app.config["CORS_ORIGINS"]
    if not origins:
        return
    CORS(
        app,
        origins=origins,
        allow_headers=ALLOWED,
        expose_headers=EXPOSED,
        methods=["GET", "PUT", "POST", "PATCH", "DELETE"],
        # A long max-age: a poll loop pays one preflight a day, not one per poll.
        max_age=app.config["CORS_MAX_AGE"],
        supports_credentials=False,
        vary_header=True,
    )
