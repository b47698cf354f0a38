"""The disconnect watch: a client hanging up mid-wait is noticed at once."""
import socket

import gevent
import pytest

from app.live.disconnects import DisconnectWatch
from app.live.registry import Ticket, Waiters


@pytest.fixture
def watch():
    dropped = []
    return DisconnectWatch(dropped.append), dropped


@pytest.fixture
def pair():
    server_side, client_side = socket.socketpair()
    yield server_side, client_side
    server_side.close()
    client_side.close()


def test_a_closed_peer_drops_its_ticket(watch, pair):
    watcher, dropped = watch
    server_side, client_side = pair
    ticket = Ticket("u-ada", Waiters())
    watcher.watch(ticket, server_side)
    assert ticket.fd == server_side.fileno() and watcher.tickets == {ticket.fd: ticket}
    gevent.sleep(0.05)
    assert dropped == []  # an open peer costs nothing and says nothing
    client_side.close()
    with gevent.Timeout(3):
        while not dropped:
            gevent.sleep(0.01)
    assert dropped == [ticket] and ticket.fd is None and watcher.tickets == {}


def test_a_forgotten_ticket_is_not_dropped(watch, pair):
    watcher, dropped = watch
    server_side, client_side = pair
    ticket = Ticket("u-ada", Waiters())
    watcher.watch(ticket, server_side)
    watcher.forget(ticket)
    assert ticket.fd is None and watcher.tickets == {}
    client_side.close()
    gevent.sleep(0.1)
    assert dropped == []
    watcher.forget(ticket)  # twice is harmless


def test_a_socket_that_cannot_be_watched_is_let_be(watch):
    watcher, _ = watch
    closed = socket.socket()
    closed.close()
    ticket = Ticket("u-ada", Waiters())
    watcher.watch(ticket, closed)
    assert ticket.fd is None and watcher.tickets == {}
    watcher.forget(ticket)
