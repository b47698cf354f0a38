"""The poll session (app/live/session.py), and a parked poll answered through the real view.

A parked poll is made here as the parking worker makes one: the request goes
through the poll view with parking offered, and the parked record is handed a
socket pair (``ParkedSocket``), so the answer is the renderer the view
registered at start-up (``render_parked``), not a stand-in.
"""
import json
import time
from datetime import datetime, timezone

import gevent
import gevent.socket
import pytest
from sqlalchemy.exc import OperationalError

from app.http import community_changes
from app.live.owed import Owed
from app.live.parking import PARKABLE_KEY, PARKED_HEADER
from app.live.reread import News
from app import wire
from app.live.session import GATHERED, Ask, Known, PollSession, Reply
from app.live.worker import ParkedSocket
from app.store import cursors
from conftest import eventually
from test_parking import read_answer as read_parked_answer

POLL = "/community-changes/poll"


class Row:
    topic, collapse, public = None, False, False

    def __init__(self, id, type="activity"):
        self.id, self.xid, self.type = id, id, type
        self.shared = type in ("activity", "community_updated", "community_deleted")
        self.at = datetime.fromtimestamp(1_000_000 + id, timezone.utc)


class Coalescing:
    """A coalescing that pauses every activity-only reply ``pause`` seconds, and notes answers."""

    def __init__(self, pause):
        self.seconds = pause
        self.answered_users = []

    def pause(self, _user_id, _rows):
        return self.seconds

    def answered(self, user_id):
        self.answered_users.append(user_id)


class Hub:
    """What a session asks of its hub, for the steps on their own."""

    metrics = None

    def __init__(self, pause=0.0):
        self.coalescing = Coalescing(pause)
        self.reread = self
        self.owed = Owed()


class Ticket:
    user_id = "u-ada"


def session_at(seen, hub=None):
    known = Known(cursors.Cursor("e", cursors.SequencePosition(seen)), "h0")
    return PollSession(hub or Hub(), Ask(known, 25), Ticket())


def news(*ids, at=None, type="activity"):
    rows = [Row(i, type) for i in ids]
    return News(rows, [{"id": "c-1"}], 0, f"h{max(ids, default=0)}", cursors.SequencePosition(at or max(ids)))


# -- the steps, on their own -------------------------------------------------------


def test_a_session_gathers_only_what_its_client_has_not_seen_and_answers_it_in_order():
    session = session_at(5)
    session.begin(Reply("unchanged", session.ask.known, community_ids=("c-1",)))
    assert session.take([]) is False
    assert session.take([news(4, 5, at=5)]) is False  # seen by the client's cursor
    assert session.take([news(8, at=8), news(7, 8, at=9)]) is True  # 7 committed after 8, read again
    reply = session.reply()
    assert reply.status == "changed" and [row.id for row in reply.changes] == [7, 8]
    assert reply.known.hash == "h8" and reply.known.cursor.position == cursors.SequencePosition(9)


def test_a_session_waiting_through_a_burst_keeps_only_what_its_answer_tells_of():
    """Thousands of activity rows gathered, a join among them: the answer is the one all the
    rows would make (the newest hundred, ``truncated``, the join), and the session holds a few hundred."""
    session = session_at(5)
    session.begin(Reply("unchanged", session.ask.known, community_ids=("c-1",)))
    everything = []
    for first in range(6, 3006, 100):
        batch = news(*range(first, first + 100))
        if first == 1506:
            batch.rows[50] = Row(batch.rows[50].id, "joined")
        everything += batch.rows
        session.take([batch])
        assert session.gathered <= GATHERED + 100
    reply = session.reply()
    assert wire.capped(reply.changes) == wire.capped(everything)
    assert wire.capped(reply.changes)[1] is True
    assert [row.type for row in reply.changes].count("joined") == 1


def test_news_from_an_older_snapshot_is_passed_over():
    session = session_at(5)
    session.begin(Reply("unchanged", Known(cursors.Cursor("e", cursors.SequencePosition(9)), "h9")))
    assert session.take([news(7, at=7)]) is False
    reply = session.reply()
    assert reply.status == "unchanged" and reply.known.cursor.position == cursors.SequencePosition(9)


def test_an_unchanged_reply_keeps_the_communities_it_began_with():
    session = session_at(5)
    session.begin(Reply("unchanged", session.ask.known, community_ids=("c-1", "c-2")))
    assert session.reply().community_ids == ("c-1", "c-2")


def test_a_polls_urgency_puts_its_users_own_changes_before_activity():
    session = session_at(5)
    session.begin(Reply("unchanged", session.ask.known))
    assert session.urgency() == 2  # nothing to say: answered last
    session.take([news(6)])
    assert session.urgency() == 1
    session.take([news(7, type="role_changed")])
    assert session.urgency() == 0


def test_held_activity_waits_for_its_pause_and_anything_else_ends_it():
    """A changed reply of activity, held back: more activity joins it; a join ends the pause."""
    hub = Hub(pause=0.5)
    session = session_at(5, hub)
    held = Reply("changed", Known(cursors.Cursor("e", cursors.SequencePosition(6)), "h6"),
                 [{"id": "c-1"}], (Row(6),), 0)
    assert session.waits(held) is True
    assert session.deadline - time.monotonic() <= 0.5
    assert session.take([news(7)]) is False  # activity only: still held
    assert session.take([news(8, type="joined")]) is True
    assert [row.id for row in session.reply().changes] == [6, 7, 8]


def test_finishing_any_reply_leaves_nothing_owed_to_the_user():
    hub = Hub()
    for status in ("changed", "unchanged"):
        session = session_at(5, hub)
        hub.owed.owe("u-ada", 1.0)
        session.finish(Reply(status, session.ask.known))
        assert hub.owed.oldest() is None


def test_finishing_a_changed_reply_starts_the_users_window():
    hub = Hub()
    session = session_at(5, hub)
    session.finish(Reply("unchanged", session.ask.known))
    assert hub.coalescing.answered_users == []
    session.finish(Reply("changed", session.ask.known))
    assert hub.coalescing.answered_users == ["u-ada"]


# -- parked through the real view ------------------------------------------------------


@pytest.fixture
def park_poll(seeded, monkeypatch):
    """``park_poll(headers, **query)``: a poll parked by the real view, as (record, client socket)."""
    app = seeded
    hub = app.extensions["hub"]
    records, sockets = [], []
    park = hub.park

    def capture(session):
        records.append(park(session))
        return records[-1]

    monkeypatch.setattr(hub, "park", capture)

    def make(headers, **query):
        response = app.test_client().get(POLL, query_string=query, headers=headers,
                                         environ_overrides={PARKABLE_KEY: True})
        assert response.headers.get(PARKED_HEADER) == "1", response.get_data(as_text=True)
        server_side, client_side = gevent.socket.socketpair()
        sockets.extend((server_side, client_side))
        hub.parking.settle(records[-1], ParkedSocket(server_side, b"", lambda sock: None))
        return records[-1], client_side

    yield make
    for sock in sockets:
        sock.close()


def read_answer(sock, timeout=5):
    """(status line, headers, body) of one answer on ``sock``."""
    lines, body = read_parked_answer(sock, timeout)
    return lines[0], dict(line.split(": ", 1) for line in lines[1:]), body


def snapshot(client, headers):
    body = client.get("/me/communities", headers=headers).json
    return {"cursor": body["cursor"], "hash": body["hash"], "timeout": 20}


def test_a_parked_changed_answer_starts_a_coalescing_window(seeded, park_poll, auth, database, monkeypatch):
    hub = seeded.extensions["hub"]
    answered = []
    monkeypatch.setattr(hub.reread.coalescing, "answered", answered.append)
    ada = auth("u-ada")
    _, client_side = park_poll(ada, **snapshot(seeded.test_client(), ada))
    database.psql("INSERT INTO activity (community_id, kind, ref) VALUES ('c-rust', 'post_created', 'p-1')")
    status, headers, body = read_answer(client_side)
    assert headers["X-Poll-Result"] == "changed" and json.loads(body)["changes"][0]["ref"] == "p-1"
    assert answered == ["u-ada"]


def test_an_outage_while_a_parked_answer_is_made_answers_503(seeded, park_poll, auth, monkeypatch):
    hub = seeded.extensions["hub"]
    ada = auth("u-ada")
    _, client_side = park_poll(ada, **snapshot(seeded.test_client(), ada))

    def lost(*_args):
        raise OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))

    monkeypatch.setattr(community_changes, "community_ids", lost)
    hub.close()
    status, headers, body = read_answer(client_side)
    assert status.split(" ")[:2] == ["HTTP/1.1", "503"] and "Retry-After" in headers
    assert headers["Content-Type"] == "application/problem+json"
    assert json.loads(body)["type"].endswith("database-unavailable")
    assert eventually(lambda: hub.parking.count == hub.waiting_polls == 0, 3)


def test_an_error_while_a_parked_answer_is_made_answers_500_and_the_answerer_goes_on(
        seeded, park_poll, auth, monkeypatch):
    hub = seeded.extensions["hub"]
    ada, grace = auth("u-ada"), auth("u-grace")
    client = seeded.test_client()
    _, failing = park_poll(ada, **{**snapshot(client, ada), "timeout": 1})
    calls = []

    def broken(user_id, reply):
        calls.append(user_id)
        if user_id == "u-ada":
            raise RuntimeError("a bug")
        return []

    monkeypatch.setattr(community_changes, "community_ids", broken)
    status, headers, body = read_answer(failing)
    assert status.split(" ")[:2] == ["HTTP/1.1", "500"]
    assert json.loads(body)["status"] == 500 and "a bug" not in body.decode()
    assert eventually(lambda: hub.parking.count == hub.waiting_polls == 0, 3)
    # The answerer is still there for the next parked poll.
    _, next_one = park_poll(grace, **{**snapshot(client, grace), "timeout": 1})
    status, headers, _ = read_answer(next_one)
    assert status.split(" ")[:2] == ["HTTP/1.1", "200"] and headers["X-Poll-Result"] == "unchanged"


def test_a_batch_of_parked_answers_reads_its_online_counts_once(seeded, park_poll, auth, monkeypatch):
    """Answered in one batch (here: at shutdown), polls of users in different communities share one read."""
    hub = seeded.extensions["hub"]
    online_counts = seeded.extensions["online_counts"]
    client = seeded.test_client()
    for user in ("u-ada", "u-grace", "u-alan"):
        headers = auth(user)
        park_poll(headers, **snapshot(client, headers))
    # The snapshots' counts made stale, as a batch finds them after a wait.
    for community_id, (count, _read_at) in list(online_counts.cache.entries.items()):
        online_counts.cache.entries[community_id] = (count, float("-inf"))
    reads = []
    read = online_counts._read
    monkeypatch.setattr(online_counts, "_read", lambda ids: reads.append(set(ids)) or read(ids))
    hub.close()
    assert eventually(lambda: hub.parking.count == 0, 5)
    assert len(reads) == 1 and {"c-rust", "c-python", "c-design", "c-go"} <= reads[0]
