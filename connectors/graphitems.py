"""Microsoft Graph JSON (messages, events, contacts, To Do tasks) -> the store's records.

No I/O here.  A message is read in one pass over its JSON (:func:`mail_of`);
the mail record, the categories and the sensitivity rules are those of the
EWS connector (:func:`connectors.ewsitems.mail_record`, ``flags_of``), which
tests/test_m365_items.py holds it to.

Graph names what the store needs:

- mail: ``from`` (else ``sender``), recipients, ``sentDateTime``,
  ``internetMessageId``, ``categories``, ``bodyPreview`` (the snippet; the
  body itself is not fetched), ``hasAttachments``; sensitivity, In-Reply-To
  and References are MAPI properties a message resource does not have in
  v1.0, read as ``singleValueExtendedProperties`` (:data:`MAIL_EXPAND`).
- events: calendarView/delta gives each instance in the window (single
  instances, occurrences and exceptions of a series; no series masters):
  each becomes an appointment of its own, a moved occurrence at its new time,
  a cancelled one left out by Outlook itself.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from crm_bridge.connectors.ewsitems import ItemError, _aware, snippet_of
from crm_bridge.connectors.mailparse import parse_ids
from crm_bridge.crm_core.records import (
    Address,
    AppointmentRecord,
    Attendee,
    ContactCard,
    Location,
    MailRecord,
    TaskState,
)

MAIL_SELECT = ("id,subject,from,sender,toRecipients,ccRecipients,bccRecipients,sentDateTime,receivedDateTime,"
               "internetMessageId,categories,bodyPreview,hasAttachments")
SENSITIVITY_PROP, IN_REPLY_TO_PROP, REFERENCES_PROP = "Integer 0x36", "String 0x1042", "String 0x1039"
MAIL_EXPAND = ("singleValueExtendedProperties($filter=id eq 'Integer 0x0036' or id eq 'String 0x1042' "
               "or id eq 'String 0x1039')")
CONTACT_SELECT = "id,displayName,givenName,surname,emailAddresses,businessPhones,homePhones,mobilePhone,companyName,jobTitle,categories"
MAIL_TYPES = ("#microsoft.graph.message", "#microsoft.graph.eventMessage", "#microsoft.graph.eventMessageRequest",
              "#microsoft.graph.eventMessageResponse", "#microsoft.graph.calendarSharingMessage")
_RESPONSE = {"accepted": "ACCEPTED", "declined": "DECLINED", "tentativelyAccepted": "TENTATIVE",
             "notResponded": "NEEDS-ACTION", "none": "NEEDS-ACTION", "organizer": "ACCEPTED"}
_TASK_STATUS = {"notStarted": "NEEDS-ACTION", "inProgress": "IN-PROCESS", "completed": "COMPLETED",
                "waitingOnOthers": "IN-PROCESS", "deferred": "NEEDS-ACTION"}


class _Box:
    """A Graph recipient as exchangelib's Mailbox (email_address, name, routing_type)."""

    routing_type = "SMTP"

    def __init__(self, value: Any):
        found = value.get("emailAddress") if isinstance(value, dict) else None
        inner: dict = found if isinstance(found, dict) else {}
        address, name = inner.get("address"), inner.get("name")
        self.email_address: str = address if isinstance(address, str) else ""
        self.name: str = name if isinstance(name, str) else ""


def _box(value: Any) -> _Box | None:
    return _Box(value) if isinstance(value, dict) else None


def parse_time(text: Any) -> datetime | None:
    """A Graph DateTimeOffset ("2026-10-01T09:30:00Z") -> aware UTC; None for anything else."""
    if not isinstance(text, str) or not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)


def extended(item: dict) -> dict[str, str]:
    out = {}
    for prop in item.get("singleValueExtendedProperties") or ():
        if isinstance(prop, dict) and isinstance(prop.get("id"), str):
            pid = prop["id"].split()
            if len(pid) == 2:
                try:
                    pid[1] = hex(int(pid[1], 16))
                except ValueError:
                    pass
            out[" ".join(pid).lower()] = str(prop.get("value") or "")
    return out


def _smtp(value: Any) -> Address | None:
    """A Graph recipient -> Address, as ``ewsitems.address(_box(value))``; None without an SMTP address."""
    if not isinstance(value, dict):
        return None
    inner = value.get("emailAddress")
    if not isinstance(inner, dict):
        return None
    email = inner.get("address")
    if not isinstance(email, str) or "@" not in email:
        return None
    name = inner.get("name")
    return Address(email.strip().lower(), name.strip() if isinstance(name, str) else "")


def _smtps(values: Any) -> tuple[Address, ...]:
    out = []
    for value in values or ():
        found = _smtp(value)
        if found is not None:
            out.append(found)
    return tuple(out)


_PRIVATE = ("2", "3")  # sensitivity Private, Confidential
_SENSITIVITY_KEY, _IN_REPLY_TO_KEY, _REFERENCES_KEY = (p.lower() for p in (SENSITIVITY_PROP, IN_REPLY_TO_PROP,
                                                                         REFERENCES_PROP))


def mail_of(item: dict, location: Location, owner: str, log_category: str, private_category: str, log_flag: str,
            private_flag: str) -> MailRecord:
    """A Graph message -> MailRecord in one pass over the JSON.

    The same record as ``ewsitems.mail_record`` and ``flags_of`` make of the message shown with
    exchangelib's attribute names (tests/test_m365_items.py holds the two to each other).
    """
    get = item.get
    ext = extended(item) if "singleValueExtendedProperties" in item else {}
    cats = get("categories")
    categories = [c for c in cats if isinstance(c, str) and c] if isinstance(cats, list) else []
    flags = set(categories)
    private = ext.get(_SENSITIVITY_KEY, "0") in _PRIVATE
    if categories and (log_category or private_category):
        lowered = {c.lower() for c in categories}
        if log_category and log_category.lower() in lowered and log_flag:
            flags.add(log_flag)
        if private_category and private_category.lower() in lowered:
            private = True
    if private and private_flag:
        flags.add(private_flag)
    message_id = get("internetMessageId")
    message_id = message_id.strip() if isinstance(message_id, str) else ""
    ids = parse_ids(message_id) if message_id else ()
    sender = _smtp(get("from")) or _smtp(get("sender"))
    if sender is None and not ids:
        raise ItemError("no sender and no Message-ID: not a mail this connector can file")
    when = _aware(parse_time(get("sentDateTime"))) or _aware(parse_time(get("receivedDateTime")))
    direction = ""
    if owner and sender is not None:
        direction = "out" if sender.email == owner else "in"
    subject, preview = get("subject"), get("bodyPreview")
    return MailRecord(
        location=location,
        message_id=ids[0] if ids else "",
        in_reply_to=parse_ids(ext.get(_IN_REPLY_TO_KEY) or ""),
        references=parse_ids(ext.get(_REFERENCES_KEY) or ""),
        sender=sender,
        to=_smtps(get("toRecipients")),
        cc=_smtps(get("ccRecipients")),
        bcc=_smtps(get("bccRecipients")),
        date=when.astimezone(timezone.utc) if when else None,
        subject=subject.strip() if isinstance(subject, str) else "",
        snippet=snippet_of(preview) if isinstance(preview, str) else "",
        flags=tuple(sorted(flags)),
        direction=direction,
        size=0,
        has_attachments=get("hasAttachments") is True,
    )


def _address(value: Any) -> Address | None:
    box = _box(value)
    if box is None or "@" not in box.email_address:
        return None
    return Address(box.email_address.strip().lower(), box.name.strip())


def _event_time(value: Any) -> tuple[datetime | None, str]:
    if not isinstance(value, dict) or not isinstance(value.get("dateTime"), str):
        return None, ""
    text, zone_name = value["dateTime"], value.get("timeZone") or "UTC"
    try:
        naive = datetime.fromisoformat(text[:26] if "." in text else text)
    except ValueError:
        return None, ""
    try:
        zone: Any = ZoneInfo("UTC" if zone_name in ("UTC", "tzone://Microsoft/Utc") else zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        zone = timezone.utc
        zone_name = "UTC"
    return naive.replace(tzinfo=zone), "" if zone_name == "UTC" else zone_name


def appointment(item: dict, location: Location) -> AppointmentRecord:
    start, tzid = _event_time(item.get("start"))
    end, _ = _event_time(item.get("end"))
    if start is None:
        raise ItemError("event without a readable start")
    uid = item.get("iCalUId") if isinstance(item.get("iCalUId"), str) and item.get("iCalUId") else item.get("id")
    value: datetime | date | None = start
    end_value: datetime | date | None = end
    if item.get("isAllDay") is True:
        value, end_value = start.date(), end.date() if end else None
    organizer = None
    org = _address(item.get("organizer"))
    if org is not None:
        organizer = Attendee(org, "organizer", "ACCEPTED")
    attendees = []
    for a in item.get("attendees") or ():
        addr = _address(a)
        if addr is not None:
            found = a.get("status") if isinstance(a, dict) else None
            status: dict = found if isinstance(found, dict) else {}
            attendees.append(Attendee(addr, "attendee", _RESPONSE.get(status.get("response", ""), "")))
    found = item.get("location")
    loc: dict = found if isinstance(found, dict) else {}
    return AppointmentRecord(
        location=location, uid=str(uid), start=value, end=end_value, tzid=tzid, organizer=organizer,
        attendees=tuple(attendees), summary=(item.get("subject") or "").strip(),
        location_text=(loc.get("displayName") or "").strip(), description=item.get("bodyPreview") or "",
        status="CANCELLED" if item.get("isCancelled") is True else "CONFIRMED",
        private=item.get("sensitivity") in ("private", "confidential"))


def contact(item: dict, location: Location) -> ContactCard:
    emails = tuple(dict.fromkeys(
        e["address"].strip().lower() for e in item.get("emailAddresses") or ()
        if isinstance(e, dict) and isinstance(e.get("address"), str) and "@" in e["address"]))
    phones = [p for p in (item.get("businessPhones") or []) + (item.get("homePhones") or []) if isinstance(p, str)]
    if isinstance(item.get("mobilePhone"), str):
        phones.append(item["mobilePhone"])
    name = item.get("displayName") or " ".join(filter(None, (item.get("givenName"), item.get("surname"))))
    if not name and not emails:
        raise ItemError("contact without a name and without an e-mail address")
    return ContactCard(location=location, uid=str(item.get("id")), full_name=name or "",
                       given_name=item.get("givenName") or "", family_name=item.get("surname") or "",
                       emails=emails, phones=tuple(phones), organisation=item.get("companyName") or "",
                       title=item.get("jobTitle") or "",
                       categories=tuple(c for c in item.get("categories") or () if isinstance(c, str)))


def task(item: dict, uid: str, location: Location) -> TaskState:
    due, _ = _event_time(item.get("dueDateTime"))
    done, _ = _event_time(item.get("completedDateTime"))
    found = item.get("body")
    body: dict = found if isinstance(found, dict) else {}
    return TaskState(location=location, uid=uid, summary=item.get("title") or "",
                     status=_TASK_STATUS.get(item.get("status", ""), "NEEDS-ACTION"),
                     due=due.date() if due else None, completed=done,
                     last_modified=parse_time(item.get("lastModifiedDateTime")), description=body.get("content") or "")
