"""The live demo page at ``/`` (the client itself is a static file)."""
from flask import Blueprint, current_app, render_template

from .demo import admin_token_for_this_client

bp = Blueprint("pages", __name__)


@bp.get("/")
def index():
    admin_token = admin_token_for_this_client()
    page = render_template(
        "index.html", demo_mode=current_app.config["DEMO_MODE"], api_base="",
        admin_token=admin_token or "",
    )
    # A page that carries a token is for this client and this moment only.
    return page, {"Cache-Control": "no-store"} if admin_token else {}
