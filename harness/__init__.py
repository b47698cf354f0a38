"""What the tests and the benchmarks share to run the service for real.

- :mod:`harness.servers`: gunicorn servers on free loopback ports, with one
  readiness rule and one stop rule, and the ``flask`` command line.
- :mod:`harness.polls`: a lean HTTP/1.1 connection and the poll follower that
  the gevent client processes (tests/fault_client.py, bench/client.py) run by
  the thousand.

Development support only: setup.cfg ships the ``app`` package alone. Both are
run from the repository root (``python -m pytest``, ``python -m bench``), which
puts this package on the path; this module imports nothing, so a gevent process
can import :mod:`harness.polls` right after patching.
"""
