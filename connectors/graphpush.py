"""Follow-up tasks into a Microsoft To Do list, each with a stable identity.

Every pushed task carries a ``linkedResource`` (applicationName
``crm-bridge``, externalId the CRM task's uid).  Before writing, the list's
tasks are read once with their linked resources, so a crash between the
POST and the local commit ends with the task found and updated, not created
twice.  A task whose ``@odata.etag`` differs from the one stored at the
last push was changed in To Do / Outlook: the client's version wins and
comes back as a conflict (the engine records it).  A task pushed before and
gone from the list is reported ``gone``.  The list is created when missing.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Any

from crm_bridge.connectors.base import ConnectorError
from crm_bridge.connectors.graphitems import task as task_state
from crm_bridge.crm_core.records import Location, PushResult, TaskPush

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
        if found is None:
            body["linkedResources"] = [{"applicationName": APP_NAME, "displayName": "CRM task", "externalId": push.uid}]
            saved = conn._request(base, "POST", body)
        else:
            saved = conn._request(f"{base}/{found['id']}", "PATCH", body)
        if not saved.get("id"):
            results.append(PushResult(push.uid, False, scope, push.href, push.etag, error="To Do answered without an id"))
            continue
        results.append(PushResult(push.uid, True, scope, str(saved["id"]), str(saved.get("@odata.etag") or "")))
    return results
