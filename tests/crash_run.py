"""`crm sync` as its own process, for the crash tests (tests/test_*crash.py):
started (and killed after N commits where asked), the store reset, snapshot
and compared with a clean run's."""

from __future__ import annotations

import os
import subprocess
import sys
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
