"""Mail stored without its text read, read again by name once it is linked.

A connector that reads the header first (IMAP) fetches no text for a mail
the store will keep as metadata only: nobody it knows is in it
(:meth:`connectors.base.SkipRule.text_unneeded`).  Such a record comes with
``no_text``; the store notes where it was seen in ``unread_texts``
(source, scope, local id, interaction) and never shows it with a snippet
it did not read (at most its subject, which the header holds).

When such a mail becomes linked later (a reply from a customer in its
thread, ``crm link``, a new customer or contact), :meth:`Rereads.wanted_texts`
names its locations; the source's next pull fetches just those
(``SourceView.rereads``) and hands them back with ``Batch.rereads``; their
records then fill in subject and snippet as any record of a known mail
does (crm_core.ingest_mail), and :meth:`Rereads._rereads_done` forgets them.
Such mail is therefore left out of the source-wide rescan that
:meth:`crm_core.relinking.Relinking._rescan_withheld` asks for.
"""

from __future__ import annotations

from typing import Iterable

from crm_bridge.crm_core.records import Location
from crm_bridge.crm_core.storebase import StoreBase

#: how much of a mail each visibility shows
VIS_RANK = {"metadata": 0, "subject": 1, "snippet": 2}


def without_text(visibility: str) -> str:
    """What a mail whose text was not read can show at most, where ``visibility`` is wanted."""
    return "subject" if visibility == "snippet" else visibility


class Rereads(StoreBase):
    """The ``unread_texts`` table: written by the ingest of a batch, read by the engine's view."""

    def _note_unread(self, rows: list[tuple[str, str, str, int]]) -> None:
        """``(source, scope, local_id, interaction_id)`` of mail stored without its text read (a page's
        rows many to a statement: about a fifth of an IMAP source's first sync)."""
        if rows:
            self._insert_rows("INSERT OR REPLACE INTO unread_texts(source, scope, local_id, interaction_id)",
                              "(?, ?, ?, ?)", rows)

    def wanted_texts(self, source: str) -> list[Location]:
        """Locations of ``source`` whose text the store wants now: mail stored without its text that is
        linked and shows less than the source's visibility (a read: the engine asks before a pull)."""
        vis = self.meta(f"visibility:{source}") or "snippet"
        rank = VIS_RANK.get(vis, 2)
        if rank == 0:
            return []
        shows = [v for v, r in VIS_RANK.items() if r < rank]
        rows = self.conn.execute(
            f"""SELECT u.scope, u.local_id FROM unread_texts u
                JOIN locations l ON l.source = u.source AND l.scope = u.scope AND l.local_id = u.local_id
                JOIN interactions i ON i.id = u.interaction_id
                WHERE u.source = ? AND l.kind = 'interaction' AND l.item_id = u.interaction_id AND l.gone_at IS NULL
                AND i.visibility IN ({','.join('?' * len(shows))})
                AND EXISTS (SELECT 1 FROM links k WHERE k.interaction_id = u.interaction_id)
                ORDER BY u.scope, u.local_id""",
            (source, *shows),
        ).fetchall()
        return [Location(scope, local_id) for scope, local_id in rows]

    def _rereads_done(self, source: str, locations: Iterable[Location]) -> None:
        """The source answered these re-reads (read them, or found them gone): no longer wanted."""
        self._forget_unread(source, ((loc.scope, loc.local_id) for loc in locations))

    def _forget_unread(self, source: str, places: Iterable[tuple[str, str]]) -> None:
        """These places (scope, local id) no longer hold a mail stored without its text: read with it,
        skipped, gone.  (A place of an erased mail goes with it: Locations._erase_interaction.)
        Nothing to delete, one look: a rescan names every place of the source, and most sources
        (all but IMAP) never leave a text unread."""
        rows = [(source, scope, local_id) for scope, local_id in places]
        if not rows or self.conn.execute("SELECT 1 FROM unread_texts WHERE source=? LIMIT 1", (source,)).fetchone() is None:
            return
        self.conn.executemany("DELETE FROM unread_texts WHERE source=? AND scope=? AND local_id=?", rows)
