"""A throwaway PostgreSQL: a cluster of the test's own, to stop and start at will.

Outage tests break a database on purpose; the machine's own cluster (a
developer's, with their data) is never theirs to stop. This one is made with
``initdb`` in a temporary directory, listens on a free loopback port, trusts
local connections, and is removed when the block ends.
"""
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from .servers import free_port


def binary(name):
    """A PostgreSQL server program: on PATH, or in Debian's versioned directory."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                                                   reverse=True)), None)
    if found is None:
        raise RuntimeError(f"{name} not found: install PostgreSQL's server package")
    return found


class ThrowawayPostgres:
    """``with ThrowawayPostgres() as pg:`` gives ``pg.url`` (database ``test``), ``stop()``, ``start()``.

    ``settings`` are more server settings (``{"wal_level": "logical"}``), after the defaults.
    """

    def __init__(self, port=None, settings=None):
        self.port = port or free_port()
        self.settings = {"fsync": "off", **(settings or {})}
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/test"
        self.directory = None
        # initdb refuses to run as root: then the cluster belongs to "postgres".
        self.user = "postgres" if os.geteuid() == 0 else None

    def __enter__(self):
        self.directory = Path(tempfile.mkdtemp(prefix="community-sync-pg-"))
        if self.user:
            account = pwd.getpwnam(self.user)
            os.chown(self.directory, account.pw_uid, account.pw_gid)
        self._run(binary("initdb"), "-D", self.data, "-U", "postgres", "-A", "trust",
                  "--no-sync", "-E", "UTF8")
        self.start()
        self._run(binary("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                  "test")
        return self

    def __exit__(self, *_exc):
        try:
            self.stop()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    @property
    def data(self):
        return str(self.directory / "data")

    def start(self):
        """Start the cluster and wait until it accepts connections."""
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.directory} "
                   + " ".join(f"-c {name}={value}" for name, value in self.settings.items()))
        self._run(binary("pg_ctl"), "-D", self.data, "-o", options, "-l",
                  str(self.directory / "server.log"), "-w", "-t", "60", "start")

    def stop(self):
        """Stop the cluster at once (fast shutdown: open connections are ended)."""
        if self.directory is not None and (self.directory / "data" / "postmaster.pid").exists():
            self._run(binary("pg_ctl"), "-D", self.data, "-m", "fast", "-w", "-t", "60", "stop")

    def _run(self, *command):
        if self.user:
            command = ("runuser", "-u", self.user, "--", *command)
        subprocess.run(command, check=True, capture_output=True, cwd=self.directory)
