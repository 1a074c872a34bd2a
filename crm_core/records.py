"""Record types that connectors yield and the store keeps.

Connectors turn whatever their protocol speaks (IMAP, EWS, CalDAV, files)
into these plain dataclasses; nothing downstream knows where a record came
from except through :class:`Location`.

Times are timezone-aware :class:`datetime.datetime` values.  Mail dates are
normalised to UTC by the connector; appointment times keep their zone.

``warnings`` on a record says what the connector could not read as it was
and how it read it instead ("header cut at 1024 KiB ...", "Message-ID had
spaces ..."): the item is kept, the store keeps the warnings with it and
``crm explain`` shows them.  Each is one short line for the admin.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Union


@dataclass(frozen=True, slots=True)
class Address:
    """One mailbox: ``email`` is lower-cased, ``name`` is the display name."""

    email: str
    name: str = ""

    @property
    def domain(self) -> str:
        return self.email.rpartition("@")[2]


@dataclass(frozen=True, slots=True)
class Location:
    """Where an item was seen: a source, a scope inside it, a local id.

    ``scope`` is a folder (IMAP, Maildir), a collection URL (DAV) or a file
    path; ``local_id`` is unique inside the scope (``UIDVALIDITY:UID`` for
    IMAP, an href for DAV, a file name for Maildir).  ``etag`` is whatever
    the source uses to tell versions apart (DAV etag, file mtime+size).
    """

    scope: str
    local_id: str
    etag: str = ""


@dataclass(slots=True)
class MailRecord:
    location: Location
    message_id: str = ""  # without angle brackets, "" when missing
    in_reply_to: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    sender: Address | None = None  # From:
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()
    date: datetime | None = None  # aware, UTC
    subject: str = ""
    snippet: str = ""  # plain text, whitespace folded, at most ~300 chars
    flags: tuple[str, ...] = ()  # IMAP flags and keywords, Maildir info
    bulk: str = ""  # why the mail is bulk/automatic ("List-Id", ...), "" if not
    direction: str = ""  # "in" | "out" relative to the mailbox owner; "" = engine decides
    size: int = 0
    has_attachments: bool = False
    warnings: tuple[str, ...] = ()  # what could not be read as it was (see the module docstring)
    #: the text was not read: the header said the store keeps only metadata (no link); the store
    #: notes the location and asks for it by name once the mail is linked (crm_core.rereads)
    no_text: bool = False
    #: (dedup key, content hash) of the finished record (crm_core.storebase.mail_key), worked out in
    #: the reader process (sync/worker.py) so the store process need not; None: the store works it out
    key: tuple[str, str] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Attendee:
    address: Address
    role: str = "attendee"  # "organizer" | "attendee"
    status: str = ""  # PARTSTAT: ACCEPTED, DECLINED, TENTATIVE, NEEDS-ACTION


@dataclass(slots=True)
class Occurrence:
    """One instance of a recurring appointment inside the timeline window."""

    recurrence_id: str  # the original start, ISO format
    start: datetime | date
    end: datetime | date | None
    status: str = "CONFIRMED"  # CONFIRMED | TENTATIVE | CANCELLED


@dataclass(slots=True)
class AppointmentRecord:
    location: Location
    uid: str
    recurrence_id: str = ""  # "" for the master / a single event
    start: datetime | date | None = None
    end: datetime | date | None = None
    tzid: str = ""  # IANA name when known
    organizer: Attendee | None = None
    attendees: tuple[Attendee, ...] = ()
    summary: str = ""
    location_text: str = ""
    description: str = ""
    status: str = "CONFIRMED"  # CONFIRMED | TENTATIVE | CANCELLED
    rrule: str = ""  # the RRULE text of a recurring master
    occurrences: tuple[Occurrence, ...] = ()  # expanded inside the window
    private: bool = False  # CLASS:PRIVATE / CONFIDENTIAL
    sequence: int = 0
    # what the reader repaired or left out (a recurrence rule it could not read ...);
    # not in repr: the file connectors' content etags (a hash of repr) stay as they were
    warnings: tuple[str, ...] = field(default=(), repr=False)


@dataclass(slots=True)
class ContactCard:
    location: Location
    uid: str
    full_name: str = ""
    given_name: str = ""
    family_name: str = ""
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    organisation: str = ""
    title: str = ""
    categories: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=(), repr=False)  # as on AppointmentRecord (a line it could not read ...)


@dataclass(slots=True)
class TaskState:
    """A task as a client left it (read back from a calendar)."""

    location: Location
    uid: str
    summary: str = ""
    status: str = "NEEDS-ACTION"  # NEEDS-ACTION | IN-PROCESS | COMPLETED | CANCELLED
    due: datetime | date | None = None
    completed: datetime | None = None
    last_modified: datetime | None = None
    description: str = ""


Record = Union[MailRecord, AppointmentRecord, ContactCard, TaskState]


@dataclass(frozen=True, slots=True)
class FlagChange:
    """Flags of an already known item changed (IMAP CONDSTORE, Maildir info)."""

    location: Location
    flags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Failure:
    """An item that could not be turned into a record; it goes to quarantine."""

    location: Location
    reason: str
    excerpt: str = ""  # a short, safe excerpt for the admin (headers only)


@dataclass(slots=True)
class Batch:
    """What a connector hands the engine in one step.

    The engine stores ``records``, ``changes``, ``failures`` and
    ``removed`` and the new ``cursor`` in one transaction, so a crash
    between batches loses nothing and a rerun repeats nothing.

    ``removed`` lists locations that are gone from the source.  A scope
    that the connector could not read at all is reported in ``problems``
    and nothing under it is removed.
    """

    records: list[Record] = field(default_factory=list)
    changes: list[FlagChange] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    removed: list[Location] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: problems only the admin can solve (a quarantined folder): the run fails until they are
    alerts: list[str] = field(default_factory=list)
    cursor: dict | None = None  # None: keep the previous cursor
    #: locations the store asked to read again (SourceView ``rereads``) that this batch answers: read
    #: (their records are in ``records``) or gone; the store stops asking for them
    rereads: list[Location] = field(default_factory=list)
    done: int = 0  # progress: items handled so far in this run
    total: int | None = None  # progress: items expected, when known


@dataclass(slots=True)
class TaskPush:
    """A CRM task as the connector should write it to a calendar."""

    uid: str
    summary: str
    description: str
    due: date | datetime | None
    status: str  # NEEDS-ACTION | COMPLETED | CANCELLED
    completed: datetime | None
    href: str = ""  # where it was written before, "" when new
    etag: str = ""  # the etag we last saw, "" when new
    scope: str = ""  # the collection it lives in, "" when new


@dataclass(slots=True)
class PushResult:
    uid: str
    ok: bool
    scope: str = ""
    href: str = ""
    etag: str = ""
    conflict: TaskState | None = None  # the server had another version (412)
    gone: bool = False  # the server no longer has it
    error: str = ""


@dataclass(slots=True)
class CardPush:
    """A customer or contact as the connector should write it to an address book."""

    uid: str
    vcard: str  # serialised vCard 4.0 / 3.0 text
    href: str = ""
    etag: str = ""
    scope: str = ""


def _positional_pickling(cls: type) -> None:
    """Pickle ``cls`` as ``cls(*fields)``.

    A slotted dataclass pickles through Python-level ``__getstate__`` /
    ``__setstate__``; batches cross a process boundary on every sync
    (sync/worker.py), where that cost 30 us per mail, and this 13.
    """
    import dataclasses
    import operator

    names = [f.name for f in dataclasses.fields(cls)]
    get = operator.attrgetter(*names)
    if len(names) == 1:
        def __reduce__(self: object) -> tuple[type, tuple]:
            return cls, (get(self),)
    else:
        def __reduce__(self: object) -> tuple[type, tuple]:
            return cls, get(self)

    cls.__reduce__ = __reduce__  # type: ignore[method-assign,assignment]


for _cls in (Address, Location, MailRecord, Attendee, Occurrence, AppointmentRecord, ContactCard, TaskState,
             FlagChange, Failure):
    _positional_pickling(_cls)
del _cls
