"""The emulator's mailbox store: users, mailboxes, folders, items and their change log.

Items are kept as the XML element Exchange would send with every property
(``t:Message``, ``t:CalendarItem``, ``t:Contact``, ``t:Task``), minus the
server-computed ones (ItemId, ParentFolderId, ...) that the serializer adds.
CreateItem stores the client's element as it came; UpdateItem replaces its
children.  Every change gets a number from one store-wide counter; a folder's
change log lists (number, item id) so that SyncFolderItems can answer "what
changed since number N" without walking the whole folder.

Sync states and ids are opaque to clients: a sync state is a gzip'd,
HMAC-signed blob in base64 (``H4sI...`` like Exchange's), an id is base64 of
an internal key.  A client that alters either gets the documented error.
"""

from __future__ import annotations

import base64
import bisect
import gzip
import hashlib
import hmac
import itertools
import json
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from lxml import etree

TNS = "http://schemas.microsoft.com/exchange/services/2006/types"
MNS = "http://schemas.microsoft.com/exchange/services/2006/messages"


def t(name: str) -> str:
    return f"{{{TNS}}}{name}"


#: distinguished folder id -> (display name, folder class, item kind)
DISTINGUISHED = {
    "msgfolderroot": ("Top of Information Store", "IPF.Note", ""),
    "inbox": ("Inbox", "IPF.Note", "Message"),
    "sentitems": ("Sent Items", "IPF.Note", "Message"),
    "drafts": ("Drafts", "IPF.Note", "Message"),
    "deleteditems": ("Deleted Items", "IPF.Note", "Message"),
    "junkemail": ("Junk Email", "IPF.Note", "Message"),
    "calendar": ("Calendar", "IPF.Appointment", "CalendarItem"),
    "contacts": ("Contacts", "IPF.Contact", "Contact"),
    "tasks": ("Tasks", "IPF.Task", "Task"),
}


class EwsError(Exception):
    """A response-level EWS error: ResponseClass="Error" with this ResponseCode."""

    def __init__(self, code: str, text: str = ""):
        super().__init__(text or code)
        self.code = code
        self.text = text or code


def now_utc() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def ews_time(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Folder:
    key: str  # internal key, e.g. "alice@example.com/inbox"
    mailbox: "Mailbox"
    name: str
    folder_class: str
    parent: "Folder | None"
    distinguished: str = ""
    #: item id -> [created seq, last seq, last non-read-flag seq, deleted]
    entries: dict[str, list] = field(default_factory=dict)
    #: (seq, item id), ascending: the change log
    log_seqs: list[int] = field(default_factory=list)
    log_ids: list[str] = field(default_factory=list)
    created_seq: int = 0
    change_seq: int = 0
    deleted: bool = False
    #: (the folder's last change seq, its unread count then): Exchange keeps a folder's counts, the emulator
    #: counts again only after a change (a count of 20,000 items took 0.1 s of every GetFolder)
    unread_at: tuple[int, int] | None = field(default=None, repr=False, compare=False)

    @property
    def id(self) -> str:
        return encode_id("F", self.key)

    @property
    def change_key(self) -> str:
        return base64.b64encode(f"CK{self.change_seq}".encode()).decode()

    def live_ids(self) -> list[str]:
        return [i for i, e in self.entries.items() if not e[3]]


@dataclass
class Item:
    id: str
    folder: Folder
    elem: etree._Element  # t:Message / t:CalendarItem / ...
    version: int = 1
    created: datetime = field(default_factory=now_utc)
    modified: datetime = field(default_factory=now_utc)

    @property
    def kind(self) -> str:
        return etree.QName(self.elem).localname

    @property
    def change_key(self) -> str:
        return base64.b64encode(f"CQAAAB{self.version:08d}".encode()).decode()


@dataclass
class Mailbox:
    address: str
    name: str
    folders: dict[str, Folder] = field(default_factory=dict)  # key -> folder
    delegates: set[str] = field(default_factory=set)  # user names with delegate access


def encode_id(kind: str, key: str) -> str:
    raw = b"\x00\x00" + kind.encode() + b"\x00" + key.encode("utf-8")
    return base64.b64encode(raw).decode()


def decode_id(value: str, kind: str) -> str:
    try:
        raw = base64.b64decode(value.encode(), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise EwsError("ErrorInvalidIdMalformed", "Id is malformed.") from None
    head = b"\x00\x00" + kind.encode() + b"\x00"
    if not raw.startswith(head):
        raise EwsError("ErrorInvalidIdMalformed", "Id is malformed.")
    return raw[len(head):].decode("utf-8", "replace")


class Store:
    """Every mailbox of the emulated organisation, behind one lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.users: dict[str, str] = {}  # user name (lower) -> password
        self.user_mailbox: dict[str, str] = {}  # user name -> primary SMTP address
        self.impersonators: set[str] = set()  # user names holding ApplicationImpersonation
        self.mailboxes: dict[str, Mailbox] = {}
        self.items: dict[str, Item] = {}
        self.folders: dict[str, Folder] = {}  # key -> folder
        self.seq = 0
        self.generation = 1  # bump: every sync state issued so far turns invalid
        self._secret = os.urandom(16)
        self._counter = itertools.count(1)

    # -- set-up -------------------------------------------------------------
    def add_user(self, username: str, password: str, mailbox: str | None = None, name: str = "",
                 impersonation: bool = False) -> None:
        with self.lock:
            self.users[username.lower()] = password
            if mailbox:
                self.user_mailbox[username.lower()] = mailbox.lower()
                self.add_mailbox(mailbox, name or mailbox.split("@")[0].title())
            if impersonation:
                self.impersonators.add(username.lower())

    def add_mailbox(self, address: str, name: str = "") -> Mailbox:
        address = address.lower()
        with self.lock:
            box = self.mailboxes.get(address)
            if box is not None:
                return box
            box = Mailbox(address, name or address.split("@")[0].title())
            self.mailboxes[address] = box
            root = self._new_folder(box, "root", "", "", None, "root")
            top = self._new_folder(box, "msgfolderroot", *DISTINGUISHED["msgfolderroot"][:2], root, "msgfolderroot")
            for dist, (display, cls, _kind) in DISTINGUISHED.items():
                if dist != "msgfolderroot":
                    self._new_folder(box, dist, display, cls, top, dist)
            return box

    def _new_folder(self, box: Mailbox, slug: str, name: str, cls: str, parent: Folder | None,
                    distinguished: str = "") -> Folder:
        key = f"{box.address}/{slug}"
        self.seq += 1
        folder = Folder(key, box, name, cls, parent, distinguished, created_seq=self.seq, change_seq=self.seq)
        box.folders[key] = folder
        self.folders[key] = folder
        return folder

    def add_folder(self, mailbox: str, name: str, parent: str = "msgfolderroot", folder_class: str = "IPF.Note") -> Folder:
        with self.lock:
            box = self.mailboxes[mailbox.lower()]
            parent_folder = self.folder(mailbox, parent)
            return self._new_folder(box, f"f{next(self._counter)}", name, folder_class, parent_folder)

    def delete_folder(self, folder: Folder) -> None:
        with self.lock:
            self.seq += 1
            folder.deleted = True
            folder.change_seq = self.seq
            for item_id in folder.live_ids():
                self.items.pop(item_id, None)

    def folder(self, mailbox: str, name: str) -> Folder:
        """A folder by distinguished id or display name path ("Inbox/Projects")."""
        box = self.mailboxes[mailbox.lower()]
        key = f"{box.address}/{name}"
        if key in box.folders:
            return box.folders[key]
        for f in box.folders.values():
            if not f.deleted and self.path(f).lower() == name.lower():
                return f
        raise KeyError(name)

    def path(self, folder: Folder) -> str:
        parts = []
        f: Folder | None = folder
        while f is not None and f.distinguished not in ("msgfolderroot", "root"):
            parts.append(f.name)
            f = f.parent
        return "/".join(reversed(parts))

    def children(self, folder: Folder) -> list[Folder]:
        return [f for f in folder.mailbox.folders.values() if f.parent is folder and not f.deleted]

    # -- items --------------------------------------------------------------
    def _log(self, folder: Folder, item_id: str, kind: str) -> None:
        self.seq += 1
        seq = self.seq
        entry = folder.entries.get(item_id)
        if kind == "create" or entry is None:
            folder.entries[item_id] = [seq, seq, seq, False]
        else:
            entry[1] = seq
            if kind != "read":
                entry[2] = seq
            if kind == "delete":
                entry[3] = True
        folder.log_seqs.append(seq)
        folder.log_ids.append(item_id)

    def create(self, folder: Folder, elem: etree._Element, when: datetime | None = None) -> Item:
        with self.lock:
            item_id = encode_id("I", f"{folder.mailbox.address}/{next(self._counter)}")
            item = Item(item_id, folder, elem)
            if when is not None:
                item.created = item.modified = when
            self.items[item_id] = item
            self._log(folder, item_id, "create")
            return item

    def touch(self, item: Item, read_only: bool = False) -> None:
        with self.lock:
            item.version += 1
            item.modified = now_utc()
            self._log(item.folder, item.id, "read" if read_only else "update")

    def delete(self, item: Item) -> None:
        with self.lock:
            if self.items.pop(item.id, None) is not None:
                self._log(item.folder, item.id, "delete")

    def move(self, item: Item, target: Folder) -> Item:
        """Exchange gives a moved item a new id in its new folder."""
        with self.lock:
            self.delete(item)
            moved = self.create(target, item.elem)
            moved.created = item.created
            return moved

    def get(self, item_id: str) -> Item:
        decode_id(item_id, "I")
        item = self.items.get(item_id)
        if item is None:
            raise EwsError("ErrorItemNotFound", "The specified object was not found in the store.")
        return item

    def find_folder(self, folder_id: str) -> Folder:
        key = decode_id(folder_id, "F")
        folder = self.folders.get(key)
        if folder is None or folder.deleted:
            raise EwsError("ErrorFolderNotFound", "The specified folder could not be found in the store.")
        return folder

    # -- sync states ----------------------------------------------------------
    def sync_state(self, scope: str, seq: int) -> str:
        payload = json.dumps([self.generation, scope, seq]).encode()
        blob = gzip.compress(payload, mtime=0)
        mac = hmac.new(self._secret, blob, hashlib.sha256).digest()[:12]
        return base64.b64encode(blob + mac).decode()

    def read_sync_state(self, scope: str, token: str | None) -> int:
        if not token:
            return 0
        try:
            raw = base64.b64decode(token.encode(), validate=True)
            blob, mac = raw[:-12], raw[-12:]
            if not hmac.compare_digest(mac, hmac.new(self._secret, blob, hashlib.sha256).digest()[:12]):
                raise ValueError("bad mac")
            generation, state_scope, seq = json.loads(gzip.decompress(blob))
        except (ValueError, OSError, TypeError, UnicodeEncodeError):
            raise EwsError("ErrorInvalidSyncStateData",
                           "Synchronization state data is corrupt or otherwise invalid.") from None
        if generation != self.generation or state_scope != scope or seq > self.seq:
            raise EwsError("ErrorInvalidSyncStateData", "Synchronization state data is corrupt or otherwise invalid.")
        return int(seq)

    def item_changes(self, folder: Folder, since: int, limit: int) -> tuple[list[tuple[str, str]], int, bool]:
        """Net changes after ``since``: ([(change, item id)], new seq, includes last).

        ``change`` is Create, Update, Delete or ReadFlagChange; each item
        appears once, at the place of its last change.
        """
        out: list[tuple[str, str]] = []
        start = bisect.bisect_right(folder.log_seqs, since)
        cut = self.seq
        for pos in range(start, len(folder.log_seqs)):
            seq, item_id = folder.log_seqs[pos], folder.log_ids[pos]
            entry = folder.entries[item_id]
            if entry[1] != seq:
                continue  # not this item's last change
            created, _last, content, deleted = entry
            if created > since:
                if deleted:
                    continue
                change = "Create"
            elif deleted:
                change = "Delete"
            elif content > since:
                change = "Update"
            else:
                change = "ReadFlagChange"
            if len(out) == limit:
                return out, folder.log_seqs[pos - 1] if pos else since, False
            out.append((change, item_id))
        return out, cut, True


def body_element(text: str, body_type: str = "Text", tag: str = "Body") -> etree._Element:
    elem = etree.Element(t(tag), BodyType=body_type)
    elem.text = text
    return elem


def mailbox_element(tag: str, name: str, email: str, single: bool = True) -> etree._Element:
    outer = etree.Element(t(tag))
    box = etree.SubElement(outer, t("Mailbox"))
    etree.SubElement(box, t("Name")).text = name
    etree.SubElement(box, t("EmailAddress")).text = email
    etree.SubElement(box, t("RoutingType")).text = "SMTP"
    etree.SubElement(box, t("MailboxType")).text = "OneOff"
    return outer


def recipients_element(tag: str, people: list[tuple[str, str]]) -> etree._Element:
    outer = etree.Element(t(tag))
    for name, email in people:
        box = etree.SubElement(outer, t("Mailbox"))
        etree.SubElement(box, t("Name")).text = name
        etree.SubElement(box, t("EmailAddress")).text = email
        etree.SubElement(box, t("RoutingType")).text = "SMTP"
        etree.SubElement(box, t("MailboxType")).text = "OneOff"
    return outer


def _text(parent: etree._Element, tag: str, value: str) -> None:
    etree.SubElement(parent, t(tag)).text = value


def make_message(*, subject: str, sender: tuple[str, str], to: list[tuple[str, str]], date: datetime,
                 message_id: str, cc: list[tuple[str, str]] = (), body: str = "", in_reply_to: str = "",  # type: ignore[assignment]
                 references: str = "", categories: list[str] = (), sensitivity: str = "Normal",  # type: ignore[assignment]
                 is_read: bool = False, has_attachments: bool = False) -> etree._Element:
    """A t:Message with the properties a mail delivered by Exchange has."""
    m = etree.Element(t("Message"))
    _text(m, "ItemClass", "IPM.Note")
    _text(m, "Subject", subject)
    _text(m, "Sensitivity", sensitivity)
    m.append(body_element(body))
    _text(m, "DateTimeReceived", ews_time(date))
    if categories:
        cats = etree.SubElement(m, t("Categories"))
        for c in categories:
            _text(cats, "String", c)
    _text(m, "Importance", "Normal")
    if in_reply_to:
        _text(m, "InReplyTo", in_reply_to)
    _text(m, "IsSubmitted", "false")
    _text(m, "IsDraft", "false")
    _text(m, "IsFromMe", "false")
    _text(m, "IsResend", "false")
    _text(m, "IsUnmodified", "true")
    _text(m, "DateTimeSent", ews_time(date))
    _text(m, "HasAttachments", "true" if has_attachments else "false")
    m.append(mailbox_element("Sender", *sender))
    if to:
        m.append(recipients_element("ToRecipients", list(to)))
    if cc:
        m.append(recipients_element("CcRecipients", list(cc)))
    _text(m, "IsReadReceiptRequested", "false")
    _text(m, "IsDeliveryReceiptRequested", "false")
    _text(m, "ConversationTopic", subject.split(":", 1)[-1].strip() if subject.lower().startswith(("re:", "aw:", "fw:")) else subject)
    m.append(mailbox_element("From", *sender))
    _text(m, "InternetMessageId", message_id)
    _text(m, "IsRead", "true" if is_read else "false")
    if references:
        _text(m, "References", references)
    return m


def make_event(*, subject: str, start: datetime, end: datetime, organizer: tuple[str, str],
               attendees: list[tuple[str, str]] = (), location: str = "", uid: str = "",  # type: ignore[assignment]
               time_zone: str = "W. Europe Standard Time", sensitivity: str = "Normal",
               recurrence: etree._Element | None = None) -> etree._Element:
    c = etree.Element(t("CalendarItem"))
    _text(c, "ItemClass", "IPM.Appointment")
    _text(c, "Subject", subject)
    _text(c, "Sensitivity", sensitivity)
    c.append(body_element(""))
    _text(c, "DateTimeReceived", ews_time(start - timedelta(days=7)))
    _text(c, "Importance", "Normal")
    _text(c, "UID", uid or hashlib.sha1(f"{subject}{start}".encode()).hexdigest().upper())
    _text(c, "Start", ews_time(start))
    _text(c, "End", ews_time(end))
    _text(c, "IsAllDayEvent", "false")
    _text(c, "LegacyFreeBusyStatus", "Busy")
    if location:
        _text(c, "Location", location)
    _text(c, "IsMeeting", "true" if attendees else "false")
    _text(c, "IsCancelled", "false")
    _text(c, "IsRecurring", "false")
    _text(c, "CalendarItemType", "RecurringMaster" if recurrence is not None else "Single")
    _text(c, "MyResponseType", "Organizer")
    c.append(mailbox_element("Organizer", *organizer))
    if attendees:
        req = etree.SubElement(c, t("RequiredAttendees"))
        for name, email in attendees:
            att = etree.SubElement(req, t("Attendee"))
            box = etree.SubElement(att, t("Mailbox"))
            _text(box, "Name", name)
            _text(box, "EmailAddress", email)
            _text(box, "RoutingType", "SMTP")
            _text(att, "ResponseType", "Accept")
    if recurrence is not None:
        c.append(recurrence)
    etree.SubElement(c, t("StartTimeZone"), Id=time_zone, Name=time_zone)
    etree.SubElement(c, t("EndTimeZone"), Id=time_zone, Name=time_zone)
    return c


def make_contact(*, display_name: str, given: str, surname: str, emails: list[str], company: str = "",
                 phones: list[tuple[str, str]] = (), job_title: str = "") -> etree._Element:  # type: ignore[assignment]
    c = etree.Element(t("Contact"))
    _text(c, "ItemClass", "IPM.Contact")
    _text(c, "Subject", display_name)
    _text(c, "Sensitivity", "Normal")
    _text(c, "FileAs", f"{surname}, {given}" if surname else display_name)
    _text(c, "DisplayName", display_name)
    _text(c, "GivenName", given)
    if company:
        _text(c, "CompanyName", company)
    if emails:
        box = etree.SubElement(c, t("EmailAddresses"))
        for n, email in enumerate(emails[:3], 1):
            etree.SubElement(box, t("Entry"), Key=f"EmailAddress{n}").text = email
    if phones:
        box = etree.SubElement(c, t("PhoneNumbers"))
        for key, number in phones:
            etree.SubElement(box, t("Entry"), Key=key).text = number
    if job_title:
        _text(c, "JobTitle", job_title)
    _text(c, "Surname", surname)
    return c
