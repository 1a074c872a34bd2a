"""Deterministic demo content for a mailbox: mails, appointments, contacts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from lxml import etree

from tests.ews_emulator.model import Store, make_contact, make_event, make_message, t

CUSTOMERS = [
    ("Stadtwerke Lindenau GmbH", "stadtwerke-lindenau.de", ["Petra Brandt", "Jonas Keller"]),
    ("Bauhaus Kramer KG", "bauhaus-kramer.de", ["Klaus Kramer", "Sabine Ott"]),
    ("Müller Bau", "mueller-bau.de", ["Eva Müller", "Tim Roth"]),
]
SUBJECTS = ["Angebot Wartungsvertrag", "Rückfrage zur Rechnung", "Termin nächste Woche", "Lieferung", "Projektplan"]


def _person(n: int) -> tuple[str, str, str]:
    company, domain, people = CUSTOMERS[n % len(CUSTOMERS)]
    name = people[(n // len(CUSTOMERS)) % len(people)]
    local = name.lower().replace(" ", ".").replace("ü", "ue")
    return name, f"{local}@{domain}", company


def populate(store: Store, mailbox: str, mails: int = 0, events: int = 0, contacts: int = 0,
             start: datetime | None = None) -> None:
    box = store.add_mailbox(mailbox)
    start = start or datetime(2026, 10, 1, 8, 0, tzinfo=timezone.utc)
    owner = (box.name, box.address)
    inbox, sent = store.folder(mailbox, "inbox"), store.folder(mailbox, "sentitems")
    for n in range(mails):
        name, email, _company = _person(n)
        when = start + timedelta(minutes=17 * n)
        subject = f"{SUBJECTS[n % len(SUBJECTS)]} #{n}"
        mid = f"<m{n}.{box.address.split('@')[0]}@{email.split('@')[1]}>"
        if n % 5 == 4:  # every fifth mail is our answer, in Sent Items
            elem = make_message(subject=f"AW: {subject}", sender=owner, to=[(name, email)], date=when,
                                message_id=f"<r{n}.{box.address}>", in_reply_to=mid, references=mid,
                                body=f"Guten Tag {name},\n\ndanke für Ihre Nachricht.\n", is_read=True)
            store.create(sent, elem, when)
        else:
            elem = make_message(subject=subject, sender=(name, email), to=[owner], date=when, message_id=mid,
                                body=f"Guten Tag,\n\nanbei unsere Anfrage Nr. {n}.\n\nMit freundlichen Grüßen\n{name}\n")
            store.create(inbox, elem, when)
    calendar = store.folder(mailbox, "calendar")
    for n in range(events):
        name, email, company = _person(n)
        begin = start + timedelta(days=n, hours=1)
        elem = make_event(subject=f"Besprechung {company}", start=begin, end=begin + timedelta(hours=1),
                          organizer=owner, attendees=[(name, email)], location="Besprechungsraum 2",
                          uid=f"EV{n:06d}-{box.address}")
        store.create(calendar, elem, begin - timedelta(days=7))
    folder = store.folder(mailbox, "contacts")
    people = len(CUSTOMERS) * 2
    for n in range(contacts):
        name, email, company = _person(n)
        if n >= people:  # beyond the people the mail comes from: more colleagues at the same customers
            name = f"{name.split()[0]} Mitarbeiter{n}"
            email = f"mitarbeiter{n}@{email.split('@')[1]}"
        given, _, surname = name.partition(" ")
        elem = make_contact(display_name=name, given=given, surname=surname, emails=[email], company=company,
                            phones=[("BusinessPhone", f"+49 341 {1000 + n}")], job_title="Einkauf")
        store.create(folder, elem)


def weekly_recurrence(first: datetime, count: int, day: str = "Monday") -> etree._Element:
    """A t:Recurrence: weekly on ``day``, ``count`` times from ``first``'s date."""
    rec = etree.Element(t("Recurrence"))
    weekly = etree.SubElement(rec, t("WeeklyRecurrence"))
    etree.SubElement(weekly, t("Interval")).text = "1"
    etree.SubElement(weekly, t("DaysOfWeek")).text = day
    etree.SubElement(weekly, t("FirstDayOfWeek")).text = "Monday"
    numbered = etree.SubElement(rec, t("NumberedRecurrence"))
    etree.SubElement(numbered, t("StartDate")).text = first.date().isoformat()
    etree.SubElement(numbered, t("NumberOfOccurrences")).text = str(count)
    return rec
