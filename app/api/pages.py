"""The live demo page at ``/`` (the client itself is a static file)."""
from flask import Blueprint, current_app, render_template

bp = Blueprint("pages", __name__)


@bp.get("/")
def index():
    return render_template(
        "index.html", demo_mode=current_app.config["DEMO_MODE"], api_base=""
    )
