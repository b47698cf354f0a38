"""PostgreSQL ``LISTEN``: every NOTIFY of the change-log triggers becomes a hint.

One connection per worker process, outside the pool. NOTIFY is lost while the
listener is down, so it reconnects with backoff and, once connected again,
hints the hub to re-check everything waiting.
"""
import logging
import random

import gevent
import gevent.socket

log = logging.getLogger(__name__)

CHANNEL = "community_sync"


class Listener:
    """Calls ``on_notify`` on every notification (and after every reconnect).

    ``on_lost`` is called when an established connection breaks: the
    database most likely went away, taking the pooled connections with it,
    and each of those would otherwise fail once, whenever next used.
    """

    def __init__(self, dsn, on_notify, on_lost=None, metrics=None, keepalive=30.0):
        self.dsn = dsn
        self.on_notify = on_notify
        self.on_lost = on_lost
        self.metrics = metrics
        self.keepalive = keepalive
        self.connected = False
        self.closed = False
        self._connection = None
        self._greenlet = None
        self._failures = 0

    def start(self):
        """Listen in a greenlet of its own, which is returned."""
        self._greenlet = gevent.spawn(self.run)
        return self._greenlet

    def stop(self):
        """Stop listening. The greenlet is killed rather than its connection closed
        under it: closing a socket that gevent is still watching aborts libev."""
        self.closed = True
        if self._greenlet is not None and not self._greenlet.dead:
            if self._greenlet is gevent.getcurrent():
                return
            self._greenlet.kill(block=False)
            return
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def run(self):
        """Listen until stopped, reconnecting with backoff whenever the connection fails."""
        import psycopg2

        while not self.closed:
            try:
                self._listen()
            except (psycopg2.Error, OSError) as error:
                if self.closed:
                    return
                self.connected = False
                if self.metrics:
                    self.metrics.listener_reconnects.inc()
                self._failures += 1
                delay = min(5.0, 0.05 * 2**self._failures) * random.uniform(0.5, 1.0)
                log.warning("listener lost (%s); reconnecting in %.2fs", error, delay)
                gevent.sleep(delay)

    def _listen(self):
        import psycopg2
        import psycopg2.extensions

        connection = psycopg2.connect(self.dsn, application_name="community-sync-listener")
        self._connection = connection
        try:
            connection.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
            with connection.cursor() as cursor:
                cursor.execute(f"LISTEN {CHANNEL}")
            self.connected = True
            self._failures = 0  # the next outage backs off from the start again
            # Whatever was notified while we were away is lost: look again.
            self.on_notify()
            while not self.closed:
                try:
                    gevent.socket.wait_read(connection.fileno(), timeout=self.keepalive)
                except gevent.socket.timeout:
                    # Quiet for a while: prove the connection is still alive.
                    with connection.cursor() as cursor:
                        cursor.execute("SELECT 1")
                    continue
                connection.poll()
                if connection.notifies:
                    connection.notifies.clear()
                    self.on_notify()
        except (psycopg2.Error, OSError):
            if self.connected and not self.closed and self.on_lost is not None:
                self.on_lost()
            raise
        finally:
            self.connected = False
            if self._connection is connection:
                self._connection = None
                connection.close()
