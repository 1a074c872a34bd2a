"""Appointments and address-book cards into the store, a batch at a time."""

from __future__ import annotations

import json
from typing import Any

from crm_bridge.crm_core.domains import is_freemail, registrable_domain
from crm_bridge.crm_core.linking import Match
from crm_bridge.crm_core.locations import _UPSERT_LOCATION, OVERRIDE_MARK, Locations
from crm_bridge.crm_core.records import Address, AppointmentRecord, ContactCard, Location
from crm_bridge.crm_core.relinking import Relinking, _NewContacts
from crm_bridge.crm_core.settings import SourcePolicy
from crm_bridge.crm_core.storebase import Stats, appointment_key, iso, utc_iso


class ItemIngest(Relinking, Locations):
    """The appointments and contact cards of a batch."""

    # -- appointments -------------------------------------------------------
    def _apply_appointments(self, recs: list[AppointmentRecord], policy: SourcePolicy, now_s: str,
                            stats: Stats) -> None:
        """Appointments: new ones go in with one statement per table, known ones are compared and updated."""
        linker = self.linker
        source = policy.name
        placed = []
        for rec in recs:
            loc = rec.location
            if rec.recurrence_id:  # an override shares its resource with the master
                loc = Location(loc.scope, f"{loc.local_id}{OVERRIDE_MARK}{rec.recurrence_id}", loc.etag)
            placed.append((rec, loc))
        priors = self._priors(source, [loc for _, loc in placed])
        existing = self._ids_by_key([appointment_key(rec) for rec, _ in placed])
        next_id = first_new = (self._one("SELECT MAX(id) FROM interactions") or 0) + 1
        contacts = _NewContacts(self, now_s, stats)
        rows: list[tuple] = []
        part_rows: list[tuple] = []
        occ_rows: list[tuple] = []
        loc_rows: list[tuple] = []
        link_rows: list[tuple] = []
        unskip: list[tuple] = []
        for rec, loc in placed:
            reason = linker.skip_reason(rec, loc.scope, (), policy)
            if reason:
                self._skip(source, loc, rec.uid, reason, now_s, stats, priors)
                continue
            key = appointment_key(rec)
            participants = linker.appointment_participants(rec)
            match = linker.match(participants, policy)
            if not match.links and self.settings.unmatched == "drop":
                self._skip(source, loc, rec.uid, "no customer or contact matched", now_s, stats, priors)
                continue
            values = self._appointment_values(rec, policy, match, key, now_s)
            found = existing.get(key)
            if found is not None and found[0] >= first_new:  # twice in this batch: one more place
                loc_rows.append((source, loc.scope, loc.local_id, "interaction", found[0], loc.etag, "", now_s))
                stats.seen += 1
                continue
            if found is not None:
                contacts.add_to(match)
                self._update_appointment(found[0], rec, loc, values, participants, match, policy, now_s, stats)
                continue
            iid, next_id = next_id, next_id + 1
            existing[key] = (iid, values["visibility"])
            rows.append((iid, now_s, *values.values()))
            status = {a.address.email: a.status for a in rec.attendees}
            blocked = self.settings.blocklist
            seen: set[tuple[str, str]] = set()
            for a, role in participants:
                if (a.email, role) not in seen and not (blocked and a.email in blocked):
                    seen.add((a.email, role))
                    part_rows.append((iid, a.email, a.name, role, status.get(a.email, "")))
            occ_rows.extend((iid, o.recurrence_id, iso(o.start), iso(o.end), utc_iso(o.start), o.status)
                            for o in rec.occurrences)
            loc_rows.append((source, loc.scope, loc.local_id, "interaction", iid, loc.etag, "", now_s))
            prior = priors.get((loc.scope, loc.local_id))
            if prior is not None and prior[0] in ("skipped", "quarantined"):
                unskip.append((source, loc.scope, loc.local_id))
            contacts.add_to(match)
            link_rows.extend((iid, t, tid, r) for (t, tid), r in match.links.items())
            stats.added += 1
        contacts.flush()
        if rows:
            cols = ", ".join(f'"{c}"' for c in ("id", "created_at", *self._appointment_columns))
            self.conn.executemany(f"INSERT INTO interactions({cols}) VALUES ({', '.join('?' * (len(self._appointment_columns) + 2))})", rows)
            at = 2 + self._appointment_columns.index("subject")
            self._index_text([(row[0], row[at], row[at + 1]) for row in rows])
        x = self.conn.executemany
        x("INSERT OR IGNORE INTO participants(interaction_id, email, name, role, status) VALUES (?, ?, ?, ?, ?)", part_rows)
        x('INSERT OR REPLACE INTO occurrences(interaction_id, recurrence_id, start, "end", date, status) VALUES (?, ?, ?, ?, ?, ?)', occ_rows)
        x(_UPSERT_LOCATION, loc_rows)
        x("DELETE FROM skipped WHERE source=? AND scope=? AND local_id=?", unskip)
        x("DELETE FROM quarantine WHERE source=? AND scope=? AND local_id=?", unskip)
        x("INSERT OR REPLACE INTO links(interaction_id, target, target_id, reason) VALUES (?, ?, ?, ?)", link_rows)

    _appointment_columns = ("kind", "dedup_key", "message_id", "content_hash", "thread_id", "date", "start", "end",
                            "tzid", "subject", "snippet", "direction", "visibility", "status", "uid", "recurrence_id",
                            "rrule", "location_text", "updated_at", "warnings")

    def _appointment_values(self, rec: AppointmentRecord, policy: SourcePolicy, match: Match, key: str,
                            now_s: str) -> dict[str, Any]:
        organizer = rec.organizer.address.email if rec.organizer else ""
        direction = "out" if (not organizer or self.linker.is_internal(organizer, policy)) else "in"
        want = self._visible(policy, bool(match.links))
        values = dict(
            kind="appointment", dedup_key=key, message_id="", content_hash="", thread_id=None,
            date=utc_iso(rec.start), start=iso(rec.start), end=iso(rec.end), tzid=rec.tzid,
            subject=rec.summary if want != "metadata" else None,
            snippet=rec.description[:300] if want == "snippet" else None,
            direction=direction, visibility=want, status=rec.status or "CONFIRMED", uid=rec.uid,
            recurrence_id=rec.recurrence_id, rrule=rec.rrule,
            location_text=rec.location_text if want != "metadata" else "", updated_at=now_s,
            warnings="\n".join(rec.warnings),
        )
        return values

    def _update_appointment(self, iid: int, rec: AppointmentRecord, loc: Location, values: dict[str, Any],
                            participants: list[tuple[Address, str]], match: Match, policy: SourcePolicy,
                            now_s: str, stats: Stats) -> None:
        """A known appointment seen again: compare, update what changed, relink."""
        current = self.conn.execute(
            'SELECT date, start, "end", subject, snippet, status, rrule, location_text, visibility, deleted FROM interactions WHERE id=?', (iid,)
        ).fetchone()
        new = (values["date"], values["start"], values["end"], values["subject"], values["snippet"], values["status"],
               values["rrule"], values["location_text"], values["visibility"], 0)
        if tuple(current) != new:
            sets = ", ".join(f'"{c}"=?' for c in values if c not in ("kind", "dedup_key"))
            params = [v for c, v in values.items() if c not in ("kind", "dedup_key")]
            self._x(f"UPDATE interactions SET {sets}, deleted=0 WHERE id=?", (*params, iid))
            stats.updated += 1
        else:
            stats.seen += 1
        self._x("DELETE FROM participants WHERE interaction_id=?", (iid,))
        self._x("DELETE FROM links WHERE interaction_id=? AND reason NOT IN ('manual', 'log folder')", (iid,))
        status = {a.address.email: a.status for a in rec.attendees}
        self._put_participants(iid, [(a, role, status.get(a.email, "")) for a, role in participants])
        self._x("DELETE FROM occurrences WHERE interaction_id=?", (iid,))
        self.conn.executemany(
            'INSERT OR REPLACE INTO occurrences(interaction_id, recurrence_id, start, "end", date, status) VALUES (?, ?, ?, ?, ?, ?)',
            [(iid, o.recurrence_id, iso(o.start), iso(o.end), utc_iso(o.start), o.status) for o in rec.occurrences],
        )
        self._put_location(policy.name, loc, "interaction", iid, "", now_s)
        self._x("DELETE FROM skipped WHERE source=? AND scope=? AND local_id=?", (policy.name, loc.scope, loc.local_id))
        self._store_links(iid, match, now_s, stats)

    def _put_participants(self, iid: int, people: list[tuple[Address, str, str]]) -> None:
        blocked = self.settings.blocklist
        self.conn.executemany(
            "INSERT OR IGNORE INTO participants(interaction_id, email, name, role, status) VALUES (?, ?, ?, ?, ?)",
            [(iid, a.email, a.name, role, status) for a, role, status in people if not (blocked and a.email in blocked)],
        )

    # -- address books ------------------------------------------------------
    def _apply_card(self, card: ContactCard, policy: SourcePolicy, now_s: str, stats: Stats) -> None:
        loc = card.location
        emails = [e.strip().lower() for e in card.emails if "@" in e]
        name = card.full_name or " ".join(p for p in (card.given_name, card.family_name) if p) or (emails[0] if emails else "")
        contact_id = self._one("SELECT id FROM contacts WHERE uid=?", (card.uid,)) if card.uid else None
        if contact_id is None:
            for email in emails:
                contact_id = self.index.contact_by_email.get(email)
                if contact_id is not None:
                    break
        customer_id = self._customer_for_card(card, emails, policy, stats)
        if contact_id is None:
            contact_id = self.add_contact(name, [], customer_id, origin=f"address book {policy.name}", uid=card.uid or None, relink=False)
            stats.added += 1
            stats.contacts_created += 1
        else:
            current_customer = self.index.customer_of_contact.get(contact_id)
            self._x(
                "UPDATE contacts SET name=?, customer_id=COALESCE(?, customer_id), uid=COALESCE(uid, ?) WHERE id=?",
                (name, customer_id, card.uid or None, contact_id),
            )
            if customer_id is not None and customer_id != current_customer:
                self.index.customer_of_contact[contact_id] = customer_id
            stats.updated += 1
        self._x(
            "UPDATE contacts SET title=?, phones=?, categories=? WHERE id=?",
            (card.title, json.dumps(list(card.phones)), json.dumps(list(card.categories)), contact_id),
        )
        self._attach_emails(contact_id, emails)
        self._put_location(policy.name, loc, "contact", contact_id, "", now_s)
        affected = self._interactions_with_emails(emails)
        if affected:
            self.relink(affected)

    def _customer_for_card(self, card: ContactCard, emails: list[str], policy: SourcePolicy, stats: Stats) -> int | None:
        org = card.organisation.strip()
        if org:
            found = self._one("SELECT id FROM customers WHERE name=? COLLATE NOCASE", (org,))
            if found is not None:
                return found
        domains = []
        for email in emails:
            domain = email.rpartition("@")[2]
            if is_freemail(domain, self.settings.extra_freemail) or email in self.settings.internal_domains:
                continue
            customer = self.linker.customer_for_domain(domain)
            if customer is not None:
                return customer
            domains.append(registrable_domain(domain))
        if org and policy.create_customers:
            cid = self.add_customer(org, sorted(set(domains)), origin=f"address book {policy.name}")
            stats.customers_created += 1
            return cid
        return None
