"""Mail stored as metadata only while it matched nothing gets its subject and
snippet once it is linked: through its thread (a reply in a later batch or
run) or by hand (`crm link`), as when a customer is added."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from crm_bridge.crm_core.store import Store
from tests.conftest import make_mail, write_config

REPO = Path(__file__).resolve().parents[1]
FIRST = dict(sender="Olaf <olaf@andere.example>", to="Anna <anna@nordlicht.example>", message_id="start@x",
             subject="Projekt Alpha", body="Wir planen den Umbau der Heizzentrale im Frühjahr.",
             date=datetime(2026, 9, 1, 9, 0, tzinfo=timezone.utc))
REPLY = dict(sender="Anna <anna@nordlicht.example>", to="Kim <kim@kunde.example>", cc="olaf@andere.example",
             message_id="reply@x", in_reply_to="start@x", references=["start@x"], subject="Re: Projekt Alpha",
             body="Kim, bitte schauen Sie sich das an.", date=datetime(2026, 9, 2, 9, 0, tzinfo=timezone.utc))


def first_mail(crm) -> dict:
    items = [i for i in crm.json("timeline", "Kunde GmbH", "--limit", "0") if i["message_id"] == "start@x"]
    assert len(items) == 1, items
    return items[0]


def rescan_pending(tmp_path: Path) -> bool:
    store = Store(tmp_path / "crm.db")
    try:
        return bool(store._one("SELECT rescan FROM sources WHERE name='anna'"))
    finally:
        store.close()


def test_reply_in_a_later_run_brings_in_the_subject_of_the_mail_it_links(crm_env, maildir, tmp_path):
    crm = crm_env()
    maildir.add(make_mail(**FIRST))
    crm("sync")
    assert crm.json("explain", "start@x")[0]["links"] == []  # nobody known: stored as metadata only
    maildir.add(make_mail(**REPLY))
    crm("sync")
    # linked through its thread in this run, its text unread so far: the next sync reads it again
    crm("sync")
    linked = first_mail(crm)
    assert linked["subject"] == "Projekt Alpha" and "Heizzentrale" in linked["snippet"]
    assert linked["reason"] == "thread"
    assert not rescan_pending(tmp_path)  # done: the next sync reads only what is new
    crm("sync")
    assert not rescan_pending(tmp_path)


def test_reply_in_a_later_batch_of_the_same_run(crm_env, maildir, tmp_path):
    crm = crm_env(sources={"anna": {"type": "maildir", "path": str(maildir.root), "owner": ["anna@nordlicht.example"],
                                    "batch_size": 1}})
    maildir.add(make_mail(**FIRST))
    for n in range(3):  # batches in between
        maildir.add(make_mail(sender="kim@kunde.example", message_id=f"other{n}@x", subject=f"Anderes {n}"))
    maildir.add(make_mail(**REPLY))
    crm("sync")
    assert first_mail(crm)["subject"] == "Projekt Alpha"  # the text read in batch 1 was still at hand
    assert not rescan_pending(tmp_path)  # so nothing is read twice


def test_a_reply_after_more_unmatched_mail_than_is_kept_at_hand(crm_env, maildir, tmp_path, monkeypatch):
    from crm_bridge.crm_core import ingest_mail

    monkeypatch.setattr(ingest_mail, "_HELD_MAX", 0)
    crm = crm_env(sources={"anna": {"type": "maildir", "path": str(maildir.root), "owner": ["anna@nordlicht.example"],
                                    "batch_size": 1}})
    maildir.add(make_mail(**FIRST))
    maildir.add(make_mail(**REPLY))
    crm("sync")  # the rescan asked for while the pull ran is due once it is complete
    assert rescan_pending(tmp_path)
    crm("sync")
    assert first_mail(crm)["subject"] == "Projekt Alpha"
    assert not rescan_pending(tmp_path)


def test_a_reply_in_the_same_batch_needs_no_second_read(crm_env, maildir, tmp_path):
    crm = crm_env()
    maildir.add(make_mail(**FIRST))
    maildir.add(make_mail(**REPLY))
    crm("sync")
    assert first_mail(crm)["subject"] == "Projekt Alpha"
    assert not rescan_pending(tmp_path)


def run_crm(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "crm_bridge.cli", "--config", str(tmp_path / "crm.toml"), *args], cwd=REPO,
                          capture_output=True, text=True, env={**os.environ, "CRM_CONFIG": ""}, timeout=120)
    assert done.returncode == 0, done
    return done


def test_crm_link_brings_in_subject_and_snippet_at_the_next_sync(tmp_path, maildir):
    write_config(tmp_path / "crm.toml", customers=(("Kunde GmbH", ["kunde.example"]),), store=str(tmp_path / "crm.db"),
                 sources={"anna": {"type": "maildir", "path": str(maildir.root), "owner": ["anna@nordlicht.example"]}})
    maildir.add(make_mail(**FIRST))
    run_crm(tmp_path, "sync")
    run_crm(tmp_path, "link", "start@x", "--customer", "Kunde GmbH")
    [item] = json.loads(run_crm(tmp_path, "timeline", "Kunde GmbH", "--json").stdout)
    assert item["subject"] is None and item["reason"] == "manual"
    run_crm(tmp_path, "sync")
    [item] = json.loads(run_crm(tmp_path, "timeline", "Kunde GmbH", "--json").stdout)
    assert item["subject"] == "Projekt Alpha" and "Heizzentrale" in item["snippet"]
    assert not rescan_pending(tmp_path)


def test_a_source_that_stores_metadata_only_is_not_read_again_for_nothing(crm_env, maildir, tmp_path):
    crm = crm_env(sources={"anna": {"type": "maildir", "path": str(maildir.root), "owner": ["anna@nordlicht.example"],
                                    "visibility": "metadata"}})
    maildir.add(make_mail(**FIRST))
    crm("sync")
    maildir.add(make_mail(**REPLY))
    crm("sync")
    assert first_mail(crm)["reason"] == "thread"
    assert not rescan_pending(tmp_path)  # a second read would bring in nothing
    crm("link", "start@x", "--customer", "Kunde GmbH")
    assert not rescan_pending(tmp_path)
