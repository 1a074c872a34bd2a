"""The read side that the CLI (and a web front end) share: counts, customers,
timelines, search, explanations, quarantine, status, export.
"""

from __future__ import annotations

import json
from typing import Any

from crm_bridge.crm_core.linking import CUSTOMER
from crm_bridge.crm_core.storebase import StoreBase, StoreError

#: the interactions a Message-ID (a mail's: in thread_refs with the mail's thread) or a UID (an
#: appointment's: the partial index interactions_uid) names, read through indexes, not by a scan of
#: every interaction; two parameters, the reference twice
_BY_REF = ("SELECT i.id FROM thread_refs r CROSS JOIN interactions i"
           " ON i.thread_id = r.thread_id AND i.message_id = r.message_id WHERE r.message_id = ?"
           " UNION SELECT id FROM interactions WHERE uid = ? AND uid != ''")


class Reads(StoreBase):
    """Queries for people: nothing here writes."""

    # -- read side ------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        out = {}
        for table in ("customers", "contacts", "interactions", "links", "tasks", "quarantine", "skipped"):
            out[table] = self._one(f"SELECT COUNT(*) FROM {table}")
        out["mails"] = self._one("SELECT COUNT(*) FROM interactions WHERE kind='mail'")
        out["appointments"] = self._one("SELECT COUNT(*) FROM interactions WHERE kind='appointment'")
        return out

    def customers(self) -> list[dict[str, Any]]:
        rows = self.db.query(
            """SELECT c.id, c.name, c.origin, c.account_owner,
               (SELECT group_concat(domain, ' ') FROM customer_domains d WHERE d.customer_id = c.id) AS domains,
               (SELECT COUNT(*) FROM contacts k WHERE k.customer_id = c.id) AS contacts,
               (SELECT COUNT(DISTINCT interaction_id) FROM links l WHERE l.target='customer' AND l.target_id=c.id) AS interactions,
               (SELECT MAX(i.date) FROM links l JOIN interactions i ON i.id=l.interaction_id
                 WHERE l.target='customer' AND l.target_id=c.id AND i.date <= strftime('%Y-%m-%dT%H:%M:%SZ','now')) AS last_contact,
               (SELECT COUNT(*) FROM tasks t WHERE t.customer_id=c.id AND t.status='open') AS open_tasks
               FROM customers c ORDER BY c.name COLLATE NOCASE"""
        )
        return [dict(r) for r in rows]

    def customer(self, name: str) -> dict[str, Any]:
        cid = self.customer_id(name)
        info = next(c for c in self.customers() if c["id"] == cid)
        info["contacts_list"] = [
            dict(r)
            for r in self.db.query(
                """SELECT k.id, k.name, k.title, k.origin, group_concat(a.email, ' ') AS emails FROM contacts k
                   LEFT JOIN contact_addresses a ON a.contact_id = k.id WHERE k.customer_id=? GROUP BY k.id ORDER BY k.name""",
                (cid,),
            )
        ]
        return info

    def timeline(self, customer: str, limit: int = 50, include_deleted: bool = True) -> list[dict[str, Any]]:
        """Interactions of a customer, newest first; recurring appointments as occurrences."""
        cid = self.customer_id(customer)
        rows = self.db.query(
            """SELECT i.id, i.kind, i.date, i.start, i."end", i.subject, i.snippet, i.direction, i.status,
               i.rrule, i.deleted, i.message_id, i.location_text, l.reason,
               (SELECT p.email FROM participants p WHERE p.interaction_id=i.id AND p.role IN ('from','organizer') LIMIT 1) AS sender,
               (SELECT group_concat(p.email, ', ') FROM participants p WHERE p.interaction_id=i.id AND p.role='to') AS recipients
               FROM links l JOIN interactions i ON i.id=l.interaction_id
               WHERE l.target='customer' AND l.target_id=?""",
            (cid,),
        )
        items = []
        for r in rows:
            r = dict(r)
            if not include_deleted and r["deleted"]:
                continue
            if r["rrule"]:
                # an occurrence that a RECURRENCE-ID override replaces shows as that override's own row
                overridden = {rid for (rid,) in self._x(
                    "SELECT o.recurrence_id FROM interactions m JOIN interactions o"
                    " ON o.dedup_key > 'a:' || m.uid || char(31) AND o.dedup_key < 'a:' || m.uid || char(32)"
                    " WHERE m.id=? AND (o.deleted=0 OR m.deleted=1)", (r["id"],))}
                for o in self._x(
                    'SELECT recurrence_id, start, "end", date, status FROM occurrences WHERE interaction_id=?', (r["id"],)
                ):
                    if o[0] in overridden:
                        continue
                    occ = dict(r, start=o[1], end=o[2], date=o[3], status=o[4], recurrence_id=o[0])
                    items.append(occ)
            else:
                items.append(r)
        items.sort(key=lambda x: x["date"] or "", reverse=True)
        return items[:limit] if limit else items

    def search(self, text: str, limit: int = 50) -> list[dict[str, Any]]:
        query = " ".join(f'"{t}"' for t in text.replace('"', " ").split())
        if not query:
            return []
        # the newest ``limit`` matches first (only their ids and dates are sorted), then their columns and
        # customers: every match costs an index lookup, only the rows shown cost more
        rows = self.db.query(
            """SELECT i.id, i.kind, i.date, i.subject, i.snippet, i.direction, i.message_id,
               (SELECT group_concat(c.name, ', ') FROM links l JOIN customers c ON c.id=l.target_id
                WHERE l.interaction_id=i.id AND l.target='customer') AS customers
               FROM (SELECT m.id FROM interactions_fts f JOIN interactions m ON m.id = f.rowid
                     WHERE interactions_fts MATCH ? ORDER BY m.date DESC, m.id DESC LIMIT ?) AS top
               JOIN interactions i ON i.id = top.id ORDER BY i.date DESC, i.id DESC""",
            (query, limit),
        )
        return [dict(r) for r in rows]

    def explain(self, message_id: str) -> list[dict[str, Any]]:
        """Why a mail (by Message-ID) or appointment (by UID) is linked, or not logged."""
        message_id = message_id.strip().strip("<>")
        if " " in message_id:  # stored without the spaces (connectors.mailparse.parse_ids)
            message_id = "".join(message_id.split())
        out = []
        by_id = int(message_id) if message_id.isdigit() else -1  # the id a timeline shows
        for iid, kind, subject, warnings in self._x(
            "SELECT id, kind, subject, warnings FROM interactions WHERE id IN"
            f" ({_BY_REF} UNION SELECT id FROM interactions WHERE id=?) ORDER BY id",
            (message_id, message_id, by_id),
        ).fetchall():
            links = []
            for target, target_id, reason in self._x("SELECT target, target_id, reason FROM links WHERE interaction_id=?", (iid,)):
                table = "customers" if target == CUSTOMER else "contacts"
                name = self._one(f"SELECT name FROM {table} WHERE id=?", (target_id,))
                links.append({"target": target, "id": target_id, "name": name, "reason": reason})
            unlinked = [
                {"target": t, "id": i} for t, i in self._x(
                    "SELECT target, target_id FROM link_overrides WHERE interaction_id=? AND action='unlink'", (iid,)
                )
            ]
            places = [
                {"source": s, "scope": sc, "local_id": li, "gone": bool(g)}
                for s, sc, li, g in self._x(
                    "SELECT source, scope, local_id, gone_at FROM locations WHERE kind='interaction' AND item_id=?", (iid,)
                )
            ]
            out.append({"interaction": iid, "kind": kind, "subject": subject, "logged": True, "links": links,
                        "manually_unlinked": unlinked, "seen_in": places,
                        "warnings": warnings.split("\n") if warnings else []})
        for source, scope, local_id, reason in self._x(
            "SELECT source, scope, local_id, reason FROM skipped WHERE message_id=?", (message_id,)
        ):
            out.append({"logged": False, "reason": reason, "seen_in": [{"source": source, "scope": scope, "local_id": local_id}]})
        return out

    def quarantine(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.query("SELECT * FROM quarantine ORDER BY last_seen DESC, source, scope, local_id")]

    def status(self) -> list[dict[str, Any]]:
        """Per source: the last finished run (``last_*``) and the latest run (``run_*``, maybe unfinished)."""
        rows = self.db.query(
            """SELECT s.name, s.type, s.last_run_at, s.last_status, s.last_error, s.items,
               (SELECT COUNT(*) FROM quarantine q WHERE q.source=s.name) AS quarantined,
               r.stats AS last_stats, r.status AS run_status, r.started_at AS run_started_at,
               r.finished_at AS run_finished_at, r.message AS run_message
               FROM sources s LEFT JOIN runs r ON r.id = (SELECT MAX(id) FROM runs WHERE source=s.name)
               ORDER BY s.name"""
        )
        out = []
        for r in rows:
            r = dict(r)
            r["last_stats"] = json.loads(r["last_stats"]) if r["last_stats"] else None
            if r["run_status"] == "running":
                # not finished: what is stored now, not what the run before it left
                r["items"] = self._one("SELECT COUNT(*) FROM locations WHERE source=? AND gone_at IS NULL "
                                       "AND kind NOT IN ('skipped', 'quarantined')", (r["name"],)) or 0
            out.append(r)
        return out

    def customer_id(self, name_or_id: str | int) -> int:
        if isinstance(name_or_id, int) or str(name_or_id).isdigit():
            found = self._one("SELECT id FROM customers WHERE id=?", (int(name_or_id),))
        else:
            found = self._one("SELECT id FROM customers WHERE name=? COLLATE NOCASE", (name_or_id,))
        if found is None:
            raise StoreError(f"no customer named {name_or_id!r}")
        return found

    def interaction_id(self, ref: str) -> int:
        """An interaction by id or by Message-ID."""
        ref = ref.strip().strip("<>")
        if ref.isdigit() and self._one("SELECT id FROM interactions WHERE id=?", (int(ref),)) is not None:
            return int(ref)
        found = self._x(_BY_REF, (ref, ref)).fetchall()
        if not found:
            raise StoreError(f"no interaction {ref!r}")
        if len(found) > 1:
            raise StoreError(f"{ref!r} names {len(found)} interactions; use the numeric id")
        return found[0][0]

    def contact_id(self, ref: str) -> int:
        ref = ref.strip().lower()
        if ref.isdigit():
            found = self._one("SELECT id FROM contacts WHERE id=?", (int(ref),))
        else:
            found = self._one("SELECT contact_id FROM contact_addresses WHERE email=?", (ref,))
        if found is None:
            raise StoreError(f"no contact {ref!r}")
        return found

    def export(self) -> dict[str, list[dict[str, Any]]]:
        out = {}
        for table in ("customers", "customer_domains", "contacts", "contact_addresses", "interactions",
                      "participants", "links", "tasks"):
            out[table] = [dict(r) for r in self.db.query(f"SELECT * FROM {table} ORDER BY 1")]
        return out

    def snapshot(self) -> dict[str, list[tuple]]:
        """The content of the store by natural keys (tests compare runs with it)."""
        q = {
            "customers": "SELECT name, origin, account_owner FROM customers",
            "domains": "SELECT d.domain, c.name FROM customer_domains d JOIN customers c ON c.id=d.customer_id",
            "contacts": "SELECT a.email, k.name, k.origin FROM contact_addresses a JOIN contacts k ON k.id=a.contact_id",
            "interactions": "SELECT dedup_key, kind, subject, snippet, date, direction, status, deleted, visibility FROM interactions",
            "participants": "SELECT i.dedup_key, p.email, p.role FROM participants p JOIN interactions i ON i.id=p.interaction_id",
            "links": """SELECT i.dedup_key, l.target, COALESCE(c.name, k.name), l.reason FROM links l
                        JOIN interactions i ON i.id=l.interaction_id
                        LEFT JOIN customers c ON l.target='customer' AND c.id=l.target_id
                        LEFT JOIN contacts k ON l.target='contact' AND k.id=l.target_id""",
            "threads": """SELECT a.dedup_key, b.dedup_key FROM interactions a JOIN interactions b
                          ON a.thread_id=b.thread_id AND a.id<b.id""",
            "locations": "SELECT source, scope, local_id, kind, etag, flags, gone_at IS NOT NULL FROM locations",
            "skipped": "SELECT source, scope, local_id, reason FROM skipped",
            "quarantine": "SELECT source, scope, local_id, reason FROM quarantine",
            "tasks": "SELECT rule_key, title, due, status FROM tasks",
            "cursors": "SELECT name, cursor FROM sources",
        }
        return {k: sorted(tuple(r) for r in self._x(sql)) for k, sql in q.items()}
