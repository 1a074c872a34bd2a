"""SOAP envelopes and item shapes as Exchange Server sends them.

Responses follow the samples of Microsoft's EWS reference: a ``soap:Header``
with ``t:ServerVersionInfo``, a ``<Operation>Response`` in the messages
namespace holding ``m:ResponseMessages`` with one ``m:<Operation>ResponseMessage``
per request item, each with ``ResponseClass`` and ``m:ResponseCode``
(``m:MessageText`` and ``m:DescriptiveLinkKey`` first when it is an error).
Errors about the whole request (a schema violation, impersonation refused,
server busy) are SOAP faults with the code in ``detail``, as Exchange sends
them with HTTP 500.
"""

from __future__ import annotations

from copy import deepcopy
from typing import Iterable

from lxml import etree

from tests.ews_emulator.model import MNS, TNS, Folder, Item, Store, ews_time, t

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
ENS = "http://schemas.microsoft.com/exchange/services/2006/errors"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
XSD = "http://www.w3.org/2001/XMLSchema"
#: Exchange Server 2019 CU12, as it reports itself
SERVER_VERSION = {"MajorVersion": "15", "MinorVersion": "2", "MajorBuildNumber": "1118", "MinorBuildNumber": "7",
                  "Version": "V2017_07_11"}


def m(name: str) -> str:
    return f"{{{MNS}}}{name}"


def envelope(body_child: etree._Element | None = None) -> tuple[etree._Element, etree._Element]:
    env = etree.Element(f"{{{SOAP}}}Envelope", nsmap={"s": SOAP})
    header = etree.SubElement(env, f"{{{SOAP}}}Header")
    etree.SubElement(header, f"{{{TNS}}}ServerVersionInfo", SERVER_VERSION,
                     nsmap={"h": TNS, "xsd": XSD, "xsi": XSI})
    body = etree.SubElement(env, f"{{{SOAP}}}Body", nsmap={"xsi": XSI, "xsd": XSD})
    if body_child is not None:
        body.append(body_child)
    return env, body


def response(operation: str) -> tuple[etree._Element, etree._Element]:
    """(envelope, m:ResponseMessages) of ``<operation>Response``."""
    env, body = envelope()
    resp = etree.SubElement(body, m(f"{operation}Response"), nsmap={"m": MNS, "t": TNS})
    messages = etree.SubElement(resp, m("ResponseMessages"))
    return env, messages


def message(parent: etree._Element, operation: str, code: str = "NoError", text: str = "") -> etree._Element:
    if code == "NoError":
        msg = etree.SubElement(parent, m(f"{operation}ResponseMessage"), ResponseClass="Success")
    else:
        msg = etree.SubElement(parent, m(f"{operation}ResponseMessage"), ResponseClass="Error")
        etree.SubElement(msg, m("MessageText")).text = text or code
    etree.SubElement(msg, m("ResponseCode")).text = code
    if code != "NoError":
        etree.SubElement(msg, m("DescriptiveLinkKey")).text = "0"
    return msg


def fault(code: str, text: str, extra: dict[str, str] | None = None, faultcode: str = "a:" ) -> etree._Element:
    """A SOAP fault as Exchange sends for request-level errors."""
    env, body = envelope()
    f = etree.SubElement(body, f"{{{SOAP}}}Fault")
    fc = etree.SubElement(f, "faultcode", nsmap={"a": ENS})
    fc.text = f"a:{code}"
    etree.SubElement(f, "faultstring", {"{http://www.w3.org/XML/1998/namespace}lang": "en-US"}).text = text
    detail = etree.SubElement(f, "detail")
    etree.SubElement(detail, f"{{{ENS}}}ResponseCode", nsmap={"e": ENS}).text = code
    etree.SubElement(detail, f"{{{ENS}}}Message", nsmap={"e": ENS}).text = text
    if extra:
        xml = etree.SubElement(detail, f"{{{TNS}}}MessageXml", nsmap={"t": TNS})
        for name, value in extra.items():
            etree.SubElement(xml, f"{{{TNS}}}Value", Name=name).text = value
    return env


def to_bytes(env: etree._Element) -> bytes:
    return etree.tostring(env, xml_declaration=True, encoding="utf-8")


# -- item shapes ------------------------------------------------------------------

#: schema order of the children of each item type (ItemType first, then the type's own)
_ITEM = ["MimeContent", "ItemId", "ParentFolderId", "ItemClass", "Subject", "Sensitivity", "Body", "Attachments",
         "DateTimeReceived", "Size", "Categories", "Importance", "InReplyTo", "IsSubmitted", "IsDraft", "IsFromMe",
         "IsResend", "IsUnmodified", "InternetMessageHeaders", "DateTimeSent", "DateTimeCreated", "ResponseObjects",
         "ReminderDueBy", "ReminderIsSet", "ReminderNextTime", "ReminderMinutesBeforeStart", "DisplayCc",
         "DisplayTo", "HasAttachments", "ExtendedProperty", "Culture", "EffectiveRights", "LastModifiedName",
         "LastModifiedTime", "IsAssociated", "WebClientReadFormQueryString", "WebClientEditFormQueryString",
         "ConversationId", "UniqueBody", "Flag", "StoreEntryId", "InstanceKey", "NormalizedBody", "EntityExtractionResult",
         "PolicyTag", "ArchiveTag", "RetentionDate", "Preview", "RightsManagementLicenseData", "PredictedActionReasons",
         "IsClutter", "TextBody", "IconIndex", "SearchKey", "SortKey", "Hashtags", "Mentions", "MentionedMe"]
_ORDER = {
    "Message": _ITEM[:_ITEM.index("UniqueBody") + 1] + [
        "Sender", "ToRecipients", "CcRecipients", "BccRecipients", "IsReadReceiptRequested",
        "IsDeliveryReceiptRequested", "ConversationIndex", "ConversationTopic", "From", "InternetMessageId", "IsRead",
        "IsResponseRequested", "References", "ReplyTo", "ReceivedBy", "ReceivedRepresenting", "ReminderMessageData"]
        + _ITEM[_ITEM.index("UniqueBody") + 1:],
    "CalendarItem": _ITEM + [
        "UID", "RecurrenceId", "DateTimeStamp", "Start", "End", "OriginalStart", "IsAllDayEvent",
        "LegacyFreeBusyStatus", "Location", "When", "IsMeeting", "IsCancelled", "IsRecurring",
        "MeetingRequestWasSent", "IsResponseRequested", "CalendarItemType", "MyResponseType", "Organizer",
        "RequiredAttendees", "OptionalAttendees", "Resources", "ConflictingMeetingCount", "AdjacentMeetingCount",
        "ConflictingMeetings", "AdjacentMeetings", "Duration", "TimeZone", "AppointmentReplyTime",
        "AppointmentSequenceNumber", "AppointmentState", "Recurrence", "FirstOccurrence", "LastOccurrence",
        "ModifiedOccurrences", "DeletedOccurrences", "MeetingTimeZone", "StartTimeZone", "EndTimeZone",
        "ConferenceType", "AllowNewTimeProposal", "IsOnlineMeeting", "MeetingWorkspaceUrl", "NetShowUrl",
        "EnhancedLocation", "StartWallClock", "EndWallClock", "StartTimeZoneId", "EndTimeZoneId"],
    "Contact": _ITEM + [
        "FileAs", "FileAsMapping", "DisplayName", "GivenName", "Initials", "MiddleName", "Nickname",
        "CompleteName", "CompanyName", "EmailAddresses", "PhysicalAddresses", "PhoneNumbers", "AssistantName",
        "Birthday", "BusinessHomePage", "Children", "Companies", "ContactSource", "Department", "Generation",
        "ImAddresses", "JobTitle", "Manager", "Mileage", "OfficeLocation", "PostalAddressIndex", "Profession",
        "SpouseName", "Surname", "WeddingAnniversary", "HasPicture", "PhoneticFullName"],
    "Task": _ITEM + [
        "ActualWork", "AssignedTime", "BillingInformation", "ChangeCount", "Companies", "CompleteDate", "Contacts",
        "DelegationState", "Delegator", "DueDate", "IsAssignmentEditable", "IsComplete", "IsRecurring",
        "IsTeamTask", "Mileage", "Owner", "PercentComplete", "Recurrence", "StartDate", "Status",
        "StatusDescription", "TotalWork"],
}
_COMPUTED = {"ItemId", "ParentFolderId", "Size", "DateTimeCreated", "LastModifiedTime", "ConversationId",
             "DisplayTo", "DisplayCc", "TextBody", "IsRecurring", "ChangeCount", "IsComplete", "EffectiveRights",
             "LastModifiedName", "IsAssociated", "ResponseObjects", "Culture"}
#: properties Exchange returns for BaseShape Default
_DEFAULT = {
    "Message": ["ItemId", "Subject", "Sensitivity", "Body", "Attachments", "Size", "DateTimeSent", "DateTimeCreated",
                "ResponseObjects", "HasAttachments", "ToRecipients", "IsReadReceiptRequested",
                "IsDeliveryReceiptRequested", "From", "IsRead"],
    "CalendarItem": ["ItemId", "Subject", "Attachments", "ResponseObjects", "HasAttachments", "IsAssociated", "Start",
                     "End", "LegacyFreeBusyStatus", "Location", "CalendarItemType", "Organizer"],
    "Contact": ["ItemId", "Subject", "Attachments", "ResponseObjects", "HasAttachments", "IsAssociated", "FileAs",
                "FileAsMapping", "DisplayName", "GivenName", "CompanyName", "EmailAddresses", "PhysicalAddresses",
                "PhoneNumbers", "JobTitle", "Surname"],
    "Task": ["ItemId", "Subject", "Attachments", "ResponseObjects", "HasAttachments", "IsAssociated", "DueDate",
             "PercentComplete", "Status"],
}


def order(kind: str, elem: etree._Element) -> None:
    """Sort ``elem``'s children into the schema order of ``kind`` (stable for unknown ones)."""
    rank = {name: n for n, name in enumerate(_ORDER.get(kind, _ITEM))}
    children = list(elem)
    children.sort(key=lambda c: rank.get(etree.QName(c).localname, len(rank)))
    for c in children:
        elem.append(c)


class Shape:
    """What to return of an item: BaseShape plus AdditionalProperties."""

    def __init__(self, shape_elem: etree._Element | None):
        self.base = "Default"
        self.fields: set[str] = set()  # element local names
        self.indexed: dict[str, set[str]] = {}  # container element -> keys
        self.extended: list[etree._Element] = []
        self.body_type = "Best"
        self.mime = False
        if shape_elem is None:
            return
        base = shape_elem.find(t("BaseShape"))
        if base is not None and base.text:
            self.base = base.text.strip()
        body_type = shape_elem.find(t("BodyType"))
        if body_type is not None and body_type.text:
            self.body_type = body_type.text.strip()
        mime = shape_elem.find(t("IncludeMimeContent"))
        self.mime = mime is not None and (mime.text or "").strip() == "true"
        props = shape_elem.find(t("AdditionalProperties"))
        for p in props if props is not None else ():
            name = etree.QName(p).localname
            if name == "FieldURI":
                self.fields.add(field_element_name(p.get("FieldURI", "")))
            elif name == "IndexedFieldURI":
                container = _INDEXED.get(p.get("FieldURI", ""), "")
                self.indexed.setdefault(container, set()).add(p.get("FieldIndex", ""))
            elif name == "ExtendedFieldURI":
                self.extended.append(p)


_RENAMED = {"item:ItemId": "ItemId", "message:From": "From", "calendar:UID": "UID",
            "contacts:EmailAddresses": "EmailAddresses"}
_INDEXED = {"contacts:EmailAddress": "EmailAddresses", "contacts:PhoneNumber": "PhoneNumbers",
            "contacts:ImAddress": "ImAddresses", "contacts:PhysicalAddress:Street": "PhysicalAddresses",
            "contacts:PhysicalAddress:City": "PhysicalAddresses", "contacts:PhysicalAddress:State": "PhysicalAddresses",
            "contacts:PhysicalAddress:CountryOrRegion": "PhysicalAddresses",
            "contacts:PhysicalAddress:PostalCode": "PhysicalAddresses"}


def field_element_name(uri: str) -> str:
    """``item:Subject`` -> ``Subject``: the element a FieldURI names."""
    if uri in _RENAMED:
        return _RENAMED[uri]
    return uri.rpartition(":")[2]


def _ext_matches(prop_uri: etree._Element, wanted: etree._Element) -> bool:
    keys = ("DistinguishedPropertySetId", "PropertySetId", "PropertyTag", "PropertyName", "PropertyId", "PropertyType")
    a = {k: prop_uri.get(k) for k in keys if prop_uri.get(k) is not None}
    b = {k: wanted.get(k) for k in keys if wanted.get(k) is not None}
    if "PropertyTag" in a and "PropertyTag" in b:
        try:
            a["PropertyTag"] = str(int(a["PropertyTag"], 0))
            b["PropertyTag"] = str(int(b["PropertyTag"], 0))
        except ValueError:
            pass
    return a == b


def computed(store: Store, item: Item, name: str) -> etree._Element | None:
    elem = item.elem
    if name == "ItemId":
        return etree.Element(t("ItemId"), Id=item.id, ChangeKey=item.change_key)
    if name == "ParentFolderId":
        return etree.Element(t("ParentFolderId"), Id=item.folder.id, ChangeKey=item.folder.change_key)
    if name == "Size":
        out = etree.Element(t("Size"))
        out.text = str(len(etree.tostring(elem)) + 512)
        return out
    if name in ("DateTimeCreated", "LastModifiedTime"):
        out = etree.Element(t(name))
        out.text = ews_time(item.created if name == "DateTimeCreated" else item.modified)
        return out
    if name == "ConversationId":
        topic = elem.findtext(t("ConversationTopic")) or elem.findtext(t("Subject")) or ""
        import base64
        import hashlib

        cid = base64.b64encode(b"CONV" + hashlib.sha1(topic.encode()).digest()).decode()
        return etree.Element(t("ConversationId"), Id=cid)
    if name in ("DisplayTo", "DisplayCc"):
        box = elem.find(t("ToRecipients" if name == "DisplayTo" else "CcRecipients"))
        out = etree.Element(t(name))
        out.text = "; ".join(x.findtext(t("Name")) or "" for x in (box if box is not None else ()))
        return out
    if name == "TextBody":
        body = elem.find(t("Body"))
        out = etree.Element(t("TextBody"), BodyType="Text")
        out.text = _plain(body)
        return out
    if name == "IsRecurring" and item.kind in ("CalendarItem", "Task"):
        out = etree.Element(t("IsRecurring"))
        out.text = "true" if elem.find(t("Recurrence")) is not None else "false"
        return out
    if name == "IsComplete" and item.kind == "Task":
        out = etree.Element(t("IsComplete"))
        out.text = "true" if elem.findtext(t("Status")) == "Completed" else "false"
        return out
    if name == "ChangeCount" and item.kind == "Task":
        out = etree.Element(t("ChangeCount"))
        out.text = str(item.version)
        return out
    return None


def _plain(body: etree._Element | None) -> str:
    if body is None:
        return ""
    text = body.text or ""
    if body.get("BodyType") == "HTML":
        import re

        text = re.sub(r"<[^>]+>", " ", text)
    return text


def render_item(store: Store, item: Item, shape: Shape) -> etree._Element:
    """The item as a response carries it under ``shape``."""
    kind = item.kind
    out = etree.Element(t(kind))
    if shape.base == "IdOnly":
        wanted = {"ItemId"}
    elif shape.base == "AllProperties":
        wanted = set(_ORDER.get(kind, _ITEM)) - {"MimeContent", "TextBody", "UniqueBody"}
    else:
        wanted = set(_DEFAULT.get(kind, ["ItemId", "Subject"]))
    wanted |= shape.fields
    for name in _ORDER.get(kind, _ITEM):
        if name not in wanted and name not in shape.indexed:
            continue
        if name == "ExtendedProperty":
            continue
        if name == "MimeContent" and not shape.mime:
            continue
        node = computed(store, item, name) if name in _COMPUTED else None
        if node is None:
            found = item.elem.find(t(name))
            if found is None:
                continue
            node = deepcopy(found)
            if name in shape.indexed and name not in wanted:
                keys = shape.indexed[name]
                for entry in list(node):
                    if entry.get("Key") not in keys:
                        node.remove(entry)
                if not len(node):
                    continue
        out.append(node)
        if name == "Body" and shape.body_type == "Text" and node.get("BodyType") == "HTML":
            node.text = _plain(node)
            node.set("BodyType", "Text")
    if shape.mime and "MimeContent" in wanted:
        pass
    if shape.extended:
        props = [p for p in item.elem.findall(t("ExtendedProperty"))
                 if any(_ext_matches(p.find(t("ExtendedFieldURI")), w) for w in shape.extended)]
        if props:
            position = next((i for i, c in enumerate(out)
                             if _ORDER.get(kind, _ITEM).index(etree.QName(c).localname) >
                             _ORDER.get(kind, _ITEM).index("ExtendedProperty")), len(out))
            for offset, p in enumerate(props):
                out.insert(position + offset, deepcopy(p))
    return out


def render_folder(store: Store, folder: Folder, base: str = "Default", fields: Iterable[str] = ()) -> etree._Element:
    tag = {"IPF.Appointment": "CalendarFolder", "IPF.Contact": "ContactsFolder", "IPF.Task": "TasksFolder"}.get(
        folder.folder_class, "Folder")
    out = etree.Element(t(tag))
    etree.SubElement(out, t("FolderId"), Id=folder.id, ChangeKey=folder.change_key)
    wanted = set(fields)
    if base != "IdOnly":
        wanted |= {"DisplayName", "TotalCount", "ChildFolderCount", "UnreadCount"}
    if base == "AllProperties":
        wanted |= {"ParentFolderId", "FolderClass"}
    if folder.parent is not None and "ParentFolderId" in wanted:
        etree.SubElement(out, t("ParentFolderId"), Id=folder.parent.id, ChangeKey=folder.parent.change_key)
    if "FolderClass" in wanted and folder.folder_class:
        etree.SubElement(out, t("FolderClass")).text = folder.folder_class
    if "DisplayName" in wanted:
        etree.SubElement(out, t("DisplayName")).text = folder.name
    live = folder.live_ids()
    if "TotalCount" in wanted:
        etree.SubElement(out, t("TotalCount")).text = str(len(live))
    if "ChildFolderCount" in wanted:
        etree.SubElement(out, t("ChildFolderCount")).text = str(len(store.children(folder)))
    if "UnreadCount" in wanted and tag == "Folder":
        at = folder.log_seqs[-1] if folder.log_seqs else 0  # every change to an item is logged (Store._log)
        if folder.unread_at is None or folder.unread_at[0] != at:
            unread = sum(1 for i in live if i in store.items and store.items[i].elem.findtext(t("IsRead")) == "false")
            folder.unread_at = (at, unread)
        etree.SubElement(out, t("UnreadCount")).text = str(folder.unread_at[1])
    return out
