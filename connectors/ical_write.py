"""iCalendar out: a VTODO for a pushed task; and the content hash that
tells a real change from a server's or client's restamping.
"""

from __future__ import annotations

import hashlib
import re
from datetime import date, datetime, timezone

from crm_bridge.crm_core.contentlines import escape_text, fold_line, split_content_line
from crm_bridge.crm_core.records import TaskPush

#: properties that change without the content changing (see normalised_hash)
IGNORED_PROPERTIES = frozenset(
    {"DTSTAMP", "LAST-MODIFIED", "PRODID", "REV", "CREATED", "X-RADICALE-NAME"}
)

_PRODID = "-//crm-bridge//crm-bridge//EN"


# --------------------------------------------------------------------------
# writing


def _utc_stamp(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def build_vtodo(task: TaskPush, now: datetime | None = None) -> str:
    """A VCALENDAR holding one VTODO for ``task`` (CRLF line ends).

    The UID is ``task.uid``; DUE is written as a date or as UTC time so no
    VTIMEZONE is needed.
    """
    now = now or datetime.now(timezone.utc)
    status = (task.status or "NEEDS-ACTION").upper()
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        f"PRODID:{_PRODID}",
        "BEGIN:VTODO",
        f"UID:{task.uid}",
        f"DTSTAMP:{_utc_stamp(now)}",
        f"SUMMARY:{escape_text(task.summary or '')}",
    ]
    if task.description:
        lines.append(f"DESCRIPTION:{escape_text(task.description)}")
    if isinstance(task.due, datetime):
        lines.append(f"DUE:{_utc_stamp(task.due)}")
    elif isinstance(task.due, date):
        lines.append(f"DUE;VALUE=DATE:{task.due.strftime('%Y%m%d')}")
    lines.append(f"STATUS:{status}")
    if status == "COMPLETED":
        lines.append(f"COMPLETED:{_utc_stamp(task.completed or now)}")
        lines.append("PERCENT-COMPLETE:100")
    lines += ["END:VTODO", "END:VCALENDAR"]
    return "\r\n".join(fold_line(line) for line in lines) + "\r\n"


# --------------------------------------------------------------------------
# comparing




def _split_content_line(line: str) -> tuple[str, str, str]:
    """(NAME, sorted params, value) of one unfolded content line."""
    split = split_content_line(line)
    if split is None:
        return line.strip().upper(), "", ""
    name, raw_params, value = split
    params = []
    for param in raw_params:
        key, _, val = param.partition("=")
        params.append(f"{key.strip().upper()}={val.strip()}")
    return name, ";".join(sorted(params)), value.rstrip()


def normalised_hash(text: str | bytes) -> str:
    """A hash of iCalendar or vCard ``text`` that ignores what servers and
    clients change without changing the content.

    Ignored: the properties in :data:`IGNORED_PROPERTIES` (DTSTAMP,
    LAST-MODIFIED, PRODID, REV, CREATED, X-RADICALE-NAME), line folding,
    line ends, the order of properties and of sub-components, the case of
    property and parameter names and the order of parameters.  SEQUENCE is
    kept: a client bumps it when it means a change.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    unfolded = re.sub(r"\n[ \t]", "", re.sub(r"\r*\n|\r+", "\n", text))  # CRLF, LF, CR, CR CR LF alike
    stack: list[list[str]] = [[]]
    names: list[str] = []
    for raw in unfolded.split("\n"):
        if not raw.strip():
            continue
        name, params, value = _split_content_line(raw)
        if name == "BEGIN":
            stack.append([])
            names.append(value.strip().upper())
            continue
        if name == "END" and len(stack) > 1:
            items = stack.pop()
            comp = names.pop()
            block = "BEGIN:" + comp + "\n" + "\n".join(sorted(items)) + "\nEND:" + comp
            stack[-1].append(block)
            continue
        if name in IGNORED_PROPERTIES:
            continue
        stack[-1].append(f"{name};{params}:{value}" if params else f"{name}:{value}")
    while len(stack) > 1:  # unterminated components still hash deterministically
        items = stack.pop()
        comp = names.pop()
        stack[-1].append("BEGIN:" + comp + "\n" + "\n".join(sorted(items)))
    canonical = "\n".join(sorted(stack[0]))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
