"""Follow-up tasks and what is pushed to calendars and address books:
creating and changing tasks, the bookkeeping of pushes, and what a
calendar says back about a pushed task (changed, completed, deleted).
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from datetime import date, datetime
from typing import Any

from crm_bridge.crm_core.i18n import Office
from crm_bridge.crm_core.locations import Locations
from crm_bridge.crm_core.records import Location, TaskState
from crm_bridge.crm_core.settings import SourcePolicy
from crm_bridge.crm_core.storebase import Stats, StoreError, iso, task_digest, utcnow


log = logging.getLogger("crm.store")


class Tasks(Locations):
    """Tasks, pushes, and tasks read back from calendars."""

    # -- tasks ----------------------------------------------------------------
    def add_task(
        self,
        title: str,
        due: date | datetime | None = None,
        customer_id: int | None = None,
        interaction_id: int | None = None,
        description: str = "",
        rule_key: str | None = None,
        contact_id: int | None = None,
        assignee: str = "",
    ) -> int | None:
        """Create a task; a rule-made task (``rule_key``) is created once only."""
        now_s = iso(utcnow())
        if rule_key:  # the same rule and item give the same task, in every process
            uid = "crm-bridge-" + hashlib.sha1(rule_key.encode()).hexdigest()[:24]
        else:  # a task added by hand is always a new one, however many are added at once
            uid = "crm-bridge-" + uuid.uuid4().hex[:24]
        with self.transaction():
            cur = self._x(
                f"""INSERT {'OR IGNORE ' if rule_key else ''}INTO tasks(uid, rule_key, title, description, due,
                   customer_id, contact_id, interaction_id, created_at, updated_at, assignee)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (uid, rule_key, title, description, iso(due), customer_id, contact_id, interaction_id, now_s, now_s,
                 assignee),
            )
            return cur.lastrowid if cur.rowcount else None

    def update_task(self, task_id: int, **changes: Any) -> None:
        allowed = {"title", "description", "due", "status"}
        bad = set(changes) - allowed
        if bad:
            raise StoreError(f"cannot change {', '.join(sorted(bad))} of a task")
        if self._one("SELECT id FROM tasks WHERE id=?", (task_id,)) is None:
            raise StoreError(f"no task {task_id}")
        now_s = iso(utcnow())
        if "due" in changes:
            changes["due"] = iso(changes["due"])
        if changes.get("status") == "done":
            changes["completed_at"] = now_s
        elif "status" in changes:
            changes["completed_at"] = None
        sets = ", ".join(f"{k}=?" for k in changes)
        with self.transaction():
            self._x(f"UPDATE tasks SET {sets}, version=version+1, updated_at=? WHERE id=?", (*changes.values(), now_s, task_id))

    def tasks(self, status: str | None = None) -> list[dict[str, Any]]:
        where, params = ("WHERE t.status=?", (status,)) if status else ("", ())
        return [
            dict(r)
            for r in self.db.query(
                f"""SELECT t.id, t.uid, t.title, t.description, t.due, t.status, t.completed_at, t.rule_key,
                    t.customer_id, c.name AS customer, t.interaction_id, t.remote_href, t.version, t.pushed_version
                    FROM tasks t LEFT JOIN customers c ON c.id = t.customer_id {where}
                    ORDER BY t.status, COALESCE(t.due, '9999'), t.id""",
                params,
            )
        ]

    def tasks_to_push(self) -> list[dict[str, Any]]:
        return [
            dict(r)
            for r in self.db.query(
                """SELECT * FROM tasks WHERE version > pushed_version
                   OR (remote_href IS NULL AND NOT (status = 'cancelled' AND pushed_version > 0)) ORDER BY id"""
            )
        ]

    def note_sending(self, task: dict[str, Any]) -> None:
        """Before a push writes ``task``: remember what it writes (a few unconfirmed writes are kept), so that
        reading it back after a crash before :meth:`record_push` is known as ours, not the client's."""
        digest = task_digest(task["title"], task["status"], task.get("due"))
        kept = [d for d in (task.get("sent_digests") or "").split() if d != digest]
        self._x("UPDATE tasks SET sent_digests=? WHERE id=?", (" ".join([digest, *kept][:4]), task["id"]))

    def is_own_write(self, task: dict[str, Any], state: TaskState) -> bool:
        """Whether ``state`` (read from the server) is what a push of ``task`` wrote."""
        status = {"COMPLETED": "done", "CANCELLED": "cancelled"}.get(state.status, "open")
        sent = self._one("SELECT sent_digests FROM tasks WHERE id=?", (task["id"],)) or ""
        return task_digest(state.summary or task["title"], status, state.due) in sent.split()

    def record_push(self, task_id: int, version: int, source: str, scope: str, href: str, etag: str) -> None:
        """The task as of ``version`` is in the calendar at ``href``."""
        self._x(
            """UPDATE tasks SET pushed_version=?, remote_source=?, remote_scope=?, remote_href=?, remote_etag=?,
               sent_digests=CASE WHEN version=? THEN '' ELSE sent_digests END WHERE id=?""",
            (version, source, scope, href, etag, version, task_id),
        )
        self._put_location(source, Location(scope, href, etag), "task", task_id, "", iso(utcnow()))

    def cancel_task(self, task_id: int) -> None:
        self._x("UPDATE tasks SET status='cancelled', pushed_version=version WHERE id=?", (task_id,))

    def task_description(self, task: dict[str, Any], office: Office | None = None) -> str:
        """The text a calendar shows under a task: what it is about, and where to find it in the CRM.

        Written for staff, in the office's language and zone, with the link to the customer's page when
        ``[web] base_url`` is set (a plain sentence otherwise); the same task gives the same text."""
        office = office or Office()
        lines = [task.get("description") or ""]
        if task.get("customer_id"):
            name = self._one("SELECT name FROM customers WHERE id=?", (task["customer_id"],))
            if name:
                lines.append(office._("Customer: {name}", name=name))
                url = office.customer_url(task["customer_id"])
                lines.append(office._("Customer page: {url}", url=url) if url
                             else office._("The customer's whole history is in crm-bridge."))
        if task.get("interaction_id"):
            row = self.conn.execute(
                "SELECT kind, subject, date, start FROM interactions WHERE id=?", (task["interaction_id"],)
            ).fetchone()
            if row:
                kind, subject, day, start = row
                when = office.when(start if kind == "appointment" and start else day) or "?"
                about = {"mail": 'About the mail "{subject}" of {when}',
                         "appointment": 'About the appointment "{subject}" on {when}',
                         "note": 'About the note "{subject}" of {when}'}.get(kind, 'About "{subject}" of {when}')
                lines.append(office._(about, subject=subject or office._("(no subject)"), when=when))
        lines.append(office._("crm-bridge task {id}", id=task["id"]))
        return "\n".join(line for line in lines if line)

    def record_card_push(self, uid: str, digest: str, source: str, scope: str, href: str, etag: str) -> None:
        self._x(
            """INSERT OR REPLACE INTO card_pushes(uid, content_hash, remote_source, remote_scope, remote_href, remote_etag)
               VALUES (?, ?, ?, ?, ?, ?)""",
            (uid, digest, source, scope, href, etag),
        )

    def log_conflict(self, kind: str, item: str, resolution: str) -> None:
        log.info("%s %s: %s", kind, item, resolution)  # the sync's result says it; this is for the log file
        self._x("INSERT INTO conflicts(kind, item, resolution, at) VALUES (?, ?, ?, ?)", (kind, item, resolution, iso(utcnow())))

    # -- tasks read back ----------------------------------------------------
    def _apply_task_state(self, state: TaskState, policy: SourcePolicy, now_s: str, stats: Stats) -> None:
        row = self.conn.execute(
            "SELECT id, status, due, title, version, pushed_version, remote_etag, sent_digests FROM tasks WHERE uid=?",
            (state.uid,)
        ).fetchone()
        if row is None:
            return  # the user's own task, not ours
        tid, status, due, title, version, pushed, etag, sent = row
        if state.location.etag and state.location.etag == etag:
            stats.seen += 1
            return
        client_status = {"COMPLETED": "done", "CANCELLED": "cancelled"}.get(state.status, "open")
        client_due = iso(state.due)
        if sent and task_digest(state.summary or title, client_status, state.due) in sent.split():
            # our own write whose recording a crash lost: not the client's change; where the CRM
            # changed the task since, the next push writes that over it
            self._x("UPDATE tasks SET remote_etag=?, remote_scope=?, remote_href=? WHERE id=?",
                    (state.location.etag, state.location.scope, state.location.local_id, tid))
            self._put_location(policy.name, state.location, "task", tid, "", now_s)
            stats.seen += 1
            return
        changed = client_status != status or (state.summary and state.summary != title) or (client_due or None) != (due or None)
        if changed and version > pushed:
            self._x(
                "INSERT INTO conflicts(kind, item, resolution, at) VALUES ('task', ?, ?, ?)",
                (state.uid, "changed in the CRM and in the client: the client's version wins", now_s),
            )
            log.warning("task %s changed on both sides; the client's version wins", state.uid)
        completed = iso(state.completed) if client_status == "done" else None
        self._x(
            """UPDATE tasks SET status=?, due=?, title=?, completed_at=?, remote_etag=?, remote_scope=?,
               remote_href=?, pushed_version=version, updated_at=? WHERE id=?""",
            (client_status, client_due, state.summary or title, completed, state.location.etag,
             state.location.scope, state.location.local_id, now_s, tid),
        )
        self._put_location(policy.name, state.location, "task", tid, "", now_s)
        if changed:
            stats.tasks_updated += 1
        else:
            stats.seen += 1

    def _task_gone(self, task_id: int) -> None:
        """A pushed task was deleted in the client.  Unless the CRM changed it
        since (then the push uploads it again: edit beats delete), it is cancelled."""
        row = self.conn.execute("SELECT uid, status, version, pushed_version FROM tasks WHERE id=?", (task_id,)).fetchone()
        if row is None or row[2] > row[3]:
            return
        if row[1] == "open":
            self.log_conflict("task", row[0], "deleted in the client: cancelled in the CRM")
            self._x("UPDATE tasks SET status='cancelled', remote_href=NULL, remote_etag=NULL WHERE id=?", (task_id,))
