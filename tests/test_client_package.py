"""The client as an app installs it: `npm pack` of app/static, `npm install` of the
tarball into a fresh directory beside the frameworks its adapters serve
(tests/adapters/package.json, pinned), then the adapters' tests under Node and tsc
over a usage file that imports every entry point of the package's `exports`.

npm fetches React, Vue and their types from the registry the first time (npm's own
cache serves them after that): CI's machine reaches it.
"""
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import require_command

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "app" / "static"
ADAPTERS = ROOT / "tests" / "adapters"
TYPES = ROOT / "tests" / "types"


def run(command, cwd, timeout=300):
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, command))}\n{result.stdout[-6000:]}\n{result.stderr[-4000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """A fresh app directory with the packed client and the frameworks installed."""
    npm = require_command("npm", "apt-get install npm")
    require_command("node", "apt-get install nodejs")
    app = tmp_path_factory.mktemp("app")
    shutil.copyfile(ADAPTERS / "package.json", app / "package.json")
    packed = json.loads(run([npm, "pack", "--json", "--pack-destination", str(app), str(PACKAGE)], cwd=app))
    tarball = app / packed[0]["filename"]
    run([npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", str(tarball)], cwd=app, timeout=600)
    for source in ADAPTERS.glob("*.mjs"):
        shutil.copyfile(source, app / source.name)
    return app


def test_the_tarball_holds_the_package_and_nothing_else(app):
    installed = app / "node_modules" / "community-sync-client"
    manifest = json.loads((installed / "package.json").read_text())
    assert manifest["license"] and manifest["repository"] and manifest["engines"]
    names = {path.name for path in installed.iterdir()}
    assert names == set(manifest["files"]) | {"package.json", "README.md", "LICENSE"}, names


def test_the_adapters_work_as_installed(app):
    output = run(["node", "--test", "react.test.mjs", "vue.test.mjs"], cwd=app)
    assert "# fail 0" in output and "# skipped 0" in output, output[-2000:]
    assert int(output.rsplit("# pass ", 1)[1].split()[0]) >= 3, output[-2000:]


def test_every_entry_point_type_checks_as_installed(app):
    tsc = require_command("tsc", "apt-get install node-typescript")
    shutil.copyfile(TYPES / "usage.ts", app / "usage.ts")
    shutil.copyfile(TYPES / "adapters.ts", app / "adapters.ts")
    run([tsc, "--noEmit", "--strict", "--target", "es2022", "--lib", "es2022,dom,dom.iterable",
         "--module", "nodenext", "--moduleResolution", "nodenext", "--skipLibCheck", "usage.ts", "adapters.ts"], cwd=app)
