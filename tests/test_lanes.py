"""Lanes: at most ``lanes`` runs at once; what arrives meanwhile runs together, in batches of at most ``most``."""
import gevent
import pytest
from gevent.event import Event

from app.lanes import Lanes


def lanes_held(lanes=1, most=100, together=None):
    """Lanes whose runs wait for ``go``; what ran, alone and together, is noted in ``ran``."""
    go, ran = Event(), []

    def alone(item):
        go.wait(5)
        ran.append([item])
        return item * 10

    def batch(items):
        go.wait(5)
        ran.append(list(items))
        return [item * 10 for item in items]

    return Lanes(alone, together or batch, lanes=lanes, most=most), go, ran


def test_an_item_that_finds_a_lane_free_runs_alone():
    sizes = []
    lanes = Lanes(lambda item: item + 1, None, lanes=1, most=10, observe=sizes.append)
    assert [lanes(1), lanes(2)] == [2, 3]
    assert sizes == [1, 1] and lanes.running == 0


def test_items_that_queue_run_together_each_given_its_own_result():
    lanes, go, ran = lanes_held(lanes=2)
    running = [gevent.spawn(lanes, item) for item in (1, 2)]
    queued = [gevent.spawn(lanes, item) for item in range(3, 9)]
    gevent.sleep(0.01)
    assert lanes.running == 2 and [item for item, _result in lanes.queue] == list(range(3, 9))
    go.set()
    assert [greenlet.get(timeout=5) for greenlet in running + queued] == [item * 10 for item in range(1, 9)]
    assert sorted(map(len, ran)) == [1, 1, 6] and lanes.running == 0 and lanes.queue == []


def test_a_batch_takes_at_most_most_items_and_the_rest_follow():
    lanes, go, ran = lanes_held(lanes=1, most=4)
    greenlets = [gevent.spawn(lanes, item) for item in range(10)]
    gevent.sleep(0.01)
    go.set()
    assert [greenlet.get(timeout=5) for greenlet in greenlets] == [item * 10 for item in range(10)]
    assert ran == [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9]]


def test_a_failed_batch_fails_each_of_its_items_and_frees_its_lane():
    def lost(_items):
        raise OSError("the database went away")

    lanes, go, _ran = lanes_held(lanes=1, together=lost)
    first = gevent.spawn(lanes, 1)
    queued = [gevent.spawn(lanes, item) for item in (2, 3)]
    gevent.sleep(0.01)
    go.set()
    assert first.get(timeout=5) == 10
    for greenlet in queued:
        with pytest.raises(OSError):
            greenlet.get(timeout=5)
    assert lanes.running == 0 and lanes.queue == []
    assert lanes(4) == 40  # alone again
