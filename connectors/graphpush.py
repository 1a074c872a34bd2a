"""Follow-up tasks into a Microsoft To Do list, each with a stable identity.

Every pushed task carries a ``linkedResource`` (applicationName
``crm-bridge``, externalId the CRM task's uid).  Before writing, the list's
tasks are read once with their linked resources, so a crash between the
POST and the local commit ends with the task found and updated, not created
twice.  A task whose ``@odata.etag`` differs from the one stored at the
last push was changed in To Do / Outlook: the client's version wins and
comes back as a conflict (the engine records it).  A task pushed before and
gone from the list is reported ``gone``.  The list is created when missing.

Customer and contact cards (``[push] cards``) go to the contacts folder
``cards_folder`` (a folder below Contacts, created when missing) the same
way: each contact carries the card's uid in a named extended property (the
same MAPI property, PublicStrings ``crm-bridge-card-uid``, as the Exchange
connector writes), the folder's contacts are listed once with it, so a crash
between the POST and the local commit ends with the contact found and
updated, not created twice.  A contact whose changeKey moved since the last
push was edited in Outlook: it is left alone and reported as a conflict, and
the engine stops updating it.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from crm_bridge.connectors.base import ConnectorError, SourceUnavailable, TransientError
from crm_bridge.connectors.graphitems import task as task_state
from crm_bridge.connectors.m365 import WriteUnconfirmed
from crm_bridge.crm_core.records import CardPush, Location, PushResult, TaskPush

if TYPE_CHECKING:
    from crm_bridge.connectors.m365 import M365Connector

APP_NAME = "crm-bridge"
_STATUS = {"NEEDS-ACTION": "notStarted", "IN-PROCESS": "inProgress", "COMPLETED": "completed",
           "CANCELLED": "deferred"}


def _all(conn: "M365Connector", url: str) -> list[dict]:
    out: list[dict] = []
    while url:
        page = conn._request(url)
        out += [i for i in page.get("value") or () if isinstance(i, dict)]
        url = page.get("@odata.nextLink") or ""
    return out


def find_list(conn: "M365Connector", create: bool) -> str | None:
    """The id of the To Do list ``tasks_list``; created when missing and ``create``."""
    name = conn.tasks_list or "CRM"
    for lst in _all(conn, f"{conn._user()}/todo/lists"):
        if str(lst.get("displayName", "")).lower() == name.lower() and lst.get("id"):
            return str(lst["id"])
    if not create:
        return None
    made = conn._request(f"{conn._user()}/todo/lists", "POST", {"displayName": name})
    if not made.get("id"):
        raise ConnectorError(f"Microsoft To Do did not create the list {name!r} in {conn.mailbox}")
    return str(made["id"])


def _uid_of(task: dict) -> str:
    for lr in task.get("linkedResources") or ():
        if isinstance(lr, dict) and lr.get("applicationName") == APP_NAME and lr.get("externalId"):
            return str(lr["externalId"])
    return ""


def crm_uid(conn: "M365Connector", scope: str, item: dict) -> str:
    """The CRM uid of a task read through the tasks delta ("" for a task the CRM did not push)."""
    uid = _uid_of(item)
    if uid or "linkedResources" in item:
        return uid
    # the tasks delta does not expand linked resources: ask for this task's (few change between runs)
    from crm_bridge.connectors.m365 import _Gone

    try:
        links = conn._request(f"{conn._user()}/todo/lists/{_list_of(conn)}/tasks/{item['id']}/linkedResources")
    except _Gone:  # deleted since the delta was read: the next delta says so
        return ""
    return _uid_of({"linkedResources": links.get("value") or []})


def _list_of(conn: "M365Connector") -> str:
    if conn._list_id is None:
        conn._list_id = find_list(conn, create=False) or ""
    return conn._list_id


def _when(value: date | datetime | None) -> dict | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        value = value.astimezone(timezone.utc).date() if value.tzinfo else value.date()
    return {"dateTime": f"{value.isoformat()}T00:00:00.0000000", "timeZone": "UTC"}


def _body(push: TaskPush) -> dict[str, Any]:
    body: dict[str, Any] = {"title": push.summary[:255], "body": {"content": push.description or "", "contentType": "text"},
                            "status": _STATUS.get(push.status, "notStarted"), "dueDateTime": _when(push.due)}
    if push.status == "COMPLETED" and push.completed is not None:
        body["completedDateTime"] = {"dateTime": push.completed.astimezone(timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": "UTC"}
    return body


def push_tasks(conn: "M365Connector", tasks: list[TaskPush]) -> list[PushResult]:
    list_id = find_list(conn, create=True)
    conn._list_id = list_id
    scope = conn.tasks_scope
    base = f"{conn._user()}/todo/lists/{list_id}/tasks"
    ours = {uid: t for t in _all(conn, f"{base}?$expand=linkedResources") if (uid := _uid_of(t))}
    results = []
    for push in tasks:
        found = ours.get(push.uid)
        etag = str(found.get("@odata.etag") or "") if found else ""
        if found is not None and push.etag and etag != push.etag:
            state = task_state(found, push.uid, Location(scope, found["id"], etag))
            results.append(PushResult(push.uid, False, scope, found["id"], etag, conflict=state))
            continue
        if found is None and push.href:
            results.append(PushResult(push.uid, False, scope, push.href, push.etag, gone=True))
            continue
        body = _body(push)
        try:
            if found is None:
                body["linkedResources"] = [{"applicationName": APP_NAME, "displayName": "CRM task",
                                            "externalId": push.uid}]
                saved = conn._request(base, "POST", body)
            else:
                saved = conn._request(f"{base}/{found['id']}", "PATCH", body)
        except WriteUnconfirmed as exc:  # perhaps stored: the next run's linkedResources lookup finds it
            results.append(PushResult(push.uid, False, scope, push.href, push.etag, error=str(exc)))
            continue
        if not saved.get("id"):
            results.append(PushResult(push.uid, False, scope, push.href, push.etag, error="To Do answered without an id"))
            continue
        results.append(PushResult(push.uid, True, scope, str(saved["id"]), str(saved.get("@odata.etag") or "")))
    return results


#: PublicStrings {00020329-0000-0000-C000-000000000046}, named crm-bridge-card-uid (as connectors/exchange.py)
CARD_PROPERTY = "String {00020329-0000-0000-C000-000000000046} Name crm-bridge-card-uid"


def find_contact_folder(conn: "M365Connector", create: bool) -> str | None:
    """The id of the contacts folder ``cards_folder`` below Contacts; created when missing and ``create``."""
    name = conn.cards_folder or "CRM"
    for folder in _all(conn, f"{conn._user()}/contactFolders?$top=100"):
        if str(folder.get("displayName", "")).lower() == name.lower() and folder.get("id"):
            return str(folder["id"])
    if not create:
        return None
    made = conn._request(f"{conn._user()}/contactFolders", "POST", {"displayName": name})
    if not made.get("id"):
        raise ConnectorError(f"Outlook did not create the contacts folder {name!r} in {conn.mailbox}")
    return str(made["id"])


def _card_uid(contact: dict) -> str:
    for prop in contact.get("singleValueExtendedProperties") or ():
        if isinstance(prop, dict) and str(prop.get("id", "")).lower() == CARD_PROPERTY.lower():
            return str(prop.get("value") or "")
    return ""


def _contact(push: CardPush) -> dict[str, Any]:
    """Graph's contact properties for the vCard crm_core/cards.py wrote."""
    from crm_bridge.connectors.ewspush import parse_card

    props = parse_card(push.vcard)
    first = lambda key: (props.get(key) or [""])[0]  # noqa: E731
    name, org = first("FN"), first("ORG")
    is_org = first("KIND").lower() == "org"
    display = (name or org or push.uid)[:255]
    given, _, family = display.rpartition(" ") if not is_org else ("", "", "")
    return {"displayName": display, "fileAs": display, "givenName": (given or family or None) if not is_org else None,
            "surname": (family if given else None) if not is_org else None, "companyName": org or None,
            "jobTitle": first("TITLE") or None, "businessHomePage": first("URL") or None,
            "emailAddresses": [{"address": e, "name": display} for e in props.get("EMAIL", [])[:3]],
            "businessPhones": props.get("TEL", [])[:2], "personalNotes": "\n".join(props.get("NOTE", []))}


def push_cards(conn: "M365Connector", cards: list[CardPush]) -> list[PushResult]:
    folder = find_contact_folder(conn, create=True)
    scope = f"Contacts/{conn.cards_folder or 'CRM'}"
    base = f"{conn._user()}/contactFolders/{folder}/contacts"
    expand = quote(f"singleValueExtendedProperties($filter=id eq '{CARD_PROPERTY}')")
    ours = {uid: c for c in _all(conn, f"{base}?$select=id,changeKey&$expand={expand}&$top=100")
            if (uid := _card_uid(c))}
    results = []
    for push in cards:
        found = ours.get(push.uid)
        key = str(found.get("changeKey") or "") if found else ""
        if found is not None and push.etag and key != push.etag:
            results.append(PushResult(push.uid, False, scope, str(found["id"]), key, error="conflict: edited in Outlook"))
            continue
        body = _contact(push)
        try:
            if found is None:
                body["singleValueExtendedProperties"] = [{"id": CARD_PROPERTY, "value": push.uid}]
                saved = conn._request(base, "POST", body)
            else:
                saved = conn._request(f"{base}/{found['id']}", "PATCH", body)
        except WriteUnconfirmed as exc:  # perhaps stored: the next run's extended-property lookup finds it
            results.append(PushResult(push.uid, False, scope, push.href, push.etag, error=str(exc)))
            continue
        except TransientError:
            raise
        except SourceUnavailable as exc:  # Graph refused this card (HTTP 400 ...): that card's result
            results.append(PushResult(push.uid, False, scope, push.href, push.etag, error=str(exc)))
            continue
        if not saved.get("id"):
            results.append(PushResult(push.uid, False, scope, push.href, push.etag, error="Outlook answered without an id"))
            continue
        ours[push.uid] = saved
        results.append(PushResult(push.uid, True, scope, str(saved["id"]), str(saved.get("changeKey") or "")))
    return results
