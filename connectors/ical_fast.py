"""The fast iCalendar reader for plain events and tasks (and simple
series, see :mod:`connectors.ical_series`): a small line parser, several
times faster than :mod:`icalendar`, that gives the same records for what it
accepts and returns None for everything else.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from crm_bridge.crm_core.records import AppointmentRecord, Attendee, Location, TaskState

from .ical_common import DESCRIPTION_LIMIT, _fold, _iana_from_name, _make_attendee, _Zones
from .ical_lines import _fast_dt, _fast_lines, _fast_split, _fast_unescape, _fint, _first, _ftext, _NotSimple
from .ical_series import _fast_recurrence_props, _fast_series

_FAST_REFUSE = frozenset({"RDATE", "EXRULE", "DURATION"})


def _fast_parse(
    text: str | bytes, location: Location, window: tuple[datetime, datetime] | None = None,
) -> list[AppointmentRecord | TaskState] | None:
    """Records of a plain text, or None when the thorough reader is needed.

    Simple series (see :func:`_fast_expand`) are expanded inside
    ``window``; without a window a text with a series needs the thorough
    reader."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    try:
        lines = _fast_lines(text)
    except _NotSimple:
        return None
    stack: list[str] = []
    tz_map: dict[str, str] = {}
    tzid = lic = ""
    items: list[tuple[str, list[tuple[str, dict[str, str], str]]]] = []
    current: list[tuple[str, dict[str, str], str]] | None = None
    calendars = 0
    for line in lines:
        if not line:
            continue
        try:
            name, params, value = _fast_split(line)
        except _NotSimple:
            return None
        if name == "BEGIN":
            comp = value.strip().upper()
            depth = len(stack)
            if depth == 0:
                if comp != "VCALENDAR" or calendars:
                    return None
                calendars += 1
            elif depth == 1:
                if comp in ("VEVENT", "VTODO"):
                    current = []
                    items.append((comp, current))
                elif comp == "VTIMEZONE":
                    tzid = lic = ""
                elif comp not in ("VJOURNAL", "VFREEBUSY", "VAVAILABILITY"):
                    return None
            elif stack[1] in ("VEVENT", "VTODO") and comp != "VALARM":
                return None
            stack.append(comp)
            continue
        if name == "END":
            if not stack or stack[-1] != value.strip().upper():
                return None
            done = stack.pop()
            if done == "VTIMEZONE" and tzid:
                iana = _iana_from_name(tzid) or _iana_from_name(lic)
                if iana:
                    tz_map[tzid] = iana
            continue
        depth = len(stack)
        if depth == 2:
            if stack[1] in ("VEVENT", "VTODO") and current is not None:
                if name in _FAST_REFUSE:
                    return None
                current.append((name, params, value))
            elif stack[1] == "VTIMEZONE":
                if name == "TZID":
                    tzid = value
                elif name == "X-LIC-LOCATION":
                    lic = value
        elif depth == 0:
            return None
    if stack or not calendars or not items:
        return None
    zones = _Zones(tz_map)
    events: dict[str, list[tuple[list, AppointmentRecord]]] = {}
    tasks: list[TaskState] = []
    try:
        for comp, props in items:
            if comp == "VEVENT":
                event = _fast_event(props, location, zones)
                events.setdefault(event.uid, []).append((props, event))
            else:
                tasks.append(_fast_task(props, location, zones))
        for group in events.values():
            if len(group) == 1 and not group[0][1].rrule and not group[0][1].recurrence_id:
                continue  # a single event
            if window is None:
                return None
            _fast_series(group, window)
    except _NotSimple:
        return None
    # the order of the thorough reader: events by UID, then tasks
    records: list[AppointmentRecord | TaskState] = [e for group in events.values() for _, e in group]
    records.extend(tasks)
    return records


def _fast_event(props: list, location: Location, zones: _Zones) -> AppointmentRecord:
    uid = _ftext(props, "UID").strip()
    start_prop = _first(props, "DTSTART")
    if not uid or start_prop is None:
        raise _NotSimple
    start, tzid = _fast_dt(start_prop[1], start_prop[0], zones)
    end_prop = _first(props, "DTEND")
    if end_prop is not None:
        end, _ = _fast_dt(end_prop[1], end_prop[0], zones)
    elif isinstance(start, datetime):
        end = start
    else:
        end = start + timedelta(days=1)
    if isinstance(start, datetime) != isinstance(end, datetime):
        raise _NotSimple
    organizer = None
    attendees: list[Attendee] = []
    seen: set[str] = set()
    for name, params, value in props:
        if name == "ORGANIZER" and organizer is None:
            organizer = _make_attendee(_fast_unescape(value).strip(), params, "organizer")
        elif name == "ATTENDEE":
            attendee = _make_attendee(_fast_unescape(value).strip(), params, "attendee")
            if attendee is not None and attendee.address.email not in seen:
                seen.add(attendee.address.email)
                attendees.append(attendee)
    klass = _ftext(props, "CLASS").upper()
    rrule = rid = ""
    if _first(props, "RRULE") is not None or _first(props, "RECURRENCE-ID") is not None:
        rrule, rid = _fast_recurrence_props(props, start, end, zones)
    return AppointmentRecord(
        location=location,
        uid=uid,
        recurrence_id=rid,
        rrule=rrule,
        start=start,
        end=end,
        tzid=tzid,
        organizer=organizer,
        attendees=tuple(attendees),
        summary=_fold(_ftext(props, "SUMMARY"), 500),
        location_text=_fold(_ftext(props, "LOCATION"), 500),
        description=_fold(_ftext(props, "DESCRIPTION"), DESCRIPTION_LIMIT),
        status=_ftext(props, "STATUS").upper() or "CONFIRMED",
        private=klass in {"PRIVATE", "CONFIDENTIAL"},
        sequence=_fint(props, "SEQUENCE"),
    )


def _fast_task(props: list, location: Location, zones: _Zones) -> TaskState:
    uid = _ftext(props, "UID").strip()
    if not uid:
        raise _NotSimple
    values: dict[str, Any] = {}
    for name in ("DUE", "COMPLETED", "LAST-MODIFIED", "DTSTART"):
        hit = _first(props, name)
        values[name] = _fast_dt(hit[1], hit[0], zones)[0] if hit else None
    completed = values["COMPLETED"] if isinstance(values["COMPLETED"], datetime) else None
    last_modified = values["LAST-MODIFIED"] if isinstance(values["LAST-MODIFIED"], datetime) else None
    status = _ftext(props, "STATUS").upper()
    if not status:
        status = "COMPLETED" if completed is not None or _fint(props, "PERCENT-COMPLETE") >= 100 else "NEEDS-ACTION"
    return TaskState(
        location=location,
        uid=uid,
        summary=_fold(_ftext(props, "SUMMARY"), 500),
        status=status,
        due=values["DUE"],
        completed=completed,
        last_modified=last_modified,
        description=_fold(_ftext(props, "DESCRIPTION"), DESCRIPTION_LIMIT),
    )
