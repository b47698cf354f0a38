"""Waiting and waking: the hub, the poll session, re-reads, coalescing, vouching, parking, wake sources, presence and online counts."""
