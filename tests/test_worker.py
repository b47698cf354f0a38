"""The gunicorn worker class (app/live/worker.py): what it changes of gunicorn's gevent worker.

Parked polls are tested in tests/test_parking.py; a reload under load in
``python -m bench deploy`` (bench/storm.py).
"""
import socket

from gunicorn.workers.base_async import AsyncWorker

from app.live.worker import ProblemWorker


def test_a_connection_accepted_before_its_listener_closed_is_still_handled(monkeypatch):
    """A reload closes the worker's listening socket after its last accept; a connection
    accepted just before, whose greenlet starts just after, is handled with the listener's
    name as it was (gunicorn's handler asks for it, and would drop the connection unread)."""
    named = []
    monkeypatch.setattr(AsyncWorker, "handle",
                        lambda worker, listener, client, addr: named.append(listener.getsockname()))
    worker = ProblemWorker.__new__(ProblemWorker)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    name = listener.getsockname()
    worker.listener_names = {listener: name}

    with socket.socket() as client:
        worker.handle(listener, client, None)
        listener.close()
        worker.handle(listener, client, None)
    assert named == [name, name]
