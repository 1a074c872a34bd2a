"""Exchange items (as exchangelib reads them) -> the store's records.

Kept apart from the connection handling in :mod:`connectors.exchange`: these
functions only read attributes of exchangelib's item objects, never talk to
the server.

- Mail: From (else Sender), To/Cc/Bcc, DateTimeSent, Internet Message-ID,
  In-Reply-To/References, the Outlook categories as flags, and the snippet
  made from the plain-text body exactly as the IMAP and file readers make it
  (so that the same mail read through EWS and IMAP hashes alike).
- Calendar items: start/end in their time zone (Exchange's Windows zone
  names mapped to IANA through exchangelib's CLDR table), organizer and
  attendees, a recurring master's rule as RRULE text, its occurrences in
  the window with modified occurrences moved and deleted ones left out (as
  the iCalendar reader does with overrides and EXDATEs).
- Contacts: every e-mail address, every phone, company and job title.
- Tasks (read back after a push): status, due date, completion.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any, Iterable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from crm_bridge.connectors.ical_common import recurrence_key
from crm_bridge.connectors.mailparse import SNIPPET_RAW_BYTES, parse_ids, text_snippet
from crm_bridge.crm_core.records import (
    Address,
    AppointmentRecord,
    Attendee,
    ContactCard,
    Location,
    MailRecord,
    Occurrence,
    TaskState,
)

#: item fields fetched per kind (exchangelib field names): no MIME, no attachments
MAIL_FIELDS = ("subject", "author", "sender", "to_recipients", "cc_recipients", "bcc_recipients", "datetime_sent",
               "datetime_received", "message_id", "in_reply_to", "references", "conversation_id", "categories",
               "sensitivity", "text_body", "size", "has_attachments", "item_class")
CALENDAR_FIELDS = ("subject", "start", "end", "is_all_day", "location", "organizer", "required_attendees",
                   "optional_attendees", "uid", "recurrence", "modified_occurrences", "deleted_occurrences",
                   "sensitivity", "categories", "type", "is_cancelled", "_start_timezone", "_end_timezone",
                   "appointment_sequence_number", "text_body")
CONTACT_FIELDS = ("display_name", "given_name", "surname", "email_addresses", "phone_numbers", "company_name",
                  "job_title", "categories")
TASK_FIELDS = ("subject", "status", "due_date", "complete_date", "last_modified_time", "text_body", "categories")

_RESPONSE = {"Accept": "ACCEPTED", "Decline": "DECLINED", "Tentative": "TENTATIVE", "NoResponseReceived": "NEEDS-ACTION",
             "Organizer": "ACCEPTED", "Unknown": ""}
_PRIVATE_SENSITIVITY = ("Private", "Confidential")


class ItemError(ValueError):
    """An item that cannot become a record; the reason goes to the quarantine."""


def address(mailbox: Any) -> Address | None:
    """A Mailbox -> Address; None when it has no SMTP address (an EX legacyDN, a group without one)."""
    if mailbox is None:
        return None
    email = (getattr(mailbox, "email_address", None) or "").strip()
    routing = getattr(mailbox, "routing_type", None) or "SMTP"
    if routing.upper() != "SMTP" and "@" not in email:
        return None
    if "@" not in email:
        return None
    return Address(email.lower(), (getattr(mailbox, "name", None) or "").strip())


def _addresses(values: Iterable[Any] | None) -> tuple[Address, ...]:
    out = []
    for value in values or ():
        found = address(getattr(value, "mailbox", value))
        if found is not None:
            out.append(found)
    return tuple(out)


def _aware(value: Any) -> datetime | None:
    """An exchangelib EWSDateTime -> a plain aware datetime in UTC."""
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        return datetime(value.year, value.month, value.day, value.hour, value.minute, value.second,
                        value.microsecond, tzinfo=timezone.utc)
    return datetime.fromtimestamp(value.timestamp(), timezone.utc)


def _date(value: Any) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return date(value.year, value.month, value.day)
    return None


def snippet_of(text: str | None) -> str:
    if not text:
        return ""
    data = text.encode("utf-8")[:SNIPPET_RAW_BYTES]
    return text_snippet(data, "8bit", "utf-8", "plain")


def flags_of(item: Any, log_category: str, private_category: str, log_flag: str, private_flag: str) -> tuple[str, ...]:
    """The Outlook categories as flags, plus the policy's log / private keyword where they apply."""
    categories = [c for c in (getattr(item, "categories", None) or ()) if c]
    flags = set(categories)
    lowered = {c.lower() for c in categories}
    if log_category and log_category.lower() in lowered and log_flag:
        flags.add(log_flag)
    private = getattr(item, "sensitivity", None) in _PRIVATE_SENSITIVITY
    if private_category and private_category.lower() in lowered:
        private = True
    if private and private_flag:
        flags.add(private_flag)
    return tuple(sorted(flags))


def etag_of(item: Any, flags: tuple[str, ...]) -> str:
    return getattr(item, "changekey", None) or ""


def mail_record(item: Any, location: Location, flags: tuple[str, ...], owner: str) -> MailRecord:
    message_id = (getattr(item, "message_id", None) or "").strip()
    ids = parse_ids(message_id) if message_id else ()
    sender = address(getattr(item, "author", None)) or address(getattr(item, "sender", None))
    if sender is None and not ids:
        raise ItemError("no sender and no Message-ID: not a mail this connector can file")
    when = _aware(getattr(item, "datetime_sent", None)) or _aware(getattr(item, "datetime_received", None))
    direction = ""
    if owner and sender is not None:
        direction = "out" if sender.email == owner else "in"
    return MailRecord(
        location=location,
        message_id=ids[0] if ids else "",
        in_reply_to=parse_ids(getattr(item, "in_reply_to", None) or ""),
        references=parse_ids(getattr(item, "references", None) or ""),
        sender=sender,
        to=_addresses(getattr(item, "to_recipients", None)),
        cc=_addresses(getattr(item, "cc_recipients", None)),
        bcc=_addresses(getattr(item, "bcc_recipients", None)),
        date=when.astimezone(timezone.utc) if when else None,
        subject=(getattr(item, "subject", None) or "").strip(),
        snippet=snippet_of(getattr(item, "text_body", None)),
        flags=flags,
        direction=direction,
        size=int(getattr(item, "size", None) or 0),
        has_attachments=bool(getattr(item, "has_attachments", False)),
    )


def iana_zone(tz: Any) -> tuple[str, Any]:
    """An exchangelib EWSTimeZone (from a Windows zone name) -> (IANA name, tzinfo)."""
    if tz is None:
        return "", timezone.utc
    key = getattr(tz, "key", None) or ""
    ms_id = getattr(tz, "ms_id", None) or ""
    if ms_id:
        from exchangelib.winzone import MS_TIMEZONE_TO_IANA_MAP

        key = MS_TIMEZONE_TO_IANA_MAP.get(ms_id, key)
    try:
        return key, ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError):
        return "", timezone.utc


_DAY = {1: "MO", 2: "TU", 3: "WE", 4: "TH", 5: "FR", 6: "SA", 7: "SU"}
_DAY_NAMES = {"Monday": "MO", "Tuesday": "TU", "Wednesday": "WE", "Thursday": "TH", "Friday": "FR", "Saturday": "SA",
              "Sunday": "SU", "Day": "MO,TU,WE,TH,FR,SA,SU", "Weekday": "MO,TU,WE,TH,FR",
              "WeekendDay": "SA,SU"}
_WEEK = {"First": 1, "Second": 2, "Third": 3, "Fourth": 4, "Last": -1, 1: 1, 2: 2, 3: 3, 4: 4, 5: -1}
_MONTHS = {"January": 1, "February": 2, "March": 3, "April": 4, "May": 5, "June": 6, "July": 7, "August": 8,
           "September": 9, "October": 10, "November": 11, "December": 12}


def _days(value: Any) -> str:
    values = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for v in values:
        if isinstance(v, int):
            out.append(_DAY[v])
        else:
            out.append(_DAY_NAMES.get(str(v), str(v)[:2].upper()))
    return ",".join(out)


def _month(value: Any) -> int:
    return value if isinstance(value, int) else _MONTHS[str(value)]


def rrule_of(recurrence: Any, zone: Any) -> str:
    """An EWS Recurrence -> RRULE text (RFC 5545)."""
    pattern, boundary = recurrence.pattern, recurrence.boundary
    kind = type(pattern).__name__
    interval = getattr(pattern, "interval", 1) or 1
    if kind == "DailyPattern":
        parts = ["FREQ=DAILY"]
    elif kind == "WeeklyPattern":
        parts = ["FREQ=WEEKLY", f"BYDAY={_days(pattern.weekdays)}", "WKST=MO"]
    elif kind == "AbsoluteMonthlyPattern":
        parts = ["FREQ=MONTHLY", f"BYMONTHDAY={pattern.day_of_month}"]
    elif kind == "RelativeMonthlyPattern":
        parts = ["FREQ=MONTHLY", f"BYDAY={_days(pattern.weekday)}", f"BYSETPOS={_WEEK[pattern.week_number]}"]
    elif kind == "AbsoluteYearlyPattern":
        parts = ["FREQ=YEARLY", f"BYMONTH={_month(pattern.month)}", f"BYMONTHDAY={pattern.day_of_month}"]
        interval = 1
    elif kind == "RelativeYearlyPattern":
        parts = ["FREQ=YEARLY", f"BYMONTH={_month(pattern.month)}", f"BYDAY={_days(pattern.weekday)}",
                 f"BYSETPOS={_WEEK[pattern.week_number]}"]
        interval = 1
    else:
        raise ItemError(f"recurrence pattern {kind} is not supported")
    if interval != 1:
        parts.insert(1, f"INTERVAL={interval}")
    bkind = type(boundary).__name__
    if bkind == "NumberedPattern":
        parts.append(f"COUNT={boundary.number}")
    elif bkind == "EndDatePattern":
        end = boundary.end
        last = datetime(end.year, end.month, end.day, 23, 59, 59, tzinfo=zone).astimezone(timezone.utc)
        parts.append(f"UNTIL={last:%Y%m%dT%H%M%SZ}")
    return ";".join(parts)


def _window_bound(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _occurrences(item: Any, start: datetime, end: datetime, rule: str, window: tuple[datetime, datetime]
                 ) -> tuple[Occurrence, ...]:
    from dateutil.rrule import rrulestr

    lo, hi = _window_bound(window[0]), _window_bound(window[1])
    duration = end - start
    moved: dict[str, Any] = {}
    for occ in getattr(item, "modified_occurrences", None) or ():
        original = _aware(occ.original_start)
        if original is not None:
            moved[recurrence_key(original)] = occ
    deleted = {recurrence_key(_aware(d.start)) for d in getattr(item, "deleted_occurrences", None) or ()  # type: ignore[arg-type]
               if _aware(d.start)}
    found = []
    for when in rrulestr(rule, dtstart=start).between(lo - duration, hi, inc=True):
        rid = recurrence_key(when)
        if rid in deleted:
            continue
        occ = moved.pop(rid, None)
        if occ is not None:
            o_start = _aware(occ.start) or when
            o_end = _aware(occ.end) or o_start + duration
            found.append(Occurrence(rid, o_start.astimezone(start.tzinfo), o_end.astimezone(start.tzinfo)))
            continue
        if when < hi and when + duration > lo:
            found.append(Occurrence(rid, when, when + duration))
    for rid, occ in moved.items():  # moved into the window from outside the expanded span
        o_start, o_end = _aware(occ.start), _aware(occ.end)
        if o_start is not None and o_end is not None and o_start < hi and o_end > lo:
            found.append(Occurrence(rid, o_start.astimezone(start.tzinfo), o_end.astimezone(start.tzinfo)))
    return tuple(sorted(found, key=lambda o: (o.start, o.recurrence_id)))


def appointment_record(item: Any, location: Location, window: tuple[datetime, datetime]) -> AppointmentRecord:
    uid = (getattr(item, "uid", None) or "").strip()
    if not uid:
        raise ItemError("calendar item without UID")
    tzid, zone = iana_zone(getattr(item, "_start_timezone", None))
    raw_start, raw_end = getattr(item, "start", None), getattr(item, "end", None)
    start: datetime | date | None
    end: datetime | date | None
    if isinstance(raw_start, datetime):
        start = _aware(raw_start).astimezone(zone)  # type: ignore[union-attr]
        end = _aware(raw_end).astimezone(zone) if isinstance(raw_end, datetime) else None  # type: ignore[union-attr]
    else:  # an all-day event: exchangelib gives dates (the end inclusive)
        start = _date(raw_start)
        last = _date(raw_end)
        end = last + timedelta(days=1) if last is not None else None
        tzid = ""
    organizer_addr = address(getattr(item, "organizer", None))
    organizer = Attendee(organizer_addr, "organizer", "ACCEPTED") if organizer_addr else None
    attendees = []
    for att in list(getattr(item, "required_attendees", None) or ()) + list(getattr(item, "optional_attendees", None) or ()):
        a = address(getattr(att, "mailbox", None))
        if a is not None:
            attendees.append(Attendee(a, "attendee", _RESPONSE.get(getattr(att, "response_type", None) or "", "")))
    rule = ""
    occurrences: tuple[Occurrence, ...] = ()
    recurrence = getattr(item, "recurrence", None)
    if recurrence is not None and isinstance(start, datetime) and isinstance(end, datetime):
        rule = rrule_of(recurrence, zone)
        occurrences = _occurrences(item, start, end, rule, window)
    elif recurrence is not None and isinstance(start, date):
        rule = rrule_of(recurrence, timezone.utc)
        s = datetime(start.year, start.month, start.day, tzinfo=timezone.utc)
        e = datetime(end.year, end.month, end.day, tzinfo=timezone.utc) if isinstance(end, date) else s + timedelta(days=1)
        occurrences = tuple(Occurrence(o.recurrence_id[:10], o.start.date(), o.end.date() if isinstance(o.end, datetime) else None)  # type: ignore[union-attr]
                            for o in _occurrences(item, s, e, rule, window))
    return AppointmentRecord(
        location=location,
        uid=uid,
        start=start,
        end=end,
        tzid=tzid,
        organizer=organizer,
        attendees=tuple(attendees),
        summary=(getattr(item, "subject", None) or "").strip(),
        location_text=(getattr(item, "location", None) or "").strip(),
        description=snippet_of(getattr(item, "text_body", None)),
        status="CANCELLED" if getattr(item, "is_cancelled", False) else "CONFIRMED",
        rrule=rule,
        occurrences=occurrences,
        private=getattr(item, "sensitivity", None) in _PRIVATE_SENSITIVITY,
        sequence=int(getattr(item, "appointment_sequence_number", None) or 0),
    )


def contact_card(item: Any, location: Location) -> ContactCard:
    emails = []
    for entry in getattr(item, "email_addresses", None) or ():
        value = (getattr(entry, "email", None) or "").strip()
        if value.lower().startswith("smtp:"):
            value = value[5:]
        if "@" in value and value.lower() not in emails:
            emails.append(value.lower())
    phones = [p.phone_number for p in getattr(item, "phone_numbers", None) or () if getattr(p, "phone_number", None)]
    name = (getattr(item, "display_name", None) or "").strip()
    if not name and not emails:
        raise ItemError("contact without a name and without an e-mail address")
    return ContactCard(
        location=location,
        uid=location.local_id,
        full_name=name,
        given_name=(getattr(item, "given_name", None) or "").strip(),
        family_name=(getattr(item, "surname", None) or "").strip(),
        emails=tuple(emails),
        phones=tuple(phones),
        organisation=(getattr(item, "company_name", None) or "").strip(),
        title=(getattr(item, "job_title", None) or "").strip(),
        categories=tuple(getattr(item, "categories", None) or ()),
    )


_TASK_STATUS = {"NotStarted": "NEEDS-ACTION", "InProgress": "IN-PROCESS", "Completed": "COMPLETED",
                "WaitingOnOthers": "NEEDS-ACTION", "Deferred": "NEEDS-ACTION"}


def task_state(item: Any, uid: str, location: Location) -> TaskState:
    due = _date(getattr(item, "due_date", None))
    return TaskState(
        location=location,
        uid=uid,
        summary=(getattr(item, "subject", None) or "").strip(),
        status=_TASK_STATUS.get(getattr(item, "status", None) or "", "NEEDS-ACTION"),
        due=due,
        completed=_aware(getattr(item, "complete_date", None)),
        last_modified=_aware(getattr(item, "last_modified_time", None)),
        description=(getattr(item, "text_body", None) or "")[:2000],
    )


# --------------------------------------------------------------------------
# mail straight from the XML
#
# exchangelib turns every item into an object through its generic field
# machinery, about 0.6 ms a mail: four times what the server and the network
# cost.  Mail is the bulk of every mailbox, so SyncFolderItems pages of mail
# folders are read from their XML elements through this small view, which
# has the attributes of exchangelib's Message that mail_record and flags_of
# read (the calendar, contacts and tasks keep exchangelib's objects).

_T = "{http://schemas.microsoft.com/exchange/services/2006/types}"


_NAME, _EMAIL, _ROUTING, _MAILBOX = f"{_T}Name", f"{_T}EmailAddress", f"{_T}RoutingType", f"{_T}Mailbox"


class XmlMailbox:
    __slots__ = ("name", "email_address", "routing_type")

    def __init__(self, elem: Any):
        self.name = self.email_address = self.routing_type = None
        for child in elem:
            tag = child.tag
            if tag == _EMAIL:
                self.email_address = child.text
            elif tag == _NAME:
                self.name = child.text
            elif tag == _ROUTING:
                self.routing_type = child.text


def _xml_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None  # as exchangelib: an unreadable value is no value
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


#: element -> attribute, for the elements read as text
_XML_TEXT = {f"{_T}{tag}": name for tag, name in (
    ("Subject", "subject"), ("DateTimeSent", "_sent"), ("DateTimeReceived", "_received"),
    ("InternetMessageId", "message_id"), ("InReplyTo", "in_reply_to"), ("References", "references"),
    ("Sensitivity", "sensitivity"), ("TextBody", "text_body"), ("Size", "_size"),
    ("HasAttachments", "_attachments"))}
_XML_ONE_BOX = {f"{_T}From": "author", f"{_T}Sender": "sender"}
_XML_BOXES = {f"{_T}ToRecipients": "to_recipients", f"{_T}CcRecipients": "cc_recipients",
              f"{_T}BccRecipients": "bcc_recipients"}
_ITEM_ID, _CATEGORIES = f"{_T}ItemId", f"{_T}Categories"


class XmlMessage:
    """The attributes of exchangelib's Message that this module reads, from a ``t:Message`` (or kin) element.

    Read in one pass over the element's children (a lookup per field cost
    a scan of the children each, a third of a first sync's reading time).
    """

    __slots__ = ("id", "changekey", "subject", "_sent", "_received", "message_id", "in_reply_to", "references",
                 "sensitivity", "text_body", "_size", "_attachments", "author", "sender", "to_recipients",
                 "cc_recipients", "bcc_recipients", "categories")

    def __init__(self, elem: Any):
        self.id = self.changekey = self.subject = self._sent = self._received = self.message_id = None
        self.in_reply_to = self.references = self.sensitivity = self.text_body = self._size = None
        self._attachments = self.author = self.sender = None
        self.to_recipients: list[XmlMailbox] = []
        self.cc_recipients: list[XmlMailbox] = []
        self.bcc_recipients: list[XmlMailbox] = []
        self.categories: list[str] = []
        for child in elem:
            tag = child.tag
            name = _XML_TEXT.get(tag)
            if name is not None:
                setattr(self, name, child.text)
            elif tag in _XML_BOXES:
                setattr(self, _XML_BOXES[tag], [XmlMailbox(b) for b in child if b.tag == _MAILBOX])
            elif tag in _XML_ONE_BOX:
                box = child.find(_MAILBOX)
                setattr(self, _XML_ONE_BOX[tag], XmlMailbox(box) if box is not None else None)
            elif tag == _ITEM_ID:
                self.id, self.changekey = child.get("Id"), child.get("ChangeKey")
            elif tag == _CATEGORIES:
                self.categories = [c.text for c in child if c.text]

    @property
    def datetime_sent(self) -> datetime | None:
        return _xml_time(self._sent)

    @property
    def datetime_received(self) -> datetime | None:
        return _xml_time(self._received)

    @property
    def size(self) -> int:
        try:
            return int(self._size or 0)
        except ValueError:
            return 0

    @property
    def has_attachments(self) -> bool:
        return (self._attachments or "").strip() == "true"
