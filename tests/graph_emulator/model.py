"""The mailboxes a Graph emulator serves, with change tracking for delta queries.

Every change (create, update, delete) takes the next number of one counter;
a delta token is that number (and the store's epoch).  A round of delta
pages is frozen at the counter's value when it began (the ``$skiptoken``
carries it), so a change made while a client pages shows up in the next
round, never twice and never lost.  Ids are immutable (as with
``Prefer: IdType="ImmutableId"``): a moved mail keeps its id.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

WELL_KNOWN = {"inbox": "Inbox", "sentitems": "Sent Items", "drafts": "Drafts", "deleteditems": "Deleted Items",
              "junkemail": "Junk Email", "archive": "Archive"}


class GraphError(Exception):
    """An error answer: HTTP status, Graph error code, message."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def new_id(prefix: str = "AAMkAD") -> str:
    return prefix + base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=") + "AAA="


def iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def encode_token(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_token(text: str) -> dict:
    try:
        data = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except ValueError:
        raise GraphError(400, "BadRequest", "Invalid delta token or skip token.") from None
    if not isinstance(data, dict):
        raise GraphError(400, "BadRequest", "Invalid delta token or skip token.")
    return data


@dataclass
class Collection:
    """A folder of one kind (mail folder, calendar, contacts, To Do list) with its change log."""

    id: str
    kind: str  # "mail" | "calendar" | "contacts" | "tasks"
    name: str
    parent: str = ""
    wellknown: str = ""
    items: dict[str, dict] = field(default_factory=dict)  # id -> resource (as Graph answers it)
    seq: dict[str, int] = field(default_factory=dict)  # id -> change number of its last change
    removed: dict[str, int] = field(default_factory=dict)  # id -> change number of its removal


class Mailbox:
    def __init__(self, store: "Store", address: str, name: str):
        self.store, self.address, self.name = store, address, name
        self.user_id = str(uuid.uuid4())
        self.folders: dict[str, Collection] = {}
        root = Collection(new_id(), "mail", "Top of Information Store")
        self.root = root.id
        self.folders[root.id] = root
        for key, title in WELL_KNOWN.items():
            c = Collection(new_id(), "mail", title, parent=root.id, wellknown=key)
            self.folders[c.id] = c
        self.calendar = Collection(new_id(), "calendar", "Calendar")
        self.contacts = Collection(new_id(), "contacts", "Contacts")
        self.contact_folders: dict[str, Collection] = {}  # folders below Contacts (contactFolders)
        self.lists: dict[str, Collection] = {}
        default = Collection(new_id(), "tasks", "Tasks", wellknown="defaultList")
        self.lists[default.id] = default
        self.denied = False  # True: 403 ErrorAccessDenied for every request

    def folder(self, key: str) -> Collection:
        for c in self.folders.values():
            if c.id == key or (c.wellknown and c.wellknown == key.lower()):
                return c
        raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")

    def add_folder(self, name: str, parent: str = "inbox") -> Collection:
        c = Collection(new_id(), "mail", name, parent=self.folder(parent).id)
        self.folders[c.id] = c
        return c

    def collections(self) -> list[Collection]:
        return [*self.folders.values(), self.calendar, self.contacts, *self.contact_folders.values(),
                *self.lists.values()]

    def find(self, item_id: str) -> tuple[Collection, dict]:
        for c in self.collections():
            if item_id in c.items:
                return c, c.items[item_id]
        raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")


class Store:
    """All mailboxes; every method is thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.mailboxes: dict[str, Mailbox] = {}
        self.counter = itertools.count(1)
        self.last = 0
        self.epoch = 1

    def add_mailbox(self, address: str, name: str = "") -> Mailbox:
        with self.lock:
            mb = Mailbox(self, address.lower(), name or address.split("@")[0].title())
            self.mailboxes[mb.address] = mb
            return mb

    def mailbox(self, key: str) -> Mailbox:
        with self.lock:
            mb = self.mailboxes.get(key.lower()) or next((m for m in self.mailboxes.values() if m.user_id == key), None)
            if mb is None:
                raise GraphError(404, "ErrorInvalidUser", f"The requested user '{key}' is invalid.")
            if mb.denied:
                raise GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
            return mb

    def _tick(self) -> int:
        self.last = next(self.counter)
        return self.last

    # -- changes ---------------------------------------------------------------------
    def put(self, coll: Collection, item: dict) -> dict:
        """Create or replace ``item`` (its ``id`` set when missing) in ``coll``."""
        with self.lock:
            item.setdefault("id", new_id())
            n = self._tick()
            ck = base64.b64encode(f"CQAAABYAAA{n:012d}".encode()).decode()
            if coll.kind != "tasks":  # To Do tasks have an etag, no changeKey
                item["changeKey"] = ck
            item["@odata.etag"] = f'W/"{ck}"'
            item["lastModifiedDateTime"] = iso(datetime.now(timezone.utc))
            item.setdefault("createdDateTime", item["lastModifiedDateTime"])
            if coll.kind == "mail":
                item["parentFolderId"] = coll.id
            coll.items[item["id"]] = item
            coll.seq[item["id"]] = n
            coll.removed.pop(item["id"], None)
            return item

    def update(self, item_id: str, mailbox: Mailbox, **fields: Any) -> dict:
        with self.lock:
            coll, item = mailbox.find(item_id)
            item.update(fields)
            return self.put(coll, item)

    def delete(self, item_id: str, mailbox: Mailbox) -> None:
        with self.lock:
            coll, _item = mailbox.find(item_id)
            del coll.items[item_id]
            del coll.seq[item_id]
            coll.removed[item_id] = self._tick()

    def move(self, item_id: str, mailbox: Mailbox, target: str) -> dict:
        """Move a mail; with immutable ids it keeps its id (removed from one folder's delta, new in the other)."""
        with self.lock:
            coll, item = mailbox.find(item_id)
            del coll.items[item_id]
            del coll.seq[item_id]
            coll.removed[item_id] = self._tick()
            return self.put(mailbox.folder(target), item)

    def invalidate_tokens(self) -> None:
        """Every delta token and skip token handed out so far answers 410 Gone (syncStateNotFound)."""
        with self.lock:
            self.epoch += 1

    # -- delta -----------------------------------------------------------------------
    def delta_page(self, coll: Collection, token: dict | None, size: int) -> tuple[list[dict], dict | None, dict]:
        """One page: (entries, next skip state or None, delta state for the deltaLink)."""
        with self.lock:
            if token is not None and token.get("e") != self.epoch:
                raise GraphError(410, "SyncStateNotFound",
                                 "The sync state generation is not found or has expired. Resync required.")
            since = int(token.get("s", 0)) if token else 0
            upto = int(token["u"]) if token and "u" in token else self.last
            offset = int(token.get("o", 0)) if token else 0
            changed = [(n, i) for i, n in coll.seq.items() if since < n <= upto]
            if since:
                changed += [(n, i) for i, n in coll.removed.items() if since < n <= upto]
            changed.sort()
            page = changed[offset:offset + size]
            out = []
            for _n, item_id in page:
                if item_id in coll.items:
                    out.append(copy.deepcopy(coll.items[item_id]))
                else:
                    out.append({"id": item_id, "@removed": {"reason": "deleted"}})
            more = offset + size < len(changed)
            skip = {"e": self.epoch, "s": since, "u": upto, "o": offset + size} if more else None
            return out, skip, {"e": self.epoch, "s": upto}
