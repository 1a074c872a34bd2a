"""Who a stored item belongs to, kept current: the customers and contacts the
sync creates, the links of stored items (by rule, by thread, by hand) and
relinking when customers, contacts or addresses change.

The rules themselves are :mod:`crm_core.linking`; the CLI's management of
customers and contacts is :mod:`crm_core.directory`.
"""

from __future__ import annotations

import json
from typing import Iterable

from crm_bridge.crm_core.domains import is_freemail, normalise_domain
from crm_bridge.crm_core.linking import CONTACT, CUSTOMER, Match
from crm_bridge.crm_core.records import Address
from crm_bridge.crm_core.settings import SourcePolicy, domain_problem
from crm_bridge.crm_core.storebase import Stats, StoreBase, StoreError, iso, utcnow


#: SQLite's NOCASE: ASCII letters only
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class Relinking(StoreBase):
    """Customers, contacts and the links of stored items."""

    # -- customers and contacts -------------------------------------------
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

    def customers_are_current(self, customers: Iterable[tuple[str, Iterable[str], str | None]]) -> bool:
        """:meth:`customer_is_current` of every ``(name, domains, account_owner)``, in two queries
        (every command asks this of the config's customers, hundreds of them)."""
        rows: dict[str, list[tuple[int, str | None]]] = {}
        for cid, name, owner in self.conn.execute("SELECT id, name, account_owner FROM customers"):
            rows.setdefault(name.translate(_ASCII_LOWER), []).append((cid, owner))
        have: dict[int, set[str]] = {}
        for cid, domain in self.conn.execute("SELECT customer_id, domain FROM customer_domains"):
            have.setdefault(cid, set()).add(domain)
        for name, domains, account_owner in customers:
            found = rows.get(name.strip().translate(_ASCII_LOWER), [])
            if len(found) != 1:  # none, or (not expected) several: the one-by-one answer
                if not self.customer_is_current(name, domains, account_owner):
                    return False
                continue
            cid, owner = found[0]
            if account_owner is not None and owner != account_owner.strip():
                return False
            mine = have.get(cid, set())
            if not all(normalise_domain(d) in mine for d in domains):
                return False
        return True

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

    def _visible(self, policy: SourcePolicy, linked: bool) -> str:
        vis = policy.visibility
        if not linked and self.settings.unmatched == "metadata":
            return "metadata"
        return vis

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
                    AND NOT EXISTS (SELECT 1 FROM unread_texts u
                        WHERE u.source=l.source AND u.scope=l.scope AND u.local_id=l.local_id)
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


class _NewContacts:
    """Contacts that linking creates while a batch is stored, written in one go.

    Ids are handed out here (the write transaction is the store's alone);
    the link index learns each contact at once, so the next record of the
    same batch already finds it.
    """

    def __init__(self, store: StoreBase, now_s: str, stats: Stats):
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
