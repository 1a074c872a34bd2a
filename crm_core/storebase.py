"""What every part of the store stands on: its errors, the time and hash
helpers, a run's statistics, and :class:`StoreBase`, the connection
(opening, migrating, transactions, the link index).
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from functools import lru_cache
from datetime import date, datetime, timezone
from itertools import chain
from pathlib import Path
from typing import Any, Iterable, Iterator, overload

from crm_bridge.crm_core.linking import LinkIndex, Linker
from crm_bridge.crm_core.records import AppointmentRecord, MailRecord
from crm_bridge.crm_core.schema import MIGRATIONS, SCHEMA, SCHEMA_VERSION
from crm_bridge.crm_core.settings import LinkingSettings


FILL_TEXT_TABLE = ("CREATE TEMP TABLE IF NOT EXISTS fill_text("
                   "id INTEGER PRIMARY KEY, subject TEXT, snippet TEXT, visibility TEXT NOT NULL)")
#: the page cache of a connection, in KiB (negative: SQLite's unit for KiB)
CACHE_KIB = -16_000
#: rows per statement of _insert_rows (16 columns of 50 rows stay under the 999 parameters of SQLite before 3.32)
ROWS_PER_INSERT = 50

_ALNUM = re.compile(r"[\W_]+", re.UNICODE)
#: the ASCII characters that are not letters or digits (what _ALNUM removes of ASCII)
_ASCII_NOT_ALNUM = bytes(c for c in range(128) if not chr(c).isalnum())


def _alnum_start(body: str) -> str:
    """The first 64 letters and digits of the first 160 characters of ``body``, lower case:
    ``_ALNUM.sub("", body[:160].lower())[:64]``, at about half its cost (ASCII text without the
    regular expression; other text through it in two pieces, the second only when needed)."""
    text = body[:160].lower()
    if text.isascii():
        return text.encode("ascii").translate(None, _ASCII_NOT_ALNUM)[:64].decode("ascii")
    # other text: the ASCII that is not a letter or digit cut out of its UTF-8 (the bytes of other
    # characters are all above 127); when what is left is all letters and digits (umlauts,
    # accents), that is the answer, else the regular expression decides
    left = text.encode("utf-8", "surrogatepass").translate(None, _ASCII_NOT_ALNUM).decode("utf-8", "surrogatepass")
    if left.isalnum():
        return left[:64]
    head = _ALNUM.sub("", text[:96])  # about 80 letters and digits in usual text
    if len(head) < 64 and len(text) > 96:
        head += _ALNUM.sub("", text[96:])
    return head[:64]


@lru_cache(maxsize=64)
def _values_sql(head: str, row: str, tail: str, count: int, shared: int) -> str:
    """``{head} VALUES {row}, ... {tail}`` of ``count`` rows with numbered parameters: ``$k`` in
    ``row`` is ``?{k+1}`` (bound once), each ``?`` the next number after the shared ones."""
    number = shared
    out = []
    for _ in range(count):
        parts = []
        for token in _ROW_TOKENS.split(row):
            if token == "?":
                number += 1
                parts.append(f"?{number}")
            elif token[:1] == "$" and token[1:].isdigit():
                if int(token[1:]) >= shared:
                    raise ValueError(f"{row}: ${token[1:]} without its shared value")
                parts.append(f"?{int(token[1:]) + 1}")
            else:
                parts.append(token)
        out.append("".join(parts))
    return f"{head} VALUES {','.join(out)} {tail}"


_ROW_TOKENS = re.compile(r"(\?|\$\d+)")


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
    v = value if value.tzinfo is timezone.utc else value.astimezone(timezone.utc)
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
    return _content_hash(sender, utc_iso(when), subject, body)


def _content_hash(sender: str, when_s: str | None, subject: str, body: str) -> str:
    minute = (when_s or "")[:16].replace("-", "").replace("T", "").replace(":", "")
    subject = " ".join(subject.split()).lower()
    body = _alnum_start(body)
    raw = f"{sender.lower()}\x1f{minute}\x1f{subject}\x1f{body}"
    return hashlib.sha1(raw.encode("utf-8", "surrogatepass")).hexdigest()


def mail_key(rec: MailRecord) -> tuple[str, str]:
    key, chash, _date_s = mail_key_and_date(rec)
    return key, chash


def mail_key_and_date(rec: MailRecord) -> tuple[str, str, str | None]:
    """:func:`mail_key` and the mail's date as stored (:func:`utc_iso`), worked out once."""
    date_s = utc_iso(rec.date)
    chash = _content_hash(rec.sender.email if rec.sender else "", date_s, rec.subject, rec.snippet)
    key = hashlib.sha1(f"{rec.message_id}\x1f{chash}".encode("utf-8", "surrogatepass")).hexdigest()
    return "m:" + key, chash, date_s


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


class StoreBase:
    """The connection to the store's file and the helpers every part uses.

    :class:`crm_core.store.Store` is composed of parts that each build on
    this class; use :meth:`transaction` around every write."""

    def __init__(self, path: str | Path, settings: LinkingSettings | None = None):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = None
        #: the config's linking settings; ``settings`` adds the blocks kept in the store (crm_core.blocks)
        self.config_settings = self.settings = settings or LinkingSettings()
        self._blocks: tuple[str, ...] = ()
        self._index: LinkIndex | None = None
        self._linker: Linker | None = None
        #: text of mails stored without it while unmatched (id -> subject, snippet,
        #: visibility once linked), for a reply in a later batch that links them
        self._held: dict[int, tuple[str, str, str]] = {}
        self._in_tx = False
        self._holding = False  # inside holding_commits(): transactions join one left open until commit_held
        self.held_since: float | None = None  # when the transaction whose commit is held began
        try:
            self._open()
            self.refresh_blocks()
        except sqlite3.Error as exc:
            raise store_failure(exc, self.path) from None

    def refresh_blocks(self) -> None:
        """Read the blocks kept in the store again; ``settings`` is the config's plus them."""
        from crm_bridge.crm_core.blocks import stored_entries, with_stored

        stored = stored_entries(self.conn)
        if stored != self._blocks:
            self._blocks = stored
            self.settings = with_stored(self.config_settings, stored)

    def _open(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=OFF")
        # the mail of a page is written again whole with INSERT OR REPLACE before it is indexed
        # (crm_core/ingest_mail.py): the delete trigger must not run for the row it replaces.  Off is
        # SQLite's default, but a build may turn it on (SQLITE_DEFAULT_RECURSIVE_TRIGGERS)
        conn.execute("PRAGMA recursive_triggers=OFF")
        conn.execute("PRAGMA temp_store=MEMORY")
        # a first sync writes tens of thousands of rows with their indexes and
        # full-text entries: checkpointing the WAL every 40 MiB instead of
        # every 4 MiB saves about a tenth of its store time (a bigger page
        # cache saved little more and made memory grow with the store)
        conn.execute("PRAGMA wal_autocheckpoint=10000")
        # a page of 500 mails changes leaf pages all over the indexes keyed by random values
        # (dedup key, Message-ID, thread reference, participant address, link target, date): at
        # 50,000 mails more of them than SQLite's default cache of 2 MB holds, so it spilled
        # changed pages to the WAL before the commit and read them back from it.  16 MB holds a
        # page's changes up to about 100,000 mails (the cache fills only as far as it is used)
        conn.execute(f"PRAGMA cache_size={CACHE_KIB}")
        # the text of mails that a reply linked, for one UPDATE of them (crm_core/ingest_mail.py
        # _fill_text); made here, outside any transaction, so that a rolled-back one keeps it
        conn.execute(FILL_TEXT_TABLE)
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

        Every index is read whole: a sample (``PRAGMA analysis_limit``) misjudges an
        index whose first column has few values.  With 1,000 rows a sample took the
        links to customers (70,000 at 100,000 mails) for 1,000, and the follow-up rules
        walked all of them in every run (0.15 s at 100,000 mails).
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
        """One atomic unit.  Nested calls join the outer transaction.

        Inside :meth:`holding_commits` the unit joins a longer transaction,
        committed by :meth:`commit_held`; a unit that fails rolls back the
        units held with it too."""
        if self._in_tx:
            yield
            return
        if self._holding:
            with self._held_unit():
                yield
            return
        if self.conn.in_transaction:  # held units whose commit an interrupt (Ctrl-C) cut short: each is whole
            self.commit_held()
        self.conn.execute("BEGIN IMMEDIATE")
        self._in_tx = True
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            self._forget_uncommitted()
            raise
        else:
            self.conn.execute("COMMIT")
            _fault_point()
        finally:
            self._in_tx = False

    @contextmanager
    def holding_commits(self) -> Iterator[None]:
        """Transactions in the block end without a COMMIT; :meth:`commit_held` commits what they wrote,
        and so does the end of the block, also when an exception ends it between two transactions
        (each unit is whole; one that failed rolled back every unit not yet committed).

        For the engine's pull: a COMMIT writes every page its transaction changed, and a batch of 500
        mails changes a page in each index keyed by a random value (dedup key, Message-ID, address,
        link) for nearly every mail once the store is big.  Committed once a batch, a first sync of
        100,000 IMAP mails spent 2.3 s in 212 COMMITs, 4.8 s inside SQLite in all; held over the batches
        that wait for the store, 0.6 s in 31, 3.4 s in all, and the sync took a fifth less time."""
        if self._holding or self._in_tx:
            yield
            return
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
            self.commit_held()

    def commit_held(self) -> None:
        """Commit what the units inside :meth:`holding_commits` wrote since the last commit."""
        if self.conn.in_transaction and not self._in_tx:
            self.conn.execute("COMMIT")
            self.held_since = None
            _fault_point()

    @contextmanager
    def _held_unit(self) -> Iterator[None]:
        conn = self.conn
        if not conn.in_transaction:
            conn.execute("BEGIN IMMEDIATE")
            self.held_since = time.monotonic()
        self._in_tx = True
        try:
            yield
        except BaseException:
            # the whole held transaction, as a crash would: its cursors go with it, so a retry or the
            # next run reads its batches again (a savepoint a unit kept the others, but its journal
            # of every page a batch changed cost more than the held commits saved)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self.held_since = None
            self._forget_uncommitted()
            raise
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
            self._forget_uncommitted()

    def _forget_uncommitted(self) -> None:
        """After a ROLLBACK: what this process keeps of the store may name what was rolled back (the link
        index, ids handed out in the rolled-back batch and held for a later reply)."""
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

    def _index_text(self, rows: Iterable[tuple[int, str | None, str | None]]) -> None:
        """Full-text entries (id, subject, snippet) of mail and appointments just inserted.

        Every row, NULLs too, as the insert trigger does for other items: the
        delete and update triggers take out what is in (schema.FTS_INSERT_TRIGGER)."""
        self.conn.executemany("INSERT INTO interactions_fts(rowid, subject, snippet) VALUES (?, ?, ?)", rows)

    def _index_range(self, first: int, last: int) -> None:
        """Full-text entries of the items with ids ``first`` to ``last``, just inserted (every one of them):
        read back from ``interactions`` by one statement, no row through Python."""
        self.conn.execute("INSERT INTO interactions_fts(rowid, subject, snippet)"
                          " SELECT id, subject, snippet FROM interactions WHERE id BETWEEN ? AND ?", (first, last))

    def _insert_rows(self, head: str, row: str, rows: list[tuple], tail: str = "", shared: tuple = ()) -> None:
        """``{head} VALUES {row}, {row}, ... {tail}``: a page's rows, :data:`ROWS_PER_INSERT` to a
        statement (the rest one at a time), not one statement step each: each step costs its own
        round through the statement machine and the sqlite3 module, a tenth of writing a row.

        ``shared``: values every row has (the source, the time of the batch), bound once a
        statement and named in ``row`` as ``$0``, ``$1``, ...; ``?`` is a value of the row's own.
        A text parameter costs SQLite a copy and the sqlite3 module a round through its locks.

        Not for the full-text index: FTS5 writes the terms it holds at the savepoint of every
        statement that writes more than one row (see _index_text)."""
        n = ROWS_PER_INSERT
        whole = len(rows) - len(rows) % n
        conn = self.conn
        if whole:
            sql = _values_sql(head, row, tail, n, len(shared))
            for start in range(0, whole, n):
                conn.execute(sql, [*shared, *chain.from_iterable(rows[start:start + n])])
        if whole < len(rows):
            sql = _values_sql(head, row, tail, 1, len(shared))
            conn.executemany(sql, [shared + r for r in rows[whole:]] if shared else rows[whole:])

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
        """The rules over the current settings and link index (one while both stay: it remembers
        what each address is)."""
        index, linker = self.index, self._linker
        if linker is None or linker.index is not index or linker.settings is not self.settings:
            linker = self._linker = Linker(self.settings, index)
        return linker


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
