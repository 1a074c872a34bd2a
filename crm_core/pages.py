"""The read side of the web front end (and its JSON API): one page of a
customer's timeline at a time, per-month counts, customers by address, tasks
by person.

Timeline pages use keyset paging: each page starts after the sort key of the
last item of the page before (date, kind order, id, recurrence id), never at
an offset, so page 200 of a customer with 10,000 items costs what page 1
costs.  Private items never reach the store, so nothing here can show them.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone, tzinfo
from typing import Any

from crm_bridge.crm_core.storebase import StoreBase

KINDS = ("mail", "appointment", "note", "task")

#: the items of one customer, one row per thing on the timeline: interactions
#: (a recurring appointment as one row per occurrence, without those an
#: override replaces) and tasks.  Columns: d (sort date), src (0 interaction, 1 task),
#: id, rid (recurrence id), kind, subject, snippet, direction, status, deleted,
#: visibility, reason, start, end
def timeline_items(target: str) -> str:
    """The timeline rows of one customer or contact (``target``: customer | contact; ``:cid`` its id)."""
    return _TIMELINE.format(target=target)


_TIMELINE = """
SELECT i.date AS d, 0 AS src, i.id AS id, '' AS rid, i.kind AS kind, i.subject AS subject, i.snippet AS snippet,
       i.direction AS direction, i.status AS status, i.deleted AS deleted, i.visibility AS visibility,
       l.reason AS reason, i.start AS start, i."end" AS "end"
  FROM links l JOIN interactions i ON i.id = l.interaction_id
 WHERE l.target = '{target}' AND l.target_id = :cid AND i.rrule = ''
UNION ALL
SELECT o.date, 0, i.id, o.recurrence_id, i.kind, i.subject, i.snippet, i.direction, o.status, i.deleted,
       i.visibility, l.reason, o.start, o."end"
  FROM links l JOIN interactions i ON i.id = l.interaction_id JOIN occurrences o ON o.interaction_id = i.id
 WHERE l.target = '{target}' AND l.target_id = :cid AND i.rrule != ''
   AND NOT EXISTS (SELECT 1 FROM interactions ov
                    WHERE ov.dedup_key > 'a:' || i.uid || char(31) AND ov.dedup_key < 'a:' || i.uid || char(32)
                      AND ov.recurrence_id = o.recurrence_id AND (ov.deleted = 0 OR i.deleted = 1))
UNION ALL
SELECT COALESCE(t.due, t.created_at), 1, t.id, '', 'task', t.title, t.description, '', t.status, 0, 'snippet',
       CASE WHEN t.rule_key IS NULL THEN 'manual' ELSE 'rule' END, t.due, NULL
  FROM tasks t WHERE t.{target}_id = :cid AND t.status != 'cancelled'
"""
_ITEMS = timeline_items("customer")


class PageReads:
    """Read-only queries for the pages; ``store`` is any open store."""

    #: the timeline's rows (a contact's page uses its own: crm_core/contacts.py)
    ITEMS = _ITEMS

    def __init__(self, store: StoreBase):
        self.store = store

    # -- customers ----------------------------------------------------------------
    def customers(self, text: str = "", details: bool = True) -> list[dict[str, Any]]:
        """Customers with last contact, open tasks and owner; ``text`` searches name, domain and contacts.

        ``details=False``: id and name only (the search page's list), without the last contact, whose cost
        follows the customers' mail."""
        where, params = "", {}
        if text.strip():
            where = """WHERE c.name LIKE :q ESCAPE '\\' OR c.account_owner LIKE :q ESCAPE '\\'
                OR EXISTS (SELECT 1 FROM customer_domains d WHERE d.customer_id = c.id AND d.domain LIKE :q ESCAPE '\\')
                OR EXISTS (SELECT 1 FROM contacts k LEFT JOIN contact_addresses a ON a.contact_id = k.id
                           WHERE k.customer_id = c.id AND (k.name LIKE :q ESCAPE '\\' OR a.email LIKE :q ESCAPE '\\'))"""
            params["q"] = "%" + text.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        if not details:
            return _dicts(self.store.conn.execute(
                f"SELECT c.id, c.name FROM customers c {where} ORDER BY c.name COLLATE NOCASE LIMIT 500", params))
        rows = self.store.conn.execute(
            f"""SELECT c.id, c.name, c.account_owner,
                (SELECT group_concat(domain, ' ') FROM customer_domains d WHERE d.customer_id = c.id) AS domains,
                (SELECT MAX(i.date) FROM links l JOIN interactions i ON i.id = l.interaction_id
                  WHERE l.target = 'customer' AND l.target_id = c.id
                    AND i.date <= strftime('%Y-%m-%dT%H:%M:%SZ', 'now')) AS last_contact,
                (SELECT COUNT(*) FROM tasks t WHERE t.customer_id = c.id AND t.status = 'open') AS open_tasks
                FROM customers c {where} ORDER BY c.name COLLATE NOCASE LIMIT 500""", params)
        return _dicts(rows)

    def customer(self, customer_id: int) -> dict[str, Any] | None:
        row = self.store.conn.execute("SELECT id, name, account_owner, origin FROM customers WHERE id = ?",
                                      (customer_id,)).fetchone()
        if row is None:
            return None
        info = dict(zip(("id", "name", "account_owner", "origin"), row))
        info["domains"] = [d for (d,) in self.store.conn.execute(
            "SELECT domain FROM customer_domains WHERE customer_id = ? ORDER BY domain", (customer_id,))]
        info["contacts"] = _dicts(self.store.conn.execute(
            """SELECT k.id, k.name, k.title, group_concat(a.email, ' ') AS emails FROM contacts k
               LEFT JOIN contact_addresses a ON a.contact_id = k.id WHERE k.customer_id = ?
               GROUP BY k.id ORDER BY k.name COLLATE NOCASE""", (customer_id,)))
        return info

    def customer_by_email(self, email: str) -> dict[str, Any] | None:
        """The customer an address belongs to: as a contact's address, else by its domain or a parent domain."""
        email = email.strip().lower()
        row = self.store.conn.execute(
            """SELECT k.customer_id FROM contact_addresses a JOIN contacts k ON k.id = a.contact_id
               WHERE a.email = ? AND k.customer_id IS NOT NULL""", (email,)).fetchone()
        if row is None and "@" in email:
            labels = email.rpartition("@")[2].split(".")
            for n in range(len(labels) - 1):
                row = self.store.conn.execute("SELECT customer_id FROM customer_domains WHERE domain = ?",
                                              (".".join(labels[n:]),)).fetchone()
                if row:
                    break
        return self.customer(row[0]) if row else None

    # -- the timeline ---------------------------------------------------------------
    def timeline(self, customer_id: int, *, kinds: tuple[str, ...] = (), contact_id: int | None = None,
                 since: str | None = None, until: str | None = None, after: tuple | None = None,
                 limit: int = 50) -> tuple[list[dict[str, Any]], tuple | None]:
        """One page, newest first, and the key to pass as ``after`` for the next page (None: last page).

        ``since``/``until`` are UTC ISO strings (inclusive/exclusive); ``after`` a key from a page before.
        """
        conds: list[str] = []
        params: dict[str, Any] = {"cid": customer_id, "limit": limit + 1}
        if kinds:
            conds.append("kind IN (%s)" % ", ".join(f":k{n}" for n in range(len(kinds))))
            params.update({f"k{n}": k for n, k in enumerate(kinds)})
        if contact_id is not None:
            conds.append("""src = 0 AND EXISTS (SELECT 1 FROM links lc WHERE lc.interaction_id = items.id
                            AND lc.target = 'contact' AND lc.target_id = :contact)""")
            params["contact"] = contact_id
        if since:
            conds.append("d >= :since")
            params["since"] = since
        if until:
            conds.append("d < :until")
            params["until"] = until
        if after:
            conds.append("(COALESCE(d, ''), src, id, rid) < (:ad, :asrc, :aid, :arid)")
            params.update(ad=after[0], asrc=int(after[1]), aid=int(after[2]), arid=after[3])
        where = ("WHERE " + " AND ".join(conds)) if conds else ""
        rows = _dicts(self.store.conn.execute(
            f"SELECT * FROM ({self.ITEMS}) AS items {where} ORDER BY COALESCE(d, '') DESC, src DESC, id DESC, rid DESC "
            "LIMIT :limit", params))
        more = len(rows) > limit
        rows = rows[:limit]
        for row in rows:
            self._details(row)
        last = rows[-1] if rows else None
        key = (last["d"] or "", last["src"], last["id"], last["rid"]) if more and last else None
        return rows, key

    def _details(self, row: dict[str, Any]) -> None:
        """Who, where seen, why linked: a few indexed lookups per item of one page."""
        row["people"], row["seen_in"], row["why"] = [], [], []
        if row["src"] == 1:
            row["why"] = [{"target": "customer", "name": "", "reason": row["reason"]}]
            return
        conn = self.store.conn
        row["people"] = [{"email": e, "name": n, "role": r, "contact": k} for e, n, r, k in conn.execute(
            """SELECT p.email, p.name, p.role, a.contact_id FROM participants p
               LEFT JOIN contact_addresses a ON a.email = p.email WHERE p.interaction_id = ?
               ORDER BY CASE p.role WHEN 'from' THEN 0 WHEN 'organizer' THEN 0 ELSE 1 END, p.email LIMIT 12""",
            (row["id"],))]
        row["seen_in"] = [{"source": s, "scope": sc} for s, sc in conn.execute(
            "SELECT source, scope FROM locations WHERE kind = 'interaction' AND item_id = ? AND gone_at IS NULL "
            "ORDER BY source, scope LIMIT 10", (row["id"],))]
        for target, target_id, reason in conn.execute(
                "SELECT target, target_id, reason FROM links WHERE interaction_id = ? ORDER BY target DESC",
                (row["id"],)):
            table = "customers" if target == "customer" else "contacts"
            name = conn.execute(f"SELECT name FROM {table} WHERE id = ?", (target_id,)).fetchone()
            row["why"].append({"target": target, "id": target_id, "name": name[0] if name else "", "reason": reason})

    def per_month(self, customer_id: int, tz: tzinfo = timezone.utc, months: int = 24) -> list[tuple[str, int]]:
        """Interactions per month of the office's calendar (``tz``): (YYYY-MM, count) for the last ``months``
        months up to this one, oldest first, months without any left out.

        A month is counted from local midnight on its first day (a mail at 23:30 UTC on 31 March is an April
        mail in Berlin): the UTC instants of the month starts are compared in SQL.
        """
        now = datetime.now(tz)
        starts = []
        for back in range(months - 1, -2, -1):  # the first month shown ... the month after this one
            y, m = divmod(now.year * 12 + now.month - 1 - back, 12)
            starts.append(datetime(y, m + 1, 1, tzinfo=tz))
        bounds = [s.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") for s in starts]

        def month_of(lo: int, hi: int) -> str:  # a binary search over the bounds: 5 comparisons a row for 24 months
            if hi - lo == 1:
                return str(lo)
            mid = (lo + hi) // 2
            return f"CASE WHEN i.date < :b{mid} THEN {month_of(lo, mid)} ELSE {month_of(mid, hi)} END"

        params: dict[str, Any] = {f"b{n}": b for n, b in enumerate(bounds)}
        params["cid"] = customer_id
        # the customer's links first, never all of the store's mail of the period by the date index (which
        # SQLite picks once ANALYZE has run): the unary + keeps the date terms off that index
        rows = self.store.conn.execute(
            f"""SELECT {month_of(0, months)} AS k, COUNT(*) FROM links l JOIN interactions i ON i.id = l.interaction_id
               WHERE l.target = 'customer' AND l.target_id = :cid AND +i.date >= :b0 AND +i.date < :b{months}
               GROUP BY k ORDER BY k""", params).fetchall()
        return [(starts[k].strftime("%Y-%m"), n) for k, n in rows]

    # -- tasks ------------------------------------------------------------------------
    def tasks(self, user: str | None = None, status: str = "open") -> list[dict[str, Any]]:
        """Tasks (``user``: only theirs: assigned to them, or unassigned on a customer they own)."""
        conds = ["t.status = :status"]
        params: dict[str, Any] = {"status": status}
        if user is not None:
            conds.append("(t.assignee = :user COLLATE NOCASE OR (t.assignee = '' AND c.account_owner = :user COLLATE NOCASE))")
            params["user"] = user
        return _dicts(self.store.conn.execute(
            f"""SELECT t.id, t.title, t.description, t.due, t.status, t.assignee, t.customer_id,
                c.name AS customer, t.completed_at FROM tasks t LEFT JOIN customers c ON c.id = t.customer_id
                WHERE {' AND '.join(conds)} ORDER BY COALESCE(t.due, '9999'), t.id LIMIT 1000""", params))

    def interaction_customers(self, interaction_id: int) -> list[dict[str, Any]]:
        return _dicts(self.store.conn.execute(
            """SELECT c.id, c.name FROM links l JOIN customers c ON c.id = l.target_id
               WHERE l.interaction_id = ? AND l.target = 'customer' ORDER BY c.name""", (interaction_id,)))


def _dicts(cursor) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def encode_key(key: tuple | None) -> str:
    return json.dumps(list(key), separators=(",", ":")) if key else ""


def decode_key(text: str) -> tuple | None:
    """A paging key from a URL, or None when it is not one (a tampered link shows page one)."""
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    if (isinstance(value, list) and len(value) == 4 and isinstance(value[0], str) and isinstance(value[1], int)
            and isinstance(value[2], int) and isinstance(value[3], str)):
        return tuple(value)
    return None
