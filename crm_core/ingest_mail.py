"""Mail into the store, a batch at a time.

Mails are deduplicated across sources and mailboxes by ``dedup_key`` (a
hash of the Message-ID and of the normalised content, see
:func:`crm_core.storebase.mail_key`), with a second look by Message-ID,
sender, minute and subject; they are threaded by their references; the text
of a mail stored as metadata while it matched nobody is kept at hand for a
reply that links it.
"""

from __future__ import annotations

from crm_bridge.crm_core.locations import _LOCATION_HEAD, _LOCATION_SHARED_ROW, _LOCATION_TAIL, Locations
from crm_bridge.crm_core.records import Address, MailRecord
from crm_bridge.crm_core.relinking import Relinking, _NewContacts
from crm_bridge.crm_core.rereads import Rereads, without_text
from crm_bridge.crm_core.settings import SourcePolicy
from crm_bridge.crm_core.storebase import FILL_TEXT_TABLE, Stats, mail_key_and_date, utc_iso


_VIS_RANK = {"metadata": 0, "subject": 1, "snippet": 2}
_INSERT_MAIL_HEAD = """INSERT INTO interactions(id, dedup_key, message_id, content_hash, thread_id, date, subject, snippet,
    direction, visibility, bulk, has_attachments, logged_by, created_at, updated_at, warnings, kind)"""
#: a new mail's row; $0: the time of the batch (created_at, updated_at), bound once a statement
_INSERT_MAIL_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, $0, $0, ?, 'mail')"
#: a participant of a new mail (its status is for appointments)
_PARTICIPANT_ROW = "(?, ?, ?, ?, '')"
#: unmatched mails whose text a store keeps at hand for a later reply (about 8 MB)
_HELD_MAX = 10_000


class MailIngest(Rereads, Relinking, Locations):
    """The mails of a batch: dedup, threads, links, held text."""

    def _apply_mails(self, recs: list[MailRecord], policy: SourcePolicy, now_s: str, stats: Stats,
                     threads: set[int]) -> None:
        """Store a batch of mails with a handful of statements, not a handful per mail.

        Ids are handed out here (the write transaction is ours alone), so
        interactions, participants, locations, thread references and links
        go in with one ``executemany`` each.
        """
        linker = self.linker
        source = policy.name
        priors = self._priors(source, [r.location for r in recs])
        skip_rows: list[tuple] = []
        loc_rows: list[tuple] = []
        unquarantine: list[tuple] = []

        def skip(rec: MailRecord, reason: str) -> None:
            loc = rec.location
            prior = priors.get((loc.scope, loc.local_id))
            if prior is not None and prior[0] == "interaction" and prior[1] is not None:
                self._detach(source, loc, prior[1], now_s)
            if prior is not None and prior[0] == "quarantined":
                unquarantine.append((source, loc.scope, loc.local_id))
            skip_rows.append((loc.scope, loc.local_id, rec.message_id, reason))
            loc_rows.append((loc.scope, loc.local_id, "skipped", None, loc.etag, ""))
            stats.skipped += 1

        # record, key, hash, date, ids it names, external participants, logged anyway
        keep: list[tuple[MailRecord, str, str, str | None, list[str], list[Address], bool]] = []
        mail_verdict = linker.mail_verdict
        for rec in recs:
            reason, external, anyway = mail_verdict(rec, rec.location.scope, rec.flags, policy)
            if reason:
                skip(rec, reason)
            else:
                # the reader process may have worked out the key already (sync/worker.py)
                key, chash, date_s = (*rec.key, utc_iso(rec.date)) if rec.key is not None else mail_key_and_date(rec)
                if rec.in_reply_to or rec.references:
                    ids = [i for i in (rec.message_id, *rec.in_reply_to, *rec.references) if i]
                else:
                    ids = [rec.message_id] if rec.message_id else []
                keep.append((rec, key, chash, date_s, ids, external, anyway))
        refmap = self._thread_refs([i for k in keep for i in k[4]])
        # every stored mail's Message-ID is in thread_refs (with the ids it names, written with the
        # mail): a mail whose Message-ID is not there is not stored, under its key (which hashes the
        # Message-ID) nor under another one; most of a first sync's mail, left out of both looks
        existing = self._ids_by_key([k for rec, k, *_ in keep if not rec.message_id or rec.message_id in refmap])
        unmatched = [(rec, key) for rec, key, *_ in keep if key not in existing and rec.message_id in refmap]
        if unmatched:
            existing.update(self._same_mails(unmatched))
        next_id = (self._one("SELECT MAX(id) FROM interactions") or 0) + 1
        next_thread = (self._one("SELECT MAX(id) FROM threads") or 0) + 1
        merged: dict[int, int] = {}
        new_rows: list[tuple] = []
        part_rows: list[tuple] = []
        link_rows: list[tuple] = []
        ref_rows: list[tuple] = []
        thread_rows: list[tuple] = []
        withheld: dict[int, tuple[str, str, str]] = {}  # id -> (subject, snippet, visibility once linked)
        contacts = _NewContacts(self, now_s, stats)
        logged: list[tuple[int, MailRecord, str]] = []
        unskip: list[tuple[str, str, str]] = []
        unread: list[tuple[str, str, str, int]] = []  # text not read (crm_core.rereads)
        is_blocked, blocked_memo = linker.is_blocked, linker._blocked
        # Relinking._visible, asked once a page: mail that links nobody and is not logged anyway
        # is stored as metadata only when the settings say so
        visibility = policy.visibility
        vis_unlinked = "metadata" if self.settings.unmatched == "metadata" else visibility
        dropping = self.settings.unmatched == "drop"
        added = 0
        for rec, key, chash, date_s, ids, external, anyway in keep:
            loc = rec.location
            flags = " ".join(rec.flags)
            prior = priors.get((loc.scope, loc.local_id)) if priors else None
            found = existing.get(key)
            if found is not None:
                iid, vis = found
                if prior is None or prior[1] != iid or prior[3] is not None:
                    stats.updated += 1
                    self._x("UPDATE interactions SET deleted=0 WHERE id=? AND deleted=1", (iid,))
                else:
                    stats.seen += 1
                if prior is not None and prior[0] in ("skipped", "quarantined"):
                    unskip.append((source, loc.scope, loc.local_id))
                loc_rows.append((loc.scope, loc.local_id, "interaction", iid, loc.etag, flags))
                if vis != policy.visibility and _VIS_RANK[policy.visibility] > _VIS_RANK.get(vis, 0):
                    linked = bool(self._one("SELECT 1 FROM links WHERE interaction_id=? LIMIT 1", (iid,)))
                    want = self._visible(policy, linked)
                    if rec.no_text:  # no snippet to show: the text is read by name (crm_core.rereads)
                        want = without_text(want)
                        unread.append((source, loc.scope, loc.local_id, iid))
                    if _VIS_RANK[want] > _VIS_RANK.get(vis, 0):
                        self._x(
                            "UPDATE interactions SET subject=?, snippet=?, visibility=?, updated_at=? WHERE id=?",
                            (rec.subject if want != "metadata" else None, rec.snippet if want == "snippet" else None,
                             want, now_s, iid),
                        )
                continue
            iid = next_id
            next_id += 1
            match = linker.match_external(external)
            # thread: every id the mail names joins one thread; two threads it joins become one
            thread_id = None
            if ids:
                if len(ids) == 1:  # a Message-ID alone (most mail)
                    known = refmap.get(ids[0])
                    found_threads = [] if known is None else [_find(merged, known) if merged else known]
                else:
                    found_threads = sorted({_find(merged, refmap[i]) if merged else refmap[i] for i in ids if i in refmap})
                if not found_threads:
                    thread_id = next_thread
                    next_thread += 1
                    thread_rows.append((thread_id, rec.subject[:200]))
                else:
                    thread_id = found_threads[0]
                    for other in found_threads[1:]:
                        merged[other] = thread_id
                        self._x("UPDATE thread_refs SET thread_id=? WHERE thread_id=?", (thread_id, other))
                        self._x("UPDATE interactions SET thread_id=? WHERE thread_id=?", (thread_id, other))
                        self._x("DELETE FROM threads WHERE id=?", (other,))
                        threads.discard(other)
                for i in ids:
                    if i not in refmap:
                        ref_rows.append((i, thread_id))
                    refmap[i] = thread_id
                if found_threads:  # a mail alone in a new thread has nobody to inherit from or pass on to
                    threads.add(thread_id)
            logged_by = "log folder" if anyway else ""
            if dropping and not match.links and not logged_by:
                next_id -= 1
                skip(rec, "no customer or contact matched")
                continue
            direction = linker.direction(rec, policy)
            want = visibility if match.links or logged_by else vis_unlinked
            if rec.no_text:  # no snippet to show: the text is read by name once linked (crm_core.rereads)
                want = without_text(want)
                unread.append((source, loc.scope, loc.local_id, iid))
            if want != visibility:
                withheld[iid] = (rec.subject, rec.snippet, without_text(visibility) if rec.no_text else visibility)
            new_rows.append((
                iid, key, rec.message_id, chash, thread_id, date_s,
                rec.subject if want != "metadata" else None, rec.snippet if want == "snippet" else None,
                direction, want, rec.bulk, int(rec.has_attachments), logged_by, "\n".join(rec.warnings),
            ))
            existing[key] = (iid, want)
            # Linker.mail_participants, blocked addresses left out; an address twice in a role is
            # left to INSERT OR IGNORE (the first one stays, as the rows go in in order)
            sender = rec.sender
            if sender is not None:
                email = sender.email
                blocked = blocked_memo.get(email)
                if not (is_blocked(email) if blocked is None else blocked):
                    part_rows.append((iid, email, sender.name, "from"))
            for role, group in (("to", rec.to), ("cc", rec.cc), ("bcc", rec.bcc)):
                for a in group:
                    email = a.email
                    blocked = blocked_memo.get(email)
                    if not (is_blocked(email) if blocked is None else blocked):
                        part_rows.append((iid, email, a.name, role))
            loc_rows.append((loc.scope, loc.local_id, "interaction", iid, loc.etag, flags))
            if prior is not None and prior[0] in ("skipped", "quarantined"):
                unskip.append((source, loc.scope, loc.local_id))
            if match.new_contacts:
                contacts.add_to(match)
            for (target, target_id), reason in match.links.items():
                link_rows.append((iid, target, target_id, reason))
            if logged_by and not match.links:
                logged.append((iid, rec, direction))
            added += 1
        stats.added += added
        x = self.conn.executemany
        contacts.flush()
        rows = self._insert_rows  # a page's rows, many to a statement
        rows("INSERT INTO skipped(source, scope, local_id, message_id, reason, at)", "($0, ?, ?, ?, ?, $1)", skip_rows,
             """ON CONFLICT(source, scope, local_id) DO UPDATE SET message_id=excluded.message_id,
             reason=excluded.reason, at=excluded.at""", shared=(source, now_s))
        rows("INSERT INTO threads(id, subject)", "(?, ?)", thread_rows)
        rows("INSERT OR IGNORE INTO thread_refs(message_id, thread_id)", "(?, ?)",
             [(i, _find(merged, t)) for i, t in ref_rows] if merged else ref_rows)
        inserted = [row if row[4] not in merged else row[:4] + (_find(merged, row[4]),) + row[5:]
                    for row in new_rows] if merged else new_rows
        rows(_INSERT_MAIL_HEAD, _INSERT_MAIL_ROW, inserted, shared=(now_s,))
        rows("INSERT OR IGNORE INTO participants(interaction_id, email, name, role, status)", _PARTICIPANT_ROW, part_rows)
        rows(_LOCATION_HEAD, _LOCATION_SHARED_ROW, loc_rows, _LOCATION_TAIL, shared=(source, now_s))
        x("DELETE FROM skipped WHERE source=? AND scope=? AND local_id=?", unskip)
        x("DELETE FROM quarantine WHERE source=? AND scope=? AND local_id=?", unskip + unquarantine)
        rows("INSERT OR IGNORE INTO links(interaction_id, target, target_id, reason)", "(?, ?, ?, ?)", link_rows)
        # a place seen before holds what this read found there: noted again below if its text was not read
        self._forget_unread(source, priors)
        self._note_unread(unread)
        for iid, rec, direction in logged:
            self._log_unknown(iid, rec, policy, direction, now_s, stats)
        by_thread = self._propagate_threads(threads)
        threads.clear()
        # stored earlier without content while unmatched, linked through their thread
        # now: filled in from what this process still holds of an earlier batch, else
        # the sources that saw them read them again (as for a new customer)
        held = self._held
        earlier = [iid for iid in by_thread if iid not in withheld]
        withheld.update((iid, held.pop(iid)) for iid in earlier if iid in held)
        self._rescan_withheld(sorted(iid for iid in earlier if iid not in withheld), pulling=source)
        # this page's mails go into the full-text index last, with their final text: FTS5 writes
        # the terms it holds as a new segment whenever a statement with a savepoint starts or
        # ends (one that runs a trigger, as the update of a mail's text, or writes many rows),
        # and each segment is merged again later (see schema.FTS_INSERT_TRIGGER)
        if withheld:  # withheld while unmatched, linked through their thread after all
            withheld_ids = list(withheld)
            filled: set[int] = set()
            for chunk in range(0, len(withheld_ids), 500):
                part = withheld_ids[chunk:chunk + 500]
                marks = ",".join("?" * len(part))
                filled.update(iid for (iid,) in self._x(
                    f"SELECT DISTINCT interaction_id FROM links WHERE interaction_id IN ({marks})", part).fetchall())
            first_new = inserted[0][0] if inserted else next_id
            # stored by an earlier page: in the index already, which the update trigger keeps current
            self._fill_text([(iid, *withheld[iid]) for iid in sorted(filled) if iid < first_new])
            # this page's own (stored as metadata, so visibility='metadata'): not in the index yet,
            # so not through the update trigger (it would take out of the index what is not in
            # it) but the row written again whole (REPLACE runs no delete trigger, as
            # recursive_triggers is off; the insert trigger leaves mail to _index_text)
            redo = []
            for n, row in enumerate(inserted):
                if row[0] in filled:
                    subject, snippet, vis = withheld[row[0]]
                    row = inserted[n] = row[:6] + (subject if vis != "metadata" else None,
                                                   snippet if vis == "snippet" else None) + row[8:9] + (vis,) + row[10:]
                    redo.append(row)
            rows(f"INSERT OR REPLACE{_INSERT_MAIL_HEAD[len('INSERT'):]}", _INSERT_MAIL_ROW, redo, shared=(now_s,))
            held.update((iid, text) for iid, text in withheld.items() if iid not in filled)
            while len(held) > _HELD_MAX:  # the oldest go: replies come soon after or not in this run
                del held[next(iter(held))]
        if inserted:
            self._index_range(inserted[0][0], inserted[-1][0])

    def _fill_text(self, rows: list[tuple[int, str, str, str]]) -> None:
        """Give mails stored as metadata only their text (rows: id, subject, snippet, visibility).

        One UPDATE for all of them: the full-text index's update trigger runs inside the statement's
        savepoint, and FTS5 writes the terms it holds at every savepoint, so an UPDATE a mail wrote
        a segment a mail; one statement, then the page's own index rows, write one."""
        if not rows:
            return
        self._x(FILL_TEXT_TABLE)  # made when the store opened; again in case a program dropped it
        # emptied before, not after: a statement that deletes rows has a savepoint too (and the
        # terms of the update below are to be written with the page's at the commit)
        self._x("DELETE FROM temp.fill_text")
        self.conn.executemany("INSERT INTO temp.fill_text(id, subject, snippet, visibility) VALUES (?, ?, ?, ?)",
                              [(iid, subject if vis != "metadata" else None, snippet if vis == "snippet" else None, vis)
                               for iid, subject, snippet, vis in rows])
        self._x("""UPDATE interactions SET
                       subject=(SELECT f.subject FROM temp.fill_text f WHERE f.id=interactions.id),
                       snippet=(SELECT f.snippet FROM temp.fill_text f WHERE f.id=interactions.id),
                       visibility=(SELECT f.visibility FROM temp.fill_text f WHERE f.id=interactions.id)
                   WHERE id IN (SELECT id FROM temp.fill_text) AND visibility='metadata'""")

    def _same_mails(self, unmatched: list[tuple[MailRecord, str]]) -> dict[str, tuple[int, str]]:
        """Mails stored under another dedup key: the same Message-ID, sender, minute and subject.

        The key hashes the start of the snippet, so without this a mail seen
        again at a new place (moved, in a second mailbox, after a UIDVALIDITY
        reset) would be stored twice once a newer crm-bridge reads its text
        differently (reply quoting, HTML heads, inline parts).  A Message-ID
        alone stays a hint: two mails that share one but differ in sender,
        minute or subject stay two.  A subject that was not stored (metadata
        only) does not speak against the match.
        """
        wanted: dict[str, list[tuple[MailRecord, str]]] = {}
        for rec, key in unmatched:
            wanted.setdefault(rec.message_id, []).append((rec, key))
        out: dict[str, tuple[int, str]] = {}
        ids = list(wanted)
        for chunk in range(0, len(ids), 500):
            part = ids[chunk:chunk + 500]
            # by the thread: a stored mail's Message-ID is in thread_refs with the mail's thread
            # (no index of interactions by Message-ID: schema version 9)
            rows = self._x(
                "SELECT i.id, i.visibility, i.message_id, i.date, i.subject,"
                " (SELECT p.email FROM participants p WHERE p.interaction_id=i.id AND p.role='from' LIMIT 1)"
                " FROM thread_refs r CROSS JOIN interactions i ON i.thread_id = r.thread_id AND i.message_id = r.message_id"
                f" WHERE r.message_id IN ({','.join('?' * len(part))}) AND i.kind='mail'",
                part,
            ).fetchall()
            for iid, vis, message_id, date_s, subject, sender in rows:
                for rec, key in wanted[message_id]:
                    if key in out or (rec.sender.email if rec.sender else "") != (sender or ""):
                        continue
                    if (utc_iso(rec.date) or "")[:16] != (date_s or "")[:16]:
                        continue
                    if subject is not None and " ".join(subject.split()) != " ".join(rec.subject.split()):
                        continue
                    out[key] = (iid, vis)
        return out

    def _thread_refs(self, ids: list[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        ids = list(dict.fromkeys(ids))
        for chunk in range(0, len(ids), 500):
            part = ids[chunk:chunk + 500]
            marks = ",".join("?" * len(part))
            out.update(self._x(f"SELECT message_id, thread_id FROM thread_refs WHERE message_id IN ({marks})", part))
        return out

    def _log_unknown(self, iid: int, rec: MailRecord, policy: SourcePolicy, direction: str, now_s: str, stats: Stats) -> None:
        """A mail in the log folder from someone unknown: make them a contact."""
        people = [rec.sender] if direction == "in" and rec.sender else list(rec.to)
        for addr in self.linker.external([p for p in people if p], policy)[:1]:
            cid = self.index.contact_by_email.get(addr.email)
            if cid is None:
                cid = self.add_contact(addr.name or addr.email, [addr.email], None, origin="log folder", relink=False)
                stats.contacts_created += 1
            self._x("INSERT OR IGNORE INTO links VALUES (?, 'contact', ?, 'log folder')", (iid, cid))


def _find(merged: dict[int, int], thread_id: int) -> int:
    while thread_id in merged:
        thread_id = merged[thread_id]
    return thread_id
