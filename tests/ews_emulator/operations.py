"""The EWS operations the emulator answers, one function each.

Each takes the request context and the operation element and returns the
response envelope.  Per-item problems become error response messages with
the codes of Microsoft's reference (ErrorItemNotFound, ErrorAccessDenied,
ErrorInvalidSyncStateData, ...); request-level problems raise
:class:`Fault`, which the HTTP layer sends as a SOAP fault with HTTP 500.
"""

from __future__ import annotations

import fnmatch
from copy import deepcopy
from dataclasses import dataclass, field
from typing import Callable

from lxml import etree

from tests.ews_emulator.model import (
    DISTINGUISHED,
    TNS,
    EwsError,
    Folder,
    Item,
    Store,
    now_utc,
    t,
)
from tests.ews_emulator.soap import (
    Shape,
    field_element_name,
    m,
    message,
    order,
    render_folder,
    render_item,
    response,
)

MAX_CHANGES = 512  # the schema's bound of MaxChangesReturned


class Fault(Exception):
    def __init__(self, code: str, text: str, extra: dict[str, str] | None = None):
        super().__init__(text)
        self.code, self.text, self.extra = code, text, extra


@dataclass
class Context:
    store: Store
    user: str  # authenticated user name
    acting: str  # the mailbox requests act for (own or impersonated)
    impersonating: bool = False
    log: list[dict] = field(default_factory=list)


def _mailbox_of(ctx: Context, address: str) -> str:
    address = address.lower()
    box = ctx.store.mailboxes.get(address)
    if box is None:
        raise EwsError("ErrorNonExistentMailbox", f"No mailbox with such guid.")
    if address != ctx.acting and ctx.user not in box.delegates:
        raise EwsError("ErrorAccessDenied", "Access is denied. Check credentials and try again.")
    return address


def _folder_ref(ctx: Context, ref: etree._Element) -> Folder:
    name = etree.QName(ref).localname
    if name == "DistinguishedFolderId":
        dist = ref.get("Id", "")
        mbox = ref.find(f"{t('Mailbox')}/{t('EmailAddress')}")
        address = _mailbox_of(ctx, mbox.text if mbox is not None and mbox.text else ctx.acting)
        if dist not in DISTINGUISHED and dist != "root":
            raise EwsError("ErrorFolderNotFound", "The specified folder could not be found in the store.")
        try:
            return ctx.store.folder(address, dist)
        except KeyError:
            raise EwsError("ErrorFolderNotFound", "The specified folder could not be found in the store.") from None
    if name == "FolderId":
        folder = ctx.store.find_folder(ref.get("Id", ""))
        _mailbox_of(ctx, folder.mailbox.address)
        return folder
    raise Fault("ErrorSchemaValidation", f"The request failed schema validation: unexpected {name}.")


def _item_ref(ctx: Context, ref: etree._Element) -> Item:
    item = ctx.store.get(ref.get("Id", ""))
    _mailbox_of(ctx, item.folder.mailbox.address)
    return item


def _only_child(elem: etree._Element | None) -> list[etree._Element]:
    return [c for c in (elem if elem is not None else ()) if isinstance(c.tag, str)]


# -- folders --------------------------------------------------------------------

def _folder_shape(op: etree._Element) -> tuple[str, list[str]]:
    shape = op.find(m("FolderShape"))
    base = (shape.findtext(t("BaseShape")) or "Default").strip() if shape is not None else "Default"
    fields = []
    props = shape.find(t("AdditionalProperties")) if shape is not None else None
    for p in _only_child(props):
        if etree.QName(p).localname == "FieldURI":
            fields.append(field_element_name(p.get("FieldURI", "")))
    return base, fields


def get_folder(ctx: Context, op: etree._Element) -> etree._Element:
    base, fields = _folder_shape(op)
    env, msgs = response("GetFolder")
    for ref in _only_child(op.find(m("FolderIds"))):
        try:
            folder = _folder_ref(ctx, ref)
        except EwsError as exc:
            msg = message(msgs, "GetFolder", exc.code, exc.text)
            etree.SubElement(msg, m("Folders"))
            continue
        msg = message(msgs, "GetFolder")
        etree.SubElement(msg, m("Folders")).append(render_folder(ctx.store, folder, base, fields))
    return env


def _descendants(store: Store, folder: Folder, deep: bool) -> list[Folder]:
    out = []
    for child in sorted(store.children(folder), key=lambda f: f.created_seq):
        out.append(child)
        if deep:
            out.extend(_descendants(store, child, deep))
    return out


def find_folder(ctx: Context, op: etree._Element) -> etree._Element:
    base, fields = _folder_shape(op)
    deep = op.get("Traversal", "Shallow") == "Deep"
    view = op.find(m("IndexedPageFolderView"))
    env, msgs = response("FindFolder")
    for ref in _only_child(op.find(m("ParentFolderIds"))):
        try:
            parent = _folder_ref(ctx, ref)
        except EwsError as exc:
            message(msgs, "FindFolder", exc.code, exc.text)
            continue
        found = _descendants(ctx.store, parent, deep)
        offset, limit = 0, len(found)
        if view is not None:
            offset = int(view.get("Offset", "0"))
            limit = int(view.get("MaxEntriesReturned", str(len(found))))
        page = found[offset:offset + limit]
        msg = message(msgs, "FindFolder")
        last = offset + len(page) >= len(found)
        root = etree.SubElement(msg, m("RootFolder"), TotalItemsInView=str(len(found)),
                                IncludesLastItemInRange="true" if last else "false")
        if not last:
            root.set("IndexedPagingOffset", str(offset + len(page)))
        folders = etree.SubElement(root, t("Folders"))
        for f in page:
            folders.append(render_folder(ctx.store, f, base, fields))
    return env


def create_folder(ctx: Context, op: etree._Element) -> etree._Element:
    env, msgs = response("CreateFolder")
    ctx.log.append({"op": "CreateFolder", "write": True})
    try:
        parent = _folder_ref(ctx, _only_child(op.find(m("ParentFolderId")))[0])
    except (EwsError, IndexError) as exc:
        code = exc.code if isinstance(exc, EwsError) else "ErrorInvalidIdMalformed"
        msg = message(msgs, "CreateFolder", code, getattr(exc, "text", "Id is malformed."))
        etree.SubElement(msg, m("Folders"))
        return env
    classes = {"ContactsFolder": "IPF.Contact", "CalendarFolder": "IPF.Appointment", "TasksFolder": "IPF.Task"}
    for elem in _only_child(op.find(m("Folders"))):
        tag = etree.QName(elem).localname
        name = (elem.findtext(t("DisplayName")) or "").strip()
        if any(f.name.lower() == name.lower() for f in ctx.store.children(parent)):
            msg = message(msgs, "CreateFolder", "ErrorFolderExists", "A folder with the specified name already exists.")
            etree.SubElement(msg, m("Folders"))
            continue
        folder_class = elem.findtext(t("FolderClass")) or classes.get(tag, "IPF.Note")
        folder = ctx.store.add_folder(parent.mailbox.address, name, parent=parent.key.rpartition("/")[2],
                                      folder_class=folder_class)
        msg = message(msgs, "CreateFolder")
        etree.SubElement(etree.SubElement(msg, m("Folders")), t(tag)).append(
            etree.Element(t("FolderId"), Id=folder.id, ChangeKey=folder.change_key))
    return env


def sync_folder_hierarchy(ctx: Context, op: etree._Element) -> etree._Element:
    base, fields = _folder_shape(op)
    env, msgs = response("SyncFolderHierarchy")
    store = ctx.store
    try:
        ref = _only_child(op.find(m("SyncFolderId")))
        top = _folder_ref(ctx, ref[0]) if ref else store.folder(ctx.acting, "root")
        since = store.read_sync_state(f"H:{top.key}", op.findtext(m("SyncState")))
    except EwsError as exc:
        msg = message(msgs, "SyncFolderHierarchy", exc.code, exc.text)
        etree.SubElement(msg, m("SyncState"))
        etree.SubElement(msg, m("IncludesLastFolderInRange")).text = "true"
        return env
    folders = _descendants(store, top, True) + [f for f in top.mailbox.folders.values() if f.deleted]
    msg = message(msgs, "SyncFolderHierarchy")
    etree.SubElement(msg, m("SyncState")).text = store.sync_state(f"H:{top.key}", store.seq)
    etree.SubElement(msg, m("IncludesLastFolderInRange")).text = "true"
    changes = etree.SubElement(msg, m("Changes"))
    for f in sorted(folders, key=lambda f: f.change_seq):
        if f.change_seq <= since:
            continue
        if f.deleted:
            if f.created_seq <= since:
                etree.SubElement(etree.SubElement(changes, t("Delete")), t("FolderId"), Id=f.id, ChangeKey=f.change_key)
            continue
        kind = "Create" if f.created_seq > since else "Update"
        etree.SubElement(changes, t(kind)).append(render_folder(store, f, base, fields + ["ParentFolderId"]))
    return env


# -- items ----------------------------------------------------------------------

def sync_folder_items(ctx: Context, op: etree._Element) -> etree._Element:
    store = ctx.store
    env, msgs = response("SyncFolderItems")
    shape = Shape(op.find(m("ItemShape")))
    try:
        limit = int(op.findtext(m("MaxChangesReturned")) or "0")
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_CHANGES:
        raise Fault("ErrorSchemaValidation", "The request failed schema validation: MaxChangesReturned "
                    f"must be from 1 to {MAX_CHANGES}.")
    ignore = {i.get("Id") for i in _only_child(op.find(m("Ignore")))}
    try:
        ref = _only_child(op.find(m("SyncFolderId")))
        if not ref:
            raise Fault("ErrorSchemaValidation", "The request failed schema validation: SyncFolderId is missing.")
        folder = _folder_ref(ctx, ref[0])
        since = store.read_sync_state(f"I:{folder.key}", op.findtext(m("SyncState")))
    except EwsError as exc:
        msg = message(msgs, "SyncFolderItems", exc.code, exc.text)
        etree.SubElement(msg, m("SyncState"))
        etree.SubElement(msg, m("IncludesLastItemInRange")).text = "true"
        return env
    changes, seq, last = store.item_changes(folder, since, limit)
    msg = message(msgs, "SyncFolderItems")
    etree.SubElement(msg, m("SyncState")).text = store.sync_state(f"I:{folder.key}", seq)
    etree.SubElement(msg, m("IncludesLastItemInRange")).text = "true" if last else "false"
    out = etree.SubElement(msg, m("Changes"))
    for change, item_id in changes:
        if item_id in ignore:
            continue
        node = etree.SubElement(out, t(change))
        item = store.items.get(item_id)
        if change == "Delete" or item is None:
            etree.SubElement(node, t("ItemId"), Id=item_id)
            if change != "Delete":
                node.tag = t("Delete")
        elif change == "ReadFlagChange":
            etree.SubElement(node, t("ItemId"), Id=item.id, ChangeKey=item.change_key)
            etree.SubElement(node, t("IsRead")).text = item.elem.findtext(t("IsRead")) or "false"
        else:
            node.append(render_item(store, item, shape))
    ctx.log.append({"op": "SyncFolderItems", "folder": folder.key, "changes": len(changes)})
    return env


def get_item(ctx: Context, op: etree._Element) -> etree._Element:
    shape = Shape(op.find(m("ItemShape")))
    env, msgs = response("GetItem")
    for ref in _only_child(op.find(m("ItemIds"))):
        try:
            item = _item_ref(ctx, ref)
        except EwsError as exc:
            msg = message(msgs, "GetItem", exc.code, exc.text)
            etree.SubElement(msg, m("Items"))
            continue
        msg = message(msgs, "GetItem")
        etree.SubElement(msg, m("Items")).append(render_item(ctx.store, item, shape))
    return env


def _field_value(item: Item, uri_elem: etree._Element) -> str | None:
    name = etree.QName(uri_elem).localname
    if name == "FieldURI":
        found = item.elem.find(t(field_element_name(uri_elem.get("FieldURI", ""))))
        return None if found is None else (found.text or "")
    if name == "ExtendedFieldURI":
        from tests.ews_emulator.soap import _ext_matches

        for p in item.elem.findall(t("ExtendedProperty")):
            if _ext_matches(p.find(t("ExtendedFieldURI")), uri_elem):
                return p.findtext(t("Value"))
        return None
    return None


def _matches(item: Item, cond: etree._Element) -> bool:
    name = etree.QName(cond).localname
    kids = _only_child(cond)
    if name == "And":
        return all(_matches(item, c) for c in kids)
    if name == "Or":
        return any(_matches(item, c) for c in kids)
    if name == "Not":
        return not _matches(item, kids[0])
    if name == "Exists":
        return _field_value(item, kids[0]) is not None
    if name in ("IsEqualTo", "IsNotEqualTo", "Contains"):
        value = _field_value(item, kids[0])
        const = kids[1].find(t("Constant")) if len(kids) > 1 else None
        wanted = const.get("Value") if const is not None else cond.find(t("Constant")).get("Value")
        if name == "Contains":
            return value is not None and (wanted or "").lower() in value.lower()
        same = value is not None and value == wanted
        return same if name == "IsEqualTo" else not same
    raise Fault("ErrorUnsupportedQueryFilter", f"The restriction {name} is not supported by this server.")


def find_item(ctx: Context, op: etree._Element) -> etree._Element:
    shape = Shape(op.find(m("ItemShape")))
    view = op.find(m("IndexedPageItemView"))
    restriction = op.find(m("Restriction"))
    env, msgs = response("FindItem")
    for ref in _only_child(op.find(m("ParentFolderIds"))):
        try:
            folder = _folder_ref(ctx, ref)
        except EwsError as exc:
            message(msgs, "FindItem", exc.code, exc.text)
            continue
        items = [ctx.store.items[i] for i in folder.live_ids() if i in ctx.store.items]
        if restriction is not None and len(restriction):
            items = [i for i in items if _matches(i, _only_child(restriction)[0])]
        offset, limit = 0, len(items)
        if view is not None:
            offset = int(view.get("Offset", "0"))
            limit = int(view.get("MaxEntriesReturned", str(len(items))))
        page = items[offset:offset + limit]
        last = offset + len(page) >= len(items)
        msg = message(msgs, "FindItem")
        root = etree.SubElement(msg, m("RootFolder"), TotalItemsInView=str(len(items)),
                                IncludesLastItemInRange="true" if last else "false")
        if not last:
            root.set("IndexedPagingOffset", str(offset + len(page)))
        out = etree.SubElement(root, t("Items"))
        for item in page:
            out.append(render_item(ctx.store, item, shape))
    return env


def _target_folder(ctx: Context, op: etree._Element, tag: str, kind: str) -> Folder:
    ref = _only_child(op.find(m(tag)))
    if ref:
        return _folder_ref(ctx, ref[0])
    default = {"Message": "drafts", "CalendarItem": "calendar", "Contact": "contacts", "Task": "tasks"}.get(kind, "drafts")
    return ctx.store.folder(ctx.acting, default)


def create_item(ctx: Context, op: etree._Element) -> etree._Element:
    env, msgs = response("CreateItem")
    ctx.log.append({"op": "CreateItem", "write": True})
    for elem in _only_child(op.find(m("Items"))):
        kind = etree.QName(elem).localname
        try:
            folder = _target_folder(ctx, op, "SavedItemFolderId", kind)
        except EwsError as exc:
            msg = message(msgs, "CreateItem", exc.code, exc.text)
            etree.SubElement(msg, m("Items"))
            continue
        new = deepcopy(elem)
        _store_defaults(kind, new)
        order(kind, new)
        item = ctx.store.create(folder, new)
        msg = message(msgs, "CreateItem")
        etree.SubElement(etree.SubElement(msg, m("Items")), t(kind)).append(
            etree.Element(t("ItemId"), Id=item.id, ChangeKey=item.change_key))
    return env


def _store_defaults(kind: str, elem: etree._Element) -> None:
    """What the mailbox store fills in on an item saved without it."""
    stamp = now_utc().strftime("%Y-%m-%dT%H:%M:%SZ")
    defaults = [("ItemClass", {"Message": "IPM.Note", "CalendarItem": "IPM.Appointment", "Contact": "IPM.Contact",
                               "Task": "IPM.Task"}.get(kind, "IPM.Note")),
                ("Sensitivity", "Normal"), ("DateTimeReceived", stamp), ("Importance", "Normal"),
                ("IsSubmitted", "false"), ("IsDraft", "true" if kind in ("Message", "Task") else "false"),
                ("IsFromMe", "false"), ("IsResend", "false"), ("IsUnmodified", "false"), ("DateTimeSent", stamp),
                ("HasAttachments", "false")]
    if kind == "Task":
        defaults += [("PercentComplete", "0"), ("Status", "NotStarted")]
    if kind == "Message":
        defaults += [("IsRead", "true")]
    for name, value in defaults:
        if elem.find(t(name)) is None:
            etree.SubElement(elem, t(name)).text = value
    if elem.find(t("Body")) is None:
        etree.SubElement(elem, t("Body"), BodyType="Text")


#: the enumerations of the indexed contact properties' keys (types.xsd)
_INDEX_KEYS = {
    "contacts:EmailAddress": ("EmailAddressKeyType", {"EmailAddress1", "EmailAddress2", "EmailAddress3"}),
    "contacts:ImAddress": ("ImAddressKeyType", {"ImAddress1", "ImAddress2", "ImAddress3"}),
    "contacts:PhoneNumber": ("PhoneNumberKeyType", {
        "AssistantPhone", "BusinessFax", "BusinessPhone", "BusinessPhone2", "Callback", "CarPhone", "CompanyMainPhone",
        "HomeFax", "HomePhone", "HomePhone2", "Isdn", "MobilePhone", "OtherFax", "OtherTelephone", "Pager",
        "PrimaryPhone", "RadioPhone", "Telex", "TtyTddPhone"}),
}


def _validate_update(update: etree._Element) -> None:
    kids = _only_child(update)
    if not kids:
        raise Fault("ErrorSchemaValidation", "The request failed schema validation: an update names no property.")
    uri = kids[0]
    known = _INDEX_KEYS.get(uri.get("FieldURI", "")) if etree.QName(uri).localname == "IndexedFieldURI" else None
    if known is None:
        return
    type_name, keys = known
    for key in [uri.get("FieldIndex", "")] + [e.get("Key", "") for e in update.iter(t("Entry"))]:
        if key not in keys:
            raise Fault("ErrorSchemaValidation",
                        f"The request failed schema validation: The 'Key' attribute is invalid - The value '{key}' "
                        f"is invalid according to its data type '{TNS}:{type_name}' - The Enumeration constraint "
                        "failed.")


def _apply_update(item: Item, update: etree._Element) -> bool:
    """One SetItemField / AppendToItemField / DeleteItemField; True if only IsRead changed."""
    kind = etree.QName(update).localname
    kids = _only_child(update)
    uri = kids[0]
    uri_kind = etree.QName(uri).localname
    elem = item.elem
    if uri_kind == "ExtendedFieldURI":
        from tests.ews_emulator.soap import _ext_matches

        for p in elem.findall(t("ExtendedProperty")):
            if _ext_matches(p.find(t("ExtendedFieldURI")), uri):
                elem.remove(p)
        if kind != "DeleteItemField":
            for p in kids[1].findall(t("ExtendedProperty")):
                elem.append(deepcopy(p))
        return False
    if uri_kind == "IndexedFieldURI":
        container = {"contacts:EmailAddress": "EmailAddresses", "contacts:PhoneNumber": "PhoneNumbers",
                     "contacts:ImAddress": "ImAddresses"}.get(uri.get("FieldURI", ""), "PhysicalAddresses")
        key = uri.get("FieldIndex")
        box = elem.find(t(container))
        if box is not None:
            for entry in list(box):
                if entry.get("Key") == key:
                    box.remove(entry)
        if kind != "DeleteItemField":
            new_box = kids[1].find(t(container))
            if box is None:
                box = etree.SubElement(elem, t(container))
            for entry in new_box if new_box is not None else ():
                box.append(deepcopy(entry))
        elif box is not None and not len(box):
            elem.remove(box)
        return False
    name = field_element_name(uri.get("FieldURI", ""))
    old = elem.find(t(name))
    if kind == "DeleteItemField":
        if old is not None:
            elem.remove(old)
        return False
    new = kids[1].find(t(name))
    if new is None:
        raise EwsError("ErrorInvalidPropertySet", f"The property {name} is missing from the item.")
    if kind == "AppendToItemField" and old is not None:
        for c in new:
            old.append(deepcopy(c))
        return False
    if old is not None:
        elem.replace(old, deepcopy(new))
    else:
        elem.append(deepcopy(new))
    return name == "IsRead"


def update_item(ctx: Context, op: etree._Element) -> etree._Element:
    env, msgs = response("UpdateItem")
    ctx.log.append({"op": "UpdateItem", "write": True})
    policy = op.get("ConflictResolution", "AutoResolve")
    changes = _only_child(op.find(m("ItemChanges")))
    for change in changes:  # a schema violation refuses the whole request, before anything changes
        for update in _only_child(change.find(t("Updates"))):
            _validate_update(update)
    for change in changes:
        try:
            ref = change.find(t("ItemId"))
            if ref is None:
                raise EwsError("ErrorInvalidIdMalformed", "Id is malformed.")
            item = _item_ref(ctx, ref)
            if policy == "NeverOverwrite" and ref.get("ChangeKey") not in (None, item.change_key):
                raise EwsError("ErrorIrresolvableConflict",
                               "The send or update operation could not be performed because the change key passed "
                               "in the request does not match the current change key for the item.")
            read_only = True
            for update in _only_child(change.find(t("Updates"))):
                read_only = _apply_update(item, update) and read_only
            order(item.kind, item.elem)
            ctx.store.touch(item, read_only=read_only)
        except EwsError as exc:
            msg = message(msgs, "UpdateItem", exc.code, exc.text)
            etree.SubElement(msg, m("Items"))
            continue
        msg = message(msgs, "UpdateItem")
        etree.SubElement(etree.SubElement(msg, m("Items")), t(item.kind)).append(
            etree.Element(t("ItemId"), Id=item.id, ChangeKey=item.change_key))
        etree.SubElement(msg, m("ConflictResults")).append(etree.Element(t("Count")))
        msg[-1][0].text = "0"
    return env


def delete_item(ctx: Context, op: etree._Element) -> etree._Element:
    env, msgs = response("DeleteItem")
    ctx.log.append({"op": "DeleteItem", "write": True})
    hard = op.get("DeleteType", "MoveToDeletedItems")
    for ref in _only_child(op.find(m("ItemIds"))):
        try:
            item = _item_ref(ctx, ref)
        except EwsError as exc:
            message(msgs, "DeleteItem", exc.code, exc.text)
            continue
        if hard == "MoveToDeletedItems" and item.folder.distinguished != "deleteditems":
            ctx.store.move(item, ctx.store.folder(item.folder.mailbox.address, "deleteditems"))
        else:
            ctx.store.delete(item)
        message(msgs, "DeleteItem")
    return env


def move_item(ctx: Context, op: etree._Element) -> etree._Element:
    env, msgs = response("MoveItem")
    ctx.log.append({"op": "MoveItem", "write": True})
    try:
        target = _folder_ref(ctx, _only_child(op.find(m("ToFolderId")))[0])
    except EwsError as exc:
        message(msgs, "MoveItem", exc.code, exc.text)
        return env
    for ref in _only_child(op.find(m("ItemIds"))):
        try:
            item = _item_ref(ctx, ref)
        except EwsError as exc:
            msg = message(msgs, "MoveItem", exc.code, exc.text)
            etree.SubElement(msg, m("Items"))
            continue
        moved = ctx.store.move(item, target)
        msg = message(msgs, "MoveItem")
        etree.SubElement(etree.SubElement(msg, m("Items")), t(moved.kind)).append(
            etree.Element(t("ItemId"), Id=moved.id, ChangeKey=moved.change_key))
    return env


# -- directory and plumbing -----------------------------------------------------

def resolve_names(ctx: Context, op: etree._Element) -> etree._Element:
    env, msgs = response("ResolveNames")
    entry = (op.findtext(m("UnresolvedEntry")) or "").strip().lower()
    if entry.startswith("smtp:"):
        entry = entry[5:]
    hits = [b for b in ctx.store.mailboxes.values()
            if entry and (entry in b.address or entry in b.name.lower())]
    if not hits:
        message(msgs, "ResolveNames", "ErrorNameResolutionNoResults", "No results were found.")
        return env
    code = "NoError" if len(hits) == 1 else "ErrorNameResolutionMultipleResults"
    msg = message(msgs, "ResolveNames", code, "Multiple results were found." if len(hits) > 1 else "")
    if code != "NoError":
        msg.set("ResponseClass", "Warning")
    rs = etree.SubElement(msg, m("ResolutionSet"), TotalItemsInView=str(len(hits)), IncludesLastItemInRange="true")
    full = op.get("ReturnFullContactData", "false") == "true"
    for b in hits:
        res = etree.SubElement(rs, t("Resolution"))
        box = etree.SubElement(res, t("Mailbox"))
        etree.SubElement(box, t("Name")).text = b.name
        etree.SubElement(box, t("EmailAddress")).text = b.address
        etree.SubElement(box, t("RoutingType")).text = "SMTP"
        etree.SubElement(box, t("MailboxType")).text = "Mailbox"
        if full:
            contact = etree.SubElement(res, t("Contact"))
            etree.SubElement(contact, t("DisplayName")).text = b.name
            addrs = etree.SubElement(contact, t("EmailAddresses"))
            etree.SubElement(addrs, t("Entry"), Key="EmailAddress1").text = f"SMTP:{b.address}"
            etree.SubElement(contact, t("ContactSource")).text = "ActiveDirectory"
    return env


def convert_id(ctx: Context, op: etree._Element) -> etree._Element:
    """Only what clients use it for here: a cheap request to learn the server version."""
    env, msgs = response("ConvertId")
    for _ in _only_child(op.find(m("SourceIds"))):
        message(msgs, "ConvertId", "ErrorInvalidIdMalformed", "Id is malformed.")
    return env


OPERATIONS: dict[str, Callable[[Context, etree._Element], etree._Element]] = {
    "GetFolder": get_folder,
    "FindFolder": find_folder,
    "CreateFolder": create_folder,
    "SyncFolderHierarchy": sync_folder_hierarchy,
    "SyncFolderItems": sync_folder_items,
    "GetItem": get_item,
    "FindItem": find_item,
    "CreateItem": create_item,
    "UpdateItem": update_item,
    "DeleteItem": delete_item,
    "MoveItem": move_item,
    "ResolveNames": resolve_names,
    "ConvertId": convert_id,
}


def matches_glob(path: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(path.lower(), pattern.lower())


__all__ = ["OPERATIONS", "Context", "Fault", "TNS", "now_utc", "matches_glob"]
