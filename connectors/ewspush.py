"""Follow-up tasks and customer cards into Exchange folders, each with a stable identity.

Every pushed Task item carries the CRM task's uid in a named extended
property (PublicStrings, ``crm-bridge-task-uid``).  Before writing, the
folder's tasks with that property are listed once (FindItem), so a crash
between CreateItem and the local commit ends with the task found, not
created twice.  A task whose ChangeKey differs from the one stored at the
last push was changed in Outlook: the client's version wins and comes back
as a conflict (the engine records it).  A task pushed before and gone from
the folder is reported ``gone`` (the engine decides: cancel, or upload
again when it was edited in the CRM).

Customer and contact cards (``[push] cards``) go to the contacts folder
``cards_folder`` (created below Contacts when missing) the same way: the
card's uid in the named property ``crm-bridge-card-uid``, the CRM's context
in the contact's notes, updated in place.  A contact whose ChangeKey moved
since the last push was edited in Outlook: it is left alone and reported as
a conflict, and the engine stops updating it.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from crm_bridge.connectors.ewsitems import task_state
from crm_bridge.connectors.vcard import unescape_text
from crm_bridge.crm_core.records import Location, PushResult, TaskPush

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


CARD_FIELDS = ("id", "changekey", "crm_card_uid")
_PHONE_LABELS = ("BusinessPhone", "BusinessPhone2", "MobilePhone", "OtherTelephone")


def parse_card(text: str) -> dict[str, list[str]]:
    """The properties of the vCard crm_core/cards.py writes: NAME -> values (unfolded, unescaped)."""
    lines = text.replace("\r\n ", "").replace("\r\n\t", "").replace("\n ", "").splitlines()
    out: dict[str, list[str]] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep:
            continue
        key = name.split(";", 1)[0].upper()
        out.setdefault(key, []).append(unescape_text(value) if key != "ORG" else unescape_text(value).split(";")[0])
    return out


def push_cards(conn: Any, folder: Any, scope: str, cards: list[Any]) -> list[PushResult]:
    from exchangelib import Body
    from exchangelib.indexed_properties import EmailAddress, PhoneNumber
    from exchangelib.items import Contact

    listed = conn._call(lambda: list(folder.all().only(*CARD_FIELDS)))
    ours = {c.crm_card_uid: c for c in listed if getattr(c, "crm_card_uid", None)}
    results = []
    for push in cards:
        found = ours.get(push.uid)
        try:
            if found is not None and push.etag and found.changekey != push.etag:
                results.append(PushResult(push.uid, False, scope, found.id, found.changekey,
                                          error="conflict: edited in Outlook"))
                continue
            props = parse_card(push.vcard)
            name = (props.get("FN") or [""])[0]
            org = (props.get("ORG") or [""])[0]
            item = found if found is not None else Contact(folder=folder, account=folder.account)
            item.display_name = name[:255] or org[:255] or push.uid
            item.file_as = item.display_name
            item.company_name = org or None
            item.job_title = (props.get("TITLE") or [""])[0] or None
            item.email_addresses = [EmailAddress(label=label, email=e)
                                    for label, e in zip(EmailAddress.LABEL_CHOICES, props.get("EMAIL", []))] or None
            item.phone_numbers = [PhoneNumber(label=label, phone_number=p)
                                  for label, p in zip(_PHONE_LABELS, props.get("TEL", []))] or None
            item.body = Body("\n".join(props.get("NOTE", [])))
            if found is None:
                item.crm_card_uid = push.uid
                conn._call(item.save)
            else:
                fields = ["display_name", "file_as", "company_name", "job_title", "email_addresses", "phone_numbers",
                          "body"]
                conn._call(item.save, update_fields=fields)
            results.append(PushResult(push.uid, True, scope, item.id, item.changekey))
        except Exception as exc:  # noqa: BLE001 - one card's failure is that card's result
            from exchangelib.errors import EWSError

            if not isinstance(exc, EWSError):
                raise
            results.append(PushResult(push.uid, False, scope, push.href, push.etag, error=f"{type(exc).__name__}: {exc}"))
    return results
