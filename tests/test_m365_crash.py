"""`crm sync` of a 2,000-item Microsoft 365 mailbox killed with SIGKILL, then run again, ends as a clean run ends.

The Graph emulator runs in the test process; `python -m crm_bridge.cli sync`
runs as its own process against it with small delta pages (many commit
points).  It is killed after a random time and right after a number of
commits (``CRM_FAULT_KILL_AFTER_COMMITS``); the rerun must leave the store
equal, table by table, to an uninterrupted run.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests import crash_run
from tests.conftest import write_config
from tests.crash_run import reset, same_as, snapshot
from tests.graph_emulator import GraphEmulator, populate

SECRET_ENV = "CRM_TEST_M365_CRASH_SECRET"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("m365-crash")
    emulator = GraphEmulator()
    emulator.add_app("crash-app", "crash-secret")
    mb = emulator.store.add_mailbox("anna@stadtwerke-kunde.example", "Anna")
    populate(mb, mails=1800, events=100, contacts=100)
    with emulator:
        write_config(root / "crm.toml", internal=("stadtwerke-kunde.example",),
                     customers=(("Kunde Null GmbH", ["kunde0.example"]), ("Kunde Drei KG", ["kunde3.example"])),
                     sources={"anna": {"type": "m365", "tenant": emulator.tenant, "client_id": "crash-app",
                                       "client_secret_env": SECRET_ENV, "authority": emulator.authority,
                                       "graph_url": emulator.graph_url, "ca_file": str(emulator.ca_file),
                                       "mailbox": "anna@stadtwerke-kunde.example",
                                       "owner": ["anna@stadtwerke-kunde.example"], "page_size": 50}})
        yield root


def start_sync(root: Path, kill_after_commits: int | None = None) -> subprocess.Popen:
    return crash_run.start_sync(root, kill_after_commits, env={SECRET_ENV: "crash-secret"})


def rerun_and_compare(root: Path, expected: dict, label: str) -> None:
    crash_run.sync_ok(root, env={SECRET_ENV: "crash-secret"})
    same_as(root, expected, label)


@pytest.mark.slow
def test_killed_m365_sync_then_rerun_equals_clean_run(setup):
    reset(setup)
    began = time.monotonic()
    clean = start_sync(setup)
    _, err = clean.communicate(timeout=300)
    duration = time.monotonic() - began
    assert clean.returncode == 0, err
    expected = snapshot(setup)
    assert len(expected["interactions"]) >= 1900 and expected["links"]
    rerun_and_compare(setup, expected, "a second clean run")
    rng = random.Random(12)
    timed_kills = 0
    for run in range(3):
        reset(setup)
        proc = start_sync(setup)
        time.sleep(rng.uniform(0.2, duration))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            timed_kills += 1
        proc.communicate(timeout=300)
        rerun_and_compare(setup, expected, f"timed run {run}")
    killed = 0
    for commit in (1, 2, 5, 13, 30):
        reset(setup)
        proc = start_sync(setup, kill_after_commits=commit)
        proc.communicate(timeout=300)
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL
        killed += 1
        rerun_and_compare(setup, expected, f"killed after commit {commit}")
    assert killed >= 4 and timed_kills >= 1, (killed, timed_kills)
