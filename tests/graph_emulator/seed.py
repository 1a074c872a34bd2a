"""Graph resources as the v1.0 reference shows them, and a populated mailbox."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

from tests.graph_emulator.model import Mailbox, iso, new_id

SENSITIVITY = {"normal": 0, "personal": 1, "private": 2, "confidential": 3}


def _addr(pair: tuple[str, str] | None) -> dict | None:
    return None if pair is None else {"emailAddress": {"name": pair[0], "address": pair[1]}}


def make_message(subject: str, sender: tuple[str, str] | None, to: list[tuple[str, str]], date: datetime,
                 message_id: str, body: str = "", cc: list[tuple[str, str]] = (), categories: list[str] = (),
                 sensitivity: str = "normal", odata_type: str = "#microsoft.graph.message",
                 in_reply_to: str = "") -> dict:
    msg = {
        "@odata.type": odata_type,
        "receivedDateTime": iso(date), "sentDateTime": iso(date), "hasAttachments": False,
        "internetMessageId": message_id, "subject": subject, "bodyPreview": body[:255],
        "importance": "normal", "conversationId": new_id("AAQkAD"), "isRead": True, "isDraft": False,
        "body": {"contentType": "text", "content": body},
        "sender": _addr(sender), "from": _addr(sender),
        "toRecipients": [_addr(a) for a in to], "ccRecipients": [_addr(a) for a in cc], "bccRecipients": [],
        "replyTo": [], "categories": list(categories), "inferenceClassification": "focused",
        "flag": {"flagStatus": "notFlagged"},
        "_extended": [{"id": "Integer 0x36", "value": str(SENSITIVITY[sensitivity])}] if sensitivity != "normal" else [],
    }
    if in_reply_to:
        msg["_extended"].append({"id": "String 0x1042", "value": in_reply_to})
    return msg


def _dt(value: datetime) -> dict:
    return {"dateTime": value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": "UTC"}


def make_event(subject: str, start: datetime, minutes: int = 60, organizer: tuple[str, str] | None = None,
               attendees: list[tuple[str, str]] = (), kind: str = "singleInstance", series: str = "",
               original_start: datetime | None = None, sensitivity: str = "normal", categories: list[str] = (),
               ical_uid: str = "") -> dict:
    ev = {
        "@odata.type": "#microsoft.graph.event",
        "originalStartTimeZone": "W. Europe Standard Time", "originalEndTimeZone": "W. Europe Standard Time",
        "iCalUId": ical_uid or "040000008200E00074C5B7101A82E008" + uuid.uuid4().hex.upper(),
        "reminderMinutesBeforeStart": 15, "isReminderOn": True, "isDraft": False, "transactionId": None, "isAllDay": False, "isCancelled": False,
        "subject": subject, "bodyPreview": "", "sensitivity": sensitivity, "categories": list(categories),
        "showAs": "busy", "type": kind, "seriesMasterId": series or None,
        "start": _dt(start), "end": _dt(start + timedelta(minutes=minutes)),
        "location": {"displayName": "Besprechungsraum"},
        "organizer": _addr(organizer) if organizer else None,
        "attendees": [{"type": "required", "status": {"response": "accepted", "time": "0001-01-01T00:00:00Z"},
                       **(_addr(a) or {})} for a in attendees],
        "responseStatus": {"response": "organizer", "time": "0001-01-01T00:00:00Z"},
    }
    if original_start is not None:
        ev["originalStart"] = iso(original_start)
    return ev


def make_contact(name: str, email: str, company: str = "", phone: str = "") -> dict:
    given, _, family = name.partition(" ")
    return {"@odata.type": "#microsoft.graph.contact", "displayName": name, "givenName": given, "surname": family,
            "fileAs": name, "birthday": None, "initials": (given[:1] + family[:1]).upper(),
            "emailAddresses": [{"name": name, "address": email}], "businessPhones": [phone] if phone else [],
            "mobilePhone": None, "homePhones": [], "companyName": company or None, "jobTitle": None,
            "categories": [], "parentFolderId": ""}


def recurring(mb: Mailbox, subject: str, first: datetime, count: int, organizer: tuple[str, str],
              attendees: list[tuple[str, str]], moved: int | None = None, cancelled: int | None = None) -> list[dict]:
    """A weekly series as calendarView/delta shows it: its occurrences, one of them an exception (moved)."""
    series = new_id()
    out = []
    for n in range(count):
        if n == cancelled:
            continue
        when = first + timedelta(weeks=n)
        kind, start = "occurrence", when
        if n == moved:
            kind, start = "exception", when + timedelta(days=1)
        out.append(mb.store.put(mb.calendar, make_event(subject, start, organizer=organizer, attendees=attendees,
                                                        kind=kind, series=series, original_start=when)))
    return out


def populate(mb: Mailbox, mails: int, events: int, contacts: int) -> None:
    """``mails`` mails in the Inbox (every tenth in Sent Items), ``events`` appointments, ``contacts`` contacts."""
    store = mb.store
    own = (mb.name, mb.address)
    base = datetime(2026, 10, 1, 8, 0, tzinfo=timezone.utc)
    for n in range(mails):
        other = (f"Kunde {n % 50}", f"kunde{n % 50}@kunde{n % 7}.example")
        sent = n % 10 == 9
        msg = make_message(f"Angebot {n}", own if sent else other, [other if sent else own],
                           base + timedelta(minutes=n), f"<m{n}.{mb.address}@mail.example>",
                           body=f"Guten Tag, anbei das Angebot Nummer {n}.")
        store.put(mb.folder("sentitems" if sent else "inbox"), msg)
    for n in range(events):
        store.put(mb.calendar, make_event(f"Termin {n}", datetime.now(timezone.utc).replace(
            minute=0, second=0, microsecond=0) + timedelta(days=n + 1), organizer=own,
            attendees=[(f"Kunde {n}", f"kunde{n}@kunde.example")]))
    for n in range(contacts):
        store.put(mb.contacts, make_contact(f"Karl Kunde{n}", f"karl{n}@kunde{n % 7}.example", f"Kunde {n} GmbH"))
