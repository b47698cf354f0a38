"""WSGI entry point from the repository root: ``gunicorn wsgi:app`` (settings in gunicorn.conf.py).

An installed copy names the package's own module, ``app.wsgi:app``.
"""
from app.wsgi import app

__all__ = ["app"]
