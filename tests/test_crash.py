"""A sync killed at any point, then run again, ends exactly where a clean run ends.

The sync runs as its own process (`python -m crm_bridge.cli sync`) over the demo data plus
generated mail, in small batches so there are many commit points, and is killed
with SIGKILL: ten runs after a random delay, then one run killed right after
each commit in turn (the store's fault-injection switch
``CRM_FAULT_KILL_AFTER_COMMITS``), so every commit point is covered.  The rerun must leave the store equal, table
by table and by natural keys, to a run that was never interrupted.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from crm_bridge.crm_core.store import Store
from tests.conftest import Maildir, make_mail
from tests.crash_run import reset, same_as, snapshot, start_sync

REPO = Path(__file__).resolve().parents[1]
TIMED_RUNS = 10


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("crash")
    shutil.copytree(REPO / "examples" / "mail", root / "mail")
    shutil.copy2(REPO / "examples" / "calendar.ics", root / "calendar.ics")
    shutil.copy2(REPO / "examples" / "contacts.vcf", root / "contacts.vcf")
    box = Maildir(root / "mail")
    rng = random.Random(7)
    start = datetime(2026, 6, 1, 8, tzinfo=timezone.utc)
    for n in range(400):
        customer = rng.choice(["stadtwerke-lindenau.de", "hotel-seeblick.example", "wbg-eichenhof.de", "gmx.de"])
        parent = f"gen{rng.randrange(n)}@crash.test" if n and rng.random() < 0.4 else None
        box.add(make_mail(
            sender=f"Person {n % 97} <p{n % 97}@{customer}>", message_id=f"gen{n}@crash.test", in_reply_to=parent,
            subject=f"{'Re: ' if parent else ''}Vorgang {n // 3}", body=f"Text {n} " + "lorem ipsum " * rng.randrange(5, 60),
            date=start + timedelta(minutes=37 * n),
        ), flags=rng.choice(["", "S", "RS"]))
    # stable directory mtimes, so the Maildir cursors of all runs agree
    old = time.time() - 3600
    for dirpath, dirnames, _ in os.walk(root / "mail"):
        os.utime(dirpath, (old, old))
    for f in ("calendar.ics", "contacts.vcf"):
        os.utime(root / f, (old, old))
    config = (REPO / "config.example.toml").read_text(encoding="utf-8")
    config = config.replace('path = "examples/mail"', 'path = "mail"').replace(
        'path = "examples/calendar.ics"', 'path = "calendar.ics"').replace(
        'path = "examples/contacts.vcf"', 'path = "contacts.vcf"')
    config = config.replace('[sources.anna-mail]\n', '[sources.anna-mail]\nbatch_size = 30\n')
    (root / "crm.toml").write_text(config, encoding="utf-8")
    return root


@pytest.mark.slow
def test_killed_sync_then_rerun_equals_clean_run(workdir):
    reset(workdir)
    began = time.monotonic()
    clean = start_sync(workdir)
    _, err = clean.communicate(timeout=300)
    duration = time.monotonic() - began
    assert clean.returncode == 0, err
    settle(workdir)
    expected = snapshot(workdir)
    assert len(expected["interactions"]) > 500 and expected["tasks"] and expected["links"]

    rng = random.Random(2026)
    runs = 0
    timed_kills = 0
    for run in range(TIMED_RUNS):
        # killed by a signal from outside after a random time
        reset(workdir)
        proc = start_sync(workdir)
        time.sleep(rng.uniform(0.0, duration))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            timed_kills += 1
        proc.communicate(timeout=300)
        rerun_and_compare(workdir, expected, f"timed run {run}")
        runs += 1
    # killed right after each commit in turn: every point where a cursor and its data must agree
    commit = 0
    while True:
        commit += 1
        assert commit < 500, "the sync never finished"
        reset(workdir)
        proc = start_sync(workdir, kill_after_commits=commit)
        proc.communicate(timeout=300)
        if proc.returncode == 0:
            break  # more commits asked for than the sync makes: it ran to the end
        assert proc.returncode == -signal.SIGKILL
        rerun_and_compare(workdir, expected, f"killed after commit {commit}")
        runs += 1
    assert commit > 20, f"only {commit - 1} commit points: too few batches to test"
    assert runs >= 20 and timed_kills >= TIMED_RUNS // 2, (runs, timed_kills)


def settle(root: Path) -> None:
    """Run the rescan a sync asked for, if any: mail stored as metadata only and
    linked through a reply in a later batch gets its subject then, and where the
    batches of a killed run and its rerun fall decides which mails those are."""
    store = Store(root / "crm.db")
    try:
        pending = store._one("SELECT COUNT(*) FROM sources WHERE rescan != 0")
    finally:
        store.close()
    if pending:
        proc = start_sync(root)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err


def rerun_and_compare(workdir: Path, expected: dict, label: str) -> None:
    rerun = start_sync(workdir)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    settle(workdir)
    same_as(workdir, expected, label)
