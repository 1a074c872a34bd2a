"""The contact-history store: SQLite through sqlite-utils.

One file, WAL mode, a schema version in ``meta`` with forward migrations.
Hot paths (applying a batch of records) use plain SQL on the connection
inside one explicit transaction; sqlite-utils builds the schema, the FTS
index and the read-side queries.

Interactions are deduplicated across sources and mailboxes by
``dedup_key``: for mail a hash of the Message-ID *and* a hash of the
normalised content (sender, minute of the date, subject, start of the
body), so two different mails sharing a Message-ID stay two, and mails
without one still match; for appointments the iCalendar UID plus the
RECURRENCE-ID.  Every place an item was seen is a row in ``locations``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import signal
import sqlite3
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, overload

from crm_core.domains import is_freemail, normalise_domain, registrable_domain
from crm_core.linking import CONTACT, CUSTOMER, LinkIndex, Linker, Match
from crm_core.records import (
    Address,
    AppointmentRecord,
    Batch,
    ContactCard,
    FlagChange,
    Location,
    MailRecord,
    TaskState,
)
from crm_core.settings import LinkingSettings, SourcePolicy, domain_problem

log = logging.getLogger("crm.store")

SCHEMA_VERSION = 2
#: a place an item was seen, new or seen again (rows: source, scope, local id, kind, item, etag, flags, time)
_UPSERT_LOCATION = """INSERT INTO locations(source, scope, local_id, kind, item_id, etag, flags, seen_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT(source, scope, local_id) DO UPDATE SET kind=excluded.kind,
    item_id=excluded.item_id, etag=excluded.etag, flags=excluded.flags,
    seen_at=excluded.seen_at, gone_at=NULL"""
#: separates a resource's local id from the RECURRENCE-ID of an override in it
OVERRIDE_MARK = "#rid="
_VIS_RANK = {"metadata": 0, "subject": 1, "snippet": 2}
#: unmatched mails whose text a store keeps at hand for a later reply (about 8 MB)
_HELD_MAX = 10_000
_ALNUM = re.compile(r"[\W_]+", re.UNICODE)


class StoreError(Exception):
    """A request the store cannot fulfil (unknown customer, ...)."""


class StoreBusy(StoreError):
    """Another process holds the store's write lock for longer than we wait."""


class StoreFailure(StoreError):
    """The store file cannot be used: damaged, on a full disk, unreadable."""


def store_failure(exc: sqlite3.Error, path: str | Path) -> StoreError:
    """One line for an SQLite error: what happened to which file, and what to do."""
    text = str(exc)
    low = text.lower()
    if "locked" in low or "busy" in low:
        return StoreBusy(f"the store {path} is busy: another crm process is writing to it; try again in a moment")
    if "full" in low:
        return StoreFailure(f"no space left for the store {path} ({text}): free disk space, then run the command "
                            "again; what was stored before is kept")
    if "not a database" in low or "malformed" in low or "corrupt" in low:
        return StoreFailure(f"the store {path} is damaged ({text}): restore it from a backup, or see what is left "
                            f"with: sqlite3 {path} 'PRAGMA integrity_check'")
    if "disk i/o" in low:
        return StoreFailure(f"the store {path} cannot be written ({text}): check the disk and free space; "
                            f"then check the file with: sqlite3 {path} 'PRAGMA integrity_check'")
    if "unable to open" in low:
        return StoreFailure(f"cannot open the store {path}: check that its folder exists and is writable")
    if "readonly" in low or "read-only" in low:
        return StoreFailure(f"the store {path} is read-only here: check the permissions of the file and its folder")
    return StoreFailure(f"the store {path} failed: {text}")


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


@overload
def iso(value: datetime | date) -> str: ...
@overload
def iso(value: None) -> None: ...
def iso(value: datetime | date | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.isoformat()
    return value.isoformat()


def utc_iso(value: datetime | date | None) -> str | None:
    """A sortable UTC timestamp (ISO 8601, four-digit year); dates count as midnight UTC."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    elif value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    v = value.astimezone(timezone.utc)
    # not strftime: its %Y leaves years before 1000 unpadded ("1-05-30T...") on glibc
    return f"{v.year:04d}-{v.month:02d}-{v.day:02d}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}Z"


def task_digest(title: str, status: str, due: str | date | None) -> str:
    """What a task looks like to a calendar client: title, CRM status (open/done/cancelled), due."""
    if isinstance(due, str) and due:
        try:
            due = datetime.fromisoformat(due) if "T" in due else date.fromisoformat(due[:10])
        except ValueError:
            pass
    due_key = (utc_iso(due) if isinstance(due, datetime) else due.isoformat() if isinstance(due, date)
               else str(due or ""))
    return hashlib.sha1(f"{title}\x1f{status}\x1f{due_key}".encode()).hexdigest()[:16]


def content_hash(sender: str, when: datetime | None, subject: str, body: str) -> str:
    """Hash of what makes a mail the same mail wherever it was stored."""
    minute = (utc_iso(when) or "")[:16].replace("-", "").replace("T", "").replace(":", "")
    subject = " ".join(subject.split()).lower()
    body = _ALNUM.sub("", body[:160].lower())[:64]
    raw = f"{sender.lower()}\x1f{minute}\x1f{subject}\x1f{body}"
    return hashlib.sha1(raw.encode("utf-8", "surrogatepass")).hexdigest()


def mail_key(rec: MailRecord) -> tuple[str, str]:
    chash = content_hash(rec.sender.email if rec.sender else "", rec.date, rec.subject, rec.snippet)
    key = hashlib.sha1(f"{rec.message_id}\x1f{chash}".encode("utf-8", "surrogatepass")).hexdigest()
    return "m:" + key, chash


def appointment_key(rec: AppointmentRecord) -> str:
    return f"a:{rec.uid}\x1f{rec.recurrence_id}"


@dataclass
class Stats:
    added: int = 0
    updated: int = 0
    seen: int = 0  # already known, nothing new
    skipped: int = 0
    quarantined: int = 0
    removed: int = 0
    contacts_created: int = 0
    customers_created: int = 0
    tasks_created: int = 0
    tasks_updated: int = 0
    problems: list[str] = field(default_factory=list)

    def merge(self, other: "Stats") -> None:
        for f in fields(self):
            if f.name == "problems":
                self.problems.extend(other.problems)
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


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
CREATE INDEX IF NOT EXISTS interactions_message_id ON interactions(message_id);
CREATE INDEX IF NOT EXISTS interactions_thread ON interactions(thread_id);
CREATE INDEX IF NOT EXISTS interactions_date ON interactions(date);
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
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY, uid TEXT NOT NULL UNIQUE, rule_key TEXT UNIQUE,
    title TEXT NOT NULL, description TEXT NOT NULL DEFAULT '', due TEXT,
    status TEXT NOT NULL DEFAULT 'open', completed_at TEXT,
    customer_id INTEGER, contact_id INTEGER, interaction_id INTEGER,
    version INTEGER NOT NULL DEFAULT 1, pushed_version INTEGER NOT NULL DEFAULT 0,
    remote_source TEXT, remote_scope TEXT, remote_href TEXT, remote_etag TEXT,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL, sent_digests TEXT NOT NULL DEFAULT '');
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
CREATE VIRTUAL TABLE IF NOT EXISTS interactions_fts USING fts5(
    subject, snippet, tokenize='unicode61 remove_diacritics 2', content='interactions');
CREATE TRIGGER IF NOT EXISTS interactions_ai AFTER INSERT ON interactions BEGIN
    INSERT INTO interactions_fts(rowid, subject, snippet) VALUES (new.id, new.subject, new.snippet);
END;
CREATE TRIGGER IF NOT EXISTS interactions_ad AFTER DELETE ON interactions BEGIN
    INSERT INTO interactions_fts(interactions_fts, rowid, subject, snippet)
    VALUES ('delete', old.id, old.subject, old.snippet);
END;
CREATE TRIGGER IF NOT EXISTS interactions_au AFTER UPDATE OF subject, snippet ON interactions BEGIN
    INSERT INTO interactions_fts(interactions_fts, rowid, subject, snippet)
    VALUES ('delete', old.id, old.subject, old.snippet);
    INSERT INTO interactions_fts(rowid, subject, snippet) VALUES (new.id, new.subject, new.snippet);
END;
CREATE TABLE IF NOT EXISTS conflicts (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, item TEXT NOT NULL, resolution TEXT NOT NULL, at TEXT NOT NULL);
"""


class Store:
    """The SQLite store.  Use :meth:`transaction` around every write."""

    def __init__(self, path: str | Path, settings: LinkingSettings | None = None):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = None
        self.settings = settings or LinkingSettings()
        self._index: LinkIndex | None = None
        #: text of mails stored without it while unmatched (id -> subject, snippet,
        #: visibility once linked), for a reply in a later batch that links them
        self._held: dict[int, tuple[str, str, str]] = {}
        self._in_tx = False
        try:
            self._open()
        except sqlite3.Error as exc:
            raise store_failure(exc, self.path) from None

    def _open(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=OFF")
        conn.execute("PRAGMA temp_store=MEMORY")
        # a first sync writes tens of thousands of rows with their indexes and
        # full-text entries: checkpointing the WAL every 40 MiB instead of
        # every 4 MiB saves about a tenth of its store time (a bigger page
        # cache saved little more and made memory grow with the store)
        conn.execute("PRAGMA wal_autocheckpoint=10000")
        self.conn = conn
        self.migrate()

    # -- schema -----------------------------------------------------------
    def migrate(self) -> None:
        current = self.schema_version()
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} was written by a newer crm-bridge (schema {current}, this one knows {SCHEMA_VERSION})"
            )
        if current == SCHEMA_VERSION:
            return
        if current == 0:
            # executescript commits first, so the whole script is its own transaction
            self.conn.executescript(
                "BEGIN IMMEDIATE;" + SCHEMA
                + f"INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', '{SCHEMA_VERSION}'); COMMIT;"
            )
        else:
            with self.transaction():
                for step in range(current + 1, SCHEMA_VERSION + 1):
                    MIGRATIONS[step](self)
                self.set_meta("schema_version", str(SCHEMA_VERSION))

    def schema_version(self) -> int:
        try:
            row = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.OperationalError:
            return 0
        return int(row[0]) if row else 0

    def close(self) -> None:
        self.conn.close()

    def quick_check(self) -> str | None:
        """``PRAGMA quick_check``: None when the file is sound, else what SQLite found (first lines)."""
        try:
            rows = [r[0] for r in self.conn.execute("PRAGMA quick_check(5)")]
        except sqlite3.DatabaseError as exc:
            return str(exc)
        if rows == ["ok"]:
            return None
        found = [line.strip() for row in rows for line in str(row).splitlines()
                 if line.strip() and not line.startswith("***")]
        return "; ".join(found[:2]) + (" ..." if len(found) > 2 else "")

    def optimize(self) -> None:
        """Fresh statistics for the query planner (run it after a sync run).

        A whole ``ANALYZE`` each time the store has doubled since the last one
        (0.15 s at 100,000 mails, so a growing store pays a few of them in all),
        else ``PRAGMA optimize``, which analyses what SQLite thinks needs it.
        The statements of the sync path do not depend on statistics (they are
        written to follow keys); the read side's joins do.
        """
        with self.transaction():
            items = self._one("SELECT MAX(id) FROM interactions") or 0
            if items > 2 * int(self.meta("analysed_items") or 0):
                self.conn.execute("ANALYZE")
                self.set_meta("analysed_items", str(items))
            else:
                self.conn.execute("PRAGMA optimize")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic unit.  Nested calls join the outer transaction."""
        if self._in_tx:
            yield
            return
        self.conn.execute("BEGIN IMMEDIATE")
        self._in_tx = True
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            self._index = None
            self._held.clear()  # ids handed out in the rolled-back batch are handed out again
            raise
        else:
            self.conn.execute("COMMIT")
            _fault_point()
        finally:
            self._in_tx = False

    @contextmanager
    def rolled_back(self) -> Iterator[None]:
        """Run writes and throw them away (``sync --dry-run``)."""
        self.conn.execute("BEGIN IMMEDIATE")
        self._in_tx = True
        try:
            yield
        finally:
            self.conn.execute("ROLLBACK")
            self._in_tx = False
            self._index = None
            self._held.clear()

    @property
    def db(self):
        """The store as a :class:`sqlite_utils.Database` (imported on first use:
        it is not needed on the sync path and costs start-up time)."""
        if self._db is None:
            import sqlite_utils

            self._db = sqlite_utils.Database(self.conn)
        return self._db

    def _insert(self, sql: str, params: Iterable[Any] = ()) -> int:
        """Run an INSERT; the new row's id."""
        rowid = self.conn.execute(sql, tuple(params)).lastrowid
        assert rowid is not None
        return rowid

    def _x(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, tuple(params))

    def _one(self, sql: str, params: Iterable[Any] = ()) -> Any:
        row = self.conn.execute(sql, tuple(params)).fetchone()
        return row[0] if row else None

    def meta(self, key: str) -> str | None:
        return self._one("SELECT value FROM meta WHERE key=?", (key,))

    def set_meta(self, key: str, value: str) -> None:
        self._x("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # -- the link index ---------------------------------------------------
    @property
    def index(self) -> LinkIndex:
        if self._index is None:
            idx = LinkIndex()
            idx.contact_by_email = dict(self._x("SELECT email, contact_id FROM contact_addresses"))
            idx.customer_of_contact = dict(self._x("SELECT id, customer_id FROM contacts"))
            idx.customer_by_domain = dict(self._x("SELECT domain, customer_id FROM customer_domains"))
            self._index = idx
        return self._index

    @property
    def linker(self) -> Linker:
        return Linker(self.settings, self.index)

    # -- customers and contacts -------------------------------------------
    def customer_id(self, name_or_id: str | int) -> int:
        if isinstance(name_or_id, int) or str(name_or_id).isdigit():
            found = self._one("SELECT id FROM customers WHERE id=?", (int(name_or_id),))
        else:
            found = self._one("SELECT id FROM customers WHERE name=? COLLATE NOCASE", (name_or_id,))
        if found is None:
            raise StoreError(f"no customer named {name_or_id!r}")
        return found

    def add_customer(self, name: str, domains: Iterable[str] = (), origin: str = "manual",
                     account_owner: str | None = None) -> int:
        """Create or extend a customer; new domains re-link past interactions.

        ``account_owner`` (who looks after the customer) is set when given.
        """
        name = name.strip()
        if not name:
            raise StoreError("a customer needs a name")
        with self.transaction():
            cid = self._one("SELECT id FROM customers WHERE name=? COLLATE NOCASE", (name,))
            if cid is None:
                cid = self._insert(
                    "INSERT INTO customers(name, origin, created_at) VALUES (?, ?, ?)", (name, origin, iso(utcnow()))
                )
            if account_owner is not None:
                self._x("UPDATE customers SET account_owner=? WHERE id=? AND account_owner != ?",
                        (account_owner.strip(), cid, account_owner.strip()))
            added = []
            for domain in domains:
                domain = normalise_domain(domain)
                if self.index.customer_by_domain.get(domain) == cid:
                    continue  # known already: nothing to check or re-link
                problem = domain_problem(domain)
                if problem:
                    raise StoreError(problem)
                if any(domain == d or domain.endswith("." + d) for d in self.settings.internal_domains.domains):
                    raise StoreError(f"{domain} is one of the company's internal domains")
                if is_freemail(domain, self.settings.extra_freemail):
                    raise StoreError(f"{domain} is a freemail provider; add its people as contacts instead")
                owner = self.index.customer_by_domain.get(domain)
                if owner is not None:
                    other = self._one("SELECT name FROM customers WHERE id=?", (owner,))
                    raise StoreError(f"{domain} already belongs to {other}")
                self._x("INSERT INTO customer_domains(domain, customer_id) VALUES (?, ?)", (domain, cid))
                self.index.customer_by_domain[domain] = cid
                added.append(domain)
            if added:
                self.relink(self._interactions_with_domains(added))
        return cid

    def customer_is_current(self, name: str, domains: Iterable[str] = (), account_owner: str | None = None) -> bool:
        """Whether :meth:`add_customer` with these arguments would change nothing (a read, no lock)."""
        row = self.conn.execute("SELECT id, account_owner FROM customers WHERE name=? COLLATE NOCASE",
                                (name.strip(),)).fetchone()
        if row is None or (account_owner is not None and row[1] != account_owner.strip()):
            return False
        have = {d for (d,) in self.conn.execute("SELECT domain FROM customer_domains WHERE customer_id=?", (row[0],))}
        return all(normalise_domain(d) in have for d in domains)

    def _interactions_with_domains(self, domains: list[str]) -> list[int]:
        ids: set[int] = set()
        for domain in domains:
            rows = self._x(
                "SELECT DISTINCT interaction_id FROM participants WHERE email LIKE ? OR email LIKE ?",
                (f"%@{domain}", f"%.{domain}"),
            )
            ids.update(r[0] for r in rows)
        return sorted(ids)

    def _interactions_with_emails(self, emails: Iterable[str]) -> list[int]:
        ids: set[int] = set()
        for email in emails:
            ids.update(r[0] for r in self._x("SELECT interaction_id FROM participants WHERE email=?", (email,)))
        return sorted(ids)

    def add_contact(
        self,
        name: str,
        emails: Iterable[str],
        customer_id: int | None = None,
        origin: str = "manual",
        uid: str | None = None,
        relink: bool = True,
    ) -> int:
        emails = [e.strip().lower() for e in emails if "@" in e]
        with self.transaction():
            cid = self._insert(
                "INSERT INTO contacts(name, customer_id, uid, origin, created_at) VALUES (?, ?, ?, ?, ?)",
                (name, customer_id, uid, origin, iso(utcnow())),
            )
            self.index.customer_of_contact[cid] = customer_id
            self._attach_emails(cid, emails)
            if relink and emails:
                self.relink(self._interactions_with_emails(emails))
        return cid

    def _attach_emails(self, contact_id: int, emails: Iterable[str]) -> list[str]:
        added = []
        for email in emails:
            if email in self.index.contact_by_email:
                continue
            self._x("INSERT OR IGNORE INTO contact_addresses(email, contact_id) VALUES (?, ?)", (email, contact_id))
            self.index.contact_by_email[email] = contact_id
            added.append(email)
        return added

    # -- applying a batch ---------------------------------------------------
    def apply_batch(self, policy: SourcePolicy, batch: Batch, now: datetime | None = None) -> Stats:
        """Store everything a batch carries (inside the caller's transaction)."""
        stats = Stats()
        now_s: str = iso(now or utcnow())
        touched_threads: set[int] = set()
        mails = [r for r in batch.records if isinstance(r, MailRecord)]
        if mails:
            self._apply_mails(mails, policy, now_s, stats, touched_threads)
        appointments = [r for r in batch.records if isinstance(r, AppointmentRecord)]
        if appointments:
            self._apply_appointments(appointments, policy, now_s, stats)
        for rec in batch.records:
            if isinstance(rec, (MailRecord, AppointmentRecord)):
                continue
            if isinstance(rec, ContactCard):
                self._apply_card(rec, policy, now_s, stats)
            elif isinstance(rec, TaskState):
                self._apply_task_state(rec, policy, now_s, stats)
        for change in batch.changes:
            self._apply_flags(change, policy, now_s, stats)
        for failure in batch.failures:
            loc = failure.location
            self._x(
                """INSERT INTO quarantine(source, scope, local_id, reason, excerpt, first_seen, last_seen)
                   VALUES (?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(source, scope, local_id) DO UPDATE SET reason=excluded.reason,
                   excerpt=excluded.excerpt, last_seen=excluded.last_seen, count=count+1""",
                (policy.name, loc.scope, loc.local_id, failure.reason[:500], failure.excerpt[:500], now_s, now_s),
            )
            # known with its etag, so an unchanged broken item is not fetched again every run
            self._put_location(policy.name, loc, "quarantined", None, "", now_s)
            stats.quarantined += 1
        if batch.removed:
            stats.removed += self._apply_removed(policy, batch.removed, now_s)
        if touched_threads:
            self._rescan_withheld(sorted(self._propagate_threads(touched_threads)), pulling=policy.name)
        stats.problems.extend(batch.problems)
        return stats

    def _location_item(self, source: str, loc: Location) -> tuple[str, int | None, str, str | None] | None:
        return self.conn.execute(
            "SELECT kind, item_id, etag, gone_at FROM locations WHERE source=? AND scope=? AND local_id=?",
            (source, loc.scope, loc.local_id),
        ).fetchone()

    def _put_location(self, source: str, loc: Location, kind: str, item_id: int | None, flags: str, now_s: str) -> None:
        self._x(_UPSERT_LOCATION, (source, loc.scope, loc.local_id, kind, item_id, loc.etag, flags, now_s))
        if kind != "quarantined":
            self._x("DELETE FROM quarantine WHERE source=? AND scope=? AND local_id=?", (source, loc.scope, loc.local_id))

    def _skip(self, source: str, loc: Location, message_id: str, reason: str, now_s: str, stats: Stats,
              priors: dict | None = None) -> None:
        prior = priors.get((loc.scope, loc.local_id)) if priors is not None else self._location_item(source, loc)
        if prior is not None and prior[0] == "interaction" and prior[1] is not None:
            self._detach(source, loc, prior[1], now_s)
        self._x(
            """INSERT INTO skipped(source, scope, local_id, message_id, reason, at) VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT(source, scope, local_id) DO UPDATE SET message_id=excluded.message_id,
               reason=excluded.reason, at=excluded.at""",
            (source, loc.scope, loc.local_id, message_id, reason, now_s),
        )
        self._put_location(source, loc, "skipped", None, "", now_s)
        stats.skipped += 1

    def _detach(self, source: str, loc: Location, interaction_id: int, now_s: str) -> None:
        """A location no longer shows this interaction (now private, blocked)."""
        self._x(
            "UPDATE locations SET kind='skipped', item_id=NULL WHERE source=? AND scope=? AND local_id=?",
            (source, loc.scope, loc.local_id),
        )
        live = self._one(
            "SELECT COUNT(*) FROM locations WHERE kind='interaction' AND item_id=?", (interaction_id,)
        )
        if not live:
            self._erase_interaction(interaction_id)

    def _erase_interaction(self, interaction_id: int) -> None:
        for table in ("participants", "occurrences", "links", "link_overrides"):
            self._x(f"DELETE FROM {table} WHERE interaction_id=?", (interaction_id,))
        self._x("UPDATE locations SET kind='skipped', item_id=NULL WHERE kind='interaction' AND item_id=?", (interaction_id,))
        self._x("DELETE FROM interactions WHERE id=?", (interaction_id,))

    def _visible(self, policy: SourcePolicy, linked: bool) -> str:
        vis = policy.visibility
        if not linked and self.settings.unmatched == "metadata":
            return "metadata"
        return vis

    def _apply_mails(self, recs: list[MailRecord], policy: SourcePolicy, now_s: str, stats: Stats,
                     threads: set[int]) -> None:
        """Store a batch of mails with a handful of statements, not a handful per mail.

        Ids are handed out here (the write transaction is ours alone), so
        interactions, participants, locations, thread references and links
        go in with one ``executemany`` each.
        """
        linker = self.linker
        source = policy.name
        priors = self._priors(source, [r.location for r in recs])
        skip_rows: list[tuple] = []
        loc_rows: list[tuple] = []
        unquarantine: list[tuple] = []

        def skip(rec: MailRecord, reason: str) -> None:
            loc = rec.location
            prior = priors.get((loc.scope, loc.local_id))
            if prior is not None and prior[0] == "interaction" and prior[1] is not None:
                self._detach(source, loc, prior[1], now_s)
            if prior is not None and prior[0] == "quarantined":
                unquarantine.append((source, loc.scope, loc.local_id))
            skip_rows.append((source, loc.scope, loc.local_id, rec.message_id, reason, now_s))
            loc_rows.append((source, loc.scope, loc.local_id, "skipped", None, loc.etag, "", now_s))
            stats.skipped += 1

        keep: list[tuple[MailRecord, str, str]] = []
        for rec in recs:
            reason = linker.skip_reason(rec, rec.location.scope, rec.flags, policy)
            if reason:
                skip(rec, reason)
            else:
                key, chash = mail_key(rec)
                keep.append((rec, key, chash))
        existing = self._ids_by_key([k for _, k, _ in keep]) if keep else {}
        unmatched = [(rec, key) for rec, key, _ in keep if key not in existing and rec.message_id]
        if unmatched:
            existing.update(self._same_mails(unmatched))
        refmap = self._thread_refs([i for rec, _, _ in keep for i in (rec.message_id, *rec.in_reply_to, *rec.references) if i])
        next_id = (self._one("SELECT MAX(id) FROM interactions") or 0) + 1
        next_thread = (self._one("SELECT MAX(id) FROM threads") or 0) + 1
        merged: dict[int, int] = {}
        new_rows: list[tuple] = []
        part_rows: list[tuple] = []
        link_rows: list[tuple] = []
        ref_rows: list[tuple] = []
        thread_rows: list[tuple] = []
        withheld: dict[int, tuple[str, str, str]] = {}  # id -> (subject, snippet, visibility once linked)
        contacts = _NewContacts(self, now_s, stats)
        logged: list[tuple[int, MailRecord, str]] = []
        unskip: list[tuple[str, str, str]] = []
        for rec, key, chash in keep:
            loc = rec.location
            flags = " ".join(rec.flags)
            prior = priors.get((loc.scope, loc.local_id))
            found = existing.get(key)
            if found is not None:
                iid, vis = found
                if prior is None or prior[1] != iid or prior[3] is not None:
                    stats.updated += 1
                    self._x("UPDATE interactions SET deleted=0 WHERE id=? AND deleted=1", (iid,))
                else:
                    stats.seen += 1
                if prior is not None and prior[0] in ("skipped", "quarantined"):
                    unskip.append((source, loc.scope, loc.local_id))
                loc_rows.append((source, loc.scope, loc.local_id, "interaction", iid, loc.etag, flags, now_s))
                if vis != policy.visibility and _VIS_RANK[policy.visibility] > _VIS_RANK.get(vis, 0):
                    linked = bool(self._one("SELECT 1 FROM links WHERE interaction_id=? LIMIT 1", (iid,)))
                    want = self._visible(policy, linked)
                    if _VIS_RANK[want] > _VIS_RANK.get(vis, 0):
                        self._x(
                            "UPDATE interactions SET subject=?, snippet=?, visibility=?, updated_at=? WHERE id=?",
                            (rec.subject if want != "metadata" else None, rec.snippet if want == "snippet" else None,
                             want, now_s, iid),
                        )
                continue
            iid = next_id
            next_id += 1
            participants = linker.mail_participants(rec)
            match = linker.match(participants, policy)
            # thread: every id the mail names joins one thread; two threads it joins become one
            ids = [i for i in (rec.message_id, *rec.in_reply_to, *rec.references) if i]
            thread_id = None
            if ids:
                found_threads = sorted({_find(merged, refmap[i]) for i in ids if i in refmap})
                if not found_threads:
                    thread_id = next_thread
                    next_thread += 1
                    thread_rows.append((thread_id, rec.subject[:200]))
                else:
                    thread_id = found_threads[0]
                    for other in found_threads[1:]:
                        merged[other] = thread_id
                        self._x("UPDATE thread_refs SET thread_id=? WHERE thread_id=?", (thread_id, other))
                        self._x("UPDATE interactions SET thread_id=? WHERE thread_id=?", (thread_id, other))
                        self._x("DELETE FROM threads WHERE id=?", (other,))
                        threads.discard(other)
                for i in ids:
                    if i not in refmap:
                        ref_rows.append((i, thread_id))
                    refmap[i] = thread_id
                if found_threads:  # a mail alone in a new thread has nobody to inherit from or pass on to
                    threads.add(thread_id)
            logged_by = "log folder" if policy.logged_anyway(loc.scope, rec.flags) else ""
            if not match.links and not logged_by and self.settings.unmatched == "drop":
                next_id -= 1
                skip(rec, "no customer or contact matched")
                continue
            direction = linker.direction(rec, policy)
            want = self._visible(policy, bool(match.links) or bool(logged_by))
            if want != policy.visibility:
                withheld[iid] = (rec.subject, rec.snippet, policy.visibility)
            new_rows.append((
                iid, key, rec.message_id, chash, thread_id, utc_iso(rec.date),
                rec.subject if want != "metadata" else None, rec.snippet if want == "snippet" else None,
                direction, want, rec.bulk, int(rec.has_attachments), logged_by, now_s, now_s,
                "\n".join(rec.warnings),
            ))
            existing[key] = (iid, want)
            blocked = self.settings.blocklist
            seen_people = set()
            for a, role in participants:
                if (a.email, role) in seen_people or (blocked and a.email in blocked):
                    continue
                seen_people.add((a.email, role))
                part_rows.append((iid, a.email, a.name, role, ""))
            loc_rows.append((source, loc.scope, loc.local_id, "interaction", iid, loc.etag, flags, now_s))
            if prior is not None and prior[0] in ("skipped", "quarantined"):
                unskip.append((source, loc.scope, loc.local_id))
            contacts.add_to(match)
            link_rows.extend((iid, t, tid, reason) for (t, tid), reason in match.links.items())
            if logged_by and not match.links:
                logged.append((iid, rec, direction))
            stats.added += 1
        x = self.conn.executemany
        contacts.flush()
        x("""INSERT INTO skipped(source, scope, local_id, message_id, reason, at) VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT(source, scope, local_id) DO UPDATE SET message_id=excluded.message_id,
             reason=excluded.reason, at=excluded.at""", skip_rows)
        x("INSERT INTO threads(id, subject) VALUES (?, ?)", thread_rows)
        x("INSERT OR IGNORE INTO thread_refs(message_id, thread_id) VALUES (?, ?)",
          [(i, _find(merged, t)) for i, t in ref_rows])
        x("""INSERT INTO interactions(id, dedup_key, message_id, content_hash, thread_id, date, subject, snippet,
             direction, visibility, bulk, has_attachments, logged_by, created_at, updated_at, warnings, kind)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'mail')""",
          [row[:4] + ((_find(merged, row[4]) if row[4] is not None else None),) + row[5:] for row in new_rows])
        x("INSERT OR IGNORE INTO participants(interaction_id, email, name, role, status) VALUES (?, ?, ?, ?, ?)", part_rows)
        x(_UPSERT_LOCATION, loc_rows)
        x("DELETE FROM skipped WHERE source=? AND scope=? AND local_id=?", unskip)
        x("DELETE FROM quarantine WHERE source=? AND scope=? AND local_id=?", unskip + unquarantine)
        x("INSERT OR REPLACE INTO links(interaction_id, target, target_id, reason) VALUES (?, ?, ?, ?)", link_rows)
        for iid, rec, direction in logged:
            self._log_unknown(iid, rec, policy, direction, now_s, stats)
        by_thread = self._propagate_threads(threads)
        threads.clear()
        # stored earlier without content while unmatched, linked through their thread
        # now: filled in from what this process still holds of an earlier batch, else
        # the sources that saw them read them again (as for a new customer)
        held = self._held
        earlier = [iid for iid in by_thread if iid not in withheld]
        withheld.update((iid, held.pop(iid)) for iid in earlier if iid in held)
        self._rescan_withheld(sorted(iid for iid in earlier if iid not in withheld), pulling=source)
        if withheld:  # withheld while unmatched, linked through their thread after all
            withheld_ids = list(withheld)
            filled = set()
            for chunk in range(0, len(withheld_ids), 500):
                part = withheld_ids[chunk:chunk + 500]
                marks = ",".join("?" * len(part))
                for (iid,) in self._x(f"SELECT DISTINCT interaction_id FROM links WHERE interaction_id IN ({marks})", part).fetchall():
                    subject, snippet, vis = withheld[iid]
                    self._x("UPDATE interactions SET subject=?, snippet=?, visibility=? WHERE id=? AND visibility='metadata'",
                            (subject if vis != "metadata" else None, snippet if vis == "snippet" else None, vis, iid))
                    filled.add(iid)
            held.update((iid, text) for iid, text in withheld.items() if iid not in filled)
            while len(held) > _HELD_MAX:  # the oldest go: replies come soon after or not in this run
                del held[next(iter(held))]

    def _priors(self, source: str, locs: list[Location]) -> dict[tuple[str, str], tuple]:
        """What the store knows of these locations: (scope, local id) -> (kind, item, etag, gone)."""
        out: dict[tuple[str, str], tuple] = {}
        by_scope: dict[str, list[str]] = {}
        for loc in locs:
            by_scope.setdefault(loc.scope, []).append(loc.local_id)
        for scope, local_ids in by_scope.items():
            for chunk in range(0, len(local_ids), 500):
                part = local_ids[chunk:chunk + 500]
                marks = ",".join("?" * len(part))
                for local_id, kind, item_id, etag, gone in self._x(
                    f"""SELECT local_id, kind, item_id, etag, gone_at FROM locations
                        WHERE source=? AND scope=? AND local_id IN ({marks})""", (source, scope, *part)
                ):
                    out[(scope, local_id)] = (kind, item_id, etag, gone)
        return out

    def _ids_by_key(self, keys: list[str]) -> dict[str, tuple[int, str]]:
        out: dict[str, tuple[int, str]] = {}
        for chunk in range(0, len(keys), 500):
            part = keys[chunk:chunk + 500]
            marks = ",".join("?" * len(part))
            for key, iid, vis in self._x(
                f"SELECT dedup_key, id, visibility FROM interactions WHERE dedup_key IN ({marks})", part
            ):
                out[key] = (iid, vis)
        return out

    def _same_mails(self, unmatched: list[tuple[MailRecord, str]]) -> dict[str, tuple[int, str]]:
        """Mails stored under another dedup key: the same Message-ID, sender, minute and subject.

        The key hashes the start of the snippet, so without this a mail seen
        again at a new place (moved, in a second mailbox, after a UIDVALIDITY
        reset) would be stored twice once a newer crm-bridge reads its text
        differently (reply quoting, HTML heads, inline parts).  A Message-ID
        alone stays a hint: two mails that share one but differ in sender,
        minute or subject stay two.  A subject that was not stored (metadata
        only) does not speak against the match.
        """
        wanted: dict[str, list[tuple[MailRecord, str]]] = {}
        for rec, key in unmatched:
            wanted.setdefault(rec.message_id, []).append((rec, key))
        out: dict[str, tuple[int, str]] = {}
        ids = list(wanted)
        for chunk in range(0, len(ids), 500):
            part = ids[chunk:chunk + 500]
            rows = self._x(
                "SELECT i.id, i.visibility, i.message_id, i.date, i.subject,"
                " (SELECT p.email FROM participants p WHERE p.interaction_id=i.id AND p.role='from' LIMIT 1)"
                f" FROM interactions i WHERE i.message_id IN ({','.join('?' * len(part))}) AND i.kind='mail'",
                part,
            ).fetchall()
            for iid, vis, message_id, date_s, subject, sender in rows:
                for rec, key in wanted[message_id]:
                    if key in out or (rec.sender.email if rec.sender else "") != (sender or ""):
                        continue
                    if (utc_iso(rec.date) or "")[:16] != (date_s or "")[:16]:
                        continue
                    if subject is not None and " ".join(subject.split()) != " ".join(rec.subject.split()):
                        continue
                    out[key] = (iid, vis)
        return out

    def _thread_refs(self, ids: list[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        ids = list(dict.fromkeys(ids))
        for chunk in range(0, len(ids), 500):
            part = ids[chunk:chunk + 500]
            marks = ",".join("?" * len(part))
            out.update(self._x(f"SELECT message_id, thread_id FROM thread_refs WHERE message_id IN ({marks})", part))
        return out

    def _log_unknown(self, iid: int, rec: MailRecord, policy: SourcePolicy, direction: str, now_s: str, stats: Stats) -> None:
        """A mail in the log folder from someone unknown: make them a contact."""
        people = [rec.sender] if direction == "in" and rec.sender else list(rec.to)
        for addr in self.linker.external([p for p in people if p], policy)[:1]:
            cid = self.index.contact_by_email.get(addr.email)
            if cid is None:
                cid = self.add_contact(addr.name or addr.email, [addr.email], None, origin="log folder", relink=False)
                stats.contacts_created += 1
            self._x("INSERT OR IGNORE INTO links VALUES (?, 'contact', ?, 'log folder')", (iid, cid))

    def _put_participants(self, iid: int, people: list[tuple[Address, str, str]]) -> None:
        blocked = self.settings.blocklist
        self.conn.executemany(
            "INSERT OR IGNORE INTO participants(interaction_id, email, name, role, status) VALUES (?, ?, ?, ?, ?)",
            [(iid, a.email, a.name, role, status) for a, role, status in people if not (blocked and a.email in blocked)],
        )

    def _store_links(self, iid: int, match: Match, now_s: str, stats: Stats) -> None:
        for addr, customer in match.new_contacts:
            if addr.email in self.index.contact_by_email:
                cid = self.index.contact_by_email[addr.email]
            else:
                cid = self.add_contact(addr.name or addr.email, [addr.email], customer, origin="auto", relink=False)
                stats.contacts_created += 1
            match.add(CONTACT, cid, "domain")
        overrides = self._x("SELECT target, target_id, action FROM link_overrides WHERE interaction_id=?", (iid,)).fetchall()
        for target, target_id, action in overrides:
            if action == "unlink":
                match.links.pop((target, target_id), None)
            else:
                match.links[(target, target_id)] = "manual"
        self.conn.executemany(
            "INSERT OR REPLACE INTO links(interaction_id, target, target_id, reason) VALUES (?, ?, ?, ?)",
            [(iid, t, tid, reason) for (t, tid), reason in match.links.items()],
        )

    # -- threads ------------------------------------------------------------
    def _propagate_threads(self, thread_ids: Iterable[int]) -> set[int]:
        """Mails of a thread without links of their own inherit its customers.

        The work follows the threads asked about (their mails through
        ``interactions_thread``, each mail's links through the primary key),
        never the whole ``links`` table (CROSS JOIN keeps SQLite to that order
        whatever its statistics say), and is linear in a thread's length: its
        customers and its mails without links are found apart, then paired.
        Returns the mails that got a link.
        """
        ids = sorted(set(thread_ids))
        linked: set[int] = set()
        for chunk in range(0, len(ids), 500):
            part = ids[chunk:chunk + 500]
            marks = ",".join("?" * len(part))
            customers: dict[int, list[tuple[str, int]]] = {}
            for thread_id, target, target_id in self._x(
                f"""SELECT DISTINCT o.thread_id, l.target, l.target_id FROM interactions o CROSS JOIN links l
                    WHERE o.thread_id IN ({marks}) AND l.interaction_id = o.id
                    AND l.target = 'customer' AND l.reason != 'thread'""",
                part,
            ):
                customers.setdefault(thread_id, []).append((target, target_id))
            if not customers:
                continue
            marks = ",".join("?" * len(customers))
            lonely = self._x(
                f"""SELECT m.id, m.thread_id FROM interactions m WHERE m.thread_id IN ({marks})
                    AND NOT EXISTS (SELECT 1 FROM links x WHERE x.interaction_id = m.id AND x.reason != 'thread')""",
                list(customers),
            ).fetchall()
            if not lonely:
                continue
            have: set[tuple[int, str, int]] = set()
            for start in range(0, len(lonely), 500):
                some = [iid for iid, _ in lonely[start:start + 500]]
                marks = ",".join("?" * len(some))
                have.update(self._x(f"SELECT interaction_id, target, target_id FROM links WHERE interaction_id IN ({marks})", some))
                have.update(self._x(
                    f"""SELECT interaction_id, target, target_id FROM link_overrides
                        WHERE interaction_id IN ({marks}) AND action = 'unlink'""", some))
            rows = [(iid, target, target_id) for iid, thread_id in lonely
                    for target, target_id in customers[thread_id] if (iid, target, target_id) not in have]
            self.conn.executemany(
                "INSERT OR IGNORE INTO links(interaction_id, target, target_id, reason) VALUES (?, ?, ?, 'thread')", rows
            )
            linked.update(r[0] for r in rows)
        return linked

    # -- re-linking ---------------------------------------------------------
    def relink(self, interaction_ids: Iterable[int]) -> int:
        """Recompute the automatic links of these interactions."""
        ids = list(interaction_ids)
        if not ids:
            return 0
        linker = self.linker
        threads: set[int] = set()
        stats = Stats()
        now_s = iso(utcnow())
        with self.transaction():
            for iid in ids:
                row = self._one("SELECT thread_id FROM interactions WHERE id=?", (iid,))
                people = [
                    (Address(e, n), role)
                    for e, n, role in self._x("SELECT email, name, role FROM participants WHERE interaction_id=?", (iid,))
                ]
                policy = self._policy_for(iid)
                match = linker.match(people, policy)
                self._x("DELETE FROM links WHERE interaction_id=? AND reason NOT IN ('manual', 'log folder')", (iid,))
                self._store_links(iid, match, now_s, stats)
                if row is not None:
                    threads.add(row)
            by_thread = self._propagate_threads(threads)
            self._rescan_withheld(sorted(set(ids) | by_thread))
        return len(ids)

    def _rescan_withheld(self, ids: list[int], pulling: str = "") -> None:
        """Mail stored without content while it matched nothing, now linked:
        the next sync of the sources that saw it reads it again to fill it in.

        ``sources.rescan`` holds two bits: 1, read everything at the next
        pull; 2, asked for while ``pulling``, the source's own pull, stores this
        batch: due once that pull is complete (then it becomes 1), so a pull
        killed and run again ends as a clean one does.
        """
        if self.settings.unmatched != "metadata" or not ids:
            return
        for chunk in range(0, len(ids), 500):
            part = ids[chunk:chunk + 500]
            marks = ",".join("?" * len(part))
            self._x(
                f"""UPDATE sources SET rescan=rescan | CASE WHEN name=? THEN 2 ELSE 1 END
                    WHERE name IN (SELECT DISTINCT l.source FROM interactions i
                    CROSS JOIN locations l ON l.kind='interaction' AND l.item_id=i.id
                    WHERE i.id IN ({marks}) AND i.visibility='metadata'
                    AND EXISTS (SELECT 1 FROM links k WHERE k.interaction_id=i.id))
                    AND COALESCE((SELECT value FROM meta WHERE key='visibility:' || name), '') != 'metadata'""",
                (pulling, *part),
            )

    def _policy_for(self, interaction_id: int) -> SourcePolicy:
        """Owner addresses of the sources that saw this interaction."""
        owners: set[str] = set()
        for (source,) in self._x(
            "SELECT DISTINCT source FROM locations WHERE kind='interaction' AND item_id=?", (interaction_id,)
        ):
            owners.update(json.loads(self.meta(f"owner:{source}") or "[]"))
        return SourcePolicy(name="", owner=frozenset(owners))

    def remember_policy(self, policy: SourcePolicy) -> None:
        self.set_meta(f"owner:{policy.name}", json.dumps(sorted(policy.owner)))
        self.set_meta(f"visibility:{policy.name}", policy.visibility)  # a rescan cannot bring in more

    def set_link(self, interaction_id: int, target: str, target_id: int, action: str) -> None:
        """A manual link or unlink; it wins over every rule and survives re-syncs."""
        if action not in ("link", "unlink") or target not in (CUSTOMER, CONTACT):
            raise StoreError(f"bad link request {action} {target}")
        with self.transaction():
            self._x(
                "INSERT OR REPLACE INTO link_overrides(interaction_id, target, target_id, action, at) VALUES (?, ?, ?, ?, ?)",
                (interaction_id, target, target_id, action, iso(utcnow())),
            )
            if action == "unlink":
                self._x("DELETE FROM links WHERE interaction_id=? AND target=? AND target_id=?", (interaction_id, target, target_id))
            else:
                self._x("INSERT OR REPLACE INTO links VALUES (?, ?, ?, 'manual')", (interaction_id, target, target_id))
                self._rescan_withheld([interaction_id])  # stored as metadata only: read it again

    # -- appointments -------------------------------------------------------
    def _apply_appointments(self, recs: list[AppointmentRecord], policy: SourcePolicy, now_s: str,
                            stats: Stats) -> None:
        """Appointments: new ones go in with one statement per table, known ones are compared and updated."""
        linker = self.linker
        source = policy.name
        placed = []
        for rec in recs:
            loc = rec.location
            if rec.recurrence_id:  # an override shares its resource with the master
                loc = Location(loc.scope, f"{loc.local_id}{OVERRIDE_MARK}{rec.recurrence_id}", loc.etag)
            placed.append((rec, loc))
        priors = self._priors(source, [loc for _, loc in placed])
        existing = self._ids_by_key([appointment_key(rec) for rec, _ in placed])
        next_id = first_new = (self._one("SELECT MAX(id) FROM interactions") or 0) + 1
        contacts = _NewContacts(self, now_s, stats)
        rows: list[tuple] = []
        part_rows: list[tuple] = []
        occ_rows: list[tuple] = []
        loc_rows: list[tuple] = []
        link_rows: list[tuple] = []
        unskip: list[tuple] = []
        for rec, loc in placed:
            reason = linker.skip_reason(rec, loc.scope, (), policy)
            if reason:
                self._skip(source, loc, rec.uid, reason, now_s, stats, priors)
                continue
            key = appointment_key(rec)
            participants = linker.appointment_participants(rec)
            match = linker.match(participants, policy)
            if not match.links and self.settings.unmatched == "drop":
                self._skip(source, loc, rec.uid, "no customer or contact matched", now_s, stats, priors)
                continue
            values = self._appointment_values(rec, policy, match, key, now_s)
            found = existing.get(key)
            if found is not None and found[0] >= first_new:  # twice in this batch: one more place
                loc_rows.append((source, loc.scope, loc.local_id, "interaction", found[0], loc.etag, "", now_s))
                stats.seen += 1
                continue
            if found is not None:
                contacts.add_to(match)
                self._update_appointment(found[0], rec, loc, values, participants, match, policy, now_s, stats)
                continue
            iid, next_id = next_id, next_id + 1
            existing[key] = (iid, values["visibility"])
            rows.append((iid, now_s, *values.values()))
            status = {a.address.email: a.status for a in rec.attendees}
            blocked = self.settings.blocklist
            seen: set[tuple[str, str]] = set()
            for a, role in participants:
                if (a.email, role) not in seen and not (blocked and a.email in blocked):
                    seen.add((a.email, role))
                    part_rows.append((iid, a.email, a.name, role, status.get(a.email, "")))
            occ_rows.extend((iid, o.recurrence_id, iso(o.start), iso(o.end), utc_iso(o.start), o.status)
                            for o in rec.occurrences)
            loc_rows.append((source, loc.scope, loc.local_id, "interaction", iid, loc.etag, "", now_s))
            prior = priors.get((loc.scope, loc.local_id))
            if prior is not None and prior[0] in ("skipped", "quarantined"):
                unskip.append((source, loc.scope, loc.local_id))
            contacts.add_to(match)
            link_rows.extend((iid, t, tid, r) for (t, tid), r in match.links.items())
            stats.added += 1
        contacts.flush()
        if rows:
            cols = ", ".join(f'"{c}"' for c in ("id", "created_at", *self._appointment_columns))
            self.conn.executemany(f"INSERT INTO interactions({cols}) VALUES ({', '.join('?' * (len(self._appointment_columns) + 2))})", rows)
        x = self.conn.executemany
        x("INSERT OR IGNORE INTO participants(interaction_id, email, name, role, status) VALUES (?, ?, ?, ?, ?)", part_rows)
        x('INSERT OR REPLACE INTO occurrences(interaction_id, recurrence_id, start, "end", date, status) VALUES (?, ?, ?, ?, ?, ?)', occ_rows)
        x(_UPSERT_LOCATION, loc_rows)
        x("DELETE FROM skipped WHERE source=? AND scope=? AND local_id=?", unskip)
        x("DELETE FROM quarantine WHERE source=? AND scope=? AND local_id=?", unskip)
        x("INSERT OR REPLACE INTO links(interaction_id, target, target_id, reason) VALUES (?, ?, ?, ?)", link_rows)

    _appointment_columns = ("kind", "dedup_key", "message_id", "content_hash", "thread_id", "date", "start", "end",
                            "tzid", "subject", "snippet", "direction", "visibility", "status", "uid", "recurrence_id",
                            "rrule", "location_text", "updated_at", "warnings")

    def _appointment_values(self, rec: AppointmentRecord, policy: SourcePolicy, match: Match, key: str,
                            now_s: str) -> dict[str, Any]:
        organizer = rec.organizer.address.email if rec.organizer else ""
        direction = "out" if (not organizer or self.linker.is_internal(organizer, policy)) else "in"
        want = self._visible(policy, bool(match.links))
        values = dict(
            kind="appointment", dedup_key=key, message_id="", content_hash="", thread_id=None,
            date=utc_iso(rec.start), start=iso(rec.start), end=iso(rec.end), tzid=rec.tzid,
            subject=rec.summary if want != "metadata" else None,
            snippet=rec.description[:300] if want == "snippet" else None,
            direction=direction, visibility=want, status=rec.status or "CONFIRMED", uid=rec.uid,
            recurrence_id=rec.recurrence_id, rrule=rec.rrule,
            location_text=rec.location_text if want != "metadata" else "", updated_at=now_s,
            warnings="\n".join(rec.warnings),
        )
        return values

    def _update_appointment(self, iid: int, rec: AppointmentRecord, loc: Location, values: dict[str, Any],
                            participants: list[tuple[Address, str]], match: Match, policy: SourcePolicy,
                            now_s: str, stats: Stats) -> None:
        """A known appointment seen again: compare, update what changed, relink."""
        current = self.conn.execute(
            'SELECT date, start, "end", subject, snippet, status, rrule, location_text, visibility, deleted FROM interactions WHERE id=?', (iid,)
        ).fetchone()
        new = (values["date"], values["start"], values["end"], values["subject"], values["snippet"], values["status"],
               values["rrule"], values["location_text"], values["visibility"], 0)
        if tuple(current) != new:
            sets = ", ".join(f'"{c}"=?' for c in values if c not in ("kind", "dedup_key"))
            params = [v for c, v in values.items() if c not in ("kind", "dedup_key")]
            self._x(f"UPDATE interactions SET {sets}, deleted=0 WHERE id=?", (*params, iid))
            stats.updated += 1
        else:
            stats.seen += 1
        self._x("DELETE FROM participants WHERE interaction_id=?", (iid,))
        self._x("DELETE FROM links WHERE interaction_id=? AND reason NOT IN ('manual', 'log folder')", (iid,))
        status = {a.address.email: a.status for a in rec.attendees}
        self._put_participants(iid, [(a, role, status.get(a.email, "")) for a, role in participants])
        self._x("DELETE FROM occurrences WHERE interaction_id=?", (iid,))
        self.conn.executemany(
            'INSERT OR REPLACE INTO occurrences(interaction_id, recurrence_id, start, "end", date, status) VALUES (?, ?, ?, ?, ?, ?)',
            [(iid, o.recurrence_id, iso(o.start), iso(o.end), utc_iso(o.start), o.status) for o in rec.occurrences],
        )
        self._put_location(policy.name, loc, "interaction", iid, "", now_s)
        self._x("DELETE FROM skipped WHERE source=? AND scope=? AND local_id=?", (policy.name, loc.scope, loc.local_id))
        self._store_links(iid, match, now_s, stats)

    # -- address books ------------------------------------------------------
    def _apply_card(self, card: ContactCard, policy: SourcePolicy, now_s: str, stats: Stats) -> None:
        loc = card.location
        emails = [e.strip().lower() for e in card.emails if "@" in e]
        name = card.full_name or " ".join(p for p in (card.given_name, card.family_name) if p) or (emails[0] if emails else "")
        contact_id = self._one("SELECT id FROM contacts WHERE uid=?", (card.uid,)) if card.uid else None
        if contact_id is None:
            for email in emails:
                contact_id = self.index.contact_by_email.get(email)
                if contact_id is not None:
                    break
        customer_id = self._customer_for_card(card, emails, policy, stats)
        if contact_id is None:
            contact_id = self.add_contact(name, [], customer_id, origin=f"address book {policy.name}", uid=card.uid or None, relink=False)
            stats.added += 1
            stats.contacts_created += 1
        else:
            current_customer = self.index.customer_of_contact.get(contact_id)
            self._x(
                "UPDATE contacts SET name=?, customer_id=COALESCE(?, customer_id), uid=COALESCE(uid, ?) WHERE id=?",
                (name, customer_id, card.uid or None, contact_id),
            )
            if customer_id is not None and customer_id != current_customer:
                self.index.customer_of_contact[contact_id] = customer_id
            stats.updated += 1
        self._x(
            "UPDATE contacts SET title=?, phones=?, categories=? WHERE id=?",
            (card.title, json.dumps(list(card.phones)), json.dumps(list(card.categories)), contact_id),
        )
        self._attach_emails(contact_id, emails)
        self._put_location(policy.name, loc, "contact", contact_id, "", now_s)
        affected = self._interactions_with_emails(emails)
        if affected:
            self.relink(affected)

    def _customer_for_card(self, card: ContactCard, emails: list[str], policy: SourcePolicy, stats: Stats) -> int | None:
        org = card.organisation.strip()
        if org:
            found = self._one("SELECT id FROM customers WHERE name=? COLLATE NOCASE", (org,))
            if found is not None:
                return found
        domains = []
        for email in emails:
            domain = email.rpartition("@")[2]
            if is_freemail(domain, self.settings.extra_freemail) or email in self.settings.internal_domains:
                continue
            customer = self.linker.customer_for_domain(domain)
            if customer is not None:
                return customer
            domains.append(registrable_domain(domain))
        if org and policy.create_customers:
            cid = self.add_customer(org, sorted(set(domains)), origin=f"address book {policy.name}")
            stats.customers_created += 1
            return cid
        return None

    # -- tasks read back ----------------------------------------------------
    def _apply_task_state(self, state: TaskState, policy: SourcePolicy, now_s: str, stats: Stats) -> None:
        row = self.conn.execute(
            "SELECT id, status, due, title, version, pushed_version, remote_etag, sent_digests FROM tasks WHERE uid=?",
            (state.uid,)
        ).fetchone()
        if row is None:
            return  # the user's own task, not ours
        tid, status, due, title, version, pushed, etag, sent = row
        if state.location.etag and state.location.etag == etag:
            stats.seen += 1
            return
        client_status = {"COMPLETED": "done", "CANCELLED": "cancelled"}.get(state.status, "open")
        client_due = iso(state.due)
        if sent and task_digest(state.summary or title, client_status, state.due) in sent.split():
            # our own write whose recording a crash lost: not the client's change; where the CRM
            # changed the task since, the next push writes that over it
            self._x("UPDATE tasks SET remote_etag=?, remote_scope=?, remote_href=? WHERE id=?",
                    (state.location.etag, state.location.scope, state.location.local_id, tid))
            self._put_location(policy.name, state.location, "task", tid, "", now_s)
            stats.seen += 1
            return
        changed = client_status != status or (state.summary and state.summary != title) or (client_due or None) != (due or None)
        if changed and version > pushed:
            self._x(
                "INSERT INTO conflicts(kind, item, resolution, at) VALUES ('task', ?, ?, ?)",
                (state.uid, "changed in the CRM and in the client: the client's version wins", now_s),
            )
            log.warning("task %s changed on both sides; the client's version wins", state.uid)
        completed = iso(state.completed) if client_status == "done" else None
        self._x(
            """UPDATE tasks SET status=?, due=?, title=?, completed_at=?, remote_etag=?, remote_scope=?,
               remote_href=?, pushed_version=version, updated_at=? WHERE id=?""",
            (client_status, client_due, state.summary or title, completed, state.location.etag,
             state.location.scope, state.location.local_id, now_s, tid),
        )
        self._put_location(policy.name, state.location, "task", tid, "", now_s)
        if changed:
            stats.tasks_updated += 1
        else:
            stats.seen += 1

    # -- flags and removals -------------------------------------------------
    def _apply_flags(self, change: FlagChange, policy: SourcePolicy, now_s: str, stats: Stats) -> None:
        loc = change.location
        prior = self._location_item(policy.name, loc)
        if prior is None:
            return
        if policy.private_keyword and policy.private_keyword in change.flags and prior[0] == "interaction":
            self._skip(policy.name, loc, "", f"private keyword {policy.private_keyword}", now_s, stats)
            return
        self._x(
            "UPDATE locations SET flags=?, etag=CASE WHEN ?='' THEN etag ELSE ? END WHERE source=? AND scope=? AND local_id=?",
            (" ".join(change.flags), loc.etag, loc.etag, policy.name, loc.scope, loc.local_id),
        )
        stats.updated += 1

    def _apply_removed(self, policy: SourcePolicy, removed: list[Location], now_s: str) -> int:
        """Locations gone from the source (with the overrides stored under an
        appointment's resource).  Each is found through the primary key, never
        by scanning its folder: removing a whole folder costs what storing it did."""
        source = policy.name
        found: list[tuple[str, str, str, int | None]] = []  # (scope, local id, kind, item)
        by_scope: dict[str, list[str]] = {}
        for loc in removed:
            by_scope.setdefault(loc.scope, []).append(loc.local_id)
        for scope, local_ids in by_scope.items():
            local_ids = list(dict.fromkeys(local_ids))
            for chunk in range(0, len(local_ids), 500):
                part = local_ids[chunk:chunk + 500]
                marks = ",".join("?" * len(part))
                found.extend((scope, *row) for row in self._x(
                    f"""SELECT local_id, kind, item_id FROM locations
                        WHERE source=? AND scope=? AND local_id IN ({marks}) AND gone_at IS NULL""",
                    (source, scope, *part)))
            # "<id>#rid=..." sorts between "<id>#rid=" and "<id>#rid>": one range of the key per id
            for local_id in local_ids:
                low = local_id + OVERRIDE_MARK
                found.extend((scope, *row) for row in self._x(
                    """SELECT local_id, kind, item_id FROM locations WHERE source=? AND scope=?
                       AND local_id >= ? AND local_id < ? AND gone_at IS NULL""",
                    (source, scope, low, low[:-1] + chr(ord(low[-1]) + 1))))
        self.conn.executemany(
            "UPDATE locations SET gone_at=? WHERE source=? AND scope=? AND local_id=?",
            [(now_s, source, scope, local_id) for scope, local_id, _, _ in found],
        )
        touched: set[int] = set()
        for _, _, kind, item_id in found:
            if kind == "interaction" and item_id is not None:
                touched.add(item_id)
            elif kind == "task" and item_id is not None:
                self._task_gone(item_id)
        for iid in sorted(touched):
            live = self._one(
                "SELECT 1 FROM locations WHERE kind='interaction' AND item_id=? AND gone_at IS NULL LIMIT 1", (iid,)
            )
            if live:
                continue
            if self.settings.on_delete == "erase":
                self._erase_interaction(iid)
            else:
                self._x("UPDATE interactions SET deleted=1, updated_at=? WHERE id=?", (now_s, iid))
        return len(found)

    def _task_gone(self, task_id: int) -> None:
        """A pushed task was deleted in the client.  Unless the CRM changed it
        since (then the push uploads it again: edit beats delete), it is cancelled."""
        row = self.conn.execute("SELECT uid, status, version, pushed_version FROM tasks WHERE id=?", (task_id,)).fetchone()
        if row is None or row[2] > row[3]:
            return
        if row[1] == "open":
            self.log_conflict("task", row[0], "deleted in the client: cancelled in the CRM")
            self._x("UPDATE tasks SET status='cancelled', remote_href=NULL, remote_etag=NULL WHERE id=?", (task_id,))

    def known_locations(self, source: str, scope: str) -> dict[str, str]:
        rows = self.conn.execute(
            "SELECT local_id, etag FROM locations WHERE source=? AND scope=? AND gone_at IS NULL", (source, scope)
        )
        return {local_id: etag for local_id, etag in rows if OVERRIDE_MARK not in local_id}

    def known_scopes(self, source: str) -> list[str]:
        # hop from scope to scope along the primary key instead of reading
        # every location: a no-change run of a 100,000-mail source asks this
        rows = self.conn.execute(
            """WITH RECURSIVE s(scope) AS (
                   SELECT (SELECT MIN(scope) FROM locations WHERE source = :source)
                   UNION ALL
                   SELECT (SELECT MIN(scope) FROM locations WHERE source = :source AND scope > s.scope)
                   FROM s WHERE s.scope IS NOT NULL)
               SELECT scope FROM s
               WHERE scope IS NOT NULL AND EXISTS (
                   SELECT 1 FROM locations WHERE source = :source AND scope = s.scope AND gone_at IS NULL)""",
            {"source": source},
        )
        return [r[0] for r in rows]

    # -- blocklist ----------------------------------------------------------
    def apply_blocklist(self) -> int:
        """Remove what was logged from blocked addresses (retroactively).

        Only when the blocklist changed since the last time: mail that came
        later was checked against it when it was stored, and this reads every
        participant of the store.
        """
        blocked = self.settings.blocklist
        entries = json.dumps(blocked.entries())
        if self.meta("blocklist_applied") == entries:
            return 0
        if not blocked:
            with self.transaction():
                self.set_meta("blocklist_applied", entries)
            return 0
        removed = 0
        now_s = iso(utcnow())
        with self.transaction():
            self.set_meta("blocklist_applied", entries)
            candidates: dict[int, list[tuple[str, str]]] = {}
            for iid, email, role in self._x("SELECT interaction_id, email, role FROM participants"):
                candidates.setdefault(iid, []).append((email, role))
            for iid, people in candidates.items():
                sender_blocked = any(role == "from" and email in blocked for email, role in people)
                if not sender_blocked:
                    continue
                for source, scope, local_id in self._x(
                    "SELECT source, scope, local_id FROM locations WHERE kind='interaction' AND item_id=?", (iid,)
                ).fetchall():
                    self._x(
                        """INSERT OR REPLACE INTO skipped(source, scope, local_id, message_id, reason, at)
                           VALUES (?, ?, ?, (SELECT message_id FROM interactions WHERE id=?), 'blocked sender', ?)""",
                        (source, scope, local_id, iid, now_s),
                    )
                self._erase_interaction(iid)
                removed += 1
            if blocked.addresses:
                marks = ",".join("?" * len(blocked.addresses))
                self._x(f"DELETE FROM participants WHERE email IN ({marks})", sorted(blocked.addresses))
        return removed

    # -- sources and runs ---------------------------------------------------
    def source_state(self, name: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT type, cursor, fingerprint, rescan FROM sources WHERE name=?", (name,)).fetchone()
        if row is None:
            return None
        return {"type": row[0], "cursor": json.loads(row[1]) if row[1] else None, "fingerprint": row[2],
                "rescan": bool(row[3] & 1)}  # 2: after the pull in progress (see _rescan_withheld)

    def register_source(self, name: str, type_name: str) -> None:
        self._x("INSERT OR IGNORE INTO sources(name, type) VALUES (?, ?)", (name, type_name))
        self._x("UPDATE sources SET type=? WHERE name=?", (type_name, name))

    def save_cursor(self, name: str, cursor: dict | None) -> None:
        self._x("UPDATE sources SET cursor=? WHERE name=?", (json.dumps(cursor, sort_keys=True) if cursor is not None else None, name))

    def set_fingerprint(self, name: str, fingerprint: str) -> None:
        """The end of a complete pull: the rescans asked for before it are done
        (one asked for while it ran, bit 2, is due now)."""
        self._x("UPDATE sources SET fingerprint=?, rescan=CASE WHEN rescan & 2 THEN 1 ELSE 0 END WHERE name=?",
                (fingerprint, name))

    def request_rescan(self, name: str | None = None) -> None:
        """The next sync of the source(s) reads everything again (no duplicates)."""
        if name is None:
            self._x("UPDATE sources SET rescan=1")
        else:
            self._x("UPDATE sources SET rescan=1 WHERE name=?", (name,))

    def start_run(self, name: str, now: datetime | None = None) -> int:
        return self._insert("INSERT INTO runs(source, started_at, status) VALUES (?, ?, 'running')",
                            (name, iso(now or utcnow())))

    def note_run_progress(self, run_id: int, so_far: Stats, batch: Stats) -> None:
        """Keep a running run's stats current (in the batch's transaction), so a killed run shows what it stored."""
        total = Stats()
        total.merge(so_far)
        total.merge(batch)
        total.problems = total.problems[:20]
        self._x("UPDATE runs SET stats=? WHERE id=?", (json.dumps(total.as_dict()), run_id))

    def close_stale_runs(self) -> int:
        """Runs still "running" when a new sync holds the lock ended by a signal or a crash: say so."""
        stale = self._x("SELECT id, source, started_at FROM runs WHERE status='running'").fetchall()
        for run_id, source, started in stale:
            self._x("UPDATE runs SET status='interrupted', message=? WHERE id=?",
                    ("ended without finishing (killed or crashed); the next sync went on from there", run_id))
            items = self._one("SELECT COUNT(*) FROM locations WHERE source=? AND gone_at IS NULL "
                              "AND kind NOT IN ('skipped', 'quarantined')", (source,))
            self._x("UPDATE sources SET last_run_at=?, last_status='interrupted', last_error=?, items=? "
                    "WHERE name=? AND (last_run_at IS NULL OR last_run_at <= ?)",
                    (started, "the run was killed or crashed", items or 0, source, started))
        return len(stale)

    def finish_run(self, run_id: int, name: str, status: str, stats: Stats, message: str = "") -> None:
        now_s = iso(utcnow())
        self._x(
            "UPDATE runs SET finished_at=?, status=?, stats=?, message=? WHERE id=?",
            (now_s, status, json.dumps(stats.as_dict()), message, run_id),
        )
        items = self._one(
            "SELECT COUNT(*) FROM locations WHERE source=? AND gone_at IS NULL AND kind NOT IN ('skipped', 'quarantined')",
            (name,),
        )
        self._x(
            "UPDATE sources SET last_run_at=?, last_status=?, last_error=?, items=? WHERE name=?",
            (now_s, status, message if status != "ok" else None, items or 0, name),
        )

    # -- tasks ----------------------------------------------------------------
    def add_task(
        self,
        title: str,
        due: date | datetime | None = None,
        customer_id: int | None = None,
        interaction_id: int | None = None,
        description: str = "",
        rule_key: str | None = None,
        contact_id: int | None = None,
    ) -> int | None:
        """Create a task; a rule-made task (``rule_key``) is created once only."""
        now_s = iso(utcnow())
        if rule_key:  # the same rule and item give the same task, in every process
            uid = "crm-bridge-" + hashlib.sha1(rule_key.encode()).hexdigest()[:24]
        else:  # a task added by hand is always a new one, however many are added at once
            uid = "crm-bridge-" + uuid.uuid4().hex[:24]
        with self.transaction():
            cur = self._x(
                f"""INSERT {'OR IGNORE ' if rule_key else ''}INTO tasks(uid, rule_key, title, description, due,
                   customer_id, contact_id, interaction_id, created_at, updated_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (uid, rule_key, title, description, iso(due), customer_id, contact_id, interaction_id, now_s, now_s),
            )
            return cur.lastrowid if cur.rowcount else None

    def update_task(self, task_id: int, **changes: Any) -> None:
        allowed = {"title", "description", "due", "status"}
        bad = set(changes) - allowed
        if bad:
            raise StoreError(f"cannot change {', '.join(sorted(bad))} of a task")
        if self._one("SELECT id FROM tasks WHERE id=?", (task_id,)) is None:
            raise StoreError(f"no task {task_id}")
        now_s = iso(utcnow())
        if "due" in changes:
            changes["due"] = iso(changes["due"])
        if changes.get("status") == "done":
            changes["completed_at"] = now_s
        elif "status" in changes:
            changes["completed_at"] = None
        sets = ", ".join(f"{k}=?" for k in changes)
        with self.transaction():
            self._x(f"UPDATE tasks SET {sets}, version=version+1, updated_at=? WHERE id=?", (*changes.values(), now_s, task_id))

    def tasks(self, status: str | None = None) -> list[dict[str, Any]]:
        where, params = ("WHERE t.status=?", (status,)) if status else ("", ())
        return [
            dict(r)
            for r in self.db.query(
                f"""SELECT t.id, t.uid, t.title, t.description, t.due, t.status, t.completed_at, t.rule_key,
                    t.customer_id, c.name AS customer, t.interaction_id, t.remote_href, t.version, t.pushed_version
                    FROM tasks t LEFT JOIN customers c ON c.id = t.customer_id {where}
                    ORDER BY t.status, COALESCE(t.due, '9999'), t.id""",
                params,
            )
        ]

    def tasks_to_push(self) -> list[dict[str, Any]]:
        return [
            dict(r)
            for r in self.db.query(
                """SELECT * FROM tasks WHERE version > pushed_version
                   OR (remote_href IS NULL AND NOT (status = 'cancelled' AND pushed_version > 0)) ORDER BY id"""
            )
        ]

    def note_sending(self, task: dict[str, Any]) -> None:
        """Before a push writes ``task``: remember what it writes (a few unconfirmed writes are kept), so that
        reading it back after a crash before :meth:`record_push` is known as ours, not the client's."""
        digest = task_digest(task["title"], task["status"], task.get("due"))
        kept = [d for d in (task.get("sent_digests") or "").split() if d != digest]
        self._x("UPDATE tasks SET sent_digests=? WHERE id=?", (" ".join([digest, *kept][:4]), task["id"]))

    def is_own_write(self, task: dict[str, Any], state: TaskState) -> bool:
        """Whether ``state`` (read from the server) is what a push of ``task`` wrote."""
        status = {"COMPLETED": "done", "CANCELLED": "cancelled"}.get(state.status, "open")
        sent = self._one("SELECT sent_digests FROM tasks WHERE id=?", (task["id"],)) or ""
        return task_digest(state.summary or task["title"], status, state.due) in sent.split()

    def record_push(self, task_id: int, version: int, source: str, scope: str, href: str, etag: str) -> None:
        """The task as of ``version`` is in the calendar at ``href``."""
        self._x(
            """UPDATE tasks SET pushed_version=?, remote_source=?, remote_scope=?, remote_href=?, remote_etag=?,
               sent_digests=CASE WHEN version=? THEN '' ELSE sent_digests END WHERE id=?""",
            (version, source, scope, href, etag, version, task_id),
        )
        self._put_location(source, Location(scope, href, etag), "task", task_id, "", iso(utcnow()))

    def cancel_task(self, task_id: int) -> None:
        self._x("UPDATE tasks SET status='cancelled', pushed_version=version WHERE id=?", (task_id,))

    def task_description(self, task: dict[str, Any]) -> str:
        """The text a calendar shows under a task: what it is about, and how to find it in the CRM."""
        lines = [task.get("description") or ""]
        if task.get("customer_id"):
            name = self._one("SELECT name FROM customers WHERE id=?", (task["customer_id"],))
            if name:
                lines.append(f'Customer: {name}  (crm timeline "{name}")')
        if task.get("interaction_id"):
            row = self.conn.execute(
                "SELECT kind, subject, date, message_id FROM interactions WHERE id=?", (task["interaction_id"],)
            ).fetchone()
            if row:
                ref = f" <{row[3]}>" if row[3] else ""
                lines.append(f'About the {row[0]} "{row[1] or ""}" of {row[2] or "?"}{ref} '
                             f'(crm explain {row[3] or task["interaction_id"]})')
        lines.append(f"crm-bridge task {task['id']}")
        return "\n".join(line for line in lines if line)

    def record_card_push(self, uid: str, digest: str, source: str, scope: str, href: str, etag: str) -> None:
        self._x(
            """INSERT OR REPLACE INTO card_pushes(uid, content_hash, remote_source, remote_scope, remote_href, remote_etag)
               VALUES (?, ?, ?, ?, ?, ?)""",
            (uid, digest, source, scope, href, etag),
        )

    def log_conflict(self, kind: str, item: str, resolution: str) -> None:
        log.info("%s %s: %s", kind, item, resolution)  # the sync's result says it; this is for the log file
        self._x("INSERT INTO conflicts(kind, item, resolution, at) VALUES (?, ?, ?, ?)", (kind, item, resolution, iso(utcnow())))

    # -- read side ------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        out = {}
        for table in ("customers", "contacts", "interactions", "links", "tasks", "quarantine", "skipped"):
            out[table] = self._one(f"SELECT COUNT(*) FROM {table}")
        out["mails"] = self._one("SELECT COUNT(*) FROM interactions WHERE kind='mail'")
        out["appointments"] = self._one("SELECT COUNT(*) FROM interactions WHERE kind='appointment'")
        return out

    def customers(self) -> list[dict[str, Any]]:
        rows = self.db.query(
            """SELECT c.id, c.name, c.origin, c.account_owner,
               (SELECT group_concat(domain, ' ') FROM customer_domains d WHERE d.customer_id = c.id) AS domains,
               (SELECT COUNT(*) FROM contacts k WHERE k.customer_id = c.id) AS contacts,
               (SELECT COUNT(DISTINCT interaction_id) FROM links l WHERE l.target='customer' AND l.target_id=c.id) AS interactions,
               (SELECT MAX(i.date) FROM links l JOIN interactions i ON i.id=l.interaction_id
                 WHERE l.target='customer' AND l.target_id=c.id AND i.date <= strftime('%Y-%m-%dT%H:%M:%SZ','now')) AS last_contact,
               (SELECT COUNT(*) FROM tasks t WHERE t.customer_id=c.id AND t.status='open') AS open_tasks
               FROM customers c ORDER BY c.name COLLATE NOCASE"""
        )
        return [dict(r) for r in rows]

    def customer(self, name: str) -> dict[str, Any]:
        cid = self.customer_id(name)
        info = next(c for c in self.customers() if c["id"] == cid)
        info["contacts_list"] = [
            dict(r)
            for r in self.db.query(
                """SELECT k.id, k.name, k.title, k.origin, group_concat(a.email, ' ') AS emails FROM contacts k
                   LEFT JOIN contact_addresses a ON a.contact_id = k.id WHERE k.customer_id=? GROUP BY k.id ORDER BY k.name""",
                (cid,),
            )
        ]
        return info

    def timeline(self, customer: str, limit: int = 50, include_deleted: bool = True) -> list[dict[str, Any]]:
        """Interactions of a customer, newest first; recurring appointments as occurrences."""
        cid = self.customer_id(customer)
        rows = self.db.query(
            """SELECT i.id, i.kind, i.date, i.start, i."end", i.subject, i.snippet, i.direction, i.status,
               i.rrule, i.deleted, i.message_id, i.location_text, l.reason,
               (SELECT p.email FROM participants p WHERE p.interaction_id=i.id AND p.role IN ('from','organizer') LIMIT 1) AS sender,
               (SELECT group_concat(p.email, ', ') FROM participants p WHERE p.interaction_id=i.id AND p.role='to') AS recipients
               FROM links l JOIN interactions i ON i.id=l.interaction_id
               WHERE l.target='customer' AND l.target_id=?""",
            (cid,),
        )
        items = []
        for r in rows:
            r = dict(r)
            if not include_deleted and r["deleted"]:
                continue
            if r["rrule"]:
                # an occurrence that a RECURRENCE-ID override replaces shows as that override's own row
                overridden = {rid for (rid,) in self._x(
                    "SELECT o.recurrence_id FROM interactions m JOIN interactions o"
                    " ON o.dedup_key > 'a:' || m.uid || char(31) AND o.dedup_key < 'a:' || m.uid || char(32)"
                    " WHERE m.id=? AND (o.deleted=0 OR m.deleted=1)", (r["id"],))}
                for o in self._x(
                    'SELECT recurrence_id, start, "end", date, status FROM occurrences WHERE interaction_id=?', (r["id"],)
                ):
                    if o[0] in overridden:
                        continue
                    occ = dict(r, start=o[1], end=o[2], date=o[3], status=o[4], recurrence_id=o[0])
                    items.append(occ)
            else:
                items.append(r)
        items.sort(key=lambda x: x["date"] or "", reverse=True)
        return items[:limit] if limit else items

    def search(self, text: str, limit: int = 50) -> list[dict[str, Any]]:
        query = " ".join(f'"{t}"' for t in text.replace('"', " ").split())
        if not query:
            return []
        rows = self.db.query(
            """SELECT i.id, i.kind, i.date, i.subject, i.snippet, i.direction, i.message_id,
               (SELECT group_concat(c.name, ', ') FROM links l JOIN customers c ON c.id=l.target_id
                WHERE l.interaction_id=i.id AND l.target='customer') AS customers
               FROM interactions_fts f JOIN interactions i ON i.id = f.rowid
               WHERE interactions_fts MATCH ? ORDER BY i.date DESC LIMIT ?""",
            (query, limit),
        )
        return [dict(r) for r in rows]

    def explain(self, message_id: str) -> list[dict[str, Any]]:
        """Why a mail (by Message-ID) or appointment (by UID) is linked, or not logged."""
        message_id = message_id.strip().strip("<>")
        if " " in message_id:  # stored without the spaces (connectors.mailparse.parse_ids)
            message_id = "".join(message_id.split())
        out = []
        by_id = int(message_id) if message_id.isdigit() else -1  # the id a timeline shows
        for iid, kind, subject, warnings in self._x(
            "SELECT id, kind, subject, warnings FROM interactions"
            " WHERE message_id=? OR (kind='appointment' AND uid=?) OR id=?",
            (message_id, message_id, by_id),
        ).fetchall():
            links = []
            for target, target_id, reason in self._x("SELECT target, target_id, reason FROM links WHERE interaction_id=?", (iid,)):
                table = "customers" if target == CUSTOMER else "contacts"
                name = self._one(f"SELECT name FROM {table} WHERE id=?", (target_id,))
                links.append({"target": target, "id": target_id, "name": name, "reason": reason})
            unlinked = [
                {"target": t, "id": i} for t, i in self._x(
                    "SELECT target, target_id FROM link_overrides WHERE interaction_id=? AND action='unlink'", (iid,)
                )
            ]
            places = [
                {"source": s, "scope": sc, "local_id": li, "gone": bool(g)}
                for s, sc, li, g in self._x(
                    "SELECT source, scope, local_id, gone_at FROM locations WHERE kind='interaction' AND item_id=?", (iid,)
                )
            ]
            out.append({"interaction": iid, "kind": kind, "subject": subject, "logged": True, "links": links,
                        "manually_unlinked": unlinked, "seen_in": places,
                        "warnings": warnings.split("\n") if warnings else []})
        for source, scope, local_id, reason in self._x(
            "SELECT source, scope, local_id, reason FROM skipped WHERE message_id=?", (message_id,)
        ):
            out.append({"logged": False, "reason": reason, "seen_in": [{"source": source, "scope": scope, "local_id": local_id}]})
        return out

    def quarantine(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.query("SELECT * FROM quarantine ORDER BY last_seen DESC, source, scope, local_id")]

    def status(self) -> list[dict[str, Any]]:
        """Per source: the last finished run (``last_*``) and the latest run (``run_*``, maybe unfinished)."""
        rows = self.db.query(
            """SELECT s.name, s.type, s.last_run_at, s.last_status, s.last_error, s.items,
               (SELECT COUNT(*) FROM quarantine q WHERE q.source=s.name) AS quarantined,
               r.stats AS last_stats, r.status AS run_status, r.started_at AS run_started_at,
               r.finished_at AS run_finished_at, r.message AS run_message
               FROM sources s LEFT JOIN runs r ON r.id = (SELECT MAX(id) FROM runs WHERE source=s.name)
               ORDER BY s.name"""
        )
        out = []
        for r in rows:
            r = dict(r)
            r["last_stats"] = json.loads(r["last_stats"]) if r["last_stats"] else None
            if r["run_status"] == "running":
                # not finished: what is stored now, not what the run before it left
                r["items"] = self._one("SELECT COUNT(*) FROM locations WHERE source=? AND gone_at IS NULL "
                                       "AND kind NOT IN ('skipped', 'quarantined')", (r["name"],)) or 0
            out.append(r)
        return out

    def interaction_id(self, ref: str) -> int:
        """An interaction by id or by Message-ID."""
        ref = ref.strip().strip("<>")
        if ref.isdigit() and self._one("SELECT id FROM interactions WHERE id=?", (int(ref),)) is not None:
            return int(ref)
        found = self._x("SELECT id FROM interactions WHERE message_id=? OR uid=?", (ref, ref)).fetchall()
        if not found:
            raise StoreError(f"no interaction {ref!r}")
        if len(found) > 1:
            raise StoreError(f"{ref!r} names {len(found)} interactions; use the numeric id")
        return found[0][0]

    def contact_id(self, ref: str) -> int:
        ref = ref.strip().lower()
        if ref.isdigit():
            found = self._one("SELECT id FROM contacts WHERE id=?", (int(ref),))
        else:
            found = self._one("SELECT contact_id FROM contact_addresses WHERE email=?", (ref,))
        if found is None:
            raise StoreError(f"no contact {ref!r}")
        return found

    def export(self) -> dict[str, list[dict[str, Any]]]:
        out = {}
        for table in ("customers", "customer_domains", "contacts", "contact_addresses", "interactions",
                      "participants", "links", "tasks"):
            out[table] = [dict(r) for r in self.db.query(f"SELECT * FROM {table} ORDER BY 1")]
        return out

    def snapshot(self) -> dict[str, list[tuple]]:
        """The content of the store by natural keys (tests compare runs with it)."""
        q = {
            "customers": "SELECT name, origin, account_owner FROM customers",
            "domains": "SELECT d.domain, c.name FROM customer_domains d JOIN customers c ON c.id=d.customer_id",
            "contacts": "SELECT a.email, k.name, k.origin FROM contact_addresses a JOIN contacts k ON k.id=a.contact_id",
            "interactions": "SELECT dedup_key, kind, subject, snippet, date, direction, status, deleted, visibility FROM interactions",
            "participants": "SELECT i.dedup_key, p.email, p.role FROM participants p JOIN interactions i ON i.id=p.interaction_id",
            "links": """SELECT i.dedup_key, l.target, COALESCE(c.name, k.name), l.reason FROM links l
                        JOIN interactions i ON i.id=l.interaction_id
                        LEFT JOIN customers c ON l.target='customer' AND c.id=l.target_id
                        LEFT JOIN contacts k ON l.target='contact' AND k.id=l.target_id""",
            "threads": """SELECT a.dedup_key, b.dedup_key FROM interactions a JOIN interactions b
                          ON a.thread_id=b.thread_id AND a.id<b.id""",
            "locations": "SELECT source, scope, local_id, kind, etag, flags, gone_at IS NOT NULL FROM locations",
            "skipped": "SELECT source, scope, local_id, reason FROM skipped",
            "quarantine": "SELECT source, scope, local_id, reason FROM quarantine",
            "tasks": "SELECT rule_key, title, due, status FROM tasks",
            "cursors": "SELECT name, cursor FROM sources",
        }
        return {k: sorted(tuple(r) for r in self._x(sql)) for k, sql in q.items()}


_commits = 0


def _fault_point() -> None:
    """Fault injection for the crash tests: ``CRM_FAULT_KILL_AFTER_COMMITS=N``
    kills the process with SIGKILL right after its N-th commit."""
    global _commits
    limit = os.environ.get("CRM_FAULT_KILL_AFTER_COMMITS")
    if not limit:
        return
    _commits += 1
    if _commits >= int(limit):
        os.kill(os.getpid(), signal.SIGKILL)


class _NewContacts:
    """Contacts that linking creates while a batch is stored, written in one go.

    Ids are handed out here (the write transaction is the store's alone);
    the link index learns each contact at once, so the next record of the
    same batch already finds it.
    """

    def __init__(self, store: Store, now_s: str, stats: Stats):
        self.store = store
        self.now_s = now_s
        self.stats = stats
        self.next_id: int | None = None
        self.rows: list[tuple] = []
        self.addresses: list[tuple[str, int]] = []

    def add_to(self, match: Match) -> None:
        """Create the contacts ``match`` asks for and link them to it."""
        index = self.store.index
        for addr, customer in match.new_contacts:
            cid = index.contact_by_email.get(addr.email)
            if cid is None:
                if self.next_id is None:
                    self.next_id = (self.store._one("SELECT MAX(id) FROM contacts") or 0) + 1
                cid, self.next_id = self.next_id, self.next_id + 1
                self.rows.append((cid, addr.name or addr.email, customer, "auto", self.now_s))
                self.addresses.append((addr.email, cid))
                index.contact_by_email[addr.email] = cid
                index.customer_of_contact[cid] = customer
                self.stats.contacts_created += 1
            match.add(CONTACT, cid, "domain")
        match.new_contacts = []

    def flush(self) -> None:
        x = self.store.conn.executemany
        x("INSERT INTO contacts(id, name, customer_id, origin, created_at) VALUES (?, ?, ?, ?, ?)", self.rows)
        x("INSERT OR IGNORE INTO contact_addresses(email, contact_id) VALUES (?, ?)", self.addresses)
        self.rows, self.addresses = [], []


def _find(merged: dict[int, int], thread_id: int) -> int:
    while thread_id in merged:
        thread_id = merged[thread_id]
    return thread_id


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


MIGRATIONS: dict[int, Any] = {2: _migrate_2}
