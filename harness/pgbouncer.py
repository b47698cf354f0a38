"""A PgBouncer of our own (Debian's ``pgbouncer``) in front of the local PostgreSQL, for tests and benchmarks.

It runs as this process's child, on a free port, with its configuration,
log and pid file in a directory of its own, and is stopped by whoever
started it; nothing else's PgBouncer is touched. PgBouncer refuses to run as
root, so as root it is started with ``-u postgres``, the directory theirs.
"""
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg2
from sqlalchemy.engine import make_url

from .servers import free_port, wait_for


def binary():
    """Debian's pgbouncer, or None."""
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/local/sbin")


class PgBouncer:
    """``pool_mode`` pools in front of ``host:port``, every database, as the connecting user (trust)."""

    def __init__(self, host="127.0.0.1", port=5432, pool_mode="transaction", pool_size=20, user="postgres"):
        self.target = (host, port)
        self.pool_mode = pool_mode
        self.pool_size = pool_size
        self.user = user
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
        self.process = None

    def start(self):
        # PgBouncer, switched to ``user`` when started as root, writes its log and pid file here.
        self.folder.chmod(0o755)
        if os.geteuid() == 0:
            account = pwd.getpwnam(self.user)
            os.chown(self.folder, account.pw_uid, account.pw_gid)
        (self.folder / "users.txt").write_text(f'"{self.user}" ""\n')
        config = self.folder / "pgbouncer.ini"
        config.write_text(f"""[databases]
* = host={self.target[0]} port={self.target[1]}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.folder / 'users.txt'}
admin_users = {self.user}
pool_mode = {self.pool_mode}
default_pool_size = {self.pool_size}
max_client_conn = 5000
ignore_startup_parameters = extra_float_digits
logfile = {self.folder / 'pgbouncer.log'}
pidfile = {self.folder / 'pgbouncer.pid'}
""")
        for path in self.folder.iterdir():
            path.chmod(0o644)
        command = [binary(), str(config)]
        if os.geteuid() == 0:
            command[1:1] = ["-u", self.user]
        with open(self.folder / "stderr.txt", "wb") as stderr:
            self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        wait_for(self._listening, 10, message=f"pgbouncer on port {self.port}: {self.log()}")
        return self

    def _listening(self):
        if self.process.poll() is not None:
            raise RuntimeError(f"pgbouncer exited with {self.process.returncode}: "
                               f"{(self.folder / 'stderr.txt').read_text()} {self.log()}")
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    def url(self, database_url):
        """``database_url`` with PgBouncer's address in place of PostgreSQL's."""
        return make_url(database_url).set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    def show(self, what):
        """The admin console's ``SHOW <what>`` as a list of dicts."""
        connection = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, dbname="pgbouncer")
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"SHOW {what}")
                names = [column.name for column in cursor.description]
                return [dict(zip(names, row)) for row in cursor.fetchall()]
        finally:
            connection.close()

    def log(self):
        path = self.folder / "pgbouncer.log"
        return path.read_text()[-3000:] if path.exists() else ""

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)
