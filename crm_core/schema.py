"""The store's schema and its migrations.

``SCHEMA`` builds a new store at ``SCHEMA_VERSION``; ``MIGRATIONS[n]`` brings
a store of version n - 1 up to n (run by
:meth:`crm_core.storebase.StoreBase.migrate`, in one transaction).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crm_bridge.crm_core.store import Store


SCHEMA_VERSION = 10


#: indexes of the read side (version 5): a customer's domains, contacts and tasks, a contact's tasks and the
#: open tasks found without a scan of everything the store holds (the web pages' cost follows the customer,
#: not the store, also in a store that has no planner statistics yet)
READ_INDEXES = (
    "CREATE INDEX IF NOT EXISTS customer_domains_customer ON customer_domains(customer_id)",
    "CREATE INDEX IF NOT EXISTS contacts_customer ON contacts(customer_id)",
    "CREATE INDEX IF NOT EXISTS tasks_customer ON tasks(customer_id)",
    "CREATE INDEX IF NOT EXISTS tasks_contact ON tasks(contact_id)",
    "CREATE INDEX IF NOT EXISTS tasks_status ON tasks(status)",
)

#: the full-text index of new mail and appointments is written by the batch that inserts them
#: (:meth:`crm_core.storebase.StoreBase._index_text`), not row by row by a trigger: SQLite runs a
#: trigger that writes to an FTS5 table inside a statement savepoint, and FTS5 writes its pending
#: terms to disk at every savepoint, so each mail cost a segment write and its merging (about 30 us,
#: a third of storing a mail); one INSERT of a page's rows lets FTS5 write them as one segment
FTS_INSERT_TRIGGER = """CREATE TRIGGER IF NOT EXISTS interactions_ai AFTER INSERT ON interactions
    WHEN new.kind NOT IN ('mail', 'appointment') BEGIN
    INSERT INTO interactions_fts(rowid, subject, snippet) VALUES (new.id, new.subject, new.snippet);
END"""

#: FTS5 merges the index's segments once 16 (not 4) of a size are there: a first sync writes a
#: segment a page, and with 4 the merging rewrote the index over and over (a fifth of the cost
#: of committing a page at 50,000 mails); a search reads a few more segments (version 7)
FTS_AUTOMERGE = "INSERT INTO interactions_fts(interactions_fts, rank) VALUES ('automerge', 16)"

#: the full-text index of the subject and text of what is stored (version 9: without the size of each
#: column, columnsize=0, which only ranking by bm25 reads: searches list the newest first; a row fewer
#: to write for every item stored).  detail=full stays: phrase searches need the positions
FTS_TABLE = """CREATE VIRTUAL TABLE IF NOT EXISTS interactions_fts USING fts5(
    subject, snippet, tokenize='unicode61 remove_diacritics 2', content='interactions', columnsize=0)"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS customers (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    origin TEXT NOT NULL DEFAULT 'manual', account_owner TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS customer_domains (
    domain TEXT PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id));
CREATE TABLE IF NOT EXISTS contacts (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL DEFAULT '', customer_id INTEGER REFERENCES customers(id),
    uid TEXT UNIQUE, title TEXT NOT NULL DEFAULT '', phones TEXT NOT NULL DEFAULT '[]',
    categories TEXT NOT NULL DEFAULT '[]', origin TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS contact_addresses (
    email TEXT PRIMARY KEY, contact_id INTEGER NOT NULL REFERENCES contacts(id));
CREATE INDEX IF NOT EXISTS contact_addresses_contact ON contact_addresses(contact_id);
CREATE TABLE IF NOT EXISTS interactions (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, dedup_key TEXT NOT NULL UNIQUE,
    message_id TEXT NOT NULL DEFAULT '', content_hash TEXT NOT NULL DEFAULT '',
    thread_id INTEGER, date TEXT, start TEXT, "end" TEXT, tzid TEXT NOT NULL DEFAULT '',
    subject TEXT, snippet TEXT, direction TEXT NOT NULL DEFAULT '',
    visibility TEXT NOT NULL DEFAULT 'snippet', status TEXT NOT NULL DEFAULT '',
    uid TEXT NOT NULL DEFAULT '', recurrence_id TEXT NOT NULL DEFAULT '', rrule TEXT NOT NULL DEFAULT '',
    location_text TEXT NOT NULL DEFAULT '', bulk TEXT NOT NULL DEFAULT '',
    has_attachments INTEGER NOT NULL DEFAULT 0, logged_by TEXT NOT NULL DEFAULT '',
    deleted INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
    warnings TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS interactions_thread ON interactions(thread_id);
CREATE INDEX IF NOT EXISTS interactions_date ON interactions(date);
CREATE INDEX IF NOT EXISTS interactions_uid ON interactions(uid) WHERE uid != '';
CREATE TABLE IF NOT EXISTS participants (
    interaction_id INTEGER NOT NULL REFERENCES interactions(id), email TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '', role TEXT NOT NULL, status TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (interaction_id, email, role)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS participants_email ON participants(email);
CREATE TABLE IF NOT EXISTS occurrences (
    interaction_id INTEGER NOT NULL REFERENCES interactions(id), recurrence_id TEXT NOT NULL,
    start TEXT, "end" TEXT, date TEXT, status TEXT NOT NULL DEFAULT 'CONFIRMED',
    PRIMARY KEY (interaction_id, recurrence_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS thread_refs (
    message_id TEXT PRIMARY KEY, thread_id INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS thread_refs_thread ON thread_refs(thread_id);
CREATE TABLE IF NOT EXISTS threads (id INTEGER PRIMARY KEY, subject TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS links (
    interaction_id INTEGER NOT NULL REFERENCES interactions(id), target TEXT NOT NULL,
    target_id INTEGER NOT NULL, reason TEXT NOT NULL,
    PRIMARY KEY (interaction_id, target, target_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS links_target ON links(target, target_id);
CREATE TABLE IF NOT EXISTS link_overrides (
    interaction_id INTEGER NOT NULL REFERENCES interactions(id), target TEXT NOT NULL,
    target_id INTEGER NOT NULL, action TEXT NOT NULL, at TEXT NOT NULL,
    PRIMARY KEY (interaction_id, target, target_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS locations (
    source TEXT NOT NULL, scope TEXT NOT NULL, local_id TEXT NOT NULL,
    kind TEXT NOT NULL, item_id INTEGER, etag TEXT NOT NULL DEFAULT '',
    flags TEXT NOT NULL DEFAULT '', seen_at TEXT NOT NULL, gone_at TEXT,
    PRIMARY KEY (source, scope, local_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS locations_item ON locations(kind, item_id);
CREATE TABLE IF NOT EXISTS skipped (
    source TEXT NOT NULL, scope TEXT NOT NULL, local_id TEXT NOT NULL,
    message_id TEXT NOT NULL DEFAULT '', reason TEXT NOT NULL, at TEXT NOT NULL,
    PRIMARY KEY (source, scope, local_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS skipped_message_id ON skipped(message_id);
CREATE TABLE IF NOT EXISTS unread_texts (
    source TEXT NOT NULL, scope TEXT NOT NULL, local_id TEXT NOT NULL, interaction_id INTEGER NOT NULL,
    PRIMARY KEY (source, scope, local_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY, uid TEXT NOT NULL UNIQUE, rule_key TEXT UNIQUE,
    title TEXT NOT NULL, description TEXT NOT NULL DEFAULT '', due TEXT,
    status TEXT NOT NULL DEFAULT 'open', completed_at TEXT,
    customer_id INTEGER, contact_id INTEGER, interaction_id INTEGER,
    version INTEGER NOT NULL DEFAULT 1, pushed_version INTEGER NOT NULL DEFAULT 0,
    remote_source TEXT, remote_scope TEXT, remote_href TEXT, remote_etag TEXT,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL, sent_digests TEXT NOT NULL DEFAULT '',
    assignee TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS card_pushes (
    uid TEXT PRIMARY KEY, content_hash TEXT NOT NULL DEFAULT '',
    remote_source TEXT, remote_scope TEXT, remote_href TEXT, remote_etag TEXT);
CREATE TABLE IF NOT EXISTS sources (
    name TEXT PRIMARY KEY, type TEXT NOT NULL, cursor TEXT, fingerprint TEXT NOT NULL DEFAULT '',
    rescan INTEGER NOT NULL DEFAULT 0, last_run_at TEXT, last_status TEXT, last_error TEXT,
    items INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY, source TEXT NOT NULL, started_at TEXT NOT NULL, finished_at TEXT,
    status TEXT NOT NULL, stats TEXT NOT NULL DEFAULT '{}', message TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS quarantine (
    source TEXT NOT NULL, scope TEXT NOT NULL, local_id TEXT NOT NULL, reason TEXT NOT NULL,
    excerpt TEXT NOT NULL DEFAULT '', first_seen TEXT NOT NULL, last_seen TEXT NOT NULL,
    count INTEGER NOT NULL DEFAULT 1, PRIMARY KEY (source, scope, local_id)) WITHOUT ROWID;
""" + FTS_TABLE + """;
CREATE TRIGGER IF NOT EXISTS interactions_ad AFTER DELETE ON interactions BEGIN
    INSERT INTO interactions_fts(interactions_fts, rowid, subject, snippet)
    VALUES ('delete', old.id, old.subject, old.snippet);
END;
CREATE TRIGGER IF NOT EXISTS interactions_au AFTER UPDATE OF subject, snippet ON interactions BEGIN
    INSERT INTO interactions_fts(interactions_fts, rowid, subject, snippet)
    VALUES ('delete', old.id, old.subject, old.snippet);
    INSERT INTO interactions_fts(rowid, subject, snippet) VALUES (new.id, new.subject, new.snippet);
END;
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY COLLATE NOCASE, role TEXT NOT NULL DEFAULT 'staff', password TEXT NOT NULL DEFAULT '',
    token_hash TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS review_dismissed (email TEXT PRIMARY KEY, at TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blocks (
    entry TEXT PRIMARY KEY, by TEXT NOT NULL DEFAULT '', at TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS conflicts (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, item TEXT NOT NULL, resolution TEXT NOT NULL, at TEXT NOT NULL);
""" + "".join(s + ";\n" for s in READ_INDEXES) + FTS_INSERT_TRIGGER + ";\n" + FTS_AUTOMERGE + ";\n"


def _migrate_2_warnings_and_dates(store: "Store") -> None:
    """Version 2: ``interactions.warnings`` (what a connector could not read as it was, one per line).

    And dates with a year before 1000, which utc_iso once wrote unpadded
    ("1-05-30T21:10:06Z", sorting after every other date), become ISO 8601:
    a mail's year read the way mail programs read it (RFC 5322 4.3, as
    connectors.mailparse.full_year: 1 -> 2001, 98 -> 1998, 101 -> 2001),
    other items' padded.  Idempotent.
    """
    if "warnings" not in {r[1] for r in store.conn.execute("PRAGMA table_info(interactions)")}:
        store.conn.execute("ALTER TABLE interactions ADD COLUMN warnings TEXT NOT NULL DEFAULT ''")

    def fixed(value: str, mail: bool) -> str:
        year, _, rest = value.partition("-")
        y = int(year)
        if mail:
            y = y + 2000 if y < 50 else y + 1900
        return f"{y:04d}-{rest}"

    bad = "date IS NOT NULL AND instr(date, '-') BETWEEN 2 AND 4 AND date GLOB '[0-9]*'"
    for iid, kind, value in store.conn.execute(f"SELECT id, kind, date FROM interactions WHERE {bad}").fetchall():
        store.conn.execute("UPDATE interactions SET date=? WHERE id=?", (fixed(value, kind == "mail"), iid))
    for iid, rid, value in store.conn.execute(
            f"SELECT interaction_id, recurrence_id, date FROM occurrences WHERE {bad}").fetchall():
        store.conn.execute("UPDATE occurrences SET date=? WHERE interaction_id=? AND recurrence_id=?",
                           (fixed(value, False), iid, rid))


#: schema version -> function bringing the previous version up to it
def _migrate_2_task_digests(store: "Store") -> None:
    """tasks.sent_digests: what a push is about to write, so a crash before its commit is not taken
    for the client's change (idempotent)."""
    columns = {row[1] for row in store.conn.execute("PRAGMA table_info(tasks)")}
    if "sent_digests" not in columns:
        store.conn.execute("ALTER TABLE tasks ADD COLUMN sent_digests TEXT NOT NULL DEFAULT ''")


def _migrate_2(store: "Store") -> None:
    _migrate_2_warnings_and_dates(store)
    _migrate_2_task_digests(store)


USERS_TABLE = """CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY COLLATE NOCASE, role TEXT NOT NULL DEFAULT 'staff', password TEXT NOT NULL DEFAULT '',
    token_hash TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL)"""
REVIEW_TABLE = "CREATE TABLE IF NOT EXISTS review_dismissed (email TEXT PRIMARY KEY, at TEXT NOT NULL) WITHOUT ROWID"


def _migrate_3_web(store: "Store") -> None:
    """Version 3, the web front end: ``users`` (name, role, scrypt hash, API token hash),
    ``review_dismissed`` (the review queue's dismissed senders) and ``tasks.assignee``
    (whose task it is: "my tasks").  Idempotent."""
    store.conn.execute(USERS_TABLE)
    store.conn.execute(REVIEW_TABLE)
    if "assignee" not in {row[1] for row in store.conn.execute("PRAGMA table_info(tasks)")}:
        store.conn.execute("ALTER TABLE tasks ADD COLUMN assignee TEXT NOT NULL DEFAULT ''")


def _migrate_4_blocks(store: "Store") -> None:
    """Version 4: ``blocks``, addresses and domains blocked from the web (crm_core.blocks).  Idempotent."""
    from crm_bridge.crm_core.blocks import TABLE

    store.conn.execute(TABLE)


def _migrate_5_read_indexes(store: "Store") -> None:
    """Version 5: :data:`READ_INDEXES`.  Idempotent."""
    for statement in READ_INDEXES:
        store.conn.execute(statement)


def _migrate_6_fts_by_batch(store: "Store") -> None:
    """Version 6: mail and appointments are put into the full-text index by the batch that stores
    them (see FTS_INSERT_TRIGGER); other items (notes) still by the trigger.  Idempotent."""
    store.conn.execute("DROP TRIGGER IF EXISTS interactions_ai")
    store.conn.execute(FTS_INSERT_TRIGGER)


def _migrate_7_unread_texts(store: "Store") -> None:
    """Version 7: ``unread_texts``, mail stored without its text read (metadata only, known from the
    header), to be read by name once it is linked (crm_core.rereads).  Idempotent."""
    store.conn.execute("""CREATE TABLE IF NOT EXISTS unread_texts (
        source TEXT NOT NULL, scope TEXT NOT NULL, local_id TEXT NOT NULL, interaction_id INTEGER NOT NULL,
        PRIMARY KEY (source, scope, local_id)) WITHOUT ROWID""")


def _migrate_8_fts_automerge(store: "Store") -> None:
    """Version 8: :data:`FTS_AUTOMERGE` (a setting kept in the index's own config table).  Idempotent."""
    store.conn.execute(FTS_AUTOMERGE)


def _migrate_9_lighter_mail(store: "Store") -> None:
    """Version 9: a stored mail writes less.  ``interactions_message_id`` goes: the store finds a mail by
    Message-ID through ``thread_refs`` (every stored mail's Message-ID is there, with its thread) and
    the thread's mails (crm_core/ingest_mail.py _same_mails), as the reads by Message-ID do (``crm explain``,
    an interaction named by it; crm_core/reads.py) since version 10.  And the
    full-text index without column sizes (:data:`FTS_TABLE`): made again and filled from
    ``interactions`` (its ``rebuild``), with its merge setting.  Idempotent."""
    store.conn.execute("DROP INDEX IF EXISTS interactions_message_id")
    sql = store._one("SELECT sql FROM sqlite_master WHERE name='interactions_fts'") or ""
    if "columnsize=0" not in sql.replace(" ", ""):
        store.conn.execute("DROP TABLE IF EXISTS interactions_fts")
        store.conn.execute(FTS_TABLE)
        store.conn.execute("INSERT INTO interactions_fts(interactions_fts) VALUES ('rebuild')")
        store.conn.execute(FTS_AUTOMERGE)


def _migrate_10_appointments_by_uid(store: "Store") -> None:
    """Version 10: ``interactions_uid``, the appointments by UID (``crm explain``, an interaction named by its
    UID), partial so that a mail (no UID) writes nothing to it.  Idempotent."""
    store.conn.execute("CREATE INDEX IF NOT EXISTS interactions_uid ON interactions(uid) WHERE uid != ''")


MIGRATIONS: dict[int, Any] = {2: _migrate_2, 3: _migrate_3_web, 4: _migrate_4_blocks, 5: _migrate_5_read_indexes,
                              6: _migrate_6_fts_by_batch, 7: _migrate_7_unread_texts, 8: _migrate_8_fts_automerge,
                              9: _migrate_9_lighter_mail, 10: _migrate_10_appointments_by_uid}
