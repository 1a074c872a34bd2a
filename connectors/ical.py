"""iCalendar text in, records out; a VTODO out for pushed tasks.

Used by the ``.ics`` file connector and by the CalDAV connector::

    records, failures = parse_calendar(text, location, (start, end))

* A ``VEVENT`` becomes an :class:`AppointmentRecord`.  A recurring master
  carries its RRULE text and its occurrences inside ``window`` (EXDATEs
  removed, ``RECURRENCE-ID`` overrides moved or cancelled); each override
  also comes out as a record of its own with ``recurrence_id`` set.
* A ``VTODO`` becomes a :class:`TaskState`.
* A component that cannot be read (no start, a broken date, a broken
  recurrence rule ...) becomes a :class:`Failure`; the rest of the text is
  still read.  Bad input never raises.

Every record of one text shares the ``location`` it was given: for CalDAV
one resource is one UID (a master plus its overrides), for a file the
caller decides.

Times keep their zone.  A ``TZID`` is mapped to its IANA name where that is
possible (IANA ids, Windows names such as ``W. Europe Standard Time``,
vendor prefixed ids such as ``/mozilla.org/20050126_1/Europe/Berlin``, a
``VTIMEZONE`` with ``X-LIC-LOCATION``) and the value then carries a
:class:`zoneinfo.ZoneInfo`; otherwise the zone the ``VTIMEZONE`` defines
is kept and ``tzid`` is "".  Floating times (no zone at all) are read as
UTC with ``tzid`` "".
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import warnings
import zoneinfo
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone, tzinfo
from typing import Any, Iterable, cast

from crm_core.contentlines import PARAM_SPLIT, escape_text, fold_line, split_content_line, value_colon
from crm_core.records import (
    AppointmentRecord,
    Attendee,
    Address,
    Failure,
    Location,
    Occurrence,
    TaskPush,
    TaskState,
)

log = logging.getLogger(__name__)

__all__ = [
    "parse_calendar",
    "build_vtodo",
    "normalised_hash",
    "IGNORED_PROPERTIES",
    "recurrence_key",
]

#: how long ``description`` may get
DESCRIPTION_LIMIT = 300
#: at most this many occurrences of one series inside the window
MAX_OCCURRENCES = 5000
#: properties that change without the content changing (see normalised_hash)
IGNORED_PROPERTIES = frozenset(
    {"DTSTAMP", "LAST-MODIFIED", "PRODID", "REV", "CREATED", "X-RADICALE-NAME"}
)

_PRODID = "-//crm-bridge//crm-bridge//EN"
_SUBDAILY = {"SECONDLY", "MINUTELY", "HOURLY"}


# --------------------------------------------------------------------------
# time zones


@functools.lru_cache(maxsize=1)
def _iana_names() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


@functools.lru_cache(maxsize=1024)
def _iana_from_name(name: str) -> str:
    """The IANA name a TZID stands for, or "" when it cannot be told."""
    if not name:
        return ""
    from icalendar.timezone.windows_to_olson import WINDOWS_TO_OLSON

    cleaned = name.strip().strip("/").strip('"')
    if cleaned.upper() in {"UTC", "Z", "GMT", "ETC/UTC", "ETC/GMT"}:
        return "UTC"
    names = _iana_names()
    candidates = [cleaned, WINDOWS_TO_OLSON.get(cleaned, "")]
    parts = cleaned.split("/")
    candidates += ["/".join(parts[i:]) for i in range(1, len(parts))]
    for candidate in candidates:
        if candidate and candidate in names:
            return candidate
    return ""


def _timezone_map(component: Any) -> dict[str, str]:
    """TZID -> IANA name for every VTIMEZONE that can be resolved."""
    result: dict[str, str] = {}
    for vtz in component.walk("VTIMEZONE"):
        tzid = str(vtz.get("TZID", "") or "")
        if not tzid:
            continue
        iana = _iana_from_name(tzid)
        if not iana:
            lic = vtz.get("X-LIC-LOCATION")
            iana = _iana_from_name(str(lic)) if lic else ""
        if iana:
            result[tzid] = iana
    return result


class _Zones:
    """Resolves the zones of one text, with a cache."""

    def __init__(self, tz_map: dict[str, str]):
        self.tz_map = tz_map
        self.cache: dict[int, tuple[tzinfo | None, str]] = {}

    def name_to_iana(self, name: str) -> str:
        if not name:
            return ""
        return self.tz_map.get(name) or _iana_from_name(name)

    def resolve(self, tz: tzinfo) -> tuple[tzinfo | None, str]:
        """(ZoneInfo or None, IANA name or "") for a tzinfo from icalendar."""
        key = id(tz)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        result: tuple[tzinfo | None, str] = (None, "")
        if isinstance(tz, zoneinfo.ZoneInfo):
            result = (tz, tz.key if tz.key in _iana_names() else "")
        elif tz is timezone.utc:
            result = (timezone.utc, "UTC")
        else:
            name = ""
            try:
                from icalendar.timezone.tzid import tzid_from_tzinfo

                name = tzid_from_tzinfo(tz) or ""
            except Exception:  # noqa: BLE001 - identification is best effort
                name = ""
            if not name:
                name = str(getattr(tz, "key", "") or getattr(tz, "zone", "") or "")
            iana = self.name_to_iana(name)
            if iana == "UTC":
                result = (timezone.utc, "UTC")
            elif iana:
                result = (zoneinfo.ZoneInfo(iana), iana)
        self.cache[key] = result
        return result

    def localise(self, value: Any, tzid_param: str = "") -> tuple[datetime | date, str]:
        """Make ``value`` aware, in its IANA zone where known; return (value, tzid)."""
        if isinstance(value, datetime):
            if value.tzinfo is None:
                if tzid_param:
                    iana = self.name_to_iana(tzid_param)
                    if iana:
                        zone = timezone.utc if iana == "UTC" else zoneinfo.ZoneInfo(iana)
                        return value.replace(tzinfo=zone), iana
                return value.replace(tzinfo=timezone.utc), ""  # floating
            if tzid_param:
                iana = self.name_to_iana(tzid_param)
                if iana:
                    zone = timezone.utc if iana == "UTC" else zoneinfo.ZoneInfo(iana)
                    if value.tzinfo is zone:
                        return value, iana
                    return value.replace(tzinfo=zone), iana
            resolved, iana = self.resolve(value.tzinfo)
            if resolved is not None and resolved is not value.tzinfo:
                value = value.replace(tzinfo=resolved)
            return value, iana
        if isinstance(value, date):
            return value, ""
        raise ValueError(f"not a date or time: {value!r}")


def recurrence_key(value: datetime | date) -> str:
    """The ``recurrence_id`` text for an original start: a date as
    ``YYYY-MM-DD``, an aware time in UTC ISO format, a floating one as is."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            return value.astimezone(timezone.utc).isoformat()
        return value.isoformat()
    return value.isoformat()


# --------------------------------------------------------------------------
# parsing


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
        return str(value)
    except Exception:  # noqa: BLE001
        return ""


def _fold(text: str, limit: int) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def _check_broken(component: Any, names: Iterable[str]) -> None:
    from icalendar.prop import vBroken

    for name in names:
        value = component.get(name)
        values = value if isinstance(value, list) else [value]
        for item in values:
            if isinstance(item, vBroken):
                raise _Bad(f"{component.name} {name} cannot be read: {str(item)[:80]!r}")


def _dt(component: Any, name: str, zones: _Zones) -> tuple[datetime | date | None, str]:
    prop = component.get(name)
    if prop is None:
        return None, ""
    if isinstance(prop, list):
        prop = prop[0]
    try:
        value = prop.dt
    except Exception as exc:  # noqa: BLE001
        raise _Bad(f"{component.name} {name} cannot be read: {exc}") from None
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


def _make_attendee(raw: str, params: Any, role: str) -> Attendee | None:
    email = raw[7:] if raw[:7].lower() == "mailto:" else raw
    if "@" not in email:
        email = str(params.get("EMAIL", "") or "")
        if email[:7].lower() == "mailto:":
            email = email[7:]
    email = email.strip().strip("<>").lower()
    if "@" not in email:
        return None
    name = str(params.get("CN", "") or "").strip().strip('"')
    status = str(params.get("PARTSTAT", "") or "").upper()
    return Attendee(Address(email, name), role=role, status=status)


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
    _check_broken(component, ("DTSTART", "DTEND", "DURATION", "RECURRENCE-ID", "RRULE"))
    uid = _uid(component)
    start, tzid = _dt(component, "DTSTART", zones)
    if start is None:
        raise _Bad("VEVENT has no DTSTART")
    end, _ = _dt(component, "DTEND", zones)
    if end is None:
        duration = component.get("DURATION")
        if duration is not None:
            try:
                delta = duration.dt
                end = start + delta
            except Exception as exc:  # noqa: BLE001
                raise _Bad(f"VEVENT DURATION cannot be read: {exc}") from None
        elif isinstance(start, datetime):
            end = start
        else:
            end = start + timedelta(days=1)
    if isinstance(start, datetime) != isinstance(end, datetime):
        # DTSTART a date, DTEND a time (or the other way): keep the start's kind
        end = end if isinstance(end, datetime) else None
        if not isinstance(start, datetime):
            end = start + timedelta(days=1)
    rid_value, _ = _dt(component, "RECURRENCE-ID", zones)
    rrule = ""
    rr = component.get("RRULE")
    if rr is not None:
        first = rr[0] if isinstance(rr, list) else rr
        try:
            rrule = first.to_ical().decode()
        except Exception as exc:  # noqa: BLE001
            raise _Bad(f"VEVENT RRULE cannot be read: {exc}") from None
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
    )


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


def _window_bound(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


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


def _sort_key(value: datetime | date) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)


def parse_calendar(
    text: str | bytes,
    location: Location,
    window: tuple[datetime, datetime],
) -> tuple[list[AppointmentRecord | TaskState], list[Failure]]:
    """Read iCalendar ``text``; never raises for bad input.

    ``window`` bounds the expansion of recurring events (aware datetimes).
    Returns the records and a :class:`Failure` for each component that
    could not be read.

    Plain single events and tasks (IANA or UTC zones, the usual date
    formats) and simple series (one RRULE, EXDATEs, RECURRENCE-ID
    overrides; see :func:`_fast_series`) are read by a small line parser and
    expanded with :mod:`dateutil` directly, several times faster than
    :mod:`icalendar`; everything else goes through :mod:`icalendar` and
    ``recurring_ical_events``.  Both give the same records for what the
    fast reader accepts (the tests check that).
    """
    try:
        fast = _fast_parse(text, location, window)
    except Exception:  # noqa: BLE001 - anything odd: the thorough reader decides
        fast = None
    if fast is not None:
        return fast, []
    return _slow_parse(text, location, window)


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
                    # the master itself is fine: keep it, without occurrences
                    log.warning(
                        "%s: recurrence of %r cannot be expanded: %s: %s",
                        location.local_id, uid, type(exc).__name__, exc,
                    )
            records.extend(rec for _, rec in items)
    records.extend(tasks)



# --------------------------------------------------------------------------
# the fast reader for plain events and tasks


class _NotSimple(Exception):
    """The text needs the thorough reader."""


_FAST_REFUSE = frozenset({"RDATE", "EXRULE", "DURATION"})
_DT_RE = re.compile(r"^(\d{4})(\d{2})(\d{2})(?:T(\d{2})(\d{2})(\d{2})(Z?))?$")
_UTC_ZONE = zoneinfo.ZoneInfo("UTC")


def _fast_lines(text: str) -> list[str]:
    text = text.lstrip("\ufeff")
    if "\r" in text:
        text = text.replace("\r\n", "\n")
        if "\r" in text:
            raise _NotSimple
    return re.sub(r"\n[ \t]", "", text).split("\n")


def _fast_split(line: str) -> tuple[str, dict[str, str], str]:
    colon = value_colon(line)  # quoted parameter values may hold ':' and ';'
    if colon < 0:
        raise _NotSimple
    head, value = line[:colon], line[colon + 1 :]
    if ";" not in head:
        return head.upper(), {}, value
    parts = PARAM_SPLIT.split(head) if '"' in head else head.split(";")
    params: dict[str, str] = {}
    for part in parts[1:]:
        key, eq, val = part.partition("=")
        if not eq or "^" in val or ("," in val and not val.startswith('"')):
            raise _NotSimple
        params[key.strip().upper()] = val.strip().strip('"')
    return parts[0].strip().upper(), params, value


def _fast_unescape(value: str) -> str:
    if "\\" not in value:
        return value
    out = []
    i = 0
    n = len(value)
    while i < n:
        char = value[i]
        if char == "\\" and i + 1 < n:
            nxt = value[i + 1]
            out.append("\n" if nxt in "nN" else nxt)
            i += 2
        else:
            out.append(char)
            i += 1
    return "".join(out)


def _fast_dt(value: str, params: dict[str, str], zones: _Zones) -> tuple[datetime | date, str]:
    match = _DT_RE.match(value.strip())
    if match is None:
        raise _NotSimple
    year, month, day, hour, minute, second, z = match.groups()
    kind = params.get("VALUE", "").upper()
    if hour is None:
        if kind not in ("", "DATE") or "TZID" in params:
            raise _NotSimple
        return date(int(year), int(month), int(day)), ""
    if kind not in ("", "DATE-TIME"):
        raise _NotSimple
    naive = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second))
    tzid = params.get("TZID", "")
    if z:
        if tzid:
            raise _NotSimple
        return zones.localise(naive.replace(tzinfo=_UTC_ZONE))
    if tzid:
        if not zones.name_to_iana(tzid):
            raise _NotSimple  # a zone only its VTIMEZONE defines
        return zones.localise(naive, tzid)
    return zones.localise(naive)


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


def _first(props: list, name: str) -> tuple[dict[str, str], str] | None:
    for pname, params, value in props:
        if pname == name:
            return params, value
    return None


def _ftext(props: list, name: str) -> str:
    hit = _first(props, name)
    return _fast_unescape(hit[1]) if hit else ""


def _fint(props: list, name: str) -> int:
    hit = _first(props, name)
    if not hit:
        return 0
    try:
        return int(hit[1].strip() or 0)
    except ValueError:
        return 0


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

# --------------------------------------------------------------------------
# the fast path for simple series
#
# recurring_ical_events copies every occurrence into a full icalendar
# component; reading a weekly series that way costs ~30 times a single
# event.  A *simple* series is expanded here with dateutil directly, the way
# recurring_ical_events 3 does it (its Series.between, with the same
# recurrence-id matching), so that both give identical occurrences; the
# tests compare the two on every recurring file of icalendar's and
# recurring_ical_events' test folders and on generated series.
#
# Simple means: one master with exactly one RRULE (FREQ daily or coarser,
# the usual parts in canonical form, UNTIL in UTC for a timed series and a
# date for an all-day one, no negative COUNT), EXDATEs and RECURRENCE-ID
# overrides (no RANGE, no rules of their own, at most one per id), every
# time a date, UTC or in a zone with an IANA TZID, no DURATION, no RDATE.
# Anything else goes to icalendar + recurring_ical_events.

_RRULE_ORDER = ("FREQ", "UNTIL", "COUNT", "INTERVAL", "BYSECOND", "BYMINUTE", "BYHOUR", "BYDAY",
                "BYMONTHDAY", "BYYEARDAY", "BYWEEKNO", "BYMONTH", "BYSETPOS", "WKST")
_RRULE_INDEX = {key: index for index, key in enumerate(_RRULE_ORDER)}
_INT_LIST = re.compile(r"(?:0|-?[1-9]\d{0,2})(?:,(?:0|-?[1-9]\d{0,2}))*")
_WEEKDAY = r"(?:MO|TU|WE|TH|FR|SA|SU)"
_RRULE_VALUE = {
    "FREQ": re.compile(r"YEARLY|MONTHLY|WEEKLY|DAILY"),
    "UNTIL": re.compile(r"\d{8}(?:T\d{6}Z)?"),
    "COUNT": re.compile(r"[1-9]\d{0,5}"),
    "INTERVAL": re.compile(r"[1-9]\d{0,3}"),
    "BYDAY": re.compile(rf"(?:-?[1-9]\d?)?{_WEEKDAY}(?:,(?:-?[1-9]\d?)?{_WEEKDAY})*"),
    "WKST": re.compile(_WEEKDAY),
}


def _canonical_rrule(raw: str) -> tuple[str, str]:
    """(the RRULE as icalendar writes it, its UNTIL text or "")."""
    parts: dict[str, str] = {}
    for piece in raw.strip().split(";"):
        key, eq, value = piece.partition("=")
        if not eq or key not in _RRULE_INDEX or key in parts:
            raise _NotSimple
        if not (_RRULE_VALUE.get(key) or _INT_LIST).fullmatch(value):
            raise _NotSimple
        parts[key] = value
    if "FREQ" not in parts:
        raise _NotSimple
    ordered = sorted(parts.items(), key=lambda kv: _RRULE_INDEX[kv[0]])
    return ";".join(f"{k}={v}" for k, v in ordered), parts.get("UNTIL", "")


def _fast_time(value: str, params: dict[str, str], zones: _Zones) -> datetime | date:
    """A date, a UTC time or a time in an IANA zone; anything else is not simple."""
    tzid = params.get("TZID", "")
    if tzid and (tzid not in _iana_names() or tzid == "UTC"):
        raise _NotSimple
    result, _ = _fast_dt(value, params, zones)
    if isinstance(result, datetime) and not tzid and not value.rstrip().endswith("Z"):
        raise _NotSimple  # floating
    return result


def _fast_recurrence_props(props: list, start, end, zones: _Zones) -> tuple[str, str]:
    """(rrule text, recurrence_id) of an event of a simple series."""
    for name, params, value in props:
        if name in ("DTSTART", "DTEND"):
            _fast_time(value, params, zones)
    if end < start:
        raise _NotSimple
    rrule = rid = ""
    rules = [value for name, _, value in props if name == "RRULE"]
    rid_prop = _first(props, "RECURRENCE-ID")
    if rid_prop is not None:
        if rules or _first(props, "EXDATE") is not None or "RANGE" in rid_prop[0]:
            raise _NotSimple
        rid_value = _fast_time(rid_prop[1], rid_prop[0], zones)
        if isinstance(rid_value, datetime) != isinstance(start, datetime):
            raise _NotSimple
        rid = recurrence_key(rid_value)
    elif rules:
        if len(rules) != 1:
            raise _NotSimple
        rrule, _ = _canonical_rrule(rules[0])
    return rrule, rid


def _rids(value: datetime | date) -> tuple[datetime, ...]:
    """recurring_ical_events' recurrence ids: (UTC naive, wall naive) of an
    aware time, (naive,) of a naive one, (midnight,) of a date."""
    if not isinstance(value, datetime):
        return (datetime(value.year, value.month, value.day),)
    if value.tzinfo is None:
        return (value,)
    return (value.astimezone(timezone.utc).replace(tzinfo=None), value.replace(tzinfo=None))


def _comparable(values: list) -> list:
    """recurring_ical_events' make_comparable."""
    zone = None
    all_dates = True
    for value in values:
        if isinstance(value, datetime):
            all_dates = False
            if value.tzinfo is not None:
                zone = value.tzinfo
                break
    if all_dates:
        return values
    out = []
    for value in values:
        if not isinstance(value, datetime):
            value = datetime(value.year, value.month, value.day)
        if value.tzinfo is None:
            if zone is not None:
                value = value.replace(tzinfo=zone)
        elif zone is None:
            value = value.replace(tzinfo=None)
        out.append(value)
    return out


def _in_span(lo, hi, start, end) -> bool:
    """recurring_ical_events' time_span_contains_event (lo < hi)."""
    lo, hi, start, end = _comparable([lo, hi, start, end])
    if start > end:
        raise _NotSimple
    if start == end:
        return lo <= start < hi
    return start < hi and lo < end


def _exdates(props: list, zones: _Zones) -> list[datetime | date]:
    result: list[datetime | date] = []
    for name, params, value in props:
        if name == "EXDATE":
            for piece in value.split(","):
                if piece.strip():
                    result.append(_fast_time(piece, params, zones))
    return result


def _fast_series(group: list[tuple[list, AppointmentRecord]], window: tuple[datetime, datetime]) -> None:
    """Give the master of one UID its occurrences, as _expand would."""
    masters = [(props, rec) for props, rec in group if not rec.recurrence_id]
    if not masters or not masters[0][1].rrule:
        if any(_first(props, "EXDATE") for props, _ in masters):
            raise _NotSimple
        return  # overrides without a master, or a master without a rule: nothing to expand
    if len(masters) != 1:
        raise _NotSimple
    from dateutil.rrule import rrulestr

    props, master = masters[0]
    zones = _Zones({})
    lo, hi = _window_bound(window[0]), _window_bound(window[1])
    start, end = master.start, master.end
    rrule_prop = _first(props, "RRULE")
    if start is None or end is None or rrule_prop is None:
        raise _NotSimple
    timed = isinstance(start, datetime)
    if not timed and isinstance(end, datetime):
        raise _NotSimple
    exdates = _exdates(props, zones)
    rule_text, until_text = _canonical_rrule(rrule_prop[1])
    if until_text and (len(until_text) == 8) == timed:
        raise _NotSimple  # UNTIL as a date for a timed series or the other way round
    if not timed and any(isinstance(x, datetime) for x in exdates):
        raise _NotSimple  # recurring_ical_events would turn the dates into times
    if any(f"FREQ={f}" in rule_text for f in _SUBDAILY):
        raise _NotSimple
    # the series' times, as recurring_ical_events makes them comparable
    start_dt = cast(datetime, start) if timed else datetime(start.year, start.month, start.day)
    end_dt = cast(datetime, end) if timed else datetime(end.year, end.month, end.day)
    duration = end_dt - start_dt
    until = None
    if until_text:
        if timed:
            until = datetime.strptime(until_text, "%Y%m%dT%H%M%SZ").replace(tzinfo=_UTC_ZONE)
        else:
            until = datetime.strptime(until_text, "%Y%m%d")
    rule = rrulestr(rule_text, dtstart=start_dt, cache=True)
    # the query span, widened by the duration, in the series' terms
    span_lo, span_hi = lo - duration, hi
    if not timed:
        span_lo, span_hi = span_lo.replace(tzinfo=None), span_hi.replace(tzinfo=None)
    candidates: list[datetime] = []
    if until is None or not start_dt > until:
        if span_lo <= start_dt <= span_hi:
            candidates.append(start_dt)
    for when in rule.between(span_lo, span_hi, inc=True):
        if until is None or not when > until:
            candidates.append(when)
    ex_dates = {x for x in exdates if not isinstance(x, datetime)}
    ex_ids: set[datetime] = set()
    for x in exdates:
        ex_ids.update(_rids(x))
    overrides: dict[datetime, tuple[list, AppointmentRecord]] = {}
    override_ids: dict[int, tuple[datetime, ...]] = {}
    for oprops, orec in group:
        if not orec.recurrence_id:
            continue
        rid_prop = _first(oprops, "RECURRENCE-ID")
        if rid_prop is None:
            raise _NotSimple
        ids = _rids(_fast_time(rid_prop[1], rid_prop[0], zones))
        if isinstance(orec.start, datetime) != timed:
            raise _NotSimple
        for key in ids:
            if overrides.get(key, (None, orec))[1] is not orec:
                raise _NotSimple  # two overrides of one occurrence: SEQUENCE decides
            overrides[key] = (oprops, orec)
        override_ids[id(orec)] = ids
    found: list[tuple[Any, Any, str, str]] = []  # (start, end, recurrence id, status)
    seen_starts: set[datetime] = set()
    used: set[int] = set()
    for when in candidates:
        ids = _rids(when)
        if when in seen_starts or date(when.year, when.month, when.day) in ex_dates or ex_ids.intersection(ids):
            continue
        hit = None
        for key in ids:
            hit = overrides.get(key, hit)
        if hit is None:
            seen_starts.add(when)
            occ_start: datetime | date
            occ_end: datetime | date
            occ_start, occ_end = when, when + duration
            if not timed:
                occ_start, occ_end = occ_start.date(), occ_end.date()
            if _in_span(lo, hi, occ_start, occ_end):
                found.append((occ_start, occ_end, recurrence_key(occ_start), master.status))
        else:
            orec = hit[1]
            if id(orec) in used:
                continue
            used.add(id(orec))
            if _in_span(lo, hi, orec.start, orec.end):
                found.append((orec.start, orec.end, orec.recurrence_id, orec.status))
    for oprops, orec in group:
        if orec.recurrence_id and id(orec) not in used:
            if ex_ids.intersection(override_ids[id(orec)]):
                continue
            if _in_span(lo, hi, orec.start, orec.end):
                used.add(id(orec))
                found.append((orec.start, orec.end, orec.recurrence_id, orec.status))
    if len(found) > MAX_OCCURRENCES:
        raise _NotSimple  # the thorough reader decides which ones to keep
    occurrences = [Occurrence(recurrence_id=rid, start=occ_start, end=occ_end, status=status)
                   for occ_start, occ_end, rid, status in found]
    master.occurrences = tuple(sorted(occurrences, key=lambda o: (_sort_key(o.start), o.recurrence_id)))


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
    unfolded = re.sub(r"\r?\n[ \t]", "", text.replace("\r\n", "\n").replace("\r", "\n"))
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
