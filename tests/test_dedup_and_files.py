"""Deduplication across places, and the incremental file connectors."""

from __future__ import annotations

import mailbox
import os
import sqlite3
from pathlib import Path

from crm_bridge.crm_core.store import Store
from tests.conftest import CPYTHON_EMAIL_DATA, Crm, Maildir, make_mail, write_config

OWNER = ["anna@nordlicht.example"]
CUSTOMERS = (("Kunde GmbH", ["kunde.example"]),)


def counts(crm) -> dict:
    return crm.json("status")["counts"]


def test_same_mail_in_two_mailboxes_is_one_interaction_seen_twice(tmp_path):
    anna, jonas = Maildir(tmp_path / "anna"), Maildir(tmp_path / "jonas")
    raw = make_mail(sender="kim@kunde.example", to="anna@nordlicht.example, jonas@nordlicht.example", message_id="both@x")
    anna.add(raw)
    jonas.add(raw, flags="")
    crm = Crm(write_config(tmp_path / "crm.toml", customers=CUSTOMERS, sources={
        "anna": {"type": "maildir", "path": str(anna.root), "owner": OWNER},
        "jonas": {"type": "maildir", "path": str(jonas.root), "owner": ["jonas@nordlicht.example"]},
    }))
    crm("sync")
    rows = crm.json("explain", "both@x")
    assert len(rows) == 1
    assert sorted(p["source"] for p in rows[0]["seen_in"]) == ["anna", "jonas"]
    assert counts(crm)["mails"] == 1


def test_message_id_is_a_hint_not_a_key(crm_env, maildir):
    crm = crm_env()
    # two different mails sharing one Message-ID stay two
    maildir.add(make_mail(sender="kim@kunde.example", message_id="same@x", subject="Eins", body="erste"))
    maildir.add(make_mail(sender="kim@kunde.example", message_id="same@x", subject="Zwei", body="zweite"))
    # mails without a Message-ID still deduplicate on their content
    no_id = make_mail(sender="kim@kunde.example", subject="Ohne ID", body="ohne")
    maildir.add(no_id)
    maildir.add(no_id)
    crm("sync")
    assert sorted(i["subject"] for i in crm.json("timeline", "Kunde GmbH")) == ["Eins", "Ohne ID", "Zwei"]


def test_rerun_adds_nothing_and_move_between_folders_keeps_one_interaction(crm_env, maildir):
    crm = crm_env()
    path = maildir.add(make_mail(sender="kim@kunde.example", message_id="move@x"))
    crm("sync")
    before = counts(crm)
    crm("sync")
    assert counts(crm) == before
    archive = maildir.root / ".Archiv" / "cur"
    archive.mkdir(parents=True)
    (maildir.root / ".Archiv" / "new").mkdir()
    os.rename(path, archive / path.name)
    crm("sync")
    assert counts(crm) == before
    places = crm.json("explain", "move@x")[0]["seen_in"]
    assert {(p["scope"], p["gone"]) for p in places} == {("INBOX", True), ("Archiv", False)}
    item = crm.json("timeline", "Kunde GmbH")[0]
    assert item["deleted"] == 0


def test_a_mail_stored_by_an_older_snippet_rule_is_found_again_when_it_moves(crm_env, maildir):
    """A newer crm-bridge that reads a mail's text differently (reply quoting, HTML heads) gives it another
    content hash: seen again at a new place, it is still the one stored interaction."""
    crm = crm_env()
    path = maildir.add(make_mail(sender="kim@kunde.example", message_id="older@x", subject="Re: Angebot"))
    other = maildir.add(make_mail(sender="kim@kunde.example", message_id="older@x", subject="Ein anderes Thema"))
    crm("sync")
    before = counts(crm)
    assert before["mails"] == 2  # one Message-ID, two subjects: two mails
    db = crm.json("status")["store"]
    with sqlite3.connect(db) as conn:  # the keys an older snippet rule made
        conn.execute("UPDATE interactions SET dedup_key = 'm:older-' || id")
    archive = maildir.root / ".Archiv"
    for sub in ("cur", "new", "tmp"):
        (archive / sub).mkdir(parents=True)
    os.rename(path, archive / "cur" / path.name)
    os.rename(other, archive / "cur" / other.name)
    crm("sync")
    assert counts(crm) == before
    items = crm.json("timeline", "Kunde GmbH")
    assert sorted(i["subject"] for i in items) == ["Ein anderes Thema", "Re: Angebot"]
    assert all(i["deleted"] == 0 for i in items)


def test_deleted_mail_is_marked_not_erased(crm_env, maildir):
    crm = crm_env()
    keep = maildir.add(make_mail(sender="kim@kunde.example", message_id="keep@x", subject="bleibt"))
    gone = maildir.add(make_mail(sender="kim@kunde.example", message_id="gone@x", subject="weg"))
    crm("sync")
    gone.unlink()
    crm("sync")
    items = {i["subject"]: i["deleted"] for i in crm.json("timeline", "Kunde GmbH")}
    assert items == {"bleibt": 0, "weg": 1}
    assert keep.exists()


def test_folder_that_lists_empty_removes_nothing(crm_env, maildir):
    crm = crm_env()
    paths = [maildir.add(make_mail(sender="kim@kunde.example", message_id=f"e{i}@x", subject=f"s{i}")) for i in range(3)]
    crm("sync")
    for p in paths:
        p.unlink()
    result = crm("sync")
    assert "lists empty" in result.output
    assert all(i["deleted"] == 0 for i in crm.json("timeline", "Kunde GmbH"))


def test_unchanged_maildir_file_is_not_read_again_and_flags_are_cheap(tmp_path, crm_env, maildir):
    crm = crm_env()
    path = maildir.add(make_mail(sender="kim@kunde.example", message_id="flag@x", subject="Original"), flags="")
    crm("sync")
    # rewrite the content behind the same name: an unchanged listing means no read
    path.write_bytes(make_mail(sender="kim@kunde.example", message_id="flag@x", subject="Anders"))
    crm("sync")
    assert [i["subject"] for i in crm.json("timeline", "Kunde GmbH")] == ["Original"]
    # a flag change renames the file: a flag update, not a new interaction
    os.rename(path, str(path).rsplit(":", 1)[0] + ":2,RS")
    assert crm.json("sync")["results"][0]["updated"] == 1
    assert crm.json("sync")["results"][0]["updated"] == 0  # the new flags are remembered
    store = Store(tmp_path / "crm.db")
    flags = store.conn.execute("SELECT flags FROM locations WHERE kind='interaction'").fetchall()
    assert flags == [("\\Answered \\Seen",)]
    assert counts(crm)["mails"] == 1


def test_mbox_is_read_incrementally(tmp_path):
    box_path = tmp_path / "archive.mbox"
    box = mailbox.mbox(box_path)
    box.add(make_mail(sender="kim@kunde.example", message_id="mb1@x", subject="eins", body="From the start\nline"))
    box.flush()
    crm = Crm(write_config(tmp_path / "crm.toml", customers=CUSTOMERS,
                           sources={"arch": {"type": "mbox", "path": str(box_path), "owner": OWNER}}))
    crm("sync")
    box.add(make_mail(sender="kim@kunde.example", message_id="mb2@x", subject="zwei"))
    box.flush()
    result = crm.json("sync")
    assert result["results"][0]["added"] == 1
    assert sorted(i["subject"] for i in crm.json("timeline", "Kunde GmbH")) == ["eins", "zwei"]
    snippet = [i["snippet"] for i in crm.json("timeline", "Kunde GmbH") if i["subject"] == "eins"][0]
    assert snippet == "From the start line"  # the mboxrd quoting of "From " is undone
    again = crm.json("sync")
    assert again["results"][0]["added"] == 0


def test_eml_folder(tmp_path):
    folder = tmp_path / "eml"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.eml").write_bytes(make_mail(sender="kim@kunde.example", message_id="eml1@x", subject="A"))
    (folder / "sub" / "b.eml").write_bytes(make_mail(sender="kim@kunde.example", message_id="eml2@x", subject="B"))
    crm = Crm(write_config(tmp_path / "crm.toml", customers=CUSTOMERS,
                           sources={"files": {"type": "eml", "path": str(folder), "owner": OWNER}}))
    crm("sync")
    assert sorted(i["subject"] for i in crm.json("timeline", "Kunde GmbH")) == ["A", "B"]
    assert crm.json("sync")["results"][0]["added"] == 0


def _cpython_messages() -> list[Path]:
    files = sorted(CPYTHON_EMAIL_DATA.glob("msg_*.txt"))
    assert len(files) > 40, f"CPython's email test data not found in {CPYTHON_EMAIL_DATA}"
    return files


def test_every_cpython_test_message_is_stored_or_quarantined(tmp_path):
    files = _cpython_messages()
    folder = tmp_path / "eml"
    folder.mkdir()
    box = mailbox.mbox(tmp_path / "all.mbox")
    for f in files:
        (folder / (f.stem + ".eml")).write_bytes(f.read_bytes())
        box.add(f.read_bytes())
    box.flush()
    crm = Crm(write_config(tmp_path / "crm.toml", internal=("python.org",), customers=(("ZZZ", ["zzz.org"]),),
                           linking={"unmatched": "keep"}, sources={
                               "eml": {"type": "eml", "path": str(folder)},
                               "mbox": {"type": "mbox", "path": str(tmp_path / "all.mbox")},
                           }))
    result = crm.json("sync")
    for source in result["results"]:
        assert source["status"] == "ok", source
        handled = source["added"] + source["updated"] + source["seen"] + source["skipped"] + source["quarantined"]
        assert handled == len(files), source
    quarantined = crm.json("quarantine", "list")
    assert quarantined and all(q["reason"] for q in quarantined)
    store = Store(tmp_path / "crm.db")
    # every file is accounted for: stored, not logged (with the reason), or quarantined (with the reason)
    for source in ("eml", "mbox"):
        kinds = dict(store.conn.execute(
            "SELECT kind, COUNT(*) FROM locations WHERE source=? GROUP BY kind", (source,)).fetchall())
        assert sum(kinds.values()) == len(files)
        held = store.conn.execute("SELECT COUNT(*) FROM quarantine WHERE source=?", (source,)).fetchone()[0]
        assert held == kinds["quarantined"] > 0
    # a broken item that did not change is not read again
    again = crm.json("sync")["results"]
    assert all(r["quarantined"] == 0 for r in again)


def test_broken_item_is_quarantined_and_the_run_goes_on(crm_env, maildir):
    crm = crm_env()
    bad = maildir.root / "cur" / "999.broken:2,S"
    bad.write_bytes(b"\x00\x01\x02 this is not a mail at all \xff\xfe")
    maildir.add(make_mail(sender="kim@kunde.example", message_id="good@x"))
    result = crm.json("sync")["results"][0]
    assert result["quarantined"] == 1 and result["added"] == 1 and result["status"] == "ok"
    [entry] = crm.json("quarantine", "list")
    assert entry["local_id"] == "999.broken" and "header" in entry["reason"]


def _sync_peak_rss_mb(config: Path) -> float:
    """Peak RSS of a `crm sync` process, from its own /proc/self/status (VmHWM).

    The rusage of a child also counts the memory of the parent it was forked
    from, so the child reports its own high-water mark when it ends.
    """
    import subprocess
    import sys

    probe = (
        "import re\n"
        "from crm_bridge import cli\n"  # main, not the command's quick exit (cli.run): this process goes on
        "try:\n"
        f"    cli.main(['--config', {str(config)!r}, 'sync'], prog_name='crm')\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "status = open('/proc/self/status').read()\n"
        "print('VmHWM', re.search(r'VmHWM:\\s+(\\d+) kB', status).group(1))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split("VmHWM")[-1]) / 1024


def test_huge_attachment_is_not_read_whole(tmp_path):
    """A 30 MB attachment: the mail is stored with its text, and only the start of the file is read."""
    import base64

    owner = ["anna@nordlicht.example"]
    small, big = Maildir(tmp_path / "small"), Maildir(tmp_path / "big")
    small.add(make_mail(sender="kim@kunde.example", message_id="small@x"))
    boundary = "b0undary"
    raw = (
        "From: Kim <kim@kunde.example>\r\nTo: anna@nordlicht.example\r\nSubject: Pläne\r\n"
        "Message-ID: <huge@x>\r\nDate: Thu, 01 Oct 2026 09:30:00 +0000\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
        f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nAnbei die Pläne.\r\n"
        f"--{boundary}\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
        'Content-Disposition: attachment; filename="plan.pdf"\r\n\r\n'
    ).encode() + base64.encodebytes(os.urandom(22 * 1024 * 1024)) + f"\r\n--{boundary}--\r\n".encode()
    big.add(raw)
    box = mailbox.mbox(tmp_path / "big.mbox")
    box.add(raw)
    box.flush()
    size_mb = len(raw) / 1024 / 1024
    del raw
    baseline = _sync_peak_rss_mb(write_config(tmp_path / "small.toml", store="small.db", customers=CUSTOMERS,
                                              sources={"s": {"type": "maildir", "path": str(small.root)}}))
    config = write_config(tmp_path / "crm.toml", customers=CUSTOMERS, sources={
        "anna": {"type": "maildir", "path": str(big.root), "owner": owner},
        "archive": {"type": "mbox", "path": str(tmp_path / "big.mbox"), "owner": owner},
    })
    peak = _sync_peak_rss_mb(config)
    assert peak - baseline < size_mb / 2, (baseline, peak, size_mb)
    crm = Crm(config)
    [item] = crm.json("timeline", "Kunde GmbH")
    assert item["subject"] == "Pläne" and item["snippet"] == "Anbei die Pläne."
    assert len(crm.json("explain", "huge@x")[0]["seen_in"]) == 2  # one interaction, both places
    store = Store(tmp_path / "crm.db")
    assert store.conn.execute("SELECT has_attachments FROM interactions").fetchone() == (1,)
