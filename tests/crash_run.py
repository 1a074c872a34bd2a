"""`crm sync` as its own process, for the crash tests (tests/test_*crash.py):
started (and killed after N commits where asked), the store reset, snapshot
and compared with a clean run's."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping

from crm_bridge.crm_core.store import Store

REPO = Path(__file__).resolve().parents[1]


def start_sync(root: Path, kill_after_commits: int | None = None,
               env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """``crm sync`` on ``root/crm.toml``; SIGKILLed by itself after that many commits, if given."""
    full = dict(os.environ, **(env or {}))
    full.pop("CRM_FAULT_KILL_AFTER_COMMITS", None)
    if kill_after_commits:
        full["CRM_FAULT_KILL_AFTER_COMMITS"] = str(kill_after_commits)
    return subprocess.Popen([sys.executable, "-m", "crm_bridge.cli", "--config", str(root / "crm.toml"), "sync"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=full)


def sync_ok(root: Path, env: Mapping[str, str] | None = None) -> None:
    proc = start_sync(root, env=env)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err


def reset(root: Path) -> None:
    for f in root.glob("crm.db*"):
        f.unlink()


def snapshot(root: Path) -> dict:
    store = Store(root / "crm.db")
    try:
        return store.snapshot()
    finally:
        store.close()


def same_as(root: Path, expected: dict, label: str) -> None:
    got = snapshot(root)
    for table in expected:
        assert got[table] == expected[table], f"{label}: table {table} differs from a clean run"


def kill_and_rerun(root: Path, env: Mapping[str, str], *, seed: int, timed_runs: int,
                   commits: tuple[int, ...]) -> tuple[dict, int, int]:
    """A clean run, then runs SIGKILLed at random times and right after the given commits,
    each followed by a rerun that must leave the store equal to the clean run's.

    Returns the clean run's snapshot, how many runs a commit kill ended, and how
    many a timed kill ended (a run may finish before its time comes)."""
    reset(root)
    began = time.monotonic()
    sync_ok(root, env)
    duration = time.monotonic() - began
    expected = snapshot(root)
    sync_ok(root, env)  # one run reaches the final state
    same_as(root, expected, "a second clean run")
    rng = random.Random(seed)
    timed_kills = 0
    extra = 3  # a run that ends before its kill time (later runs can be quicker than the first: caches, a
    # cached token) is followed by one more with a shorter time, so that the timed kills are not left to luck
    run = 0
    while run < timed_runs + extra and (run < timed_runs or not timed_kills):
        reset(root)
        proc = start_sync(root, env=env)
        time.sleep(rng.uniform(min(0.2, duration / 4), duration))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            timed_kills += 1
        else:
            duration /= 2
        proc.communicate(timeout=300)
        sync_ok(root, env)
        same_as(root, expected, f"timed run {run}")
        run += 1
    killed = 0
    for commit in commits:
        reset(root)
        proc = start_sync(root, kill_after_commits=commit, env=env)
        proc.communicate(timeout=300)
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL
        killed += 1
        sync_ok(root, env)
        same_as(root, expected, f"killed after commit {commit}")
    return expected, killed, timed_kills
