"""The API's documentation for people: Swagger UI rendering /openapi.json at ``/docs``.

Swagger UI's files come from the flask-swagger-ui package and are served from here,
so the page works offline and under the app's Content-Security-Policy: no CDN, no
inline script (app/static/api-docs.js starts the renderer).
"""
from pathlib import Path

import flask_swagger_ui
from flask import Blueprint, render_template, send_from_directory

bp = Blueprint("docs", __name__)
# The package's copy of Swagger UI's distribution (its own blueprint serves the same
# directory, with an inline script this app's policy would block).
RENDERER = Path(flask_swagger_ui.__file__).resolve().parent / "dist"


@bp.get("/docs")
def page():
    """The rendered API description."""
    return render_template("docs.html")


@bp.get("/docs/<filename>")
def renderer(filename):
    """Swagger UI's scripts and styles."""
    return send_from_directory(RENDERER, filename)
