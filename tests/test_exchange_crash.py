"""`crm sync` of a 2,000-item Exchange mailbox killed with SIGKILL, then run again, ends as a clean run ends.

The emulator runs in the test process; `python -m crm_bridge.cli sync` runs as its own
process against it with small SyncFolderItems pages, so there are many
commit points.  It is killed after a random time, and right after a
sequence of commits (the store's ``CRM_FAULT_KILL_AFTER_COMMITS``); the
rerun must leave the store equal, table by table, to an uninterrupted run.
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
from tests.ews_emulator import EwsEmulator, populate

PW_ENV = "CRM_TEST_EWS_CRASH_PW"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ews-crash")
    emulator = EwsEmulator()
    emulator.store.add_user("svc-crm", "crash-pw", impersonation=True)
    emulator.store.add_user("anna", "anna-pw", mailbox="anna@stadtwerke-kunde.example")
    populate(emulator.store, "anna@stadtwerke-kunde.example", mails=1800, events=100, contacts=100)
    write_config(root / "crm.toml", internal=("stadtwerke-kunde.example",),
                 customers=(("Stadtwerke Lindenau GmbH", ["stadtwerke-lindenau.de"]),
                            ("Bauhaus Kramer KG", ["bauhaus-kramer.de"])),
                 sources={"anna": {"type": "exchange", "server": emulator.url, "allow_plaintext": True,
                                   "username": "svc-crm", "password_env": PW_ENV, "auth": "basic",
                                   "access": "impersonation", "mailbox": "anna@stadtwerke-kunde.example",
                                   "owner": ["anna@stadtwerke-kunde.example"], "page_size": 50}})
    with emulator:
        yield root


def start_sync(root: Path, kill_after_commits: int | None = None) -> subprocess.Popen:
    return crash_run.start_sync(root, kill_after_commits, env={PW_ENV: "crash-pw"})


def rerun_and_compare(root: Path, expected: dict, label: str) -> None:
    crash_run.sync_ok(root, env={PW_ENV: "crash-pw"})
    same_as(root, expected, label)


@pytest.mark.slow
def test_killed_exchange_sync_then_rerun_equals_clean_run(setup):
    reset(setup)
    began = time.monotonic()
    clean = start_sync(setup)
    _, err = clean.communicate(timeout=300)
    duration = time.monotonic() - began
    assert clean.returncode == 0, err
    expected = snapshot(setup)
    assert len(expected["interactions"]) >= 1900 and expected["links"]
    rerun_and_compare(setup, expected, "a second clean run")  # one run reaches the final state
    rng = random.Random(11)
    timed_kills = 0
    for run in range(4):
        reset(setup)
        proc = start_sync(setup)
        time.sleep(rng.uniform(0.2, duration))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            timed_kills += 1
        proc.communicate(timeout=300)
        rerun_and_compare(setup, expected, f"timed run {run}")
    killed = 0
    for commit in (1, 2, 3, 7, 13, 21, 34):  # the first pages of each folder and points across the mail
        reset(setup)
        proc = start_sync(setup, kill_after_commits=commit)
        proc.communicate(timeout=300)
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL
        killed += 1
        rerun_and_compare(setup, expected, f"killed after commit {commit}")
    assert killed >= 5 and timed_kills >= 2, (killed, timed_kills)
