"""The browser client's pure decisions and fetch loop, tested under Node's test runner."""
import subprocess
from pathlib import Path

from conftest import require_command

ROOT = Path(__file__).resolve().parent.parent


def test_client_js_unit_tests_pass():
    node = require_command("node", "apt-get install nodejs")
    result = subprocess.run(
        [node, "--test", "tests/js/"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-4000:]
    # A runner that found no files also exits 0; make sure the tests actually ran.
    assert "# fail 0" in result.stdout
    # A test skipped (an older Node, say) is not a test passed.
    assert "# skipped 0" in result.stdout, result.stdout[-2000:]
    passed = int(result.stdout.rsplit("# pass ", 1)[1].split()[0])
    assert passed >= 20, result.stdout[-2000:]
