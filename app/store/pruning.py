"""Retention: every worker deletes change-log rows older than ``CHANGE_RETENTION``.

About once per ``PRUNE_INTERVAL``, in a greenlet of its own. Workers that
start together should not all prune together, so the first run comes at a
random point of the first interval and each later one within 10% of it.
"""
import logging
import random
from datetime import datetime, timedelta, timezone

import gevent
from gevent.event import Event
from . import feed
from .db import write_transaction

log = logging.getLogger(__name__)


class Pruner:
    """Prunes the change log now (``prune()``) or on a timer (``start()``/``stop()``)."""

    def __init__(self, engine, *, retention=7 * 24 * 3600, interval=3600):
        self.engine = engine
        self.retention = retention
        self.interval = interval
        self._stopping = Event()

    def prune(self, now=None):
        """Delete change-log rows past the retention period; returns how many went."""
        moment = now or datetime.now(timezone.utc)
        cutoff = moment - timedelta(seconds=self.retention)
        with write_transaction(self.engine) as session:
            deleted = feed.prune(session, cutoff)
        if deleted:
            log.info("pruned %d change-log rows older than %s", deleted, cutoff.isoformat())
        return deleted

    def start(self):
        """Prune on the timer in a greenlet of its own, which is returned."""
        return gevent.spawn(self._run)

    def stop(self):
        """End the timer; a prune under way finishes first."""
        self._stopping.set()

    def _run(self):
        delay = self.interval * random.uniform(0.1, 1.0)
        while not self._stopping.wait(delay):
            try:
                self.prune()
            except Exception:
                # The next interval tries again; a failed prune only delays it.
                log.exception("pruning the change log failed")
            delay = self.interval * random.uniform(0.9, 1.1)
