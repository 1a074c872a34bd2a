"""Mail the store keeps as metadata only, known from its header, gets no text fetched (issue 9); once it is
linked (a customer's reply in its thread, `crm link`, a new customer) the next sync fetches exactly its UIDs'
text (crm_core.rereads), not the whole folder, and what is stored then is what a read of the mail gives."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from crm_bridge.connectors.mailparse import parse_message
from crm_bridge.crm_core.records import Location
from crm_bridge.crm_core.store import Store
from tests.conftest import make_mail, write_config
from tests.imap_server import dovecot  # noqa: F401  (fixture)
from tests.test_imap_fetch import _body_fetches, sync_in_process
from tests.test_imap_fetch import sent  # noqa: F401  (fixture: the UID FETCHes the connector sends)

OWNER = "anna@nordlicht.example"
FIRST = make_mail(sender="Olaf <olaf@andere.example>", to="Anna <anna@nordlicht.example>", message_id="start@x",
                  subject="Projekt Alpha", body="Wir planen den Umbau der Heizzentrale im Frühjahr.\n" * 5,
                  date=datetime(2026, 9, 1, 9, 0, tzinfo=timezone.utc))
REPLY = make_mail(sender="Kim <kim@kunde.example>", to="Anna <anna@nordlicht.example>", cc="olaf@andere.example",
                  message_id="reply@x", in_reply_to="start@x", references=["start@x"], subject="Re: Projekt Alpha",
                  body="Kim, bitte schauen Sie sich das an.", date=datetime(2026, 9, 2, 9, 0, tzinfo=timezone.utc))
ATTACHED = (b"From: Olaf <olaf@andere.example>\nTo: Anna <anna@nordlicht.example>\nSubject: Plaene\n"
            b"Date: Wed, 02 Sep 2026 10:00:00 +0000\nMessage-ID: <plans@x>\nMIME-Version: 1.0\n"
            b"Content-Type: multipart/mixed; boundary=\"b1\"\n\n--b1\nContent-Type: text/plain; charset=utf-8\n\n"
            b"Anbei die Plaene fuer den Umbau, bitte pruefen.\n--b1\nContent-Type: application/pdf\n"
            b"Content-Disposition: attachment; filename=\"plan.pdf\"\nContent-Transfer-Encoding: base64\n\n"
            b"JVBERi0xLjQK\n--b1--\n")
OTHER = make_mail(sender="Pia <pia@woanders.example>", to="Anna <anna@nordlicht.example>", message_id="other@x",
                  subject="Etwas anderes", body="Hat mit nichts zu tun.")


def _texts(log) -> set[int]:
    """UIDs whose text (a body section) was fetched."""
    return {uid for uids, items in log if "BODY.PEEK[1]" in items or "BODY.PEEK[]" in items for uid in uids}


def _sources(server) -> dict:
    os.environ["CRM_TEST_IMAP_ALICE"] = server.users["alice"]
    return {"alice-imap": {"type": "imap", "host": "127.0.0.1", "port": server.port, "tls": "none",
                           "allow_plaintext": True, "username": "alice", "password_env": "CRM_TEST_IMAP_ALICE",
                           "folders": ["INBOX"], "owner": [OWNER]}}


def _sync(server, tmp_path: Path, customers=(("Kunde", ["kunde.example"]),), db: str = "crm.db"):
    return sync_in_process(tmp_path, _sources(server), customers, db)


def _row(tmp_path: Path, mid: str, db: str = "crm.db") -> tuple:
    conn = sqlite3.connect(tmp_path / db)
    try:
        return conn.execute("SELECT subject, snippet, visibility, has_attachments FROM interactions WHERE message_id=?",
                            (mid,)).fetchone()
    finally:
        conn.close()


def _as_read(raw: bytes) -> tuple:
    """Subject, snippet and attachments as a read of the whole mail gives them (the file path)."""
    rec = parse_message(raw, Location("INBOX", "x"))
    return rec.subject, rec.snippet, "snippet", int(rec.has_attachments)


def _wanted(tmp_path: Path) -> list[tuple]:
    """The locations the store asks the next sync to read (crm_core.rereads)."""
    store = Store(tmp_path / "crm.db")
    try:
        return [(loc.scope, loc.local_id) for loc in store.wanted_texts("alice-imap")]
    finally:
        store.close()


def _rescan_pending(tmp_path: Path) -> int:
    conn = sqlite3.connect(tmp_path / "crm.db")
    try:
        return conn.execute("SELECT rescan FROM sources WHERE name='alice-imap'").fetchone()[0]
    finally:
        conn.close()


def test_unlinked_mail_gets_no_text_and_a_reply_from_a_customer_brings_it_by_uid(dovecot, tmp_path, sent):
    first, attached, other = dovecot.append("alice", "INBOX", [FIRST, ATTACHED, OTHER])
    _sync(dovecot, tmp_path)
    assert _texts(sent) == set()  # nobody known in any of them: metadata only, no text asked for
    assert any(attached in uids and items == "BODYSTRUCTURE" for uids, items in sent)  # attachments still known
    assert _row(tmp_path, "start@x") == (None, None, "metadata", 0)
    assert _row(tmp_path, "plans@x") == (None, None, "metadata", 1)

    [reply] = dovecot.append("alice", "INBOX", REPLY)
    sent.clear()
    _sync(dovecot, tmp_path)
    assert _texts(sent) == {reply}  # the customer's reply; the mail it answers is linked by its thread
    assert _row(tmp_path, "start@x")[:3] == (None, None, "metadata")  # linked now, its text not read yet
    assert not _rescan_pending(tmp_path)  # no folder rescan: the one mail is asked for by name
    assert _wanted(tmp_path) == [("INBOX", f"{dovecot.uidvalidity('alice')}:{first}")]

    sent.clear()
    _sync(dovecot, tmp_path)
    assert {uid for uids, _items in sent for uid in uids} == {first}  # exactly that UID, nothing else
    assert _texts(sent) == {first}
    assert _row(tmp_path, "start@x") == _as_read(FIRST)
    assert _row(tmp_path, "plans@x") == (None, None, "metadata", 1)  # still unlinked: still no text

    sent.clear()
    _sync(dovecot, tmp_path)
    assert sent == []  # nothing fetched twice
    assert _row(tmp_path, "start@x") == _as_read(FIRST)


def test_a_reply_in_a_later_batch_of_the_same_sync_shows_the_subject_until_the_text_is_read(dovecot, tmp_path, sent):
    first, other, reply = dovecot.append("alice", "INBOX", [FIRST, OTHER, REPLY])
    config = _sources(dovecot)
    config["alice-imap"]["batch_size"] = 1
    sync_in_process(tmp_path, config)
    assert _texts(sent) == {reply}
    assert _row(tmp_path, "start@x") == ("Projekt Alpha", None, "subject", 0)  # the header's subject; no snippet unread
    sent.clear()
    sync_in_process(tmp_path, config)
    assert _texts(sent) == {first}
    assert _row(tmp_path, "start@x") == _as_read(FIRST)
    assert _wanted(tmp_path) == [] and not _rescan_pending(tmp_path)


def test_a_manual_link_and_a_new_customer_fetch_exactly_those_mails(dovecot, tmp_path, sent):
    first, attached, other = dovecot.append("alice", "INBOX", [FIRST, ATTACHED, OTHER])
    _sync(dovecot, tmp_path)
    store = Store(tmp_path / "crm.db")
    try:
        customer = store._one("SELECT id FROM customers WHERE name='Kunde'")
        iid = store._one("SELECT id FROM interactions WHERE message_id='other@x'")
        store.set_link(iid, "customer", customer, "link")  # `crm link`
    finally:
        store.close()
    sent.clear()
    _sync(dovecot, tmp_path)
    assert _texts(sent) == {other}
    assert _row(tmp_path, "other@x") == _as_read(OTHER)

    # a customer with olaf's domain: both of his mails link, their text is read at the next sync
    sent.clear()
    _sync(dovecot, tmp_path, customers=(("Kunde", ["kunde.example"]), ("Andere", ["andere.example"])))
    assert _texts(sent) == {first, attached}  # read in the same sync: the customer comes before the pull
    assert _row(tmp_path, "start@x") == _as_read(FIRST)
    assert _row(tmp_path, "plans@x") == _as_read(ATTACHED)
    sent.clear()
    _sync(dovecot, tmp_path, customers=(("Kunde", ["kunde.example"]), ("Andere", ["andere.example"])))
    assert sent == [] and _wanted(tmp_path) == []


def test_a_mail_gone_before_its_text_is_read(dovecot, tmp_path, sent):
    first, attached, other = dovecot.append("alice", "INBOX", [FIRST, ATTACHED, OTHER])
    _sync(dovecot, tmp_path)
    store = Store(tmp_path / "crm.db")
    try:
        customer = store._one("SELECT id FROM customers WHERE name='Kunde'")
        for mid in ("other@x", "start@x"):
            store.set_link(store._one("SELECT id FROM interactions WHERE message_id=?", (mid,)), "customer", customer,
                           "link")
    finally:
        store.close()
    with dovecot.client("alice") as c:  # one of them is deleted on the server meanwhile
        c.select_folder("INBOX")
        c.delete_messages([other])
        c.expunge()
    sent.clear()
    _sync(dovecot, tmp_path)
    assert _texts(sent) == {first}  # asked for both; the gone one brought nothing
    assert _row(tmp_path, "start@x") == _as_read(FIRST)
    assert _row(tmp_path, "other@x")[2] == "metadata"  # kept as it was, the location is gone
    assert _wanted(tmp_path) == []
    sent.clear()
    _sync(dovecot, tmp_path)
    assert sent == []


def test_a_new_uidvalidity_reads_the_mail_again_under_its_new_uid(dovecot, tmp_path, sent):
    _first, other = dovecot.append("alice", "INBOX", [FIRST, OTHER])
    _sync(dovecot, tmp_path)
    store = Store(tmp_path / "crm.db")
    try:
        customer = store._one("SELECT id FROM customers WHERE name='Kunde'")
        store.set_link(store._one("SELECT id FROM interactions WHERE message_id='start@x'"), "customer", customer, "link")
    finally:
        store.close()
    dovecot.set_uidvalidity("alice", "INBOX")
    _sync(dovecot, tmp_path)  # the folder is read again; the old UID is answered as gone
    _sync(dovecot, tmp_path)  # the mail's text under its new UID
    assert _row(tmp_path, "start@x") == _as_read(FIRST)
    sent.clear()
    _sync(dovecot, tmp_path)
    assert sent == []
    conn = sqlite3.connect(tmp_path / "crm.db")
    try:  # the places of the old UIDVALIDITY are forgotten: only the unlinked mail, under its new UID
        unread = conn.execute("SELECT local_id FROM unread_texts").fetchall()
    finally:
        conn.close()
    assert unread == [(f"{dovecot.uidvalidity('alice')}:{other}",)]


def test_the_reader_process_fetches_no_text_for_metadata_only_mail(dovecot, tmp_path):
    """As `crm sync` runs (reader process): Dovecot's own counter of bodies sent."""
    dovecot.append("alice", "INBOX", [FIRST, ATTACHED, OTHER])
    path = write_config(tmp_path / "crm.toml", customers=(("Kunde", ["kunde.example"]),),
                        sources=_sources(dovecot), store=str(tmp_path / "crm.db"))

    def sync() -> int:
        since = len(dovecot.log.read_text())
        done = subprocess.run([sys.executable, "-m", "crm_bridge.cli", "--config", str(path), "sync", "--json"],
                              capture_output=True, text=True, timeout=120, env={**os.environ, "CRM_PARALLEL_PULL": "1"})
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["results"][0]["status"] == "ok"
        for _ in range(50):  # Dovecot writes the session's line when it sees the logout
            if "Logged out" in dovecot.log.read_text()[since:]:
                break
            time.sleep(0.1)
        return _body_fetches(dovecot, since)

    assert sync() == 0
    dovecot.append("alice", "INBOX", REPLY)
    assert sync() == 1  # the reply
    assert sync() == 1  # the mail it linked, by UID
    assert _row(tmp_path, "start@x") == _as_read(FIRST)
    assert sync() == 0


def test_text_unneeded_says_what_the_linker_links():
    """The reader's check (no Match built) agrees with Linker.match on every kind of participant."""
    from crm_bridge.connectors.base import SkipRule
    from crm_bridge.crm_core.linking import LinkIndex, Linker
    from crm_bridge.crm_core.records import Address, MailRecord
    from crm_bridge.crm_core.settings import AddressSet, LinkingSettings, SourcePolicy

    settings = LinkingSettings(internal_domains=AddressSet(["nordlicht.example"]),
                               blocklist=AddressSet(["spam@kunde.example"]))
    index = LinkIndex(contact_by_email={"pia@woanders.example": 1, "spam@kunde.example": 2},
                      customer_of_contact={1: None, 2: 7}, customer_by_domain={"kunde.example": 7})
    policy = SourcePolicy(name="alice-imap", owner=frozenset([OWNER]))
    rule, linker = SkipRule(settings, policy, index), Linker(settings, index)
    people = ["olaf@andere.example", "pia@woanders.example", "kim@sub.kunde.example", "spam@kunde.example",
              "ben@nordlicht.example", "max@gmail.com"]
    cases = 0
    for sender in people:
        for other in people:
            rec = MailRecord(Location("INBOX", "1:1"), message_id="m@x", sender=Address(sender),
                             to=(Address(OWNER), Address(other)))
            assert rule.text_unneeded(rec) == (not linker.match(linker.mail_participants(rec), policy).links), rec
            cases += 1
    assert cases == 36
    no_id = MailRecord(Location("INBOX", "1:2"), sender=Address("olaf@andere.example"), to=(Address(OWNER),))
    assert not rule.text_unneeded(no_id)  # found again only by its text's hash: the text is read


def test_a_batchs_text_rounds_are_answered_while_the_next_batch_is_parsed(dovecot, sent):
    """The connector does not wait for a batch's BODYSTRUCTURE answer before it asks for the next batch's:
    the server answers one while this process parses the other (issue 9, reader process balance)."""
    from tests.test_imap import MemoryView, connector

    mails = [ATTACHED.replace(b"<plans@x>", f"<plans{n}@x>".encode()) for n in range(6)]
    uids = dovecot.append("alice", "INBOX", mails)
    view = MemoryView()
    batches = view.sync(connector(dovecot, folders=["INBOX"], batch_size=2))
    structure = [i for i, (_u, items) in enumerate(sent) if items == "BODYSTRUCTURE"]
    texts = [i for i, (_u, items) in enumerate(sent) if items.startswith("BODY.PEEK[1]")]
    first_text = next(i for i in texts if uids[0] in sent[i][0])
    second_structure = next(i for i in structure if uids[2] in sent[i][0])
    assert second_structure < first_text  # batch 2's first round went out before batch 1's second
    # and the batches still come in UID order, each with its cursor, every record complete
    got = [r for b in batches for r in b.records]
    assert [r.message_id for r in got] == [f"plans{n}@x" for n in range(6)]
    assert all(r.has_attachments and "Plaene" in r.snippet for r in got)
    lasts = [b.cursor["folders"]["INBOX"]["last_uid"] for b in batches if b.records]
    assert lasts == sorted(lasts) and lasts[-1] == uids[-1]
