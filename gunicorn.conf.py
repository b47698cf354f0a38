"""gunicorn settings for ``gunicorn wsgi:app`` from the repository root (gunicorn reads this file there).

The settings live in the package, app/gunicorn_conf.py, so that an installed
copy carries them too. They are run afresh each time gunicorn reads this file
(on a reload too), as if written here, so that a changed environment applies.
"""
import runpy

globals().update({
    name: value for name, value in runpy.run_module("app.gunicorn_conf").items() if not name.startswith("__")
})
