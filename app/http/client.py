"""The browser client's package (app/static/package.json) at a versioned, immutable URL.

``/static/community-sync.js`` is revalidated on every use, so a deployment shows at
once. ``/static/v/<version>/community-sync.js`` serves the same modules under the
package's version: they never change for that version, so browsers and proxies keep
them for a year without asking. The modules import each other by relative URL, so
what the client imports comes from the same version. Only the version being served
exists: an older one is a 404, never this version's files under an older name.
Changing a module therefore means raising the version in package.json.
"""
import json
from functools import cache
from pathlib import Path

from flask import Blueprint, abort, current_app, send_from_directory

bp = Blueprint("client", __name__)
IMMUTABLE = "public, max-age=31536000, immutable"


@cache
def package(static_folder):
    """The client's package.json, read once per process."""
    return json.loads((Path(static_folder) / "package.json").read_text())


def modules(manifest):
    """The package's ES modules: what a browser imports from the versioned URL."""
    return {name for name in manifest["files"] if name.endswith(".js")}


@bp.get("/static/v/<version>/<filename>")
def versioned(version, filename):
    """One of the client's modules at the package's current version, cached for a year."""
    manifest = package(current_app.static_folder)
    if version != manifest["version"] or filename not in modules(manifest):
        abort(404, f"No module {filename} in version {version} of the client; "
                   f"this server has version {manifest['version']}.")
    response = send_from_directory(current_app.static_folder, filename)
    response.headers["Cache-Control"] = IMMUTABLE
    return response
