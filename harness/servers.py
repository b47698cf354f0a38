"""gunicorn servers for tests and benchmarks: one way to start, check and stop them.

A server is ``gunicorn <app>`` (``wsgi:app`` unless told otherwise) with the
project's gunicorn.conf.py, run from the repository root on a free loopback
port, its output in a log file. It is ready when the master has all its workers
and ``GET /readyz`` answers 200; it stops on SIGTERM as in a deploy, and is
killed, workers and all, if it has not left within :data:`STOP_TIMEOUT`.
"""
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "gunicorn.conf.py"
READY_TIMEOUT = 30
# Above any graceful timeout the callers set for a stop they wait on: a
# draining server answers its waiting polls at once and leaves in a second or
# two, so reaching this bound means it hangs.
STOP_TIMEOUT = 30


def free_port():
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout, interval=0.1, message=None):
    """Call ``predicate`` until it returns something true, and return that.

    On timeout, raise AssertionError naming ``message`` when one is given;
    without one, return the last (false) value, for callers that carry on
    with what they have.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    if message is not None:
        raise AssertionError(f"timed out after {timeout}s waiting for {message}")
    return predicate()


def sigint_as_in_a_terminal():
    """A ``preexec_fn`` for a command a test stops with Ctrl-C (SIGINT), as a terminal runs it.

    A shell that starts the tests in the background (``cmd &``, a script)
    has them ignore SIGINT, and every child inherits that: Ctrl-C would
    never reach the command. This restores the default in the child.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def python_environ(env=None):
    """``env`` (default: this process's) for a Python subprocess that imports from the repository root."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def flask(env, *args, timeout=120):
    """Run ``flask --app wsgi <args>`` (db-upgrade, seed-demo...) as an operator would."""
    finished = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )
    if finished.returncode != 0:
        raise RuntimeError(f"flask {' '.join(args)} exited with {finished.returncode}:\n"
                           f"{finished.stderr[-3000:]}")
    return finished.stdout


class Server:
    """``gunicorn <app>`` on 127.0.0.1, started and stopped the one way described above.

    ``env`` is the server's whole environment (database, secret, settings);
    ``graceful`` sets gunicorn's graceful timeout on the command line (else
    gunicorn.conf.py reads it from the environment); ``args`` are more
    gunicorn flags. The log (stdout and stderr) goes to ``log_path``, appended
    to across restarts. ``python`` and ``cwd`` run another installation from
    elsewhere (an installed copy, with ``config="python:app.gunicorn_conf"``);
    only a server run from the repository root imports from it.
    """

    def __init__(self, env, *, log_path, app="wsgi:app", workers=1, graceful=None, args=(), config=CONFIG,
                 port=None, python=sys.executable, cwd=ROOT):
        self.env = python_environ(env) if cwd == ROOT else dict(env)
        self.python = python
        self.cwd = cwd
        self.app = app
        self.workers = workers
        self.graceful = graceful
        self.args = list(args)
        self.config = config
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_path)
        self.process = None

    def command(self):
        command = [str(self.python), "-m", "gunicorn", self.app, "-c", str(self.config),
                   "--bind", f"127.0.0.1:{self.port}", "--workers", str(self.workers)]
        if self.graceful is not None:
            command += ["--graceful-timeout", str(self.graceful)]
        return command + self.args

    def start(self, timeout=READY_TIMEOUT):
        """Start gunicorn and return once it is ready; on failure, stop it and say why."""
        with open(self.log_path, "ab") as log:
            # A session of its own, so that a kill reaches the workers too.
            self.process = subprocess.Popen(self.command(), cwd=self.cwd, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        try:
            if not wait_for(self._started, timeout):
                raise RuntimeError(f"{self.app} was not ready within {timeout} s:\n{self.log()[-3000:]}")
        except BaseException:
            self.stop()
            raise
        return self

    def _started(self):
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.app} exited with {self.process.returncode} "
                               f"({self.log_path}):\n{self.log()[-3000:]}")
        return len(self.worker_pids()) == self.workers and self.ready()

    def ready(self):
        """Whether the worker this request reaches answers ``/readyz`` with 200."""
        try:
            with urllib.request.urlopen(self.url + "/readyz", timeout=5) as response:
                return response.status == 200
        except OSError:  # refused, reset, timed out, or an HTTPError such as 503
            return False

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM, as a deploy stops it; SIGKILL to the whole group after ``timeout`` s."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def restart(self):
        """Stop, then start again on the same port (and the same log)."""
        self.stop()
        return self.start()

    def reload(self):
        """SIGHUP: gunicorn replaces every worker; the caller waits for what it needs."""
        self.process.send_signal(signal.SIGHUP)

    def worker_pids(self):
        """The master's children, the workers (empty once it is gone)."""
        try:
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text()
        except OSError:
            return []
        return [int(pid) for pid in children.split()]

    def worker_serving(self, client_port):
        """The pid of the worker holding the connection from local ``client_port``, or None.

        Found from the kernel's socket tables: the server end of the
        connection, then the worker with that socket among its descriptors.
        A connection is a worker's once it has had an answer (before that it
        may still wait in the accept queue).
        """
        return self._worker_with(lambda local, remote: local == self.port and remote == client_port)

    def worker_connected(self, local_port):
        """The pid of the worker whose outgoing connection (to PostgreSQL, say) is from ``local_port``, or None."""
        return self._worker_with(lambda local, remote: local == local_port)

    def _worker_with(self, matches):
        """The worker holding a TCP socket whose (local port, remote port) ``matches``, or None."""
        inodes = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, remote = fields[1], fields[2]
                if matches(int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16)):
                    inodes.add(f"socket:[{fields[9]}]")
        for pid in self.worker_pids():
            try:
                descriptors = list(Path(f"/proc/{pid}/fd").iterdir())
            except OSError:
                continue
            for descriptor in descriptors:
                try:
                    if os.readlink(descriptor) in inodes:
                        return pid
                except OSError:
                    continue
        return None

    def metrics(self):
        """``/metrics`` as {sample: value}, equal samples summed (any worker's answer holds them all)."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as response:
            text = response.read().decode()
        values = Counter()
        for line in text.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            name, _, value = line.rpartition(" ")
            values[name] += float(value)
        return values

    def log(self):
        """Everything the server wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
