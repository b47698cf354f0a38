"""README.md's "Walkthrough with curl" and PostgreSQL quick start, run as a reader runs them, against real servers.

Every ``sh`` block of the section starts with ``# Terminal N``; each terminal is
one bash reading the blocks as they are pasted into it, so what a block exports
the terminal's later blocks see. Blocks are pasted in the README's order; the
next one is pasted once the last has finished or is holding a long poll (the
poll in one terminal waits for the write in another). The ``watch`` block runs
in a terminal of its own from the start, as the README allows ("a fourth one
beside them"), and is stopped with Ctrl-C at the end.

The server runs on a free port on a temporary SQLite database, standing in for
``instance/community-sync.sqlite3`` in a directory that stands in for the
repository root (its ``.venv`` is this interpreter's). Only the address
``http://127.0.0.1:8000`` and the ``/tmp/`` of the saved answers are replaced.
"""
import json
import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

from sqlalchemy.engine import make_url

from conftest import SECRET, bearer, postgres_url, require_command, require_postgres
from harness.servers import ROOT, Server, flask, free_port, python_environ, sigint_as_in_a_terminal, wait_for

README_URL = "http://127.0.0.1:8000"
DONE = "__block_done__"


def walkthrough_blocks(heading="## Walkthrough with curl", end="\n## "):
    """[(terminal, text)] of the sh blocks of the section under ``heading``, in order."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split(f"\n{heading}\n", 1)[1].split(end, 1)[0]
    blocks = []
    for text in re.findall(r"```sh\n(.*?)```", section, re.S):
        label = re.match(r"# Terminal (\d+)", text)
        if heading != "## Walkthrough with curl" and label is None:
            continue  # the production example after the quick start
        assert label, f"a walkthrough block names no terminal:\n{text}"
        blocks.append((int(label.group(1)), text))
    return blocks


class Terminal:
    """One bash, fed blocks on its stdin like a terminal; its output split per block."""

    def __init__(self, cwd, env):
        self.process = subprocess.Popen(["bash"], cwd=cwd, env=env, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        start_new_session=True, preexec_fn=sigint_as_in_a_terminal)
        self.outputs = []  # one string per finished block
        self.pasted = 0
        self.current = []
        self.finished = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.process.stdout:
            if line.startswith(DONE):
                self.outputs.append("".join(self.current))
                self.current = []
                self.finished.put(line)
            else:
                self.current.append(line)

    def paste(self, text):
        self.pasted += 1
        self.process.stdin.write(f"{text}\necho {DONE}\n")
        self.process.stdin.flush()

    def idle(self):
        return len(self.outputs) == self.pasted

    def wait(self, timeout=90):
        assert wait_for(self.idle, timeout, interval=0.1), f"a block did not finish: {''.join(self.current)}"

    def interrupt(self):
        """Ctrl-C to whatever runs in the terminal, and wait for its prompt."""
        os.killpg(self.process.pid, signal.SIGINT)
        self.wait(30)

    def close(self):
        """Close the terminal; whatever still runs in it (a failed test's poll) is ended."""
        self.process.stdin.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(30)
        self.reader.join(30)
        self.process.stdout.close()


def waiting_polls(server):
    return sum(value for name, value in server.metrics().items() if name.startswith("community_sync_waiting_polls"))


@pytest.mark.slow
def test_the_readme_walkthrough_works_when_pasted(tmp_path):
    for tool in ("bash", "curl", "jq", "sqlite3"):
        assert shutil.which(tool), f"the walkthrough needs {tool} (apt-get install {tool})"
    root = tmp_path / "root"
    (root / "instance").mkdir(parents=True)
    (root / ".venv").symlink_to(Path(sys.executable).parent.parent)
    saved = tmp_path / "saved"
    saved.mkdir()
    env = python_environ({**os.environ, "DATABASE_URL": f"sqlite:///{root / 'instance' / 'community-sync.sqlite3'}",
                          "SECRET_KEY": SECRET, "AUTO_MIGRATE": "1"})
    server = Server(env, log_path=tmp_path / "gunicorn.log").start()
    terminals = {}
    watcher = None
    try:
        flask(env, "seed-demo")  # the README's "Run it" loads the demo data
        env["COMMUNITY_SYNC_URL"] = server.url  # only for watch, which names no URL
        blocks = [(terminal, text.replace(README_URL, server.url).replace("/tmp/", f"{saved}/"))
                  for terminal, text in walkthrough_blocks()]
        watching = [text for _, text in blocks if " watch " in text]
        assert len(watching) == 1
        watcher = Terminal(root, env)
        watcher.paste(watching[0])
        assert wait_for(lambda: waiting_polls(server) >= 1, 60, interval=0.2), "watch never waited"
        pasted = []
        for terminal, text in blocks:
            if text in watching:
                continue
            shell = terminals.setdefault(terminal, Terminal(root, env))
            shell.wait()  # a terminal takes the next block once it shows its prompt
            held = waiting_polls(server)
            shell.paste(text)
            pasted.append((terminal, shell.pasted - 1, text))
            # Read its output before moving on: finished, or holding a poll of its own.
            wait_for(lambda: shell.idle() or waiting_polls(server) > held, 60, interval=0.2)
        for shell in terminals.values():
            shell.wait()
        # The last write, from SQL, reaches the watch too (SQLite: within the safety net's interval).
        wait_for(lambda: "p-43" in "".join(watcher.current), 30, interval=0.2)
        watcher.interrupt()
        outputs = [terminals[terminal].outputs[index] for terminal, index, _ in pasted]
        check_outputs(outputs, watcher.outputs[0], server)
    finally:
        for shell in [*terminals.values(), *([watcher] if watcher else [])]:
            shell.close()
        server.stop()


def replaced(text, replacements):
    """``text`` with each README value put in the test's place; each must be there (README and test agree)."""
    for old, new in replacements.items():
        text = text.replace(old, new)
    return text


@pytest.mark.slow
@pytest.mark.postgres
def test_the_readme_postgres_quick_start_works_when_pasted(tmp_path):
    """Three terminals, as the README has them; the server and every command read only what the blocks export.

    On a role and database of the test's own (dropped after), a free port for
    8001, and PostgreSQL where the tests find it (127.0.0.1:5432 on CI).
    """
    require_postgres()
    for tool in ("psql", "createdb", "curl"):
        require_command(tool, "apt-get install postgresql-client curl")
    pg = make_url(postgres_url())
    name = f"sync_{secrets.token_hex(4)}"
    port = free_port()
    root = tmp_path / "root"
    root.mkdir()
    (root / ".venv").symlink_to(Path(sys.executable).parent.parent)
    for path in ("gunicorn.conf.py", "wsgi.py"):  # the repository root's, which gunicorn and flask look for
        (root / path).symlink_to(ROOT / path)
    env = python_environ({key: value for key, value in os.environ.items()
                          if key not in ("DATABASE_URL", "SECRET_KEY", "COMMUNITY_SYNC_URL")})
    replacements = {
        "CREATE ROLE sync LOGIN": f"CREATE ROLE {name} LOGIN",
        "--owner sync sync": f"--owner {name} {name}",
        "postgresql://sync:secret@127.0.0.1:5432/sync": f"postgresql://{name}:secret@{pg.host}:{pg.port or 5432}/{name}",
        "-h 127.0.0.1 -U postgres": f"-h {pg.host} -p {pg.port or 5432} -U {pg.username or 'postgres'}",
        "127.0.0.1:8001": f"127.0.0.1:{port}",
    }
    blocks = walkthrough_blocks("### On PostgreSQL", "\n### ")
    assert [terminal for terminal, _ in blocks] == [1, 2, 3]
    text = "".join(block for _, block in blocks)
    assert all(old in text for old in replacements), [old for old in replacements if old not in text]
    (server_block, watch_block, change_block) = [replaced(block, replacements) for _, block in blocks]
    server, watcher, changer = (Terminal(root, env) for _ in range(3))
    try:
        server.paste(server_block)
        assert wait_for(lambda: Server(env, log_path=tmp_path / "unused.log", port=port).ready(), 90), \
            "".join(server.current)
        watcher.paste(watch_block)
        assert wait_for(lambda: " snapshot " in "".join(watcher.current), 60), "".join(watcher.current)
        changer.paste(change_block)
        changer.wait()
        assert wait_for(lambda: "left c-rust" in "".join(watcher.current), 60), "".join(watcher.current)
        watcher.interrupt()
        server.interrupt()
    finally:
        for shell in (server, watcher, changer):
            shell.close()
        admin = ["-h", pg.host, "-p", str(pg.port or 5432), "-U", pg.username or "postgres", "-w"]
        subprocess.run(["dropdb", *admin, "--if-exists", name], capture_output=True, timeout=60)
        subprocess.run(["psql", *admin, "-d", "postgres", "-c", f"DROP ROLE IF EXISTS {name}"],
                       capture_output=True, timeout=60)
    watched = lines(watcher.outputs[0])
    assert "1 community: c-go (member)" in watched[0], watched
    assert any("joined c-rust as member" in line for line in watched), watched
    assert any("left c-rust" in line for line in watched), watched
    joined, deleted = lines(changer.outputs[0])
    assert json.loads(joined)["role"] == "member" and deleted == "DELETE 1"
    assert "Traceback" not in server.outputs[0] + watcher.outputs[0], server.outputs[0]


def lines(text):
    """The non-blank lines of a block's output (the ``; echo`` after each JSON body adds blank ones)."""
    return [line for line in text.splitlines() if line.strip()]


def check_outputs(outputs, watched, server):
    """The walkthrough's key outputs, in the order of its blocks (watch apart)."""
    (first, join, left_poll, sql_delete, activity_poll, publish, counts, mark_read, outbox,
     thread_poll, reply, votes_poll, votes, typing_poll, typing) = outputs
    snapshot_line, not_modified, poll_line = lines(first)
    snapshot = json.loads(snapshot_line)
    assert [c["id"] for c in snapshot["communities"]] == ["c-go"] and snapshot["user"]["name"] == "Alan Turing"
    assert not_modified == "304"
    joined = json.loads(poll_line)
    assert joined["status"] == "changed" and joined["added"] == ["c-rust"]
    assert [(c["type"], c["community_id"]) for c in joined["changes"]] == [("joined", "c-rust")]
    assert json.loads(join)["role"] == "member"

    left = json.loads(left_poll)
    assert left["status"] == "changed" and left["removed"] == ["c-rust"]
    assert [(c["type"], c["community_id"], c["by"]) for c in left["changes"]] == [("left", "c-rust", None)]
    assert sql_delete == ""

    published = json.loads(activity_poll)
    assert published["status"] == "changed"
    assert ("activity", "post_created", "p-42") in [(c["type"], c.get("kind"), c.get("ref"))
                                                    for c in published["changes"]]
    assert [json.loads(line)["ref"] for line in lines(publish)] == ["p-42", "p-42"]

    count_line, listing = lines(counts)
    assert json.loads(count_line) == {"unread": {"c-go": 1}, "notifications_unread": 1}
    assert [(n["kind"], n["ref"]) for n in json.loads(listing)["notifications"]] == [("mention", "p-42")]
    community_read, notifications_read = map(json.loads, lines(mark_read))
    assert community_read["unread"] == 0 and notifications_read == {"notifications_unread": 0}

    assert outbox == ""
    state = requests.get(server.url + "/me/communities", headers=bearer("u-alan"), timeout=10).json()
    assert {c["id"]: c["unread"] for c in state["communities"]} == {"c-go": 1}

    thread = json.loads(thread_poll)
    assert thread["status"] == "changed" and thread["hash"] == state["hash"]
    assert [(c["type"], c["community_id"], c["topic"], c["ref"], c["data"]) for c in thread["changes"]] == [
        ("activity", "c-python", "thread:t-1", "p-44", {"excerpt": "Agreed!"})]
    counted = json.loads(votes_poll)
    assert [(c["kind"], c["data"]) for c in counted["changes"]] == [("votes", {"votes": 2})]
    assert reply == votes == ""
    typed = json.loads(typing_poll)
    assert typed["status"] == "unchanged" and typed["hash"] == state["hash"]
    assert typed["typing"] == {"c-go/thread:t-1": [{"id": "u-ada", "name": "Ada Lovelace"}]}
    assert [json.loads(line)["role"] for line in lines(typing)] == ["member"]

    watched_lines = lines(watched)
    assert " snapshot " in watched_lines[0] and "1 community: c-go (member)" in watched_lines[0], watched
    for words in ("joined c-rust as member", "left c-rust", "activity post_created p-42 in c-go",
                  "notification mention p-42", "read c-go", "read notifications", "activity post_created p-43 in c-go"):
        assert any(words in line for line in watched_lines), (words, watched)
    assert "Traceback" not in watched


def test_the_readme_reset_of_the_demo_data_leaves_the_demo_data_alone(tmp_path):
    """The "Run it" section's reset: what was changed since is gone, the demo data is back."""
    import sqlite3

    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Run it\n", 1)[1].split("\n## ", 1)[0]
    (reset,) = [block for block in re.findall(r"```sh\n(.*?)```", section, re.S) if block.startswith("rm ")]
    root = tmp_path / "root"
    (root / "instance").mkdir(parents=True)
    (root / ".venv").symlink_to(Path(sys.executable).parent.parent)
    database = root / "instance" / "community-sync.sqlite3"
    env = python_environ({**os.environ, "DATABASE_URL": f"sqlite:///{database}", "SECRET_KEY": SECRET})
    flask(env, "seed-demo")
    with sqlite3.connect(database) as connection:
        demo = sorted(connection.execute("SELECT user_id, community_id, role FROM memberships"))
        connection.execute("INSERT INTO memberships (user_id, community_id, role) VALUES ('u-alan', 'c-rust', 'member')")
    subprocess.run(["bash", "-c", reset], cwd=root, env=env, check=True, capture_output=True, timeout=120)
    with sqlite3.connect(database) as connection:
        assert sorted(connection.execute("SELECT user_id, community_id, role FROM memberships")) == demo
