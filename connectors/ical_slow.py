"""The thorough iCalendar reader: :mod:`icalendar` and ``recurring_ical_events``.

It reads whatever the fast reader (:mod:`connectors.ical_fast`) refuses:
VTIMEZONE-only zones, DURATION, RDATE, sub-daily rules, broken files (each
component that parses is kept, see :func:`_salvage`).
"""

from __future__ import annotations

import hashlib
import logging
import re
import warnings
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from typing import Any, Iterable, cast

from crm_bridge.crm_core.records import AppointmentRecord, Attendee, Failure, Location, Occurrence, TaskState

from .ical_common import (
    DESCRIPTION_LIMIT,
    MAX_OCCURRENCES,
    _SUBDAILY,
    _fold,
    _make_attendee,
    _sort_key,
    _timezone_map,
    _window_bound,
    _Zones,
    normalise_rrule,
    recurrence_key,
    tidy_text,
)

log = logging.getLogger("crm_bridge.connectors.ical")

#: a property parse_calendar adds to an event it had to close: its value becomes a warning
CUT_WARNING_PROPERTY = "X-CRM-BRIDGE-WARNING"


class _Bad(Exception):
    """A component that cannot become a record."""


def _excerpt(component: Any) -> str:
    try:
        text = component.to_ical().decode("utf-8", "replace")
    except Exception:  # noqa: BLE001
        return ""
    # headers only: drop DESCRIPTION and friends, keep it short
    keep = [
        line
        for line in text.splitlines()
        if line.split(":", 1)[0].split(";", 1)[0].upper()
        in {"BEGIN", "END", "UID", "DTSTART", "DTEND", "DUE", "RRULE", "RECURRENCE-ID", "STATUS"}
    ]
    return "\n".join(keep)[:500]


def _text(component: Any, name: str) -> str:
    value = component.get(name)
    if value is None:
        return ""
    if isinstance(value, list):
        value = value[0] if value else ""
    try:
        return tidy_text(str(value))
    except Exception:  # noqa: BLE001
        return ""


def _check_broken(component: Any, names: Iterable[str]) -> None:
    from icalendar.prop import vBroken

    for name in names:
        value = component.get(name)
        values = value if isinstance(value, list) else [value]
        for item in values:
            if isinstance(item, vBroken):
                raise _Bad(f"{component.name} {name} cannot be read: {str(item)[:80]!r}")


#: a date or date-time as people and some tools write it: ISO 8601 with dashes and colons, a space for the T
_LOOSE_DT = re.compile(
    r"(\d{4})-?(\d{2})-?(\d{2})(?:[T ](\d{2}):?(\d{2})(?::?(\d{2}))?(?:[.,]\d+)?\s*(Z|[+-]\d{2}:?\d{2})?)?",
    re.IGNORECASE,
)


def _loose_dt(raw: str) -> datetime | date | None:
    """A date or time in a form icalendar refuses (``2024-01-05T10:00:00Z``, ``2024-01-05 10:00``), or None."""
    match = _LOOSE_DT.fullmatch(raw.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second, offset = match.groups()
    try:
        if hour is None:
            return date(int(year), int(month), int(day))
        value = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0))
    except ValueError:
        return None
    if offset:
        if offset.upper() == "Z":
            return value.replace(tzinfo=timezone.utc)
        sign = -1 if offset[0] == "-" else 1
        digits = offset[1:].replace(":", "")
        delta = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
        return value.replace(tzinfo=timezone(sign * delta))
    return value


def _dt(
    component: Any, name: str, zones: _Zones, warnings: list[str] | None = None,
) -> tuple[datetime | date | None, str]:
    """A date-time property, localised.  With ``warnings``, a value written
    in a loose ISO form is read anyway and noted there."""
    from icalendar.prop import vBroken

    prop = component.get(name)
    if prop is None:
        return None, ""
    if isinstance(prop, list):
        prop = prop[0]
    loose = _loose_dt(str(prop)) if isinstance(prop, vBroken) and warnings is not None else None
    if loose is not None:
        value: Any = loose
        cast(list, warnings).append(f"{name} {str(prop)[:40]!r} is not in iCalendar form; read as {loose.isoformat()}")
    else:
        try:
            value = prop.dt
        except Exception:  # noqa: BLE001
            raise _Bad(f"{component.name} {name} cannot be read: {str(prop)[:80]!r}") from None
    if isinstance(value, timedelta):
        raise _Bad(f"{component.name} {name} is a duration, not a time")
    if isinstance(value, tuple):  # a PERIOD
        value = value[0]
    tzid_param = ""
    params = getattr(prop, "params", None)
    if params:
        tzid_param = str(params.get("TZID", "") or "")
    try:
        return zones.localise(value, tzid_param)
    except ValueError as exc:
        raise _Bad(f"{component.name} {name}: {exc}") from None


def _optional_datetime(component: Any, name: str, zones: _Zones) -> datetime | None:
    """A date-time property that may be missing or broken without harm: None then (and for a bare date)."""
    try:
        value, _ = _dt(component, name, zones)
    except _Bad:
        return None
    return value if isinstance(value, datetime) else None


def _address(prop: Any, role: str) -> Attendee | None:
    try:
        raw = str(prop).strip()
    except Exception:  # noqa: BLE001
        return None
    return _make_attendee(raw, getattr(prop, "params", {}) or {}, role)


def _attendees(component: Any) -> tuple[Attendee | None, tuple[Attendee, ...]]:
    organizer = None
    prop = component.get("ORGANIZER")
    if isinstance(prop, list):
        prop = prop[0] if prop else None
    if prop is not None:
        organizer = _address(prop, "organizer")
    props = component.get("ATTENDEE")
    if props is None:
        props = []
    elif not isinstance(props, list):
        props = [props]
    seen: set[str] = set()
    attendees = []
    for item in props:
        attendee = _address(item, "attendee")
        if attendee is not None and attendee.address.email not in seen:
            seen.add(attendee.address.email)
            attendees.append(attendee)
    return organizer, tuple(attendees)


def _uid(component: Any) -> str:
    uid = _text(component, "UID").strip()
    if uid:
        return uid
    # files exported by old tools lack a UID; derive a stable one
    basis = component.to_ical()
    return "nouid-" + hashlib.sha1(basis).hexdigest()[:24]


def _int(component: Any, name: str) -> int:
    try:
        return int(str(component.get(name, 0) or 0))
    except (TypeError, ValueError):
        return 0


def _event_record(component: Any, location: Location, zones: _Zones) -> AppointmentRecord:
    _check_broken(component, ("RECURRENCE-ID",))
    warnings: list[str] = []
    uid = _uid(component)
    start, tzid = _dt(component, "DTSTART", zones, warnings)
    if start is None:
        raise _Bad("VEVENT has no DTSTART")
    try:
        end, _ = _dt(component, "DTEND", zones, warnings)
    except _Bad as exc:  # the start is what places the appointment: keep it, without its end
        warnings.append(f"{exc}; the end is left out")
        end = None
    if end is None:
        duration = component.get("DURATION")
        try:
            delta = duration.dt if duration is not None else None
        except Exception:  # noqa: BLE001 - a broken DURATION
            delta = None
        if isinstance(delta, timedelta):
            end = start + delta
        else:
            if duration is not None:
                warnings.append(f"VEVENT DURATION cannot be read: {str(duration)[:80]!r}; the end is left out")
            end = start if isinstance(start, datetime) else start + timedelta(days=1)
    if isinstance(start, datetime) != isinstance(end, datetime):
        # DTSTART a date, DTEND a time (or the other way): keep the start's kind
        end = end if isinstance(end, datetime) else None
        if not isinstance(start, datetime):
            end = start + timedelta(days=1)
    rid_value, _ = _dt(component, "RECURRENCE-ID", zones)
    rrule = _read_rrules(component, warnings)
    if component.get(CUT_WARNING_PROPERTY) is not None:
        warnings.append(_text(component, CUT_WARNING_PROPERTY))
    for name in ("EXDATE", "RDATE", "EXRULE"):
        _drop_broken(component, name, warnings)
    organizer, attendees = _attendees(component)
    status = _text(component, "STATUS").upper() or "CONFIRMED"
    klass = _text(component, "CLASS").upper()
    return AppointmentRecord(
        location=location,
        uid=uid,
        recurrence_id=recurrence_key(rid_value) if rid_value is not None else "",
        start=start,
        end=end,
        tzid=tzid,
        organizer=organizer,
        attendees=attendees,
        summary=_fold(_text(component, "SUMMARY"), 500),
        location_text=_fold(_text(component, "LOCATION"), 500),
        description=_fold(_text(component, "DESCRIPTION"), DESCRIPTION_LIMIT),
        status=status,
        rrule=rrule,
        private=klass in {"PRIVATE", "CONFIDENTIAL"},
        sequence=_int(component, "SEQUENCE"),
        warnings=tuple(warnings),
    )


def _drop_broken(component: Any, name: str, warnings: list[str]) -> None:
    """Remove the values of ``name`` that cannot be read, with a warning each."""
    from icalendar.prop import vBroken

    prop = component.get(name)
    if prop is None:
        return
    items = prop if isinstance(prop, list) else [prop]
    kept = [item for item in items if not isinstance(item, vBroken)]
    if len(kept) == len(items):
        return
    for item in items:
        if isinstance(item, vBroken):
            warnings.append(f"{name} cannot be read and was left out: {str(item)[:80]!r}")
    del component[name]
    if kept:
        component[name] = kept if len(kept) > 1 else kept[0]


def _read_rrules(component: Any, warnings: list[str]) -> str:
    """The text of the event's (first) RRULE, "" for none.

    Spaces inside a rule (``BYDAY=MO, TU``) are dropped and the rule read
    again, as the fast reader does; a rule that still cannot be read is
    removed from ``component`` (the event stays, as a single appointment)
    with a warning."""
    from icalendar.prop import vBroken, vRecur

    prop = component.get("RRULE")
    if prop is None:
        return ""
    kept = []
    for item in prop if isinstance(prop, list) else [prop]:
        try:
            raw = str(item) if isinstance(item, vBroken) else item.to_ical().decode()
        except Exception:  # noqa: BLE001
            raw = str(item)
        if isinstance(item, vBroken) or re.search(r"\s", raw):
            try:
                item = vRecur.from_ical(normalise_rrule(raw))
            except Exception:  # noqa: BLE001
                warnings.append(f"RRULE cannot be read, kept as a single appointment: {raw[:80]!r}")
                continue
        kept.append(item)
    del component["RRULE"]
    if not kept:
        return ""
    component["RRULE"] = kept if len(kept) > 1 else kept[0]
    return str(kept[0].to_ical().decode())


def _task_record(component: Any, location: Location, zones: _Zones) -> TaskState:
    _check_broken(component, ("DUE", "COMPLETED", "DTSTART"))
    uid = _uid(component)
    due, _ = _dt(component, "DUE", zones)
    if due is None:
        start, _ = _dt(component, "DTSTART", zones)
        duration = component.get("DURATION")
        if start is not None and duration is not None:
            try:
                due = start + duration.dt
            except Exception:  # noqa: BLE001
                due = None
    completed = _optional_datetime(component, "COMPLETED", zones)
    last_modified = _optional_datetime(component, "LAST-MODIFIED", zones)
    status = _text(component, "STATUS").upper()
    if not status:
        status = "COMPLETED" if completed is not None or _int(component, "PERCENT-COMPLETE") >= 100 else "NEEDS-ACTION"
    return TaskState(
        location=location,
        uid=uid,
        summary=_fold(_text(component, "SUMMARY"), 500),
        status=status,
        due=due,
        completed=completed,
        last_modified=last_modified,
        description=_fold(_text(component, "DESCRIPTION"), DESCRIPTION_LIMIT),
    )


def _expand(
    master: AppointmentRecord,
    components: list[Any],
    timezones: list[Any],
    window: tuple[datetime, datetime],
    zones: _Zones,
) -> tuple[Occurrence, ...]:
    """Occurrences of one series inside ``window``."""
    import icalendar
    import recurring_ical_events

    mini = icalendar.Calendar()
    mini.subcomponents = list(timezones) + list(components)
    lo, hi = _window_bound(window[0]), _window_bound(window[1])
    query = recurring_ical_events.of(mini)
    freq = master.rrule.upper()
    if any(f"FREQ={f}" in freq for f in _SUBDAILY):
        found: list[Any] = []
        for item in query.after(lo):
            start = item.get("DTSTART").dt
            compare = start if isinstance(start, datetime) else datetime(start.year, start.month, start.day)
            if compare.tzinfo is None:
                compare = compare.replace(tzinfo=timezone.utc)
            if compare >= hi or len(found) >= MAX_OCCURRENCES:
                break
            found.append(item)
    else:
        found = query.between(lo, hi)[:MAX_OCCURRENCES]
    occurrences = []
    for item in found:
        try:
            start, _ = _dt(item, "DTSTART", zones)
            end, _ = _dt(item, "DTEND", zones)
            rid, _ = _dt(item, "RECURRENCE-ID", zones)
        except _Bad:
            continue
        if start is None:
            continue
        status = _text(item, "STATUS").upper() or "CONFIRMED"
        occurrences.append(
            Occurrence(
                recurrence_id=recurrence_key(rid if rid is not None else start),
                start=start,
                end=end,
                status=status,
            )
        )
    occurrences.sort(key=lambda o: (_sort_key(o.start), o.recurrence_id))
    return tuple(occurrences)


def _slow_parse(
    text: str | bytes,
    location: Location,
    window: tuple[datetime, datetime],
) -> tuple[list[AppointmentRecord | TaskState], list[Failure]]:
    records: list[AppointmentRecord | TaskState] = []
    failures: list[Failure] = []
    try:
        _parse(text, location, window, records, failures)
    except Exception as exc:  # noqa: BLE001 - the contract is: never raise
        log.debug("unexpected error parsing %s", location, exc_info=True)
        failures.append(Failure(location, f"cannot read calendar data: {type(exc).__name__}: {exc}"[:300]))
    return records, failures


def _parse(
    text: str | bytes,
    location: Location,
    window: tuple[datetime, datetime],
    records: list,
    failures: list,
) -> None:
    import icalendar

    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = text.lstrip("\ufeff")
    if not text or not text.strip():
        failures.append(Failure(location, "empty calendar data"))
        return
    tops: list[Any] | None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tops = list(icalendar.Calendar.from_ical(text, multiple=True))
            if not tops:
                # an unterminated component: the single-component reader
                # either makes sense of it or says what is wrong
                tops = [icalendar.Calendar.from_ical(text)]
    except Exception as exc:  # noqa: BLE001
        tops = _salvage(text, location, failures)
        if tops is None:
            failures.append(
                Failure(location, f"not iCalendar data: {exc}"[:300], excerpt=text[:200])
            )
            return
    if not tops:
        failures.append(Failure(location, "no calendar component found", excerpt=text[:200]))
        return
    for top in tops:
        _parse_top(top, location, window, records, failures)


def _split_blocks(text: str) -> list[tuple[list[str], list[tuple[str, list[str]]]]] | None:
    """Top-level VCALENDAR blocks as (own property lines, [(name, lines)])."""
    lines = re.sub(r"\r?\n[ \t]", "", text.replace("\r\n", "\n")).split("\n")
    blocks: list[tuple[list[str], list[tuple[str, list[str]]]]] = []
    depth = 0
    current: list[str] = []
    for line in lines:
        if not line.strip():
            continue
        key = line.split(":", 1)[0].strip().upper()
        value = line.split(":", 1)[1].strip().upper() if ":" in line else ""
        if key == "BEGIN":
            depth += 1
            if depth == 1:
                if value != "VCALENDAR":
                    return None
                blocks.append(([], []))
                continue
            if depth == 2:
                current = []
                blocks[-1][1].append((value, current))
        elif key == "END":
            if depth == 0:
                return None
            depth -= 1
            if depth == 0:
                continue
        if depth == 1 and key != "END":
            blocks[-1][0].append(line)
        elif depth >= 2 or key == "END":
            current.append(line)
    return blocks or None


def _salvage(text: str, location: Location, failures: list) -> list | None:
    """The whole text did not parse: find the components that do, one by
    one; each one that does not becomes a Failure."""
    import icalendar

    blocks = _split_blocks(text)
    if blocks is None:
        return None
    tops = []
    for props, components in blocks:
        head = ["BEGIN:VCALENDAR", *props]
        zones = ["\n".join(lines) for name, lines in components if name == "VTIMEZONE"]
        good = []
        for name, lines in components:
            body = "\n".join(lines)
            try:
                icalendar.Calendar.from_ical("\n".join([*head, *zones, body, "END:VCALENDAR"]) + "\n")
            except Exception as exc:  # noqa: BLE001
                if name in ("VEVENT", "VTODO", "VTIMEZONE"):
                    keep = [ln for ln in lines if ln.split(":", 1)[0].split(";", 1)[0].upper()
                            in {"BEGIN", "END", "UID", "DTSTART", "DTEND", "DUE", "RRULE", "RECURRENCE-ID"}]
                    failures.append(Failure(location, f"{name} cannot be read: {exc}"[:300],
                                            excerpt="\n".join(keep)[:500]))
                continue
            good.append(body)
        if good:
            try:
                tops.extend(icalendar.Calendar.from_ical(
                    "\n".join([*head, *good, "END:VCALENDAR"]) + "\n", multiple=True))
            except Exception:  # noqa: BLE001
                continue
    return tops


def _parse_top(top: Any, location: Location, window, records: list, failures: list) -> None:
    zones = _Zones(_timezone_map(top))
    timezones = list(top.walk("VTIMEZONE"))
    by_uid: dict[str, list[tuple[Any, AppointmentRecord]]] = defaultdict(list)
    tasks: list[TaskState] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for component in top.walk():
            name = component.name
            if name == "VEVENT":
                try:
                    record = _event_record(component, location, zones)
                except _Bad as exc:
                    failures.append(Failure(location, str(exc), excerpt=_excerpt(component)))
                    continue
                except Exception as exc:  # noqa: BLE001
                    failures.append(
                        Failure(location, f"VEVENT cannot be read: {type(exc).__name__}: {exc}"[:300],
                                excerpt=_excerpt(component))
                    )
                    continue
                by_uid[record.uid].append((component, record))
            elif name == "VTODO":
                try:
                    tasks.append(_task_record(component, location, zones))
                except _Bad as exc:
                    failures.append(Failure(location, str(exc), excerpt=_excerpt(component)))
                except Exception as exc:  # noqa: BLE001
                    failures.append(
                        Failure(location, f"VTODO cannot be read: {type(exc).__name__}: {exc}"[:300],
                                excerpt=_excerpt(component))
                    )
        for uid, items in by_uid.items():
            masters = [rec for _, rec in items if not rec.recurrence_id]
            recurring = any(
                comp.get("RRULE") is not None or comp.get("RDATE") is not None
                for comp, rec in items
                if not rec.recurrence_id
            )
            if masters and recurring:
                master = masters[0]
                try:
                    master.occurrences = _expand(
                        master, [comp for comp, _ in items], timezones, window, zones
                    )
                except Exception as exc:  # noqa: BLE001
                    # the master itself is fine: keep it, as a single appointment at its start
                    what = f"RRULE:{master.rrule}" if master.rrule else "RDATE"
                    master.warnings += (
                        f"the recurrence ({what}) cannot be expanded, kept as a single appointment: "
                        f"{type(exc).__name__}: {exc}"[:300],
                    )
                    master.rrule, master.occurrences = "", ()
            for _, rec in items:
                for warning in rec.warnings:
                    log.warning("%s %s: event %r: %s", location.scope, location.local_id, uid, warning)
            records.extend(rec for _, rec in items)
    records.extend(tasks)
