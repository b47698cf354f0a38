"""The WSGI entry point refuses gunicorn workers that hold a process or thread per waiting poll."""
import socket
import subprocess
import sys
import types

import pytest

from app.wsgi import refuse_blocking_workers
from harness.servers import free_port, python_environ, wait_for

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


@pytest.mark.parametrize("backend", ["sqlite"])
def test_servers_on_one_host_share_no_control_socket(database, server_factory, tmp_path):
    """gunicorn's control socket defaults to one path per user, which instances would take from each other.

    The shipped settings open none unless CONTROL_SOCKET names one, per
    instance: each keeps its own, and the first to stop removes only its own.
    """
    runtime, home = tmp_path / "runtime", tmp_path / "home"
    runtime.mkdir()
    home.mkdir()
    host = {"XDG_RUNTIME_DIR": runtime, "HOME": home}
    plain = server_factory(database, **host)
    first = server_factory(database, CONTROL_SOCKET=tmp_path / "first.ctl", **host)
    second = server_factory(database, CONTROL_SOCKET=tmp_path / "second.ctl", **host)
    # Nothing at gunicorn's shared default paths.
    assert list(runtime.iterdir()) == [] and list(home.iterdir()) == []
    assert wait_for(lambda: (tmp_path / "first.ctl").is_socket() and (tmp_path / "second.ctl").is_socket(), 10)
    first.stop()
    assert first.process.returncode == 0 and not (tmp_path / "first.ctl").exists()
    with socket.socket(socket.AF_UNIX) as control:
        control.connect(str(tmp_path / "second.ctl"))
    assert second.ready() and plain.ready()
