"""Installs: every dependency bounded and pinned, and a non-editable install that works.

The slow test builds a virtualenv, installs a copy of the checkout into it (the pins of
constraints.txt, from the machine's package index), and runs the commands of
README.md's "Installed copy" from a directory that holds nothing of the
repository: no alembic.ini, no gunicorn.conf.py, no wsgi.py.
"""
import configparser
import os
import shutil
import subprocess
import sys

import pytest
import requests
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from harness.servers import ROOT, Server

# What a checkout may hold besides the project (a venv, caches, results).
NOT_THE_PROJECT = shutil.ignore_patterns(
    ".git", ".venv", "instance", "__pycache__", "*.egg-info", "build", "dist", "node_modules",
    ".hypothesis", ".pytest_cache", "mutants", "results",
)


def run(command, **kwargs):
    finished = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert finished.returncode == 0, f"{command} exited with {finished.returncode}:\n{finished.stderr[-3000:]}"
    return finished.stdout


def declared_requirements():
    """Every requirement setup.cfg declares: install_requires and each extra's."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    blocks = [cfg["options"]["install_requires"], *cfg["options.extras_require"].values()]
    return [Requirement(line.strip()) for block in blocks for line in block.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def pins():
    """constraints.txt as {name: version}."""
    found = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not an exact pin: {line}"
            found[canonicalize_name(name)] = Version(version)
    return found


def test_every_dependency_has_a_floor_and_a_ceiling():
    for requirement in declared_requirements():
        operators = {spec.operator for spec in requirement.specifier}
        assert {">=", "<"} <= operators, f"{requirement} needs a floor and a ceiling"


def test_the_constraints_pin_every_dependency_below_its_next_major_version():
    pinned = pins()
    assert canonicalize_name("community-sync") not in pinned
    for requirement in declared_requirements():
        name = canonicalize_name(requirement.name)
        if name == canonicalize_name("mutmut"):
            continue  # the mutation-testing extra is outside CI and unpinned (README.md)
        assert name in pinned, f"{requirement.name} is not in constraints.txt"
        version = pinned[name]
        assert version in requirement.specifier, f"{requirement.name}=={version} is outside {requirement}"
        ceiling = next(Version(spec.version) for spec in requirement.specifier if spec.operator == "<")
        assert ceiling <= Version(str(version.major + 1)), f"{requirement} allows the next major version"


def test_ci_installs_with_the_constraints_as_the_readme_says():
    command = ("python3 -m venv .venv && .venv/bin/pip install -q -c constraints.txt -e '.[test]'"
               " && .venv/bin/python -m pytest")
    assert command in (ROOT / "README.md").read_text()
    assert (ROOT / ".ci" / "run").read_text().rstrip().endswith("\n" + command)


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A fresh virtualenv with ``pip install .`` (not editable) of a copy of this checkout."""
    base = tmp_path_factory.mktemp("install")
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=NOT_THE_PROJECT)
    venv = base / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    run([str(venv / "bin" / "pip"), "install", "-q", "-c", str(source / "constraints.txt"), str(source)],
        timeout=900)
    return venv


@pytest.mark.slow
def test_an_installed_copy_migrates_and_serves_from_another_directory(venv, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # Nothing from this checkout or this process's imports: no PYTHONPATH.
    env = {
        "PATH": f"{venv / 'bin'}{os.pathsep}/usr/bin:/bin", "HOME": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{elsewhere / 'sync.sqlite3'}",
        # The workers do not migrate: db-upgrade must have done it.
        "AUTO_MIGRATE": "0",
    }
    where = run([str(venv / "bin" / "python"), "-c", "import app; print(app.__file__)"], cwd=elsewhere, env=env)
    assert where.startswith(str(venv))

    flask = [str(venv / "bin" / "flask"), "--app", "app.wsgi"]
    assert "database at head" in run([*flask, "db-upgrade"], cwd=elsewhere, env=env)
    token = run([*flask, "token", "u-ada"], cwd=elsewhere, env=env).strip()

    server = Server(env, python=venv / "bin" / "python", cwd=elsewhere, app="app.wsgi:app",
                    config="python:app.gunicorn_conf", log_path=tmp_path / "gunicorn.log").start()
    try:
        assert requests.get(server.url + "/healthz", timeout=5).status_code == 200
        ada = {"Authorization": f"Bearer {token}"}
        snapshot = requests.get(server.url + "/me/communities", headers=ada, timeout=5).json()
        poll = requests.get(server.url + "/community-changes/poll", headers=ada, timeout=30,
                            params={"cursor": snapshot["cursor"], "hash": snapshot["hash"], "timeout": 1})
        assert poll.status_code == 200 and poll.json()["status"] == "unchanged"
        assert "Using worker: app.live.worker.ParkingWorker" in server.log()
    finally:
        server.stop()
    # The generated key (no SECRET_KEY set) lives in the installation's var/, not in site-packages.
    assert (venv / "var" / "community-sync-instance" / "secret-key").exists()
    assert not list(venv.glob("lib/python*/site-packages/instance"))
