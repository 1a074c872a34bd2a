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

The store is one class composed of parts, one module each:
:mod:`crm_core.schema` (schema and migrations), :mod:`crm_core.storebase`
(errors, helpers, the connection), :mod:`crm_core.locations`,
:mod:`crm_core.relinking` (customers, contacts, links),
:mod:`crm_core.ingest` with :mod:`crm_core.ingest_mail` and
:mod:`crm_core.ingest_items` (applying a batch), :mod:`crm_core.tasks`,
:mod:`crm_core.runs` and :mod:`crm_core.reads` (the read side).  The names
other modules import from here are re-exported.
"""

from __future__ import annotations

from crm_bridge.crm_core.ingest import Ingest
from crm_bridge.crm_core.locations import OVERRIDE_MARK
from crm_bridge.crm_core.reads import Reads
from crm_bridge.crm_core.runs import Runs
from crm_bridge.crm_core.schema import MIGRATIONS, SCHEMA, SCHEMA_VERSION
from crm_bridge.crm_core.storebase import (
    Stats,
    StoreBusy,
    StoreError,
    StoreFailure,
    appointment_key,
    content_hash,
    iso,
    mail_key,
    store_failure,
    task_digest,
    utc_iso,
    utcnow,
)

__all__ = [
    "MIGRATIONS",
    "OVERRIDE_MARK",
    "SCHEMA",
    "SCHEMA_VERSION",
    "Stats",
    "Store",
    "StoreBusy",
    "StoreError",
    "StoreFailure",
    "appointment_key",
    "content_hash",
    "iso",
    "mail_key",
    "store_failure",
    "task_digest",
    "utc_iso",
    "utcnow",
]


class Store(Ingest, Runs, Reads):
    """The SQLite store.  Use :meth:`transaction` around every write."""
