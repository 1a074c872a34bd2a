"""Notes: what staff write down about a customer (a call, a visit).

A note is an interaction of kind ``note``, linked to its customer by hand
(a note on a contact: to the contact and, when they have one, to the
contact's customer): it appears on those timelines and in full-text search
like a mail.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from crm_bridge.crm_core.store import Store, StoreError, iso, utc_iso, utcnow

#: the subject of a note is its first line, cut to this length
SUBJECT_LENGTH = 80


def add_note(store: Store, customer_id: int, text: str, author: str = "", when: datetime | None = None) -> int:
    """Store a note on the customer's timeline; returns its interaction id."""
    return _add(store, [("customer", customer_id)], text, author, when)


def add_contact_note(store: Store, contact_id: int, text: str, author: str = "",
                     when: datetime | None = None) -> int:
    """Store a note on the contact's timeline, and on their customer's when they have one."""
    row = store.conn.execute("SELECT customer_id FROM contacts WHERE id=?", (contact_id,)).fetchone()
    if row is None:
        raise StoreError(f"no contact {contact_id}")
    targets = [("contact", contact_id)] + ([("customer", row[0])] if row[0] is not None else [])
    return _add(store, targets, text, author, when)


def _add(store: Store, targets: list[tuple[str, int]], text: str, author: str, when: datetime | None) -> int:
    text = text.strip()
    if not text:
        raise StoreError("a note needs some text")
    first = text.splitlines()[0].strip()
    subject = first if len(first) <= SUBJECT_LENGTH else first[:SUBJECT_LENGTH - 1].rstrip() + "…"
    now = iso(utcnow())
    with store.transaction():
        cur = store.conn.execute(
            """INSERT INTO interactions(kind, dedup_key, date, subject, snippet, logged_by, created_at, updated_at)
               VALUES ('note', ?, ?, ?, ?, ?, ?, ?)""",
            (f"note:{uuid.uuid4()}", utc_iso(when or utcnow()), subject, text, author or "crm note", now, now),
        )
        iid = cur.lastrowid
        assert iid is not None
        store.conn.executemany("INSERT INTO links(interaction_id, target, target_id, reason) VALUES (?, ?, ?, 'manual')",
                               [(iid, target, target_id) for target, target_id in targets])
    return iid
