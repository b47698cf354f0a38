"""Lanes: work of one kind, at most ``lanes`` at once; what arrives meanwhile runs as one batch.

When thousands of requests arrive in the same second (a deploy, a network
blip that sends an office back at once), a transaction each through a pool of
20 is a queue on the pool, and a request that waits there longer than the
pool's time-out is answered ``503``. Through lanes, an item that finds a lane
free and nobody queued runs alone, as it would without them; the others queue
here, in memory, and the next lane to come free runs every queued item (up to
``most``) as one batch, in a greenlet of its own. The work never holds more
than ``lanes`` of the pool's connections, and nothing waits on the pool for
longer than one batch takes.

An arriving poll's first read (``app/live/admission.py``) and a new caller's
user row (``app/auth.py``) go through lanes of their own.
"""
import gevent
from gevent.event import AsyncResult


class Lanes:
    """``alone(item)`` for an item that finds a lane free, ``together(items)`` (results in
    their order) for those that queued; ``observe(size)``, if given, is told each run's size."""

    def __init__(self, alone, together, *, lanes, most, observe=None):
        self.alone = alone
        self.together = together
        self.lanes = lanes
        self.most = most
        self.observe = observe
        self.running = 0
        self.queue = []

    def __call__(self, item):
        """``item``'s result, run alone or with the others that queue meanwhile."""
        if self.running < self.lanes and not self.queue:
            self.running += 1
            try:
                self._observe(1)
                return self.alone(item)
            finally:
                self._lane_free()
        queued = (item, AsyncResult())
        self.queue.append(queued)
        return queued[1].get()

    def _lane_free(self):
        """A run ended: the queued items, if any, run next, in a greenlet of their own."""
        self.running -= 1
        if self.queue and self.running < self.lanes:
            batch, self.queue = self.queue[:self.most], self.queue[self.most:]
            self.running += 1
            gevent.spawn(self._run, batch)

    def _run(self, batch):
        try:
            self._observe(len(batch))
            for (_item, result), value in zip(batch, self.together([item for item, _result in batch])):
                result.set(value)
        except BaseException as error:
            # Each item fails as its own run's failure would have failed it.
            for _item, result in batch:
                if not result.ready():
                    result.set_exception(error)
            if not isinstance(error, Exception):
                raise
        finally:
            self._lane_free()

    def _observe(self, size):
        if self.observe:
            self.observe(size)
