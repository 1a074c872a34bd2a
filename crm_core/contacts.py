"""A contact's page: who they are, and the timeline of what they took part in.

The timeline is the customer page's (:class:`crm_core.pages.PageReads`) with
the contact's rows instead of the customer's: the interactions linked to the
contact (by address, by domain when linking created them, by hand, notes
written on them) and the tasks about them.  The same keyset paging, the same
visibility (what the store holds is what a page shows: private items never
reach it, metadata-only mail has no subject), the same "why linked".

Writes: :func:`edit_contact` (name, role/title, phones).  Attaching,
detaching and merging are :mod:`crm_core.directory`'s; notes are
:mod:`crm_core.notes`'.
"""

from __future__ import annotations

import json
import re
from typing import Any

from crm_bridge.crm_core import directory
from crm_bridge.crm_core.pages import PageReads, _dicts, timeline_items
from crm_bridge.crm_core.store import Store, StoreError

#: one row per thing on a contact's timeline; the columns are PageReads' (``:cid`` is the contact's id)
_CONTACT_ITEMS = timeline_items("contact")

#: the most phone numbers and the longest name or title a contact keeps from a form
MAX_PHONES = 10
MAX_TEXT = 200


class ContactReads(PageReads):
    """A contact's page and timeline (``timeline(contact_id, ...)``; ``contact_id=`` filters nothing here)."""

    ITEMS = _CONTACT_ITEMS

    def contact(self, contact_id: int) -> dict[str, Any] | None:
        """The contact with addresses, phones, customer and counts, or None."""
        conn = self.store.conn
        row = conn.execute(
            """SELECT k.id, k.name, k.title, k.origin, k.uid, k.phones, k.categories, k.customer_id,
               c.name AS customer FROM contacts k LEFT JOIN customers c ON c.id = k.customer_id WHERE k.id = ?""",
            (contact_id,)).fetchone()
        if row is None:
            return None
        info = dict(zip(("id", "name", "title", "origin", "uid", "phones", "categories", "customer_id", "customer"),
                        row))
        info["phones"] = _json_list(info["phones"])
        info["categories"] = _json_list(info["categories"])
        info["emails"] = [e for (e,) in conn.execute(
            "SELECT email FROM contact_addresses WHERE contact_id = ? ORDER BY email", (contact_id,))]
        info["interactions"] = conn.execute(
            "SELECT COUNT(*) FROM links WHERE target = 'contact' AND target_id = ?", (contact_id,)).fetchone()[0]
        info["open_tasks"] = conn.execute(
            "SELECT COUNT(*) FROM tasks WHERE contact_id = ? AND status = 'open'", (contact_id,)).fetchone()[0]
        return info

    def contact_by_email(self, email: str) -> dict[str, Any] | None:
        """The contact owning this exact address (any case), with its customer; None when nobody has it."""
        found = self.store.conn.execute("SELECT contact_id FROM contact_addresses WHERE email = ?",
                                        (email.strip().strip("<>").lower(),)).fetchone()
        if found is None:
            return None
        info = self.contact(found[0])
        if info is not None and info["customer_id"] is not None:
            info["customer_info"] = self.customer(info["customer_id"])
        return info

    def others(self, contact_id: int, limit: int = 200) -> list[dict[str, Any]]:
        """The other contacts of this contact's customer (to merge one into this one), by name."""
        return _dicts(self.store.conn.execute(
            """SELECT k.id, k.name, (SELECT MIN(email) FROM contact_addresses a WHERE a.contact_id = k.id) AS email
               FROM contacts k WHERE k.customer_id = (SELECT customer_id FROM contacts WHERE id = ?) AND k.id != ?
               ORDER BY k.name COLLATE NOCASE LIMIT ?""", (contact_id, contact_id, limit)))

    def interaction_contacts(self, interaction_id: int) -> list[dict[str, Any]]:
        """The contacts an interaction is linked to (id, name)."""
        return _dicts(self.store.conn.execute(
            """SELECT k.id, k.name FROM links l JOIN contacts k ON k.id = l.target_id
               WHERE l.interaction_id = ? AND l.target = 'contact' ORDER BY k.name""", (interaction_id,)))


def _json_list(raw: str | None) -> list[str]:
    try:
        value = json.loads(raw or "[]")
    except ValueError:
        return []
    return [str(v) for v in value if isinstance(v, str) and v.strip()] if isinstance(value, list) else []


def parse_phones(text: str) -> list[str]:
    """Phone numbers from a form field: one per line (or separated by ``,`` or ``;``), duplicates once."""
    out: list[str] = []
    for part in re.split(r"[\n,;]", text or ""):
        number = " ".join(part.split())
        if number and number not in out:
            if len(number) > 40 or not re.search(r"\d", number):
                raise StoreError("a phone number has digits and at most 40 characters (one number per line)")
            out.append(number)
    if len(out) > MAX_PHONES:
        raise StoreError("at most 10 phone numbers")
    return out


def edit_contact(store: Store, contact_id: int, *, name: str | None = None, title: str | None = None,
                 phones: list[str] | None = None) -> None:
    """Change what is given of a contact's name, role/title and phone numbers.

    A contact that came from an address book gets these again from its card
    when the card changes there (the address book is where it is kept).
    """
    changes: dict[str, Any] = {}
    if name is not None:
        name = " ".join(name.split())
        if not name:
            raise StoreError("a contact needs a name")
        changes["name"] = name[:MAX_TEXT]
    if title is not None:
        changes["title"] = " ".join(title.split())[:MAX_TEXT]
    if phones is not None:
        changes["phones"] = json.dumps(phones)
    if not changes:
        return
    with store.transaction():
        if store.conn.execute("SELECT 1 FROM contacts WHERE id = ?", (contact_id,)).fetchone() is None:
            raise StoreError(f"no contact {contact_id}")
        sets = ", ".join(f"{column} = ?" for column in changes)
        store.conn.execute(f"UPDATE contacts SET {sets} WHERE id = ?", (*changes.values(), contact_id))


def attach_contact(store: Store, contact_id: int, customer_id: int) -> None:
    """The contact belongs to this customer from now on; their mail is linked to it at once
    (:func:`crm_core.directory.attach` by their first address)."""
    emails = [e for (e,) in store.conn.execute(
        "SELECT email FROM contact_addresses WHERE contact_id = ? ORDER BY email", (contact_id,))]
    if emails:
        directory.attach(store, emails[0], customer_id)
        return
    with store.transaction():  # no address (a card from an address book): nothing to relink by
        if store.conn.execute("UPDATE contacts SET customer_id = ? WHERE id = ?", (customer_id, contact_id)).rowcount != 1:
            raise StoreError(f"no contact {contact_id}")
        store._index = None


def footprint(store: Store, contact_id: int) -> dict[str, int]:
    """What belongs to a contact: what a merge moves."""
    one = lambda sql: store.conn.execute(sql, (contact_id,)).fetchone()[0]  # noqa: E731
    return {
        "addresses": one("SELECT COUNT(*) FROM contact_addresses WHERE contact_id = ?"),
        "interactions": one("SELECT COUNT(*) FROM links WHERE target = 'contact' AND target_id = ?"),
        "notes": one("""SELECT COUNT(*) FROM links l JOIN interactions i ON i.id = l.interaction_id
                        WHERE l.target = 'contact' AND l.target_id = ? AND i.kind = 'note'"""),
        "participations": one("""SELECT COUNT(*) FROM participants p JOIN contact_addresses a ON a.email = p.email
                                 WHERE a.contact_id = ?"""),
        "tasks": one("SELECT COUNT(*) FROM tasks WHERE contact_id = ?"),
        "phones": len(_json_list(one("SELECT phones FROM contacts WHERE id = ?"))),
    }
