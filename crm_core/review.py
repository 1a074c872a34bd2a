"""The review queue: people who write to us and match no customer or contact.

Senders of the last 180 days, ranked by how many of their mails are stored (as metadata while unmatched),
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

from datetime import datetime, timedelta
from typing import Any

from crm_bridge.crm_core.domains import is_freemail, normalise_domain
from crm_bridge.crm_core.store import Store, StoreError, iso, utc_iso, utcnow

#: the queue looks at the mail of this many days up to the newest: who writes to us now, at a
#: cost that follows the mail of the period, not the size of the store
WINDOW_DAYS = 180


def review_queue(store: Store, limit: int = 100, days: int = WINDOW_DAYS) -> list[dict[str, Any]]:
    """Unknown senders of the last ``days`` days, most frequent first: email, name, count, last (UTC ISO),
    domain (empty for freemail), freemail."""
    # the window ends at the newest mail (not in the future), so an imported archive or the demo has a queue too
    newest = store.conn.execute("SELECT MAX(date) FROM interactions WHERE date <= ?", (utc_iso(utcnow()),)).fetchone()[0]
    end = datetime.fromisoformat(newest.replace("Z", "+00:00")) if newest else utcnow()
    since = utc_iso(end - timedelta(days=days))
    rows = store.conn.execute(
        """SELECT p.email, MAX(p.name), COUNT(*) AS n, MAX(i.date) AS last
           FROM interactions i INDEXED BY interactions_date
           JOIN participants p ON p.interaction_id = i.id AND p.role = 'from'
           WHERE i.date >= ? AND i.kind = 'mail' AND i.bulk = '' AND i.deleted = 0
             AND NOT EXISTS (SELECT 1 FROM links l WHERE l.interaction_id = i.id)
             AND NOT EXISTS (SELECT 1 FROM contact_addresses a WHERE a.email = p.email)
             AND NOT EXISTS (SELECT 1 FROM review_dismissed d WHERE d.email = p.email AND d.at >= i.date)
           GROUP BY p.email ORDER BY n DESC, last DESC LIMIT ?""", (since, limit * 3)).fetchall()
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
