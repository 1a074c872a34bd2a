"""A crash between a task's PUT and the local commit: the next sync must know the server copy as our
own write, not take it for the client's change (which would revert a CRM edit made after the crash).

The sync runs as its own process and is killed (SIGKILL) right after the connector's PUTs, before
their outcome is committed (``CRM_FAULT_KILL_AT=after-task-push``), against a real Radicale.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from crm_bridge.crm_core.store import Store
from tests.test_push import PW_ENV, setup, vtodos  # noqa: F401  (fixture)
from tests.dav_servers import radicale  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[1]


def killed_sync(crm, server) -> None:
    env = {**os.environ, PW_ENV: server.password, "CRM_FAULT_KILL_AT": "after-task-push"}
    done = subprocess.run([sys.executable, "-m", "crm_bridge.cli", "--config", str(crm.config), "sync"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr


def conflicts(tmp: Path) -> list:
    store = Store(tmp / "crm.db")
    try:
        return store.conn.execute("SELECT kind, item, resolution FROM conflicts").fetchall()
    finally:
        store.close()


@pytest.mark.parametrize("only", [None, "dav-book"], ids=["read-back", "push-412"])
def test_a_crm_edit_after_a_crash_between_put_and_commit_is_not_reverted(setup, only):
    """A full sync reads the tasks calendar before it pushes and meets our lost write there (the
    store's read-back); ``--source dav-book`` pushes without reading it, so the PUT meets it as a 412."""
    crm, server, tasks_url, _, tmp = setup
    crm("sync")
    crm("tasks", "add", "Angebot schicken", "--customer", "Kunde GmbH", "--due", "2026-12-24")
    crm("sync")
    task = next(t for t in crm.json("tasks", "list") if t["title"] == "Angebot schicken")
    crm("tasks", "edit", str(task["id"]), "--title", "Angebot schicken (zweite Fassung)")
    killed_sync(crm, server)  # the PUT of the second version happened, its record did not
    assert "Angebot schicken (zweite Fassung)" in {str(t["SUMMARY"]) for t in vtodos(server, tasks_url).values()}
    after_crash = next(t for t in crm.json("tasks", "list") if t["id"] == task["id"])
    assert after_crash["pushed_version"] < after_crash["version"]
    # the user edits the task again before the next sync
    crm("tasks", "edit", str(task["id"]), "--title", "Angebot schicken (dritte Fassung)", "--due", "2027-01-08")
    crm("sync", *(["--source", only] if only else []))
    now = next(t for t in crm.json("tasks", "list") if t["id"] == task["id"])
    assert now["title"] == "Angebot schicken (dritte Fassung)" and now["due"].startswith("2027-01-08")
    assert now["pushed_version"] == now["version"]
    titles = {str(t["SUMMARY"]): t for t in vtodos(server, tasks_url).values()}
    assert "Angebot schicken (dritte Fassung)" in titles and len(titles) == 2
    assert titles["Angebot schicken (dritte Fassung)"]["DUE"].dt.isoformat().startswith("2027-01-08")
    assert conflicts(tmp) == []  # our own write is no conflict
    crm("sync")
    assert next(t for t in crm.json("tasks", "list") if t["id"] == task["id"])["title"] == "Angebot schicken (dritte Fassung)"


def test_a_real_client_edit_after_the_crash_still_wins(setup):
    """The other side of the coin: what the client wrote is still the client's change."""
    from tests.test_push import client_edit

    crm, server, tasks_url, _, tmp = setup
    crm("sync")
    crm("tasks", "add", "Angebot schicken", "--customer", "Kunde GmbH")
    crm("sync")
    task = next(t for t in crm.json("tasks", "list") if t["title"] == "Angebot schicken")
    crm("tasks", "edit", str(task["id"]), "--title", "Angebot schicken (zweite Fassung)")
    killed_sync(crm, server)
    href = next(h for h, t in vtodos(server, tasks_url).items() if str(t["UID"]) == task["uid"])
    client_edit(server, href, summary="Vom Kunden umbenannt")
    crm("tasks", "edit", str(task["id"]), "--title", "Angebot schicken (dritte Fassung)")
    done = subprocess.run([sys.executable, "-m", "crm_bridge.cli", "--config", str(crm.config), "sync"], cwd=REPO,
                          env={**os.environ, PW_ENV: server.password}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (done.stdout + done.stderr).count("wins") == 1, (done.stdout, done.stderr)  # said once
    now = next(t for t in crm.json("tasks", "list") if t["id"] == task["id"])
    assert now["title"] == "Vom Kunden umbenannt"
    assert [c[2] for c in conflicts(tmp)] and all("client" in c[2] for c in conflicts(tmp))


def test_a_schema_1_store_gets_the_sent_digests_column(tmp_path):
    from crm_bridge.crm_core import store as store_module

    db = tmp_path / "old.db"
    old_schema = store_module.SCHEMA.replace(", sent_digests TEXT NOT NULL DEFAULT ''", "")
    assert old_schema != store_module.SCHEMA
    conn = sqlite3.connect(db, isolation_level=None)
    conn.executescript("BEGIN;" + old_schema + "INSERT INTO meta(key, value) VALUES ('schema_version', '1'); COMMIT;")
    conn.execute("INSERT INTO tasks(uid, title, created_at, updated_at) VALUES ('t1', 'Alt', 'x', 'x')")
    conn.close()
    store = Store(db)
    try:
        assert store.schema_version() == store_module.SCHEMA_VERSION >= 2
        assert store.conn.execute("SELECT title, sent_digests FROM tasks").fetchall() == [("Alt", "")]
        store_module.MIGRATIONS[2](store)  # idempotent
    finally:
        store.close()
