"""The suite's own machinery: conftest's helpers, and CI=true failing a run that skipped a test."""
import gevent
import pytest

from conftest import until_blocked

pytest_plugins = ["pytester"]


# -- until_blocked ---------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])
def test_until_blocked_returns_a_poll_once_it_waits(quiet_app):
    hub = quiet_app.extensions["hub"]
    with hub.waiting("u-ada") as ticket:
        waiting = gevent.spawn(hub.wait, ticket, 30)
        assert until_blocked(hub, waiting) is waiting and not waiting.dead
        hub.drop(ticket)
        assert waiting.get(timeout=10) == []


@pytest.mark.parametrize("backend", ["sqlite"])
def test_until_blocked_fails_when_the_poll_ended_without_waiting(quiet_app):
    """A poll answered at once must not pass for one that waits."""
    answered = gevent.spawn(lambda: "answered at once")
    with pytest.raises(pytest.fail.Exception, match="ended without waiting: 'answered at once'"):
        until_blocked(quiet_app.extensions["hub"], answered)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_until_blocked_fails_when_the_poll_never_waits(quiet_app):
    busy = gevent.spawn(gevent.sleep, 30)
    with pytest.raises(pytest.fail.Exception, match="never waited"):
        until_blocked(quiet_app.extensions["hub"], busy, timeout=0.1)
    busy.kill()


# -- CI=true: nothing skipped ------------------------------------------------------


def run(pytester, monkeypatch, ci, source):
    """Run ``source`` as a test module with tests/no_skips.py, with CI=true or without CI."""
    if ci:
        monkeypatch.setenv("CI", "true")
    else:
        monkeypatch.delenv("CI", raising=False)
    pytester.makepyfile(source)
    # The plugin is this suite's own, imported already: not rewritten again, and not warned about.
    return pytester.runpytest("-p", "no_skips", "-W", "ignore::pytest.PytestAssertRewriteWarning")


SKIPPING = """
import pytest

def test_runs():
    pass

def test_skipped():
    pytest.skip("no service here")

@pytest.mark.skipif(True, reason="not on this machine")
def test_skipped_by_mark():
    pass

@pytest.fixture
def service():
    pytest.skip("the fixture found no service")

def test_skipped_in_setup(service):
    pass
"""


def test_a_skipped_test_fails_the_run_with_ci(pytester, monkeypatch):
    result = run(pytester, monkeypatch, True, SKIPPING)
    # A skip in setup (a fixture's) is an error of the test, as any setup failure is.
    result.assert_outcomes(passed=1, failed=1, errors=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*skipped with CI=true: no service here*",
                                 "*skipped with CI=true: not on this machine*",
                                 "*skipped with CI=true: the fixture found no service*"])


def test_without_ci_a_skip_is_a_skip(pytester, monkeypatch):
    result = run(pytester, monkeypatch, False, SKIPPING)
    result.assert_outcomes(passed=1, skipped=3)
    assert result.ret == pytest.ExitCode.OK


XFAILING = """
import pytest

@pytest.mark.xfail(reason="known bug")
def test_loose_xfail():
    assert False

@pytest.mark.xfail(reason="maybe fixed")
def test_loose_xpass():
    pass

def test_imperative_xfail():
    pytest.xfail("not done yet")

@pytest.mark.xfail(strict=True, reason="pinned bug")
def test_strict_xfail():
    assert False
"""


def test_an_xfail_that_is_not_strict_fails_the_run_with_ci(pytester, monkeypatch):
    result = run(pytester, monkeypatch, True, XFAILING)
    result.assert_outcomes(failed=3, xfailed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*xfail that is not strict, with CI=true: known bug*"])


def test_without_ci_an_xfail_is_an_xfail(pytester, monkeypatch):
    result = run(pytester, monkeypatch, False, XFAILING)
    result.assert_outcomes(xfailed=3, xpassed=1)
    assert result.ret == pytest.ExitCode.OK


MODULE_SKIPPED = """
import pytest

pytest.skip("the whole module needs a service", allow_module_level=True)

def test_never_collected():
    pass
"""


@pytest.mark.parametrize("ci, status", [(True, pytest.ExitCode.TESTS_FAILED), (False, pytest.ExitCode.OK)])
def test_a_module_skipped_at_collection_fails_the_run_with_ci_only(pytester, monkeypatch, ci, status):
    pytester.makepyfile(test_other="def test_runs():\n    pass\n")
    result = run(pytester, monkeypatch, ci, MODULE_SKIPPED)
    result.assert_outcomes(passed=1, skipped=1)
    assert result.ret == status
    if ci:
        result.stdout.fnmatch_lines(["*skipped with CI=true*the whole module needs a service*"])


def test_this_suite_runs_under_the_rule(pytestconfig):
    import no_skips

    hook = pytestconfig.pluginmanager.hook
    for name in ("pytest_runtest_makereport", "pytest_make_collect_report", "pytest_sessionfinish",
                 "pytest_terminal_summary"):
        implementations = {impl.function for impl in getattr(hook, name).get_hookimpls()}
        assert getattr(no_skips, name) in implementations, name
