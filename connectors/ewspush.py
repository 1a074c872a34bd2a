"""Follow-up tasks into an Exchange task folder, each with a stable identity.

Every pushed Task item carries the CRM task's uid in a named extended
property (PublicStrings, ``crm-bridge-task-uid``).  Before writing, the
folder's tasks with that property are listed once (FindItem), so a crash
between CreateItem and the local commit ends with the task found, not
created twice.  A task whose ChangeKey differs from the one stored at the
last push was changed in Outlook: the client's version wins and comes back
as a conflict (the engine records it).  A task pushed before and gone from
the folder is reported ``gone`` (the engine decides: cancel, or upload
again when it was edited in the CRM).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from connectors.ewsitems import task_state
from crm_core.records import Location, PushResult, TaskPush

_STATUS = {"NEEDS-ACTION": "NotStarted", "IN-PROCESS": "InProgress", "COMPLETED": "Completed", "CANCELLED": "Deferred"}
_FIELDS = ("id", "changekey", "crm_task_uid", "subject", "status", "due_date", "complete_date", "last_modified_time",
           "text_body")


def _due(value: date | datetime | None) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    return value


def push_tasks(conn: Any, folder: Any, scope: str, tasks: list[TaskPush]) -> list[PushResult]:
    from exchangelib import Body
    from exchangelib.items import Task

    listed = conn._call(lambda: list(folder.all().only(*_FIELDS)))
    ours = {t.crm_task_uid: t for t in listed if getattr(t, "crm_task_uid", None)}
    results = []
    for push in tasks:
        found = ours.get(push.uid)
        try:
            if found is not None and push.etag and found.changekey != push.etag:
                state = task_state(found, push.uid, Location(scope, found.id, found.changekey))
                results.append(PushResult(push.uid, False, scope, found.id, found.changekey, conflict=state))
                continue
            if found is None and push.href:
                results.append(PushResult(push.uid, False, scope, push.href, push.etag, gone=True))
                continue
            item = found if found is not None else Task(folder=folder, account=folder.account)
            item.subject = push.summary[:255]
            item.body = Body(push.description or "")
            item.due_date = _due(push.due)
            item.status = _STATUS.get(push.status, "NotStarted")
            item.percent_complete = Decimal(100 if item.status == "Completed" else 0)
            if found is None:
                item.crm_task_uid = push.uid
                conn._call(item.save)
            else:
                conn._call(item.save, update_fields=["subject", "body", "due_date", "status", "percent_complete"])
            results.append(PushResult(push.uid, True, scope, item.id, item.changekey))
        except Exception as exc:  # noqa: BLE001 - one task's failure is that task's result
            from exchangelib.errors import EWSError

            if not isinstance(exc, EWSError):
                raise
            results.append(PushResult(push.uid, False, scope, push.href, push.etag, error=f"{type(exc).__name__}: {exc}"))
    return results
