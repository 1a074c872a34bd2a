"""Managing customers and contacts by hand: find, attach, detach, rename, merge, remove.

Every function takes a :class:`~crm_core.store.Store`, does its writes in
one transaction and re-links the interactions whose links depend on what
changed, so a timeline is right at once.  Nothing here deletes a mail or
an appointment: removing a customer removes its domains and links, and its
contacts stay, without a customer.
"""

from __future__ import annotations

import json
from typing import Any

from crm_bridge.crm_core.store import Store, StoreError


# -- finding -------------------------------------------------------------------
def find_customer(store: Store, text: str | int) -> int:
    """A customer by id, by name (any case) or by the unique start of its name."""
    ref = str(text).strip()
    if not ref:
        raise StoreError("give a customer name")
    if ref.isdigit() and store.conn.execute("SELECT 1 FROM customers WHERE id=?", (int(ref),)).fetchone():
        return int(ref)
    rows = store.conn.execute("SELECT id, name FROM customers").fetchall()
    folded = ref.casefold()
    exact = [cid for cid, name in rows if name.casefold() == folded]
    if exact:
        return exact[0]
    starts = [(cid, name) for cid, name in rows if name.casefold().startswith(folded)]
    if len(starts) == 1:
        return starts[0][0]
    if len(starts) > 1:
        names = ", ".join(sorted(name for _, name in starts)[:5])
        raise StoreError(f"{ref!r} fits {len(starts)} customers ({names}); give more of the name")
    raise StoreError(f"no customer named {ref!r}{_did_you_mean(ref, [name for _, name in rows])}")


def _did_you_mean(ref: str, names: list[str]) -> str:
    import difflib  # here: only a mistyped name needs it (every command imports this module)

    folded = {name.casefold(): name for name in names}
    close = difflib.get_close_matches(ref.casefold(), list(folded), n=3, cutoff=0.6)
    close += [n for n in folded if ref.casefold() in n and n not in close][:3 - len(close)]
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(folded[c]) for c in close) + "?)"


def find_contact(store: Store, ref: str) -> int:
    """A contact by id or by one of its addresses (any case)."""
    ref = ref.strip()
    if ref.isdigit():
        found = store.conn.execute("SELECT id FROM contacts WHERE id=?", (int(ref),)).fetchone()
    else:
        found = store.conn.execute("SELECT contact_id FROM contact_addresses WHERE email=?",
                                   (ref.lower().strip("<>"),)).fetchone()
    if found is None:
        hint = ""
        if "@" in ref:
            local, _, domain = ref.lower().rpartition("@")
            known = [e for (e,) in store.conn.execute(  # same mailbox name or same domain: few, and the likely ones
                "SELECT email FROM contact_addresses WHERE email LIKE ? ESCAPE '\\' OR email LIKE ? ESCAPE '\\'",
                (_like(local) + "@%", "%@" + _like(domain)))]
            import difflib

            close = difflib.get_close_matches(ref.lower(), known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
        raise StoreError(f"no contact {ref!r}{hint}")
    return found[0]


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def customer_name(store: Store, customer_id: int) -> str:
    return store.conn.execute("SELECT name FROM customers WHERE id=?", (customer_id,)).fetchone()[0]


# -- reading -----------------------------------------------------------------
_CONTACTS = """SELECT k.id, k.name, k.title, k.origin, k.customer_id, c.name AS customer,
    (SELECT group_concat(a.email, ' ') FROM contact_addresses a WHERE a.contact_id = k.id) AS emails,
    (SELECT COUNT(*) FROM links l WHERE l.target='contact' AND l.target_id=k.id) AS interactions
    FROM contacts k LEFT JOIN customers c ON c.id = k.customer_id"""


def contacts(store: Store, customer_id: int | None = None, unattached: bool = False,
             query: str = "") -> list[dict[str, Any]]:
    """Contacts with their addresses and customer, by name; ``query``: those whose name, addresses or
    customer contain it (any case)."""
    where, params = "", ()  # type: tuple[str, tuple[int, ...]]
    if customer_id is not None:
        where, params = " WHERE k.customer_id = ?", (customer_id,)
    elif unattached:
        where = " WHERE k.customer_id IS NULL"
    rows = [dict(r) for r in store.db.query(_CONTACTS + where + " ORDER BY k.name COLLATE NOCASE, k.id", params)]
    query = query.strip().lower()
    if query:
        rows = [r for r in rows if query in " ".join(str(r[k] or "") for k in ("name", "emails", "customer")).lower()]
    return rows


def contact(store: Store, contact_id: int, recent: int = 10) -> dict[str, Any]:
    import json

    info = dict(next(iter(store.db.query(_CONTACTS + " WHERE k.id = ?", (contact_id,)))))
    row = store.conn.execute("SELECT phones, uid FROM contacts WHERE id=?", (contact_id,)).fetchone()
    info["phones"] = json.loads(row[0] or "[]")
    info["uid"] = row[1]
    info["recent"] = [dict(r) for r in store.db.query(
        """SELECT i.id, i.kind, i.date, i.subject, i.direction FROM links l JOIN interactions i ON i.id=l.interaction_id
           WHERE l.target='contact' AND l.target_id=? ORDER BY i.date DESC LIMIT ?""", (contact_id, recent))]
    return info


# -- contacts ----------------------------------------------------------------
def attach(store: Store, email: str, customer_id: int, name: str | None = None) -> tuple[int, bool]:
    """Make the person with this address a contact of the customer.

    Returns (contact id, whether the contact is new).  Their past mail is
    linked to the customer at once.
    """
    email = email.strip().strip("<>").lower()
    local, _, domain = email.partition("@")
    if not local or "." not in domain or " " in email:
        raise StoreError(f"{email!r} is not an e-mail address")
    if email in store.settings.internal_domains:
        raise StoreError(f"{email} is one of the company's own addresses ([company] internal_domains), not a customer's")
    with store.transaction():
        found = store.conn.execute("SELECT contact_id FROM contact_addresses WHERE email=?", (email,)).fetchone()
        if found is None:
            cid = store.add_contact(name or email, [email], customer_id, origin="manual", relink=False)
            new = True
        else:
            cid, new = found[0], False
            store.conn.execute("UPDATE contacts SET customer_id=? WHERE id=?", (customer_id, cid))
            if name:
                store.conn.execute("UPDATE contacts SET name=? WHERE id=?", (name, cid))
        _relink_contact(store, cid)
    return cid, new


def detach(store: Store, contact_id: int) -> None:
    """The contact no longer belongs to a customer (the person stays a contact)."""
    with store.transaction():
        store.conn.execute("UPDATE contacts SET customer_id=NULL WHERE id=?", (contact_id,))
        _relink_contact(store, contact_id)


def merge_contacts(store: Store, keep: int, other: int) -> dict[str, int]:
    """Move everything of ``other`` (addresses, links and manual links, notes, tasks, places, phones,
    categories) to ``keep``; delete ``other``.  What ``keep`` lacks (name, title, customer, address-book
    UID) it takes from ``other``.  Returns what moved: how many of each."""
    if keep == other:
        raise StoreError("a contact cannot be merged with itself")
    x = store.conn.execute
    with store.transaction():
        moved = {
            "addresses": x("UPDATE contact_addresses SET contact_id=? WHERE contact_id=?", (keep, other)).rowcount,
            "links": _move_links(store, "contact", keep, other),
            "tasks": x("UPDATE tasks SET contact_id=? WHERE contact_id=?", (keep, other)).rowcount,
        }
        x("UPDATE locations SET item_id=? WHERE kind='contact' AND item_id=?", (keep, other))
        uid, customer, name, title, phones, categories = x(
            "SELECT uid, customer_id, name, title, phones, categories FROM contacts WHERE id=?", (other,)).fetchone()
        x("DELETE FROM contacts WHERE id=?", (other,))
        for column, theirs in (("phones", phones), ("categories", categories)):  # both kept, each once
            mine = x(f"SELECT {column} FROM contacts WHERE id=?", (keep,)).fetchone()[0]
            both = _union(mine, theirs)
            x(f"UPDATE contacts SET {column}=? WHERE id=?", (json.dumps(both), keep))
            moved[column] = len(both) - len(_union(mine, None))
        # what the kept contact lacks, it takes from the other (its address-book card among it)
        x("""UPDATE contacts SET uid=COALESCE(uid, ?), customer_id=COALESCE(customer_id, ?),
             title=CASE WHEN title='' THEN ? ELSE title END,
             name=CASE WHEN name='' OR name LIKE '%@%' THEN ? ELSE name END WHERE id=?""",
          (uid, customer, title, name, keep))
        _relink_contact(store, keep)
    return moved


def _union(mine: str | None, theirs: str | None) -> list[str]:
    """Two JSON lists of text (phones, categories) as one, in order, each once."""
    out: list[str] = []
    for raw in (mine, theirs):
        try:
            values = json.loads(raw or "[]")
        except ValueError:
            values = []
        for value in values if isinstance(values, list) else []:
            if isinstance(value, str) and value not in out:
                out.append(value)
    return out


def _relink_contact(store: Store, contact_id: int) -> None:
    store._index = None  # the link index caches contacts and customers: read it again
    emails = [e for (e,) in store.conn.execute("SELECT email FROM contact_addresses WHERE contact_id=?", (contact_id,))]
    ids = {i for (i,) in store.conn.execute("SELECT interaction_id FROM links WHERE target='contact' AND target_id=?",
                                            (contact_id,))}
    for email in emails:
        ids.update(i for (i,) in store.conn.execute("SELECT interaction_id FROM participants WHERE email=?", (email,)))
    store.relink(sorted(ids))


def _move_links(store: Store, target: str, keep: int, other: int) -> int:
    """Links and manual overrides of ``other`` to ``keep``; returns how many interactions were linked to ``other``."""
    x = store.conn.execute
    count = x("SELECT COUNT(*) FROM links WHERE target=? AND target_id=?", (target, other)).fetchone()[0]
    # a hand-made unlink of ``keep`` stands: ``other``'s link to that interaction does not undo it ...
    x("""INSERT OR IGNORE INTO links(interaction_id, target, target_id, reason)
         SELECT l.interaction_id, l.target, ?, l.reason FROM links l WHERE l.target=? AND l.target_id=?
         AND NOT EXISTS (SELECT 1 FROM link_overrides u WHERE u.interaction_id=l.interaction_id
                         AND u.target=l.target AND u.target_id=? AND u.action='unlink')""",
      (keep, target, other, keep))
    x("DELETE FROM links WHERE target=? AND target_id=?", (target, other))
    # ... and an unlink of ``other`` does not take away a link ``keep`` has
    x("""INSERT OR IGNORE INTO link_overrides(interaction_id, target, target_id, action, at)
         SELECT o.interaction_id, o.target, ?, o.action, o.at FROM link_overrides o WHERE o.target=? AND o.target_id=?
         AND NOT (o.action='unlink' AND EXISTS (SELECT 1 FROM links l WHERE l.interaction_id=o.interaction_id
                                                AND l.target=o.target AND l.target_id=?))""",
      (keep, target, other, keep))
    x("DELETE FROM link_overrides WHERE target=? AND target_id=?", (target, other))
    return count


# -- customers -----------------------------------------------------------------
def rename_customer(store: Store, customer_id: int, new_name: str) -> None:
    new_name = new_name.strip()
    if not new_name:
        raise StoreError("a customer needs a name")
    clash = store.conn.execute("SELECT id, name FROM customers WHERE name=? COLLATE NOCASE AND id != ?",
                               (new_name, customer_id)).fetchone()
    if clash:
        raise StoreError(f"there is a customer {clash[1]!r} already (id {clash[0]}): merge the two instead")
    with store.transaction():
        store.conn.execute("UPDATE customers SET name=? WHERE id=?", (new_name, customer_id))


def customer_footprint(store: Store, customer_id: int) -> dict[str, int]:
    """What belongs to a customer: what a merge moves and a remove takes away."""
    one = lambda sql: store.conn.execute(sql, (customer_id,)).fetchone()[0]  # noqa: E731
    return {
        "domains": one("SELECT COUNT(*) FROM customer_domains WHERE customer_id=?"),
        "contacts": one("SELECT COUNT(*) FROM contacts WHERE customer_id=?"),
        "interactions": one("SELECT COUNT(*) FROM links WHERE target='customer' AND target_id=?"),
        "tasks": one("SELECT COUNT(*) FROM tasks WHERE customer_id=?"),
        "open_tasks": one("SELECT COUNT(*) FROM tasks WHERE customer_id=? AND status='open'"),
    }


def merge_customers(store: Store, keep: int, other: int) -> dict[str, int]:
    """Move domains, contacts, links and tasks of ``other`` to ``keep``; delete ``other``."""
    if keep == other:
        raise StoreError("a customer cannot be merged with itself")
    moved = customer_footprint(store, other)
    x = store.conn.execute
    with store.transaction():
        x("UPDATE customer_domains SET customer_id=? WHERE customer_id=?", (keep, other))
        x("UPDATE contacts SET customer_id=? WHERE customer_id=?", (keep, other))
        _move_links(store, "customer", keep, other)
        x("UPDATE tasks SET customer_id=? WHERE customer_id=?", (keep, other))
        owner = x("SELECT account_owner FROM customers WHERE id=?", (other,)).fetchone()[0]
        x("UPDATE customers SET account_owner=? WHERE id=? AND account_owner=''", (owner, keep))
        x("DELETE FROM customers WHERE id=?", (other,))
        store._index = None
    return moved


def remove_customer(store: Store, customer_id: int) -> dict[str, int]:
    """Delete a customer with its domains and links.  Its contacts stay, without
    a customer; its tasks stay, without a customer; no mail or appointment is deleted."""
    gone = customer_footprint(store, customer_id)
    x = store.conn.execute
    with store.transaction():
        affected = [i for (i,) in x("SELECT interaction_id FROM links WHERE target='customer' AND target_id=?",
                                    (customer_id,))]
        x("DELETE FROM customer_domains WHERE customer_id=?", (customer_id,))
        x("UPDATE contacts SET customer_id=NULL WHERE customer_id=?", (customer_id,))
        x("DELETE FROM links WHERE target='customer' AND target_id=?", (customer_id,))
        x("DELETE FROM link_overrides WHERE target='customer' AND target_id=?", (customer_id,))
        x("UPDATE tasks SET customer_id=NULL WHERE customer_id=?", (customer_id,))
        x("DELETE FROM customers WHERE id=?", (customer_id,))
        store._index = None
        store.relink(affected)
    return gone
