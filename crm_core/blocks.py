"""Blocks kept in the store: addresses and domains blocked from the web's review queue or ``crm blocks add``.

They count exactly as the config's ``[linking] blocklist`` does: the store's
linking settings are the config's with these entries added (see
:meth:`crm_core.storebase.StoreBase.refresh_blocks`, run when a store opens
and before every batch a sync stores, so a running sync honours a block made
meanwhile from its next batch on).  So, as for the config's blocklist:

* mail from a blocked sender is never logged or linked from then on (it is
  recorded in ``skipped`` as "blocked sender"), and a blocked address is left
  out of the participants of other mail;
* mail already stored whose sender is blocked is removed from the store at
  once (the mailboxes keep it; ``crm explain`` shows it as not logged);
* unblocking asks every source to read everything again once at the next
  sync, which brings that mail back.

An entry is an address (``a@b.example``) or a domain (``b.example``, which
covers its subdomains).  A freemail provider's domain, an internal domain or
a customer's domain cannot be blocked as a whole: that would hide far more
than one sender.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from crm_bridge.crm_core.domains import AddressSet, domain_chain, is_freemail, is_public_suffix, normalise_domain
from crm_bridge.crm_core.settings import LinkingSettings
from crm_bridge.crm_core.storebase import StoreError, iso, utcnow

if TYPE_CHECKING:
    from crm_bridge.crm_core.store import Store

class BlockRefused(StoreError):
    """A block or unblock that cannot be done: ``msgid`` (English, with %(name)s fields) and its ``params``,
    so the web can show it translated; ``str()`` is the English sentence."""

    def __init__(self, msgid: str, **params: str):
        super().__init__(msgid % params)
        self.msgid = msgid
        self.params = params


#: what an address or a domain never contains (RFC 5322's specials outside quotes, and white space)
_BAD = re.compile(r'[\s<>()\[\],;:"@\\]')

TABLE = """CREATE TABLE IF NOT EXISTS blocks (
    entry TEXT PRIMARY KEY, by TEXT NOT NULL DEFAULT '', at TEXT NOT NULL) WITHOUT ROWID"""


def stored_entries(conn: sqlite3.Connection) -> tuple[str, ...]:
    try:
        return tuple(e for (e,) in conn.execute("SELECT entry FROM blocks ORDER BY entry"))
    except sqlite3.OperationalError:  # a store older than the table (before its migration ran)
        return ()


def with_stored(config: LinkingSettings, stored: tuple[str, ...]) -> LinkingSettings:
    """The config's linking settings with the stored blocks added to its blocklist."""
    if not stored:
        return config
    return replace(config, blocklist=AddressSet(config.blocklist.entries() + list(stored)))


def normalise(entry: str) -> str:
    """An address in lower case, or a domain in its ASCII form; a clear error for anything else."""
    entry = entry.strip().lower()
    if entry.startswith("@"):
        entry = entry[1:]
    local, at, domain = entry.rpartition("@")
    if at and not local:
        raise BlockRefused("%(entry)s is neither an address nor a domain.", entry=entry)
    domain = normalise_domain(domain)
    if not domain or "." not in domain or _BAD.search(entry.replace("@", "", 1)):
        raise BlockRefused("%(entry)s is neither an address nor a domain.", entry=entry)
    return f"{local}@{domain}" if at else domain


def _check_domain(store: "Store", domain: str) -> None:
    settings = store.config_settings
    if is_public_suffix(domain):
        raise BlockRefused("%(domain)s is a public suffix: anyone registers under it; block a domain below it.",
                           domain=domain)
    if is_freemail(domain, settings.extra_freemail):
        raise BlockRefused("%(domain)s is a freemail provider: block the address instead.", domain=domain)
    if f"x@{domain}" in settings.internal_domains:
        raise BlockRefused("%(domain)s is one of our own domains.", domain=domain)
    owner = store.linker.customer_for_domain(domain)
    if owner is not None:
        name = store._one("SELECT name FROM customers WHERE id=?", (owner,))
        raise BlockRefused("%(domain)s belongs to the customer %(name)s: remove the domain from it first.",
                           domain=domain, name=name)
    below = store.conn.execute(
        """SELECT d.domain, c.name FROM customer_domains d JOIN customers c ON c.id = d.customer_id
           WHERE d.domain LIKE ? ORDER BY d.domain LIMIT 1""", ("%." + domain,)).fetchone()
    if below is not None:
        raise BlockRefused("%(domain)s belongs to the customer %(name)s: remove the domain from it first.",
                           domain=below[0], name=below[1])


def block(store: "Store", entry: str, by: str = "") -> int:
    """Block an address or a domain; what was stored from it goes (the number of mails removed)."""
    entry = normalise(entry)
    if "@" not in entry:
        _check_domain(store, entry)
    elif entry in store.config_settings.internal_domains:
        raise BlockRefused("%(entry)s is one of our own addresses.", entry=entry)
    with store.transaction():
        before = json.dumps(store.settings.blocklist.entries())
        store.conn.execute("INSERT OR IGNORE INTO blocks(entry, by, at) VALUES (?, ?, ?)", (entry, by, iso(utcnow())))
        store.refresh_blocks()
        removed = _erase_sent_by(store, entry)
        if store.meta("blocklist_applied") == before:  # nothing else pending: no need to read the store again
            store.set_meta("blocklist_applied", json.dumps(store.settings.blocklist.entries()))
    return removed


def unblock(store: "Store", entry: str) -> None:
    """Take a stored block back: the next sync reads every source again once, which brings the mail back."""
    entry = normalise(entry)
    with store.transaction():
        if not store.conn.execute("DELETE FROM blocks WHERE entry=?", (entry,)).rowcount:
            if entry in store.config_settings.blocklist.entries():
                raise BlockRefused("%(entry)s is blocked in the config ([linking] blocklist): unblock it there.",
                               entry=entry)
            raise BlockRefused("%(entry)s is not blocked.", entry=entry)
        before = json.dumps(store.settings.blocklist.entries())
        store.refresh_blocks()
        if store.meta("blocklist_applied") == before:
            store.set_meta("blocklist_applied", json.dumps(store.settings.blocklist.entries()))
        store.request_rescan()


def listing(store: "Store") -> list[dict[str, Any]]:
    """Every block: entry, kind (address|domain), origin (config|store), by, at (UTC ISO or None)."""
    out = [{"entry": e, "kind": "address" if "@" in e else "domain", "origin": "config", "by": "", "at": None}
           for e in store.config_settings.blocklist.entries()]
    known = {row["entry"] for row in out}
    for entry, by, at in store.conn.execute("SELECT entry, by, at FROM blocks ORDER BY at DESC, entry"):
        if entry not in known:
            out.append({"entry": entry, "kind": "address" if "@" in entry else "domain", "origin": "store",
                        "by": by, "at": at})
    return out


def _erase_sent_by(store: "Store", entry: str) -> int:
    """What :meth:`Ingest.apply_blocklist` does for the whole list, for one new entry: mail sent from it is
    removed (its places recorded as skipped, "blocked sender"), and a blocked address leaves the participants."""
    if "@" in entry:
        rows = store.conn.execute(
            "SELECT interaction_id FROM participants WHERE email=? AND role='from'", (entry,)).fetchall()
    else:
        rows = store.conn.execute(
            "SELECT interaction_id, email FROM participants WHERE role='from' AND (email LIKE ? OR email LIKE ?)",
            ("%@" + entry, "%." + entry)).fetchall()
        rows = [r for r in rows if entry in domain_chain(r[1].rpartition("@")[2])]
    now_s = iso(utcnow())
    ids = sorted({r[0] for r in rows})
    for iid in ids:
        store._erase_blocked(iid, now_s)
    if "@" in entry:
        store.conn.execute("DELETE FROM participants WHERE email=?", (entry,))
    return len(ids)
