"""A small bounded cache."""
from collections import OrderedDict


class LRU:
    """A bounded mapping that forgets its least recently used entries."""

    def __init__(self, capacity=100_000):
        self.capacity = capacity
        self.entries = OrderedDict()

    def get(self, key):
        value = self.entries.get(key)
        if value is not None:
            self.entries.move_to_end(key)
        return value

    def put(self, key, value):
        self.entries[key] = value
        self.entries.move_to_end(key)
        if len(self.entries) > self.capacity:
            self.entries.popitem(last=False)

    def pop(self, key):
        self.entries.pop(key, None)
