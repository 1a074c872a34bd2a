"""Where each item was seen (``locations``, and ``skipped`` for what is not
stored), and what the store already knows of a batch's items before it
stores them.
"""

from __future__ import annotations

from crm_bridge.crm_core.records import Location
from crm_bridge.crm_core.storebase import Stats, StoreBase


#: a place an item was seen, new or seen again (rows: source, scope, local id, kind, item, etag, flags, time)
_LOCATION_HEAD = "INSERT INTO locations(source, scope, local_id, kind, item_id, etag, flags, seen_at)"
_LOCATION_ROW = "(?, ?, ?, ?, ?, ?, ?, ?)"
#: the same row where the source and the time are every row's ($0, $1: bound once, StoreBase._insert_rows)
_LOCATION_SHARED_ROW = "($0, ?, ?, ?, ?, ?, ?, $1)"
_LOCATION_TAIL = """ON CONFLICT(source, scope, local_id) DO UPDATE SET kind=excluded.kind,
    item_id=excluded.item_id, etag=excluded.etag, flags=excluded.flags,
    seen_at=excluded.seen_at, gone_at=NULL"""
_UPSERT_LOCATION = f"{_LOCATION_HEAD} VALUES {_LOCATION_ROW} {_LOCATION_TAIL}"
#: separates a resource's local id from the RECURRENCE-ID of an override in it
OVERRIDE_MARK = "#rid="


class Locations(StoreBase):
    """The places items were seen, and lookups by place and by dedup key."""

    def _location_item(self, source: str, loc: Location) -> tuple[str, int | None, str, str | None] | None:
        return self.conn.execute(
            "SELECT kind, item_id, etag, gone_at FROM locations WHERE source=? AND scope=? AND local_id=?",
            (source, loc.scope, loc.local_id),
        ).fetchone()

    def _put_location(self, source: str, loc: Location, kind: str, item_id: int | None, flags: str, now_s: str) -> None:
        self._x(_UPSERT_LOCATION, (source, loc.scope, loc.local_id, kind, item_id, loc.etag, flags, now_s))
        if kind != "quarantined":
            self._x("DELETE FROM quarantine WHERE source=? AND scope=? AND local_id=?", (source, loc.scope, loc.local_id))

    def _skip(self, source: str, loc: Location, message_id: str, reason: str, now_s: str, stats: Stats,
              priors: dict | None = None) -> None:
        prior = priors.get((loc.scope, loc.local_id)) if priors is not None else self._location_item(source, loc)
        if prior is not None and prior[0] == "interaction" and prior[1] is not None:
            self._detach(source, loc, prior[1], now_s)
        self._x(
            """INSERT INTO skipped(source, scope, local_id, message_id, reason, at) VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT(source, scope, local_id) DO UPDATE SET message_id=excluded.message_id,
               reason=excluded.reason, at=excluded.at""",
            (source, loc.scope, loc.local_id, message_id, reason, now_s),
        )
        self._put_location(source, loc, "skipped", None, "", now_s)
        stats.skipped += 1

    def _detach(self, source: str, loc: Location, interaction_id: int, now_s: str) -> None:
        """A location no longer shows this interaction (now private, blocked)."""
        self._x("DELETE FROM unread_texts WHERE source=? AND scope=? AND local_id=?", (source, loc.scope, loc.local_id))
        self._x(
            "UPDATE locations SET kind='skipped', item_id=NULL WHERE source=? AND scope=? AND local_id=?",
            (source, loc.scope, loc.local_id),
        )
        live = self._one(
            "SELECT COUNT(*) FROM locations WHERE kind='interaction' AND item_id=?", (interaction_id,)
        )
        if not live:
            self._erase_interaction(interaction_id)

    def _erase_interaction(self, interaction_id: int) -> None:
        for table in ("participants", "occurrences", "links", "link_overrides"):
            self._x(f"DELETE FROM {table} WHERE interaction_id=?", (interaction_id,))
        self._x("""DELETE FROM unread_texts WHERE (source, scope, local_id) IN (SELECT source, scope, local_id
                   FROM locations WHERE kind='interaction' AND item_id=?)""", (interaction_id,))
        self._x("UPDATE locations SET kind='skipped', item_id=NULL WHERE kind='interaction' AND item_id=?", (interaction_id,))
        self._x("DELETE FROM interactions WHERE id=?", (interaction_id,))

    def _priors(self, source: str, locs: list[Location]) -> dict[tuple[str, str], tuple]:
        """What the store knows of these locations: (scope, local id) -> (kind, item, etag, gone)."""
        out: dict[tuple[str, str], tuple] = {}
        by_scope: dict[str, list[str]] = {}
        for loc in locs:
            by_scope.setdefault(loc.scope, []).append(loc.local_id)
        for scope, local_ids in by_scope.items():
            for chunk in range(0, len(local_ids), 500):
                part = local_ids[chunk:chunk + 500]
                marks = ",".join("?" * len(part))
                for local_id, kind, item_id, etag, gone in self._x(
                    f"""SELECT local_id, kind, item_id, etag, gone_at FROM locations
                        WHERE source=? AND scope=? AND local_id IN ({marks})""", (source, scope, *part)
                ):
                    out[(scope, local_id)] = (kind, item_id, etag, gone)
        return out

    def _ids_by_key(self, keys: list[str]) -> dict[str, tuple[int, str]]:
        out: dict[str, tuple[int, str]] = {}
        for chunk in range(0, len(keys), 500):
            part = keys[chunk:chunk + 500]
            marks = ",".join("?" * len(part))
            for key, iid, vis in self._x(
                f"SELECT dedup_key, id, visibility FROM interactions WHERE dedup_key IN ({marks})", part
            ):
                out[key] = (iid, vis)
        return out

    def known_locations(self, source: str, scope: str) -> dict[str, str]:
        rows = self.conn.execute(
            "SELECT local_id, etag FROM locations WHERE source=? AND scope=? AND gone_at IS NULL", (source, scope)
        )
        return {local_id: etag for local_id, etag in rows if OVERRIDE_MARK not in local_id}

    def known_scopes(self, source: str) -> list[str]:
        # hop from scope to scope along the primary key instead of reading
        # every location: a no-change run of a 100,000-mail source asks this
        rows = self.conn.execute(
            """WITH RECURSIVE s(scope) AS (
                   SELECT (SELECT MIN(scope) FROM locations WHERE source = :source)
                   UNION ALL
                   SELECT (SELECT MIN(scope) FROM locations WHERE source = :source AND scope > s.scope)
                   FROM s WHERE s.scope IS NOT NULL)
               SELECT scope FROM s
               WHERE scope IS NOT NULL AND EXISTS (
                   SELECT 1 FROM locations WHERE source = :source AND scope = s.scope AND gone_at IS NULL)""",
            {"source": source},
        )
        return [r[0] for r in rows]
