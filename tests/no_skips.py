"""With CI=true a test that does not run fails the run: a skip, or an xfail that is not strict.

A skip hides a test that CI is there to run (a missing service, a missing
program: the fixtures that need one already fail when CI=true); a non-strict
``xfail`` passes whether the code is broken or fixed. A strict ``xfail`` is
a claim that is checked both ways, and stays allowed. ``tests/conftest.py``
takes these hooks in; ``tests/test_conftest.py`` runs them on small suites.
"""
import os

import pytest

# Collection skips (a module's ``pytest.skip(allow_module_level=True)``, an
# ``importorskip``), kept on the config until the session ends.
_COLLECTION_SKIPS = pytest.StashKey[list]()


def _in_ci():
    return os.environ.get("CI") == "true"


def _strict(item):
    marker = item.get_closest_marker("xfail")
    if marker is None:
        return False  # pytest.xfail() called in the test: nothing to check it against
    return bool(marker.kwargs.get("strict", item.config.getini("xfail_strict")))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if not _in_ci():
        return report
    if hasattr(report, "wasxfail"):
        if not _strict(item):
            report.outcome = "failed"
            report.longrepr = f"xfail that is not strict, with CI=true: {report.wasxfail or 'no reason'}"
            del report.wasxfail
    elif report.skipped:
        report.outcome = "failed"
        report.longrepr = f"skipped with CI=true: {_reason(report)}"
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    report = yield
    if _in_ci() and report.skipped:
        collector.config.stash.setdefault(_COLLECTION_SKIPS, []).append(f"{report.nodeid}: {_reason(report)}")
    return report


def pytest_terminal_summary(terminalreporter, config):
    for skip in config.stash.get(_COLLECTION_SKIPS, []):
        terminalreporter.write_line(f"FAILED (skipped with CI=true) {skip}", red=True)


def pytest_sessionfinish(session, exitstatus):
    if session.config.stash.get(_COLLECTION_SKIPS, []) and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _reason(report):
    """A skip's reason, from the ``(path, line, reason)`` pytest keeps as its long form."""
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    return reason.removeprefix("Skipped: ")
