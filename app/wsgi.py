"""WSGI entry point: ``gunicorn -c python:app.gunicorn_conf app.wsgi:app`` (wsgi.py at the repository root re-exports it)."""
import sys

from . import create_app
from .settings import SettingError


def refuse(message, modules=sys.modules):
    """Stop the start with ``message`` alone: a traceback would bury it, and it is no bug.

    In a gunicorn worker, as an app that failed to load: gunicorn prints the
    message alone and stops rather than starting workers again (a
    RuntimeError too, which gunicorn prints alone when ``--preload`` loads the
    app in its master). Elsewhere (``flask`` commands), the process exits with it.
    """
    if "gunicorn.arbiter" in modules:
        from gunicorn.errors import AppImportError

        class Refused(AppImportError, RuntimeError):
            pass

        raise Refused(message)
    sys.exit(f"Error: {message}")


def refuse_blocking_workers(modules=sys.modules):
    """Stop a gunicorn worker that cannot hold many waiting polls, before it serves one.

    Started without the project's settings (``gunicorn app.wsgi:app`` with no
    ``-c``), gunicorn runs its sync worker: each waiting poll would hold a
    whole process for up to POLL_MAX_TIMEOUT, and a handful of browsers would
    leave none for anything else. The gevent worker patches the socket module
    before it loads the app; a worker that has not (sync, gthread, or
    ``--preload``, which loads it in the master) fails to boot with this
    message, and gunicorn stops. Outside gunicorn (``flask`` commands, tests)
    nothing is checked.
    """
    if "gunicorn.arbiter" not in modules:
        return
    monkey = modules.get("gevent.monkey")
    if monkey is None or not monkey.is_module_patched("socket"):
        refuse(
            "community-sync needs gunicorn's gevent worker: a sync or threaded worker holds a whole "
            "process or thread per waiting poll. Start it with the project's settings: "
            "`gunicorn -c python:app.gunicorn_conf app.wsgi:app` (or `gunicorn wsgi:app` from the "
            "repository root, which reads gunicorn.conf.py)",
            modules,
        )


def load():
    """The app, or a one-line refusal of the setting that stops it."""
    refuse_blocking_workers()
    try:
        return create_app()
    except SettingError as error:
        refuse(str(error))


app = load()
