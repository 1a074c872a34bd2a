"""Faults around the store, seen from the command line, with real processes.

A second process holding the write lock, concurrent `crm tasks add`, a sync
killed by SIGKILL or stopped with Ctrl-C (SIGINT), and a store file that is
truncated, garbage, damaged in the middle or on a full disk.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.conftest import Maildir, make_mail, write_config

REPO = Path(__file__).resolve().parents[1]


def crm(config: Path, *args: str, timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "crm_bridge.cli", "--config", str(config), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def start(config: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "crm_bridge.cli", "--config", str(config), *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def fill(box: Maildir, n: int) -> None:
    base = datetime(2026, 3, 1, 8, tzinfo=timezone.utc)
    for i in range(n):
        box.add(make_mail(message_id=f"m{i}@kunde.example", subject=f"Angebot {i}",
                          body=f"Guten Tag, Nummer {i}. " + "Text " * 30, date=base + timedelta(minutes=i)))


@pytest.fixture
def office(tmp_path: Path):
    box = Maildir(tmp_path / "mail")
    config = write_config(tmp_path / "crm.toml", customers=(("Kunde GmbH", ["kunde.example"]),),
                          sources={"anna": {"type": "maildir", "path": str(box.root), "batch_size": 20,
                                            "owner": ["anna@nordlicht.example"]}},
                          store=str(tmp_path / "crm.db"))
    return config, box, tmp_path / "crm.db"


def one_line(text: str) -> None:
    assert "Traceback" not in text, text
    assert len(text.strip().splitlines()) == 1, text


# -- a second process holds the write lock ------------------------------------
HOLDER = textwrap.dedent("""
    import sqlite3, sys, time
    from crm_bridge.sync.lock import StoreLock
    lock = StoreLock(sys.argv[1]).__enter__()       # a sync's lock ...
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")                   # ... and its long write transaction
    conn.execute("INSERT INTO meta(key, value) VALUES ('holder', 'x')")
    print("ready", flush=True)
    time.sleep(60)
""")


def test_reads_need_no_write_lock_and_a_second_sync_exits_75(office):
    config, box, db = office
    fill(box, 5)
    assert crm(config, "sync").returncode == 0
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        started = time.monotonic()
        for args in (("search", "Angebot"), ("timeline", "Kunde GmbH"), ("status",), ("tasks", "list"),
                     ("customers", "list")):
            done = crm(config, *args, timeout=20)
            assert done.returncode == 0, (args, done.stderr)
            assert "locked" not in done.stderr
        assert "Angebot 4" in crm(config, "search", "Angebot").stdout
        second = crm(config, "sync", timeout=20)
        assert second.returncode == 75, second.stderr
        one_line(second.stderr)
        assert "another crm sync" in second.stderr
        assert time.monotonic() - started < 20  # nobody waited for the 30 s busy timeout
    finally:
        holder.kill()
        holder.wait()


# -- concurrent tasks add --------------------------------------------------------
N_ADD = 8
SAME_MOMENT = textwrap.dedent("""
    import sys, time
    import sqlite_utils
    from crm_bridge import cli
    import crm_bridge.crm_core.store, crm_bridge.sync.engine
    at = float(sys.argv[1])
    time.sleep(max(0.0, at - time.time()))
    cli.main(sys.argv[2:], prog_name="crm")
""")


def test_tasks_added_at_the_same_moment_are_all_kept(office):
    config, _box, _db = office
    assert crm(config, "status").returncode == 0  # the store exists
    at = time.time() + 3  # every process imports first, then all run the command at this moment
    procs = [subprocess.Popen([sys.executable, "-c", SAME_MOMENT, str(at), "--config", str(config), "tasks", "add",
                               "Call back", "--customer", "Kunde GmbH"], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(N_ADD)]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    ids = {out.strip() for out, _ in outputs}
    assert len(ids) == N_ADD and not any("None" in i for i in ids), ids
    tasks = json.loads(crm(config, "tasks", "list", "--json").stdout)
    assert len(tasks) == N_ADD
    assert len({t["uid"] for t in tasks}) == N_ADD


# -- killed and interrupted runs -------------------------------------------------
def status_of(config: Path, name: str = "anna") -> dict:
    done = crm(config, "status", "--json")
    assert done.returncode == 0, done.stderr
    return next(r for r in json.loads(done.stdout)["sources"] if r["name"] == name)


def test_a_killed_run_shows_as_interrupted_with_what_it_stored(office):
    config, box, db = office
    fill(box, 200)
    killed = crm(config, "sync", env={"CRM_FAULT_KILL_AFTER_COMMITS": "8", "CRM_PARALLEL_PULL": "0"})
    assert killed.returncode == -signal.SIGKILL
    row = status_of(config)
    assert row["run_status"] == "interrupted"
    assert row["last_stats"].get("added", 0) > 0, row
    assert row["items"] == row["last_stats"]["added"]  # not "never run, 0 items"
    text = crm(config, "status").stdout
    assert "anna (maildir): interrupted" in text and f"stored {row['last_stats']['added']} new" in text
    assert crm(config, "sync").returncode == 0
    row = status_of(config)
    assert row["run_status"] == "ok" and row["items"] == 200
    with sqlite3.connect(db) as conn:
        statuses = [r[0] for r in conn.execute("SELECT status FROM runs WHERE source='anna' ORDER BY id")]
    assert statuses == ["interrupted", "ok"]


@pytest.mark.parametrize("parallel", ["0", "1"])
def test_ctrl_c_exits_130_and_says_what_was_stored(office, parallel):
    config, box, db = office
    total = 6000  # enough that a busy machine or a quicker store still has the sync running at the first commits
    fill(box, total)
    proc = start(config, "sync", env={"CRM_PARALLEL_PULL": parallel})
    deadline = time.monotonic() + 60
    stored = 0
    while time.monotonic() < deadline and stored < 40:  # wait until a few batches are committed
        time.sleep(0.05)
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
                row = conn.execute("SELECT stats FROM runs ORDER BY id DESC LIMIT 1").fetchone()
            stored = json.loads(row[0]).get("added", 0) if row else 0
        except sqlite3.Error:
            pass
    assert proc.poll() is None, "the sync finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "interrupted" in line]
    assert len(lines) == 1 and "the next sync goes on from there" in lines[0], err
    reported = int(lines[0].split("interrupted: ")[1].split()[0])
    row = status_of(config)
    assert row["run_status"] == "interrupted"
    assert reported == row["last_stats"]["added"] == row["items"] > 0
    assert crm(config, "sync").returncode == 0
    assert status_of(config)["items"] == total


# -- a damaged store, a full disk ------------------------------------------------
def synced(office, n: int = 40) -> tuple[Path, Path]:
    config, box, db = office
    fill(box, n)
    assert crm(config, "sync").returncode == 0
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return config, db


def test_truncated_store_is_one_line(office):
    config, db = synced(office, 300)
    size = db.stat().st_size
    with open(db, "r+b") as f:
        f.truncate(size // 2)
    for args in (("status",), ("sync",), ("search", "Angebot")):
        done = crm(config, *args)
        assert done.returncode == 1, (args, done.stderr)
        one_line(done.stderr)
        assert str(db) in done.stderr and "backup" in done.stderr


def test_garbage_store_is_one_line(office):
    config, _box, db = office
    db.write_bytes(os.urandom(8192))
    for args in (("status",), ("sync",), ("timeline", "Kunde GmbH")):
        done = crm(config, *args)
        assert done.returncode == 1, (args, done.stderr)
        one_line(done.stderr)
        assert str(db) in done.stderr and "not a database" in done.stderr and "backup" in done.stderr


def test_page_damaged_in_the_middle_is_found_by_status(office):
    config, db = synced(office, 300)
    with sqlite3.connect(db) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name='interactions'").fetchone()[0]
    assert pages > 10
    assert root > 1
    with open(db, "r+b") as f:  # scribble over the root page of the interactions table, header included
        f.seek((root - 1) * page_size)
        f.write(b"\x0d\xff\xff" + b"\xff" * 200)
    done = crm(config, "status")
    assert done.returncode == 1
    one_line(done.stderr)
    assert "damaged" in done.stderr and "integrity_check" in done.stderr and str(db) in done.stderr
    # a sync with mail to store reads the damaged table (a no-change sync does not touch it)
    office[1].add(make_mail(sender="kim@kunde.example", message_id="after-damage@x"))
    done = crm(config, "sync")
    assert done.returncode == 1
    one_line(done.stderr)


@pytest.fixture
def small_disk(tmp_path: Path):
    """(folder, None) on a 16 MB tmpfs when we may mount one (CI runs as root); else (folder, "rlimit"):
    the sync then runs with RLIMIT_FSIZE, which SQLite sees as a failed write (EFBIG) instead of ENOSPC.
    CRM_TEST_FULL_DISK=rlimit chooses the second way where mounting works too."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True,
                          text=True) if os.geteuid() == 0 and shutil.which("mount") else None
    if done is None or done.returncode != 0 or os.environ.get("CRM_TEST_FULL_DISK") == "rlimit":
        if done is not None and done.returncode == 0:
            subprocess.run(["umount", "-l", str(mount)], check=False)
        yield mount, "rlimit"
        return
    try:
        yield mount, None
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_is_one_line_and_loses_nothing(office, small_disk):
    import resource

    config, box, _db = office
    disk, mode = small_disk
    db = disk / "crm.db"
    text = config.read_text().replace(str(office[2]), str(db))
    config.write_text(text)
    fill(box, 30)
    assert crm(config, "sync").returncode == 0
    before = json.loads(crm(config, "search", "Angebot", "--json").stdout or "[]")
    base = datetime(2026, 5, 1, tzinfo=timezone.utc)
    for i in range(600):  # bigger than what is left on the disk once it is filled
        box.add(make_mail(message_id=f"big{i}@kunde.example", subject=f"Wartung {i}", body="x " * 2000,
                          date=base + timedelta(minutes=i)))
    limit = None
    filler = disk / "filler"
    if mode is None:
        with open(filler, "wb") as f:  # leave a little room, so the store fills it
            try:
                while True:
                    f.write(b"\0" * 65536)
            except OSError:
                pass
        with open(filler, "r+b") as f:
            f.truncate(max(0, filler.stat().st_size - 300_000))
    else:
        cap = max(p.stat().st_size for p in disk.glob("crm.db*")) + 300_000
        limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (cap, resource.RLIM_INFINITY))  # noqa: E731
    done = subprocess.run([sys.executable, "-m", "crm_bridge.cli", "--config", str(config), "sync"], cwd=REPO,
                          capture_output=True, text=True, timeout=120, preexec_fn=limit)
    assert done.returncode == 1
    one_line(done.stderr)
    assert str(db) in done.stderr and "free" in done.stderr and "space" in done.stderr, done.stderr
    if mode is None:
        assert "no space left" in done.stderr
        filler.unlink()
    after = json.loads(crm(config, "search", "Angebot", "--json").stdout or "[]")
    assert len(after) == len(before) == 30
    assert crm(config, "sync").returncode == 0
    assert status_of(config)["items"] == 630


def test_two_tasks_added_while_the_store_is_busy_are_both_kept(tmp_path):
    """Two connections read the store while a third writes, then both add the same title in the same second."""
    import threading

    from crm_bridge.crm_core.store import Store

    db = tmp_path / "crm.db"
    Store(db).close()
    blocker = sqlite3.connect(db, isolation_level=None)
    while time.time() % 1 > 0.3:  # start early in a second: everything below happens within it
        time.sleep(0.05)
    blocker.execute("BEGIN IMMEDIATE")
    results: list = []

    def add() -> None:
        store = Store(db)  # its own connection, in its own thread
        try:
            results.append(store.add_task("Call back"))
        finally:
            store.close()

    threads = [threading.Thread(target=add) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.3)  # both are waiting for the write lock now
    blocker.execute("COMMIT")
    for t in threads:
        t.join(30)
    assert len(results) == 2 and None not in results and results[0] != results[1], results
    assert blocker.execute("SELECT COUNT(*) FROM tasks").fetchone()[0] == 2
