"""Notes: what staff write down about a customer (a call, a visit).

A note is an interaction of kind ``note``, linked to its customer by hand:
it appears on the customer's timeline and in full-text search like a mail.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from crm_bridge.crm_core.store import Store, StoreError, iso, utc_iso, utcnow

#: the subject of a note is its first line, cut to this length
SUBJECT_LENGTH = 80


def add_note(store: Store, customer_id: int, text: str, author: str = "", when: datetime | None = None) -> int:
    """Store a note on the customer's timeline; returns its interaction id."""
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
        store.conn.execute("INSERT INTO links(interaction_id, target, target_id, reason) VALUES (?, 'customer', ?, 'manual')",
                           (iid, customer_id))
    return iid
