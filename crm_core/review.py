"""The review queue: people who write to us and match no customer or contact.

Ranked by how many of their mails are stored (as metadata while unmatched),
without bulk mail (never stored unless ``log_bulk``), internal addresses
and blocked ones.  A freemail sender can become a contact, but offers no
domain to make a customer of.  Each entry can be made a
contact of a customer (their past mail links at once), become a customer
from their company domain, or be dismissed (it stays dismissed until the
person writes again after the dismissal).

Also: removing a domain from a customer (its mail is re-linked by the
remaining rules).
"""

from __future__ import annotations

from typing import Any

from crm_bridge.crm_core.domains import is_freemail, normalise_domain
from crm_bridge.crm_core.store import Store, StoreError, iso, utcnow

def review_queue(store: Store, limit: int = 100) -> list[dict[str, Any]]:
    """Unknown senders, most frequent first: email, name, count, last (UTC ISO), domain, freemail."""
    rows = store.conn.execute(
        """SELECT p.email, MAX(p.name), COUNT(*) AS n, MAX(i.date) AS last
           FROM participants p JOIN interactions i ON i.id = p.interaction_id
           WHERE p.role = 'from' AND i.kind = 'mail' AND i.bulk = '' AND i.deleted = 0
             AND NOT EXISTS (SELECT 1 FROM links l WHERE l.interaction_id = i.id)
             AND NOT EXISTS (SELECT 1 FROM contact_addresses a WHERE a.email = p.email)
             AND NOT EXISTS (SELECT 1 FROM review_dismissed d WHERE d.email = p.email AND d.at >= i.date)
           GROUP BY p.email ORDER BY n DESC, last DESC LIMIT ?""", (limit * 3,)).fetchall()
    settings = store.settings
    out = []
    for email, name, count, last in rows:
        domain = email.rpartition("@")[2]
        if email in settings.internal_domains or email in settings.blocklist:
            continue
        freemail = is_freemail(domain, settings.extra_freemail)
        out.append({"email": email, "name": name or "", "count": count, "last": last,
                    "domain": "" if freemail else domain, "freemail": freemail})
        if len(out) >= limit:
            break
    return out


def dismiss(store: Store, email: str) -> None:
    with store.transaction():
        store.conn.execute("INSERT OR REPLACE INTO review_dismissed(email, at) VALUES (?, ?)",
                           (email.strip().lower(), iso(utcnow())))


def customer_from_domain(store: Store, email: str, name: str) -> int:
    """A new customer owning the sender's domain; their past mail (and their colleagues') links at once."""
    domain = normalise_domain(email.rpartition("@")[2])
    if not name.strip():
        raise StoreError("a customer needs a name")
    if store.conn.execute("SELECT 1 FROM customers WHERE name=? COLLATE NOCASE", (name.strip(),)).fetchone():
        raise StoreError(f"there is a customer {name.strip()!r} already: make the person its contact instead")
    return store.add_customer(name, [domain])


def remove_domain(store: Store, customer_id: int, domain: str) -> None:
    domain = normalise_domain(domain)
    with store.transaction():
        found = store.conn.execute("SELECT 1 FROM customer_domains WHERE domain=? AND customer_id=?",
                                   (domain, customer_id)).fetchone()
        if not found:
            raise StoreError(f"{domain} is not one of this customer's domains")
        affected = store._interactions_with_domains([domain])
        store.conn.execute("DELETE FROM customer_domains WHERE domain=?", (domain,))
        store._index = None
        store.relink(affected)
