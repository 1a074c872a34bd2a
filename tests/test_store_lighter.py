"""The store's CPU per mail, round 2 (issue 9): a stored mail writes and asks less, stores the same.

A page's full-text rows are read back by one statement; a mail whose Message-ID no thread reference
names is not looked for under another key; the values every row of a page shares are bound once;
ANALYZE reads each index whole; a page's changes fit the page cache; schema 9 drops the index of
interactions by Message-ID (the thread references find a mail by it) and the full-text index's
column sizes (nothing ranks by them).
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone

from crm_bridge.crm_core.domains import AddressSet
from crm_bridge.crm_core.records import Address, Batch, Location, MailRecord
from crm_bridge.crm_core.schema import MIGRATIONS, SCHEMA_VERSION
from crm_bridge.crm_core.settings import LinkingSettings, SourcePolicy
from crm_bridge.crm_core.store import Store
from crm_bridge.crm_core.storebase import CACHE_KIB, _values_sql
from tests.test_store_batch import fts_check

OWNER = "anna@nordlicht.example"
POLICY = SourcePolicy(name="mail", owner=frozenset({OWNER}))
BASE = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)


def settings() -> LinkingSettings:
    return LinkingSettings(internal_domains=AddressSet(["nordlicht.example"]))


def mail(i: int, sender: str = "kim@kunde.example", reply_to: int | None = None, scope: str = "INBOX",
         **kw) -> MailRecord:
    refs = (f"m{reply_to}@x",) if reply_to is not None else ()
    fields = dict(location=Location(scope, f"1:{i}", ""), message_id=f"m{i}@x", in_reply_to=refs, references=refs,
                  sender=Address(sender, "Kim"), to=(Address(OWNER, "Anna"),), date=BASE + timedelta(minutes=i),
                  subject=f"Angebot wort{i}", snippet=f"Guten Tag, text{i} zum Angebot.")
    fields.update(kw)
    return MailRecord(**fields)  # type: ignore[arg-type]


def traced(store: Store) -> list[str]:
    """Every statement the store's connection runs from now on (each row of an executemany too)."""
    seen: list[str] = []
    store.conn.set_trace_callback(lambda sql: seen.append(" ".join(sql.split())))
    return seen


def customer_store(path) -> Store:
    store = Store(path, settings())
    with store.transaction():
        store.add_customer("Kunde GmbH", ["kunde.example"])
    return store


def test_a_pages_full_text_rows_go_in_with_one_statement(tmp_path):
    store = customer_store(tmp_path / "crm.db")
    seen = traced(store)
    with store.transaction():
        store.apply_batch(POLICY, Batch(records=[mail(i) for i in range(120)] + [mail(200, sender="x@andere.example")]))
    store.conn.set_trace_callback(None)
    assert len([s for s in seen if s.startswith("INSERT INTO interactions_fts")]) == 1
    fts_check(store)
    assert len(store.search("Angebot", limit=500)) == 120  # the unmatched one is metadata only
    assert [r["subject"] for r in store.search('"text7 zum"')] == ["Angebot wort7"]  # a phrase
    store.close()


def test_mail_with_a_new_message_id_is_not_looked_for_under_another_key(tmp_path):
    """Every stored mail's Message-ID is in thread_refs: a first sync's mail (none there) asks no
    second look; a mail stored before under another key (its snippet read differently) is found."""
    store = customer_store(tmp_path / "crm.db")
    seen = traced(store)
    with store.transaction():
        store.apply_batch(POLICY, Batch(records=[mail(i) for i in range(10)]))
    assert not [s for s in seen if "i.message_id" in s]
    seen.clear()
    with store.transaction():  # the same mail in another folder, its text read differently: the same mail
        store.apply_batch(POLICY, Batch(records=[mail(3, scope="Archiv", snippet="Guten Tag, anders gelesen.")]))
    assert [s for s in seen if "i.message_id" in s]
    assert store._one("SELECT COUNT(*) FROM interactions") == 10
    assert store._one("SELECT COUNT(*) FROM locations WHERE item_id = (SELECT id FROM interactions"
                      " WHERE message_id='m3@x')") == 2
    # a reply names a mail not stored yet: its Message-ID is in thread_refs, and the mail is new
    with store.transaction():
        store.apply_batch(POLICY, Batch(records=[mail(21, reply_to=20)]))
    with store.transaction():
        stats = store.apply_batch(POLICY, Batch(records=[mail(20)]))
    assert stats.added == 1
    assert store._one("SELECT COUNT(DISTINCT thread_id) FROM interactions WHERE message_id IN ('m20@x', 'm21@x')") == 1
    store.close()


def test_a_pages_shared_values_are_bound_once_and_stored_in_every_row(tmp_path):
    assert _values_sql("INSERT INTO t(a, b, c)", "($0, ?, $1)", "", 2, 2) == \
        "INSERT INTO t(a, b, c) VALUES (?1, ?3, ?2),(?1, ?4, ?2) "
    store = customer_store(tmp_path / "crm.db")
    when = datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc)
    with store.transaction():  # 50 to a statement, and 23 one at a time
        store.apply_batch(POLICY, Batch(records=[mail(i) for i in range(73)]), when)
    assert store.conn.execute("SELECT DISTINCT created_at, updated_at FROM interactions").fetchall() == \
        [(when.isoformat(), when.isoformat())]
    assert store.conn.execute("SELECT DISTINCT source, seen_at, kind FROM locations").fetchall() == \
        [("mail", when.isoformat(), "interaction")]
    assert store._one("SELECT COUNT(*) FROM locations") == 73
    store.close()


def test_an_address_twice_in_a_mail_is_one_participant_with_the_first_name(tmp_path):
    store = customer_store(tmp_path / "crm.db")
    rec = mail(1, to=(Address(OWNER, "Anna"), Address("eva@kunde.example", "Eva"), Address("eva@kunde.example", "E.")),
               cc=(Address("eva@kunde.example", "Eva K."),))
    with store.transaction():
        store.apply_batch(POLICY, Batch(records=[rec]))
    assert store.conn.execute("SELECT email, name, role FROM participants WHERE email='eva@kunde.example'"
                              " ORDER BY role").fetchall() == [("eva@kunde.example", "Eva K.", "cc"),
                                                               ("eva@kunde.example", "Eva", "to")]
    store.close()


def vm_steps(conn: sqlite3.Connection, work) -> int:
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    conn.set_progress_handler(count, 100)
    try:
        work()
    finally:
        conn.set_progress_handler(None, 0)
    return steps[0]


def test_analyze_reads_each_index_whole_so_the_planner_sees_how_many_links_a_target_has(tmp_path):
    """A sampled ANALYZE (analysis_limit 1,000) took the links to customers for 1,000 rows, which made the
    follow-up rules walk all of them in every run (tests/test_nochange.py)."""
    store = customer_store(tmp_path / "crm.db")
    with store.transaction():
        for start in range(0, 4000, 500):
            store.apply_batch(POLICY, Batch(records=[mail(i, sender=f"p{i % 300}@kunde.example")
                                                     for i in range(start, start + 500)]))
    store.optimize()  # the store grew from nothing: an ANALYZE
    links = store._one("SELECT COUNT(*) FROM links")
    per_target = store._one("SELECT COUNT(*) FROM links WHERE target='customer'")
    stat = store._one("SELECT stat FROM sqlite_stat1 WHERE idx='links_target'").split()
    assert int(stat[0]) == links > 4000
    assert int(stat[1]) > 0.5 * per_target / 2, (stat, per_target)  # rows a target finds: about half of them
    store.close()

def test_the_page_cache_holds_a_pages_changes(tmp_path):
    store = Store(tmp_path / "crm.db", settings())
    assert store._one("PRAGMA cache_size") == CACHE_KIB <= -16_000
    store.close()


def test_schema_9_new_and_migrated_store_find_mail_by_message_id_and_search_as_before(tmp_path):
    new = Store(tmp_path / "new.db", settings())
    assert new.schema_version() == SCHEMA_VERSION >= 9
    names = {r[0] for r in new.conn.execute("SELECT name FROM sqlite_master")}
    assert "interactions_message_id" not in names and "interactions_fts_docsize" not in names
    new.close()
    # a version-8 store: the index by Message-ID, the full-text index with its column sizes
    path = tmp_path / "old.db"
    store = customer_store(path)
    with store.transaction():
        store.conn.execute("DROP TABLE interactions_fts")
        store.conn.execute("""CREATE VIRTUAL TABLE interactions_fts USING fts5(subject, snippet,
                              tokenize='unicode61 remove_diacritics 2', content='interactions')""")
        store.conn.execute("INSERT INTO interactions_fts(interactions_fts, rank) VALUES ('automerge', 16)")
        store.conn.execute("CREATE INDEX interactions_message_id ON interactions(message_id)")
        store.apply_batch(POLICY, Batch(records=[*(mail(i) for i in range(30)),
                                                 mail(40, sender="olaf@andere.example"),  # metadata only
                                                 mail(41, reply_to=40)]))  # ... linked by the thread
        store.conn.execute("UPDATE meta SET value='8' WHERE key='schema_version'")
    store.close()
    old = sqlite3.connect(path)
    assert old.execute("SELECT COUNT(*) FROM interactions_fts_docsize").fetchone() == (32,)
    old.close()
    store = Store(path, settings())
    assert store.schema_version() == SCHEMA_VERSION
    names = {r[0] for r in store.conn.execute("SELECT name FROM sqlite_master")}
    assert "interactions_message_id" not in names and "interactions_fts_docsize" not in names
    assert "interactions_uid" in names  # version 10
    assert int(store._one("SELECT v FROM interactions_fts_config WHERE k='automerge'")) == 16
    fts_check(store)
    assert len(store.search("Angebot", limit=100)) == 32
    assert [r["subject"] for r in store.search("text40")] == ["Angebot wort40"]
    with store.transaction():
        MIGRATIONS[9](store)  # idempotent
        # seen again elsewhere, read differently: found through its thread, not stored twice
        store.apply_batch(POLICY, Batch(records=[mail(5, scope="Archiv", snippet="anders gelesen"), mail(50)]))
    fts_check(store)
    assert store._one("SELECT COUNT(*) FROM interactions") == 33
    assert store.interaction_id("m5@x") == store._one("SELECT id FROM interactions WHERE message_id='m5@x'")
    assert [r["logged"] for r in store.explain("m5@x")] == [True]
    assert [r["subject"] for r in store.search('"Angebot wort50"')] == ["Angebot wort50"]
    store.close()


def test_unread_texts_go_in_many_to_a_statement_and_a_rescan_without_them_deletes_nothing(tmp_path):
    """A fifth of an IMAP first sync is stored without its text read: their places go into
    unread_texts a page's rows to a statement.  A rescan names every place of the source again;
    where the source left no text unread (every source but IMAP), that costs one look, not a
    DELETE a place."""
    store = customer_store(tmp_path / "crm.db")
    seen = traced(store)
    with store.transaction():  # nobody known in them: metadata only, text not read
        store.apply_batch(POLICY, Batch(records=[mail(i, sender=f"p{i}@andere.example", snippet="", no_text=True)
                                                 for i in range(120)]))
    assert store._one("SELECT COUNT(*) FROM unread_texts") == 120
    assert len([s for s in seen if s.startswith("INSERT OR REPLACE INTO unread_texts")]) < 30
    other = SourcePolicy(name="files", owner=frozenset({OWNER}))
    with store.transaction():
        store.apply_batch(other, Batch(records=[mail(i, scope="Maildir") for i in range(300, 340)]))
    seen.clear()
    with store.transaction():  # the files source again: nothing of it was left unread
        store.apply_batch(other, Batch(records=[mail(i, scope="Maildir") for i in range(300, 340)]))
    assert not [s for s in seen if s.startswith("DELETE FROM unread_texts")]
    # the mail source again, its texts read this time: their places are forgotten
    with store.transaction():
        store.apply_batch(POLICY, Batch(records=[mail(i, sender=f"p{i}@andere.example") for i in range(120)]))
    assert store._one("SELECT COUNT(*) FROM unread_texts") == 0
    store.conn.set_trace_callback(None)
    store.close()


def test_mail_with_a_new_message_id_is_not_looked_up_by_its_key(tmp_path):
    """The dedup key hashes the Message-ID: a mail whose Message-ID no thread reference names is not
    stored under any key, so a first sync's page asks no look by key; mail seen again, and mail
    without a Message-ID, are looked up and stored once."""
    store = customer_store(tmp_path / "crm.db")
    seen = traced(store)
    with store.transaction():
        store.apply_batch(POLICY, Batch(records=[mail(i) for i in range(10)]))
    assert not [s for s in seen if "WHERE dedup_key IN" in s]
    with store.transaction():
        stats = store.apply_batch(POLICY, Batch(records=[mail(i, scope="Archiv") for i in range(5)]
                                                + [mail(90, message_id=""), mail(91, message_id="")]))
    assert [s for s in seen if "WHERE dedup_key IN" in s]
    assert (stats.added, stats.updated) == (2, 5)
    with store.transaction():  # the mails without a Message-ID again, elsewhere: found by their key
        stats = store.apply_batch(POLICY, Batch(records=[mail(90, message_id="", scope="Alt"),
                                                         mail(91, message_id="", scope="Alt")]))
    assert (stats.added, stats.updated) == (0, 2)
    assert store._one("SELECT COUNT(*) FROM interactions") == 12
    store.conn.set_trace_callback(None)
    store.close()


def test_removing_a_folders_places_takes_statements_by_the_page_not_by_the_mail(tmp_path):
    """A UIDVALIDITY rescan or a folder moved back ends with every old place removed in one batch, after the
    reader is done: statements per place (marking it, a "still somewhere?" look, marking its mail) made it
    the run's tail."""
    store = customer_store(tmp_path / "crm.db")
    with store.transaction():
        for start in range(0, 2000, 500):
            store.apply_batch(POLICY, Batch(records=[mail(i) for i in range(start, start + 500)]))
        moved = [mail(i, location=Location("INBOX", f"2:{i}", "")) for i in range(1000)]  # half of them seen again
        store.apply_batch(POLICY, Batch(records=moved))
    seen = traced(store)
    with store.transaction():
        stats = store.apply_batch(POLICY, Batch(removed=[Location("INBOX", f"1:{i}") for i in range(2000)]))
    assert stats.removed == 2000
    overrides = [sql for sql in seen if "local_id >= " in sql]  # one key range per place: the overrides under it
    assert len(overrides) == 2000
    assert len(seen) - len(overrides) < 40, len(seen)  # the rest by the page: finding, marking, still somewhere?
    live = store.conn.execute("SELECT COUNT(*) FROM locations WHERE gone_at IS NULL AND kind='interaction'").fetchone()
    deleted = store.conn.execute("SELECT COUNT(*) FROM interactions WHERE deleted=1").fetchone()
    assert (live[0], deleted[0]) == (1000, 1000)  # the mails seen again stay, the others are gone
    store.close()


def test_a_reference_is_found_through_indexes_at_3000_mails_as_at_30(tmp_path):
    """``crm explain`` and an interaction named by its Message-ID (a mail: through the thread references)
    or UID (an appointment: the partial index of schema 10) read no more of a big store than of a small
    one; what they find is the same."""
    from crm_bridge.crm_core.records import AppointmentRecord, Attendee

    costs = []
    for n in (30, 3000):
        store = customer_store(tmp_path / f"s{n}.db")
        meeting = AppointmentRecord(Location("cal", "meet.ics", "e1"), uid="meet-1@kunde.example",
                                    start=BASE, end=BASE + timedelta(hours=1), summary="Termin",
                                    organizer=Attendee(Address("kim@kunde.example", "Kim"), "organizer"),
                                    attendees=(Attendee(Address(OWNER, "Anna")),))
        with store.transaction():
            store.apply_batch(POLICY, Batch(records=[mail(i, reply_to=i - 1 if i % 3 else None) for i in range(n)]))
            store.apply_batch(SourcePolicy(name="cal", owner=frozenset({OWNER})), Batch(records=[meeting]))
        wanted = f"m{n // 2}@x"
        mail_id = store._one("SELECT id FROM interactions WHERE message_id=?", (wanted,))
        meet_id = store._one("SELECT id FROM interactions WHERE uid='meet-1@kunde.example'")
        found: list = []

        def look() -> None:
            found.extend([store.interaction_id(wanted), store.interaction_id("<meet-1@kunde.example>"),
                          [r["interaction"] for r in store.explain(wanted)],
                          [r["interaction"] for r in store.explain("meet-1@kunde.example")],
                          [r["interaction"] for r in store.explain(str(mail_id))]])

        costs.append(vm_steps(store.conn, look))
        assert found == [mail_id, meet_id, [mail_id], [meet_id], [mail_id]]
        assert store._one("SELECT COUNT(*) FROM interactions") == n + 1
        store.close()
    assert costs[1] <= 2 * costs[0] + 5, costs


def test_a_flag_change_the_store_already_has_changes_and_counts_nothing(tmp_path):
    """A connector may hand on flag changes without comparing them (IMAP with CONDSTORE, when it has not
    read the known locations): what the store already has is left alone and not counted as updated."""
    from crm_bridge.crm_core.records import FlagChange

    store = customer_store(tmp_path / "s.db")
    with store.transaction():
        store.apply_batch(POLICY, Batch(records=[mail(1, location=Location("INBOX", "1:1", "\\Seen"))]))
    with store.transaction():
        same = store.apply_batch(POLICY, Batch(changes=[FlagChange(Location("INBOX", "1:1", "\\Seen"), ("\\Seen",))]))
        other = store.apply_batch(POLICY, Batch(changes=[
            FlagChange(Location("INBOX", "1:1", "$Erledigt \\Seen"), ("\\Seen", "$Erledigt"))]))
        unknown = store.apply_batch(POLICY, Batch(changes=[FlagChange(Location("INBOX", "1:9", "\\Seen"), ("\\Seen",))]))
    assert (same.updated, other.updated, unknown.updated) == (0, 1, 0)
    assert store._one("SELECT etag FROM locations WHERE local_id='1:1'") == "$Erledigt \\Seen"
    store.close()
