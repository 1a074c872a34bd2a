"""Applying a batch: the dispatcher over its records, flag changes,
quarantined items and removals, and the blocklist applied to what is stored.

Mail is :mod:`crm_core.ingest_mail`, appointments and cards
:mod:`crm_core.ingest_items`, tasks read back :mod:`crm_core.tasks`.
"""

from __future__ import annotations

import json
from datetime import datetime

from crm_bridge.crm_core.ingest_items import ItemIngest
from crm_bridge.crm_core.ingest_mail import MailIngest
from crm_bridge.crm_core.locations import OVERRIDE_MARK
from crm_bridge.crm_core.records import AppointmentRecord, Batch, ContactCard, FlagChange, Location, MailRecord, TaskState
from crm_bridge.crm_core.settings import SourcePolicy
from crm_bridge.crm_core.storebase import Stats, iso, utcnow
from crm_bridge.crm_core.tasks import Tasks

#: the end of the key range of the overrides stored under a location ("<id>#rid=" ... "<id>#rid>")
_OVERRIDE_END = OVERRIDE_MARK[:-1] + chr(ord(OVERRIDE_MARK[-1]) + 1)


class Ingest(MailIngest, ItemIngest, Tasks):
    """A batch into the store (inside the caller's transaction)."""

    # -- applying a batch ---------------------------------------------------
    def apply_batch(self, policy: SourcePolicy, batch: Batch, now: datetime | None = None) -> Stats:
        """Store everything a batch carries (inside the caller's transaction)."""
        stats = Stats()
        self.refresh_blocks()  # a block made meanwhile (from the web) counts from this batch on
        now_s: str = iso(now or utcnow())
        touched_threads: set[int] = set()
        mails = [r for r in batch.records if isinstance(r, MailRecord)]
        if mails:
            self._apply_mails(mails, policy, now_s, stats, touched_threads)
        appointments = [r for r in batch.records if isinstance(r, AppointmentRecord)]
        if appointments:
            self._apply_appointments(appointments, policy, now_s, stats)
        for rec in batch.records:
            if isinstance(rec, (MailRecord, AppointmentRecord)):
                continue
            if isinstance(rec, ContactCard):
                self._apply_card(rec, policy, now_s, stats)
            elif isinstance(rec, TaskState):
                self._apply_task_state(rec, policy, now_s, stats)
        for change in batch.changes:
            self._apply_flags(change, policy, now_s, stats)
        for failure in batch.failures:
            loc = failure.location
            self._x(
                """INSERT INTO quarantine(source, scope, local_id, reason, excerpt, first_seen, last_seen)
                   VALUES (?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(source, scope, local_id) DO UPDATE SET reason=excluded.reason,
                   excerpt=excluded.excerpt, last_seen=excluded.last_seen, count=count+1""",
                (policy.name, loc.scope, loc.local_id, failure.reason[:500], failure.excerpt[:500], now_s, now_s),
            )
            # known with its etag, so an unchanged broken item is not fetched again every run
            self._put_location(policy.name, loc, "quarantined", None, "", now_s)
            stats.quarantined += 1
        if batch.removed:
            stats.removed += self._apply_removed(policy, batch.removed, now_s)
        if batch.rereads:
            self._rereads_done(policy.name, batch.rereads)
        if touched_threads:
            self._rescan_withheld(sorted(self._propagate_threads(touched_threads)), pulling=policy.name)
        stats.problems.extend(batch.problems)
        return stats

    # -- flags and removals -------------------------------------------------
    def _apply_flags(self, change: FlagChange, policy: SourcePolicy, now_s: str, stats: Stats) -> None:
        loc = change.location
        prior = self._location_item(policy.name, loc)
        if prior is None:
            return
        if policy.private_keyword and policy.private_keyword in change.flags and prior[0] == "interaction":
            self._skip(policy.name, loc, "", f"private keyword {policy.private_keyword}", now_s, stats)
            return
        if loc.etag and loc.etag == prior[2] and prior[3] is None:
            return  # what the store has already (a connector that hands on changes uncompared)
        self._x(
            "UPDATE locations SET flags=?, etag=CASE WHEN ?='' THEN etag ELSE ? END WHERE source=? AND scope=? AND local_id=?",
            (" ".join(change.flags), loc.etag, loc.etag, policy.name, loc.scope, loc.local_id),
        )
        stats.updated += 1

    def _apply_removed(self, policy: SourcePolicy, removed: list[Location], now_s: str) -> int:
        """Locations gone from the source (with the overrides stored under an
        appointment's resource).  Each is found through the primary key, never
        by scanning its folder: removing a whole folder costs what storing it did."""
        source = policy.name
        found: list[tuple[str, str, str, int | None]] = []  # (scope, local id, kind, item)
        by_scope: dict[str, list[str]] = {}
        for loc in removed:
            by_scope.setdefault(loc.scope, []).append(loc.local_id)
        for scope, local_ids in by_scope.items():
            local_ids = list(dict.fromkeys(local_ids))
            for chunk in range(0, len(local_ids), 500):
                part = local_ids[chunk:chunk + 500]
                marks = ",".join("?" * len(part))
                found.extend((scope, *row) for row in self._x(
                    f"""SELECT local_id, kind, item_id FROM locations
                        WHERE source=? AND scope=? AND local_id IN ({marks}) AND gone_at IS NULL""",
                    (source, scope, *part)))
            # "<id>#rid=..." sorts between "<id>#rid=" and "<id>#rid>": one range of the key per id (ranges
            # joined or ORed in one statement made SQLite 3.40 walk the whole folder, with statistics or without)
            for local_id in local_ids:
                found.extend((scope, *row) for row in self._x(
                    """SELECT local_id, kind, item_id FROM locations WHERE source=? AND scope=?
                       AND local_id >= ? AND local_id < ? AND gone_at IS NULL""",
                    (source, scope, local_id + OVERRIDE_MARK, local_id + _OVERRIDE_END)))
        gone: dict[str, list[str]] = {}
        for scope, local_id, _, _ in found:
            gone.setdefault(scope, []).append(local_id)
        for scope, local_ids in gone.items():
            for chunk in range(0, len(local_ids), 500):
                part = local_ids[chunk:chunk + 500]
                self._x(f"UPDATE locations SET gone_at=? WHERE source=? AND scope=? AND local_id IN ({','.join('?' * len(part))})",
                        (now_s, source, scope, *part))
        self._forget_unread(source, ((scope, local_id) for scope, local_id, _, _ in found))
        touched: set[int] = set()
        for _, _, kind, item_id in found:
            if kind == "interaction" and item_id is not None:
                touched.add(item_id)
            elif kind == "task" and item_id is not None:
                self._task_gone(item_id)
        ordered = sorted(touched)
        live: set[int] = set()
        for chunk in range(0, len(ordered), 500):
            part_ids = ordered[chunk:chunk + 500]
            live.update(row[0] for row in self._x(
                f"""SELECT DISTINCT item_id FROM locations WHERE kind='interaction'
                    AND item_id IN ({",".join("?" * len(part_ids))}) AND gone_at IS NULL""", part_ids))
        dead = [iid for iid in ordered if iid not in live]  # in no place of any source any more
        if self.settings.on_delete == "erase":
            for iid in dead:
                self._erase_interaction(iid)
        else:
            for chunk in range(0, len(dead), 500):
                part_ids = dead[chunk:chunk + 500]
                self._x(f"UPDATE interactions SET deleted=1, updated_at=? WHERE id IN ({','.join('?' * len(part_ids))})",
                        (now_s, *part_ids))
        return len(found)

    # -- blocklist ----------------------------------------------------------
    def apply_blocklist(self) -> int:
        """Remove what was logged from blocked addresses (retroactively).

        Only when the blocklist changed since the last time: mail that came
        later was checked against it when it was stored, and this reads every
        participant of the store.
        """
        blocked = self.settings.blocklist
        entries = json.dumps(blocked.entries())
        if self.meta("blocklist_applied") == entries:
            return 0
        if not blocked:
            with self.transaction():
                self.set_meta("blocklist_applied", entries)
            return 0
        removed = 0
        now_s = iso(utcnow())
        with self.transaction():
            self.set_meta("blocklist_applied", entries)
            candidates: dict[int, list[tuple[str, str]]] = {}
            for iid, email, role in self._x("SELECT interaction_id, email, role FROM participants"):
                candidates.setdefault(iid, []).append((email, role))
            for iid, people in candidates.items():
                sender_blocked = any(role == "from" and email in blocked for email, role in people)
                if not sender_blocked:
                    continue
                self._erase_blocked(iid, now_s)
                removed += 1
            if blocked.addresses:
                marks = ",".join("?" * len(blocked.addresses))
                self._x(f"DELETE FROM participants WHERE email IN ({marks})", sorted(blocked.addresses))
        return removed

    def _erase_blocked(self, iid: int, now_s: str) -> None:
        """Remove a stored mail whose sender is blocked; its places are recorded as skipped ("blocked sender").
        (Also :func:`crm_core.blocks.block`'s, for a new entry.)"""
        self._x("""INSERT OR REPLACE INTO skipped(source, scope, local_id, message_id, reason, at)
                   SELECT source, scope, local_id, (SELECT message_id FROM interactions WHERE id=?), 'blocked sender', ?
                   FROM locations WHERE kind='interaction' AND item_id=?""", (iid, now_s, iid))
        self._erase_interaction(iid)
