"""Graph v1.0 resources under ``/v1.0/users/{id | userPrincipalName}/...`` (see server.py for HTTP)."""

from __future__ import annotations

import copy
import re
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from tests.graph_emulator.model import Collection, GraphError, Mailbox, decode_token, new_id

if TYPE_CHECKING:
    from tests.graph_emulator.server import GraphEmulator

_FOLDER_KEYS = ("id", "displayName", "parentFolderId", "childFolderCount", "unreadItemCount", "totalItemCount",
                "isHidden")
_EXT = re.compile(r"singleValueExtendedProperties\(\$filter=([^)]*)\)", re.I)


def _prop_id(text: str) -> str:
    kind, _, tag = text.strip().partition(" ")
    try:
        return f"{kind.lower()} {int(tag, 16):#x}"
    except ValueError:
        return text.strip().lower()


def _when(value: Any) -> datetime:
    text = (value or {}).get("dateTime", "") if isinstance(value, dict) else ""
    try:
        return datetime.fromisoformat(text[:19]).replace(tzinfo=timezone.utc)
    except ValueError:
        raise GraphError(400, "ErrorInvalidParameter", f"Invalid dateTime {text!r}.") from None


def _window(q: dict) -> tuple[datetime, datetime]:
    try:
        lo = datetime.fromisoformat(q["startDateTime"].replace("Z", "+00:00"))
        hi = datetime.fromisoformat(q["endDateTime"].replace("Z", "+00:00"))
    except (KeyError, ValueError):
        raise GraphError(400, "ErrorInvalidParameter",
                         "This request requires a time window specified by the query string parameters "
                         "StartDateTime and EndDateTime.") from None
    return (lo if lo.tzinfo else lo.replace(tzinfo=timezone.utc)), (hi if hi.tzinfo else hi.replace(tzinfo=timezone.utc))


def shape(item: dict, q: dict) -> dict:
    """An item as Graph answers it for ``$select`` / ``$expand`` (internal ``_`` keys dropped)."""
    out = {k: copy.deepcopy(v) for k, v in item.items() if not k.startswith("_")}
    select = [s.strip() for s in q.get("$select", "").split(",") if s.strip()]
    if select:
        keep = set(select) | {"id", "@odata.etag", "@odata.type"}
        out = {k: v for k, v in out.items() if k in keep}
    ext = _EXT.search(q.get("$expand", ""))
    if ext:
        wanted = {_prop_id(i) for i in re.findall(r"id eq '([^']+)'", ext.group(1), re.I)}
        props = [p for p in item.get("_extended", []) if _prop_id(p["id"]) in wanted]
        if props:
            out["singleValueExtendedProperties"] = copy.deepcopy(props)
    if "linkedResources" in q.get("$expand", "") and "_linked" in item:
        out["linkedResources"] = copy.deepcopy(item["_linked"])
    return out


def _page_size(emu: "GraphEmulator", prefer: list[str], q: dict) -> tuple[int, dict[str, str]]:
    for p in prefer:
        if p.lower().startswith("odata.maxpagesize="):
            size = max(1, int(p.split("=", 1)[1]))
            return size, {"Preference-Applied": f"odata.maxpagesize={size}"}
    if "$top" in q:
        return max(1, int(q["$top"])), {}
    return emu.page_default, {}


def _delta(emu: "GraphEmulator", mb: Mailbox, coll: Collection, path: str, q: dict, prefer: list[str],
           window: bool = False) -> tuple[int, Any, dict]:
    store = emu.store
    token = None
    if "$deltatoken" in q or "$skiptoken" in q:
        token = decode_token(q.get("$skiptoken") or q["$deltatoken"])
        opts = token.get("q", {})
    else:
        opts = {k: v for k, v in q.items() if k in ("$select", "$expand", "startDateTime", "endDateTime")}
        if window:
            _window(opts)
    size, headers = _page_size(emu, prefer, q)
    entries, skip, delta = store.delta_page(coll, token, size)
    if window:
        lo, hi = _window(opts)
        entries = [e for e in entries if "@removed" in e or (_when(e.get("start")) < hi and _when(e.get("end")) > lo)]
    value = [e if "@removed" in e else shape(e, opts) for e in entries]
    body: dict[str, Any] = {"@odata.context": f"{emu.graph_url}/$metadata#Collection({coll.kind})", "value": value}
    if skip is not None:
        body["@odata.nextLink"] = emu.link(path, {**skip, "q": opts}, "$skiptoken")
    else:
        body["@odata.deltaLink"] = emu.link(path, {**delta, "q": opts}, "$deltatoken")
    return 200, body, headers


def _listing(emu: "GraphEmulator", items: list[dict], path: str, q: dict, prefer: list[str]) -> tuple[int, Any, dict]:
    size, headers = _page_size(emu, prefer, q)
    skip = int(q.get("$skip", 0))
    page = items[skip:skip + size]
    body: dict[str, Any] = {"@odata.context": f"{emu.graph_url}/$metadata#Collection", "value": [shape(i, q) for i in page]}
    if skip + size < len(items):
        rest = "&".join(f"{k}={v}" for k, v in q.items() if k not in ("$skip",))
        body["@odata.nextLink"] = f"{emu.graph_url}{path}?{rest}&$skip={skip + size}".replace("?&", "?")
    return 200, body, headers


def _folder_json(mb: Mailbox, c: Collection) -> dict:
    kids = [f for f in mb.folders.values() if f.parent == c.id]
    return {"id": c.id, "displayName": c.name, "parentFolderId": c.parent, "childFolderCount": len(kids),
            "unreadItemCount": sum(1 for i in c.items.values() if not i.get("isRead", True)),
            "totalItemCount": len(c.items), "isHidden": False}


def _list_json(c: Collection) -> dict:
    return {"@odata.type": "#microsoft.graph.todoTaskList", "@odata.etag": f'W/"{c.id[-12:]}"', "id": c.id,
            "displayName": c.name, "isOwner": True, "isShared": False, "wellknownListName": c.wellknown or "none"}


def _todo(emu: "GraphEmulator", mb: Mailbox, method: str, rest: list[str], path: str, q: dict, payload: Any,
          prefer: list[str]) -> tuple[int, Any, dict]:
    store = emu.store
    if rest == ["lists"]:
        if method == "POST":
            if not isinstance(payload, dict) or not payload.get("displayName"):
                raise GraphError(400, "invalidRequest", "displayName is required.")
            c = Collection(new_id("AAMkADIy"), "tasks", payload["displayName"])
            mb.lists[c.id] = c
            return 201, _list_json(c), {}
        return _listing(emu, [_list_json(c) for c in mb.lists.values()], path, q, prefer)
    if len(rest) < 2 or rest[1] not in mb.lists:
        raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
    coll = mb.lists[rest[1]]
    tail = rest[2:]
    if tail == ["tasks"] and method == "POST":
        if not isinstance(payload, dict) or not payload.get("title"):
            raise GraphError(400, "invalidRequest", "title is required.")
        item = {k: v for k, v in payload.items() if k != "linkedResources"}
        item.setdefault("status", "notStarted")
        item.setdefault("importance", "normal")
        item.setdefault("isReminderOn", False)
        item.setdefault("categories", [])
        item.setdefault("body", {"content": "", "contentType": "text"})
        item["_linked"] = [{"id": new_id(""), **lr} for lr in payload.get("linkedResources") or []]
        item = store.put(coll, item)
        out = shape(item, {})
        out["linkedResources"] = copy.deepcopy(item["_linked"])
        return 201, out, {}
    if tail == ["tasks"]:
        return _listing(emu, list(coll.items.values()), path, q, prefer)
    if tail == ["tasks", "delta"]:
        return _delta(emu, mb, coll, path, q, prefer)
    if len(tail) >= 2 and tail[0] == "tasks":
        item = coll.items.get(tail[1])
        if item is None:
            raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        if tail[2:] == ["linkedResources"]:
            if method == "POST":
                lr = {"@odata.type": "#microsoft.graph.linkedResource", "id": new_id(""), **(payload or {})}
                item.setdefault("_linked", []).append(lr)
                store.put(coll, item)
                return 201, lr, {}
            return 200, {"value": copy.deepcopy(item.get("_linked", []))}, {}
        if tail[2:]:
            raise GraphError(400, "BadRequest", f"Resource not found for the segment '{tail[2]}'.")
        if method == "PATCH":
            item.update({k: v for k, v in (payload or {}).items() if not k.startswith("_")})
            return 200, shape(store.put(coll, item), {}), {}
        if method == "DELETE":
            store.delete(item["id"], mb)
            return 204, None, {}
        return 200, shape(item, q), {}
    raise GraphError(400, "BadRequest", f"Resource not found for the segment '{'/'.join(rest)}'.")


#: every property of Graph's contact resource, as a new contact has them (v1.0 reference, contact resource type)
CONTACT_DEFAULTS: dict[str, Any] = {
    "birthday": None, "fileAs": "", "displayName": "", "givenName": None, "initials": None, "middleName": None,
    "nickName": None, "surname": None, "title": None, "yomiGivenName": None, "yomiSurname": None,
    "yomiCompanyName": None, "generation": None, "imAddresses": [], "jobTitle": None, "companyName": None,
    "department": None, "officeLocation": None, "profession": None, "businessHomePage": None, "assistantName": None,
    "manager": None, "homePhones": [], "mobilePhone": None, "businessPhones": [], "spouseName": None,
    "personalNotes": "", "children": [], "emailAddresses": [], "homeAddress": {}, "businessAddress": {},
    "otherAddress": {}, "categories": []}
_CONTACT_KEYS = frozenset(CONTACT_DEFAULTS)


def _contact_folder_json(mb: Mailbox, c: Collection) -> dict:
    return {"id": c.id, "displayName": c.name, "parentFolderId": mb.contacts.id}


def _contact_write(emu: "GraphEmulator", coll: Collection, item: dict | None, payload: Any) -> dict:
    """POST (``item`` None) or PATCH a contact: the properties Graph knows, extended properties merged."""
    if not isinstance(payload, dict):
        raise GraphError(400, "ErrorInvalidRequest", "Cannot process the request because it is malformed or incorrect.")
    unknown = sorted(k for k in payload if k not in _CONTACT_KEYS and k != "singleValueExtendedProperties")
    if unknown:
        raise GraphError(400, "RequestBodyRead", f"The property '{unknown[0]}' does not exist on type "
                         "'microsoft.graph.contact'. Make sure to only use property names that are defined by the type "
                         "or mark the type as open type.")
    if len(payload.get("emailAddresses") or []) > 3:
        raise GraphError(400, "ErrorInvalidArgument", "A contact holds at most three e-mail addresses.")
    new = item is None
    item = {"@odata.type": "#microsoft.graph.contact", **copy.deepcopy(CONTACT_DEFAULTS)} if item is None else item
    item.update({k: copy.deepcopy(v) for k, v in payload.items() if k in _CONTACT_KEYS})
    ext = item.setdefault("_extended", [])
    for prop in payload.get("singleValueExtendedProperties") or []:
        if not isinstance(prop, dict) or not isinstance(prop.get("id"), str):
            raise GraphError(400, "ErrorInvalidProperty", "The extended property is invalid.")
        ext[:] = [p for p in ext if _prop_id(p["id"]) != _prop_id(prop["id"])] + [{"id": prop["id"],
                                                                                    "value": str(prop.get("value"))}]
    item["parentFolderId"] = coll.id
    if new:
        item.pop("id", None)
    return emu.store.put(coll, item)


def _contacts(emu: "GraphEmulator", mb: Mailbox, method: str, rest: list[str], path: str, q: dict, payload: Any,
              prefer: list[str]) -> tuple[int, Any, dict]:
    """``contactFolders`` (below Contacts), their contacts, and ``contacts/{id}`` writes."""
    context = {"@odata.context": f"{emu.graph_url}/$metadata#users('{mb.user_id}')/contacts/$entity"}
    if rest == ["contactFolders"]:
        if method == "POST":
            name = payload.get("displayName") if isinstance(payload, dict) else None
            if not isinstance(name, str) or not name.strip():
                raise GraphError(400, "ErrorInvalidRequest", "displayName is required.")
            if any(c.name.lower() == name.lower() for c in mb.contact_folders.values()):
                raise GraphError(409, "ErrorFolderExists", "A folder with the specified name already exists.")
            c = Collection(new_id(), "contacts", name.strip(), parent=mb.contacts.id)
            mb.contact_folders[c.id] = c
            return 201, _contact_folder_json(mb, c), {}
        if method != "GET":
            raise GraphError(405, "ErrorInvalidRequest", "The OData request is not supported.")
        return _listing(emu, [_contact_folder_json(mb, c) for c in mb.contact_folders.values()], path, q, prefer)
    if rest[0] == "contactFolders":
        coll = mb.contact_folders.get(rest[1]) if len(rest) > 1 else None
        if coll is None:
            raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        tail = rest[2:]
    else:
        coll, tail = mb.contacts, rest
    if tail == ["contacts"] and method == "POST":
        return 201, {**context, **shape(_contact_write(emu, coll, None, payload), {})}, {}
    if tail == ["contacts"] and method == "GET":
        return _listing(emu, list(coll.items.values()), path, q, prefer)
    if len(tail) == 2 and tail[0] == "contacts":
        if rest[0] == "contacts":  # /contacts/{id} reaches a contact in any contact folder
            found = [c for c in (mb.contacts, *mb.contact_folders.values()) if tail[1] in c.items]
            coll = found[0] if found else coll
        item = coll.items.get(tail[1])
        if item is None:
            raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        if method == "PATCH":
            return 200, {**context, **shape(_contact_write(emu, coll, item, payload), {})}, {}
        if method == "DELETE":
            emu.store.delete(item["id"], mb)
            return 204, None, {}
        return 200, {**context, **shape(item, q)}, {}
    raise GraphError(400, "BadRequest", f"Resource not found for the segment '{'/'.join(rest)}'.")


def route(emu: "GraphEmulator", method: str, segs: list[str], q: dict, payload: Any, prefer: list[str]
          ) -> tuple[int, Any, dict]:
    if len(segs) < 3 or segs[0] != "users":
        raise GraphError(400, "BadRequest", f"Resource not found for the segment '{segs[0] if segs else ''}'.")
    mb = emu.store.mailbox(segs[1])
    rest = segs[2:]
    path = "/" + "/".join(segs)
    writes = method != "GET"
    if rest[0] == "todo":
        return _todo(emu, mb, method, rest[1:], path, q, payload, prefer)
    if rest[0] == "contactFolders" or (rest[0] == "contacts" and (writes or len(rest) == 2 and rest[1] != "delta")):
        return _contacts(emu, mb, method, rest, path, q, payload, prefer)
    if writes:
        raise GraphError(405, "ErrorInvalidRequest", "The OData request is not supported.")
    if rest == ["mailFolders"]:
        return _listing(emu, [_folder_json(mb, c) for c in mb.folders.values() if c.parent == mb.root], path, q, prefer)
    if rest[0] == "mailFolders" and len(rest) >= 2:
        folder = mb.folder(rest[1])
        tail = rest[2:]
        if not tail:
            return 200, {"@odata.context": f"{emu.graph_url}/$metadata#users('{mb.user_id}')/mailFolders/$entity",
                         **_folder_json(mb, folder)}, {}
        if tail == ["childFolders"]:
            return _listing(emu, [_folder_json(mb, c) for c in mb.folders.values() if c.parent == folder.id],
                            path, q, prefer)
        if tail == ["messages", "delta"]:
            return _delta(emu, mb, folder, path, q, prefer)
        if tail == ["messages"]:
            return _listing(emu, list(folder.items.values()), path, q, prefer)
    if rest == ["calendarView", "delta"]:
        return _delta(emu, mb, mb.calendar, path, q, prefer, window=True)
    if rest == ["calendarView"]:
        lo, hi = _window(q)
        items = [e for e in mb.calendar.items.values() if _when(e.get("start")) < hi and _when(e.get("end")) > lo]
        return _listing(emu, items, path, q, prefer)
    if rest == ["contacts", "delta"]:
        return _delta(emu, mb, mb.contacts, path, q, prefer)
    if rest == ["contacts"]:
        return _listing(emu, list(mb.contacts.items.values()), path, q, prefer)
    raise GraphError(400, "BadRequest", f"Resource not found for the segment '{rest[0]}'.")
