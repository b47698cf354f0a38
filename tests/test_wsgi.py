"""The WSGI entry point refuses gunicorn workers that hold a process or thread per waiting poll."""
import subprocess
import sys
import types

import pytest

from app.wsgi import refuse_blocking_workers
from harness.servers import free_port, python_environ

GUNICORN = {"gunicorn.arbiter": types.ModuleType("gunicorn.arbiter")}


def monkey(patched):
    return types.SimpleNamespace(is_module_patched=lambda name: patched and name == "socket")


def test_outside_gunicorn_nothing_is_checked():
    refuse_blocking_workers({})
    refuse_blocking_workers({"gevent.monkey": monkey(False)})


def test_a_gevent_worker_is_let_through():
    refuse_blocking_workers({**GUNICORN, "gevent.monkey": monkey(True)})


@pytest.mark.parametrize("modules", [GUNICORN, {**GUNICORN, "gevent.monkey": monkey(False)}])
def test_an_unpatched_gunicorn_worker_is_refused(modules):
    with pytest.raises(RuntimeError, match="needs gunicorn's gevent worker"):
        refuse_blocking_workers(modules)


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("flags", [[], ["--worker-class", "gthread"]], ids=["sync", "gthread"])
def test_gunicorn_without_the_settings_stops_at_start(database, tmp_path, flags):
    """``gunicorn wsgi:app`` away from gunicorn.conf.py runs the sync worker: it must not serve."""
    env = python_environ(database.environ(AUTO_MIGRATE="1"))
    finished = subprocess.run(
        [sys.executable, "-m", "gunicorn", "wsgi:app", "--bind", f"127.0.0.1:{free_port()}", *flags],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    assert finished.returncode != 0
    assert finished.stderr.count("needs gunicorn's gevent worker") == 1, finished.stderr
    assert "python:app.gunicorn_conf" in finished.stderr
    assert "Traceback" not in finished.stderr, finished.stderr
