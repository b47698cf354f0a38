"""The transaction every writing view runs in."""
from contextlib import contextmanager

from flask import current_app

from ..store import writes


@contextmanager
def writing(actor):
    """A write transaction of its own that records ``actor`` as ``by``, then wakes this process's hub.

    The hub is woken only once the transaction has committed: a re-read
    before that would not see the write.
    """
    with writes.acting(actor) as session:
        yield session
    current_app.extensions["hub"].notify()
