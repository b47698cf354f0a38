"""Benchmarks of the long poll against the designs it replaces (``python -m bench``).

See bench/README.md for the scenarios, and docs/benchmarks.md for the figures.
"""
