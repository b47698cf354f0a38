"""Notices clients that hang up mid-wait, within moments rather than at timeout.

One epoll set per process, watched by one greenlet: a waiting poll costs a
registered file descriptor, and nothing at all until its peer closes.
"""
import select

import gevent
import gevent.socket
from gevent import monkey


class DisconnectWatch:
    """Calls ``on_drop(ticket)`` when the peer of a watched ticket's socket closes."""

    def __init__(self, on_drop):
        self.on_drop = on_drop
        self.tickets = {}
        self._epoll = None

    def watch(self, ticket, sock):
        """Watch ``sock`` for ``ticket``; a socket that cannot be watched is let be."""
        try:
            fd = sock.fileno()
        except OSError:
            return
        if fd < 0:
            return
        epoll = self._ensure_epoll()
        if epoll is None:
            return
        try:
            epoll.register(fd, select.EPOLLRDHUP)
        except (OSError, FileExistsError):
            return
        ticket.fd = fd
        self.tickets[fd] = ticket

    def forget(self, ticket):
        """Stop watching ``ticket`` (its poll is leaving); harmless if it was never watched."""
        fd, ticket.fd = ticket.fd, None
        if fd is None or self.tickets.get(fd) is not ticket:
            return
        del self.tickets[fd]
        try:
            self._epoll.unregister(fd)
        except (OSError, ValueError):
            pass

    def _ensure_epoll(self):
        if self._epoll is None:
            try:
                # gevent's patched select hides epoll; the original is what we want.
                epoll_class = monkey.get_original("select", "epoll")
            except AttributeError:
                return None
            self._epoll = epoll_class()
            gevent.spawn(self._run)
        return self._epoll

    def _run(self):
        epoll = self._epoll
        while True:
            gevent.socket.wait_read(epoll.fileno())
            for fd, _events in epoll.poll(0):
                ticket = self.tickets.pop(fd, None)
                try:
                    epoll.unregister(fd)
                except (OSError, ValueError):
                    pass
                if ticket is not None:
                    ticket.fd = None
                    self.on_drop(ticket)
