"""The client's package and its hand-written TypeScript declarations, checked by tsc.

tests/types/usage.ts uses the whole public API through the package's own entry points
(`community-sync-client` and `community-sync-client/relay`, resolved through
app/static/package.json's `exports` the way a bundler or Node resolves them) and must
type-check under `--strict`; tests/types/misuse.ts must be rejected, on exactly the
lines it marks.
"""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import require_command

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "app" / "static"
TYPES = ROOT / "tests" / "types"
ERROR = re.compile(r"^(?P<file>[^(\s]+)\((?P<line>\d+),\d+\): error TS\d+", re.MULTILINE)


@pytest.fixture(scope="module")
def tsc():
    return require_command("tsc", "apt-get install node-typescript")


@pytest.fixture
def project(tmp_path):
    """An app that has the package installed: node_modules/community-sync-client is app/static."""
    (tmp_path / "node_modules").mkdir()
    (tmp_path / "node_modules" / "community-sync-client").symlink_to(PACKAGE, target_is_directory=True)
    # The app's own files are ES modules, as the package's are.
    (tmp_path / "package.json").write_text('{"type": "module"}\n')
    return tmp_path


def check(tsc, project, name):
    source = project / name
    shutil.copyfile(TYPES / name, source)
    result = subprocess.run(
        [tsc, "--noEmit", "--strict", "--target", "es2022", "--lib", "es2022,dom,dom.iterable",
         "--module", "nodenext", "--moduleResolution", "nodenext", name],
        cwd=project, capture_output=True, text=True, timeout=300,
    )
    return result.returncode, result.stdout + result.stderr


def test_the_package_describes_the_client_files():
    import json

    package = json.loads((PACKAGE / "package.json").read_text())
    assert package["type"] == "module"
    entries = [package["types"], *(
        path for entry in package["exports"].values() if isinstance(entry, dict) for path in entry.values()
    )]
    for path in entries:
        assert (PACKAGE / path).is_file(), path
        assert Path(path).name in package["files"], path
    internal = ("decisions", "store", "tabs", "election", "loop", "watches", "optimistic", "requests", "calls")
    for imported in (f"community-sync-{name}.js" for name in internal):
        assert imported in package["files"], f"{imported} is imported by the client"


def test_a_program_using_the_whole_api_type_checks(tsc, project):
    status, output = check(tsc, project, "usage.ts")
    assert status == 0, output


def test_misuse_is_rejected_on_every_marked_line(tsc, project):
    status, output = check(tsc, project, "misuse.ts")
    marked = {
        number for number, line in enumerate((TYPES / "misuse.ts").read_text().splitlines(), start=1)
        if "// rejected" in line
    }
    reported = {int(match["line"]) for match in ERROR.finditer(output) if match["file"] == "misuse.ts"}
    assert status != 0
    assert marked and reported == marked, output
