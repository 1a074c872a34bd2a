"""The store's cost per mail (issue 9's store share): what makes a batch cheap, and that it
changes nothing of what is stored.

The full-text index of mail and appointments is written by the batch, one statement per page,
not by a trigger per row (crm_core/schema.py, FTS_INSERT_TRIGGER); notes and whatever else is
inserted one at a time keep the trigger.  The index must hold every stored item, exactly once.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone

from crm_bridge.crm_core import notes
from crm_bridge.crm_core.domains import AddressSet
from crm_bridge.crm_core.records import (
    Address, AppointmentRecord, Attendee, Batch, Location, MailRecord)
from crm_bridge.crm_core.schema import MIGRATIONS, SCHEMA_VERSION
from crm_bridge.crm_core.settings import LinkingSettings, SourcePolicy
from crm_bridge.crm_core.store import Store

OWNER = "anna@nordlicht.example"
POLICY = SourcePolicy(name="mail", owner=frozenset({OWNER}))
BASE = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)


def settings(**kw) -> LinkingSettings:
    return LinkingSettings(internal_domains=AddressSet(["nordlicht.example"]), **kw)


def mail(i: int, sender: str = "kim@kunde.example", reply_to: int | None = None, scope: str = "INBOX") -> MailRecord:
    refs = (f"m{reply_to}@x",) if reply_to is not None else ()
    return MailRecord(
        location=Location(scope, f"1:{i}", ""), message_id=f"m{i}@x", in_reply_to=refs, references=refs,
        sender=Address(sender, "Kim"), to=(Address(OWNER, "Anna"),), date=BASE + timedelta(minutes=i),
        subject=f"Angebot wort{i}", snippet=f"Guten Tag, text{i} zum Angebot.")


def fts_check(store: Store) -> None:
    """The full-text index holds every row of ``interactions`` once, with the text the row has now.

    FTS5's 'integrity-check' checks the index's own structure; before SQLite 3.44 it does not
    compare an external-content index with its table (a row missing or indexed with other text
    passes), so the index's terms are compared with those of an index built afresh from the table."""
    conn = store.conn
    conn.execute("INSERT INTO interactions_fts(interactions_fts) VALUES ('integrity-check')")
    conn.execute("DROP TABLE IF EXISTS temp.fts_fresh")
    conn.execute("CREATE VIRTUAL TABLE temp.fts_fresh USING fts5(subject, snippet, tokenize='unicode61 remove_diacritics 2')")
    conn.execute("INSERT INTO temp.fts_fresh(rowid, subject, snippet) SELECT id, subject, snippet FROM interactions")
    conn.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.fts_terms USING fts5vocab(main, interactions_fts, 'instance')")
    conn.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.fts_fresh_terms USING fts5vocab(temp, fts_fresh, 'instance')")
    terms = "SELECT term, doc, col, offset FROM temp.{} ORDER BY 1, 2, 3, 4"
    have, want = conn.execute(terms.format("fts_terms")).fetchall(), conn.execute(terms.format("fts_fresh_terms")).fetchall()
    conn.execute("DROP TABLE temp.fts_fresh")
    assert have == want, (sorted(set(have) - set(want))[:5], sorted(set(want) - set(have))[:5])


def test_the_index_check_finds_a_row_missing_or_indexed_with_other_text(tmp_path):
    store = Store(tmp_path / "crm.db", settings())
    with store.transaction():
        store.add_customer("Kunde GmbH", ["kunde.example"])
        store.apply_batch(POLICY, Batch(records=[mail(1), mail(2)]))
    fts_check(store)
    for broken in ("INSERT INTO interactions(kind, dedup_key, subject, created_at, updated_at)"
                   " VALUES ('mail', 'x', 'ohne Index', '', '')",  # mail is indexed by the batch, not the trigger
                   "UPDATE interactions SET subject='anders' WHERE message_id='m1@x'"):
        store.conn.execute("BEGIN")
        store.conn.execute("DROP TRIGGER interactions_au")  # (back with the rollback below)
        store.conn.execute(broken)
        try:
            fts_check(store)
        except AssertionError:
            pass
        else:
            raise AssertionError(f"not found: {broken}")
        finally:
            store.conn.execute("ROLLBACK")
    fts_check(store)
    store.close()


def found(store: Store, word: str) -> list[str]:
    return sorted(r["subject"] or "" for r in store.search(word))


def test_every_stored_item_is_in_the_full_text_index_once(tmp_path):
    store = Store(tmp_path / "crm.db", settings(on_delete="erase"))
    with store.transaction():
        customer = store.add_customer("Kunde GmbH", ["kunde.example"])
    with store.transaction():  # linked mail, a mail nobody matches (metadata only), an appointment
        store.apply_batch(POLICY, Batch(records=[
            *(mail(i) for i in range(30)),
            mail(100, sender="olaf@andere.example"),
            AppointmentRecord(location=Location("cal", "t1.ics", "e1"), uid="t1", start=BASE, end=BASE,
                              summary="Begehung Heizraum", description="Termin wort777",
                              organizer=Attendee(Address(OWNER)), attendees=(Attendee(Address("kim@kunde.example")),)),
        ]))
    notes.add_note(store, customer, "Rückruf notiert wort888", "anna")
    fts_check(store)
    assert found(store, "wort7") == ["Angebot wort7"]
    assert found(store, "text29") == ["Angebot wort29"]
    assert found(store, "wort777") == ["Begehung Heizraum"]
    assert found(store, "wort888") == ["Rückruf notiert wort888"]
    assert found(store, "wort100") == []  # stored without its text while it matched nobody
    with store.transaction():  # a reply links it through its thread: its text is filled in (the update trigger)
        store.apply_batch(POLICY, Batch(records=[mail(101, sender=OWNER, reply_to=100)]))
    fts_check(store)
    with store.transaction():  # gone from the server, erased: the delete trigger takes it out
        store.apply_batch(POLICY, Batch(removed=[Location("INBOX", "1:7")]))
    fts_check(store)
    assert found(store, "wort7") == []
    with store.transaction():  # the same mail again under a new UID: known, not indexed twice
        store.apply_batch(POLICY, Batch(records=[mail(i) for i in range(8, 20)]))
    fts_check(store)
    assert found(store, "wort9") == ["Angebot wort9"]
    store.close()


def test_a_page_of_mail_is_written_to_the_index_in_one_go(tmp_path):
    """A trigger that writes to FTS5 runs in a statement savepoint, at which FTS5 writes its pending
    terms to disk: a segment per mail, merged again and again (a third of a mail's store time).

    Rows written per mail (SQLite's count of changes, the index's shadow tables included): the mail,
    its size in the index, two participants, its location, two links (customer, contact), a thread
    and its reference: 9, and the page's index segments shared by all; about 16 with the trigger."""
    store = Store(tmp_path / "crm.db", settings())
    with store.transaction():
        store.add_customer("Kunde GmbH", ["kunde.example"])
    before = store.conn.total_changes
    with store.transaction():
        store.apply_batch(POLICY, Batch(records=[mail(i) for i in range(500)]))
    per_mail = (store.conn.total_changes - before) / 500
    assert per_mail < 11, per_mail
    fts_check(store)
    assert len(store.search("Angebot", limit=1000)) == 500
    store.close()


def test_a_store_of_version_5_indexes_by_batch_after_its_migration(tmp_path):
    path = tmp_path / "old.db"
    store = Store(path, settings())
    with store.transaction():  # a version-5 store: the insert trigger for every row
        store.conn.execute("DROP TRIGGER interactions_ai")
        store.conn.execute("""CREATE TRIGGER interactions_ai AFTER INSERT ON interactions BEGIN
            INSERT INTO interactions_fts(rowid, subject, snippet) VALUES (new.id, new.subject, new.snippet); END""")
        store.add_customer("Kunde GmbH", ["kunde.example"])
        store.apply_batch(POLICY, Batch(records=[mail(i) for i in range(5)]))
        store.conn.execute("UPDATE meta SET value='5' WHERE key='schema_version'")
    store.close()
    store = Store(path, settings())
    assert store.schema_version() == SCHEMA_VERSION >= 6
    with store.transaction():
        MIGRATIONS[6](store)  # idempotent
        store.apply_batch(POLICY, Batch(records=[mail(i) for i in range(5, 10)]))
    fts_check(store)  # the mail stored before and after, each indexed once
    assert len(store.search("Angebot")) == 10
    store.close()
    conn = sqlite3.connect(path)  # another program inserting a note still gets it indexed
    conn.execute("INSERT INTO interactions(kind, dedup_key, subject, created_at, updated_at)"
                 " VALUES ('note', 'n1', 'Notiz wort555', '', '')")
    conn.commit()
    conn.close()
    store = Store(path, settings())
    assert found(store, "wort555") == ["Notiz wort555"]
    fts_check(store)
    store.close()


class CountingSet(AddressSet):
    """An AddressSet that counts the lookups made in it."""

    asked = 0

    def __contains__(self, email: str) -> bool:
        CountingSet.asked += 1
        return super().__contains__(email)


def test_each_address_is_looked_up_in_the_blocklist_and_internal_domains_once(tmp_path):
    """Whether to log a mail, whom to link it to and which participants to keep ask about every
    participant several times; the store's linker (one while the settings and the link index stay)
    looks each address up once, across batches."""
    store = Store(tmp_path / "crm.db", LinkingSettings(internal_domains=CountingSet(["nordlicht.example"]),
                                                       blocklist=CountingSet(["spam@kunde.example", "werbung.example"])))
    with store.transaction():
        store.add_customer("Kunde GmbH", ["kunde.example"])
    CountingSet.asked = 0
    for start in (0, 300):
        with store.transaction():
            store.apply_batch(POLICY, Batch(records=[
                mail(i, sender=("kim@kunde.example", "olaf@kunde.example", "spam@kunde.example")[i % 3])
                for i in range(start, start + 300)]))
    assert CountingSet.asked <= 2 * 4, CountingSet.asked  # 4 addresses (Anna is the owner: never asked)
    assert store._one("SELECT count(*) FROM interactions") == 400  # the blocked sender's mail is not logged
    assert store._one("SELECT count(*) FROM skipped WHERE reason LIKE 'blocked sender%'") == 200
    store.close()


def test_the_content_hash_reads_text_as_it_always_did():
    """Dedup keys of stored mail must not change: the start of the text, cut to letters and digits,
    is what the regular expression made of it, for ASCII and other text, short and long."""
    import random
    import re

    from crm_bridge.crm_core.storebase import _alnum_start

    alnum = re.compile(r"[\W_]+", re.UNICODE)
    rng = random.Random(5)
    pieces = ["Guten Tag", "Grüße", "İstanbul", "straße", "__init__", "a_b", "x²", "½", "Ⅻ", "—", "\u00a0",
              "  ", "\t", "...", "3.500,00 €", "日本語", "ǅ", "e\u0301", "\U0001f600", "O'Connor", "-", "_",
              "\ud800", "„Zitat“", "Müller–Lüdenscheidt", "Äpfel", "ÖÜß"]
    texts = ["", "_", "ab", "x" * 200, "_" * 100 + "abc", "ä" * 50 + "_" * 60 + "b" * 80, "İ" * 120]
    for _ in range(3000):
        texts.append(" ".join(rng.choice(pieces) for _ in range(rng.randrange(1, 60))))
    texts += ["".join(rng.choice("ab_-. ") for _ in range(rng.randrange(0, 300))) for _ in range(500)]
    for text in texts:
        assert _alnum_start(text) == alnum.sub("", text[:160].lower())[:64], text
