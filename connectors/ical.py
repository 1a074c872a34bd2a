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

The reader is split by concern: :mod:`connectors.ical_fast` (plain events
and tasks, with :mod:`connectors.ical_lines` and
:mod:`connectors.ical_series`), :mod:`connectors.ical_slow` (icalendar and
recurring_ical_events), :mod:`connectors.ical_common` (zones, shared
values) and :mod:`connectors.ical_write` (VTODO out, content hash).
"""

from __future__ import annotations

import re
from datetime import datetime

from crm_bridge.crm_core.records import AppointmentRecord, Failure, Location, TaskState

from .ical_common import DESCRIPTION_LIMIT, MAX_OCCURRENCES, recurrence_key
from .ical_fast import _fast_parse
from .ical_slow import CUT_WARNING_PROPERTY, _slow_parse
from .ical_write import IGNORED_PROPERTIES, build_vtodo, normalised_hash

__all__ = [
    "parse_calendar",
    "build_vtodo",
    "normalised_hash",
    "IGNORED_PROPERTIES",
    "recurrence_key",
    "DESCRIPTION_LIMIT",
    "MAX_OCCURRENCES",
]


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
    text = _crlf(text)
    closed = _close_cut_event(text)
    if closed is not None:  # the warning it carries is read by the thorough reader only
        return _slow_parse(closed, location, window)
    try:
        fast = _fast_parse(text, location, window)
    except Exception:  # noqa: BLE001 - anything odd: the thorough reader decides
        fast = None
    if fast is not None:
        return fast, []
    return _slow_parse(text, location, window)


def _close_cut_event(text: str | bytes) -> str | None:
    """A text that ends inside a VEVENT (a cut download, a truncated export),
    closed, with a warning for the event; None for any other text.

    The event keeps what was read; a last line cut before its colon is
    dropped.  A text cut inside a VTODO is left alone: a task read without
    its STATUS would undo what its user did."""
    if isinstance(text, bytes):
        if text[-40:].rstrip().upper().endswith(b"END:VCALENDAR"):
            return None
        text = text.decode("utf-8", "replace")
    elif text[-40:].rstrip().upper().endswith("END:VCALENDAR"):
        return None
    lines = text.split("\r\n")
    if lines and lines[-1] == "":
        lines.pop()
    stack: list[str] = []
    for line in lines:
        key, _, value = line.partition(":")
        key = key.strip().upper()
        if key == "BEGIN":
            stack.append(value.strip().upper())
        elif key == "END" and stack and stack[-1] == value.strip().upper():
            stack.pop()
    if not stack or stack[0] != "VCALENDAR" or "VEVENT" not in stack or "VTODO" in stack:
        return None
    if lines and ":" not in lines[-1] and not lines[-1][:1].isspace():
        lines.pop()
    event = stack.index("VEVENT")
    for depth in range(len(stack) - 1, -1, -1):
        if depth == event:
            lines.append(f"{CUT_WARNING_PROPERTY}:the calendar data ends inside this event (cut off?): "
                         "it keeps what was read")
        lines.append(f"END:{stack[depth]}")
    return "\r\n".join(lines) + "\r\n"


_EOL = re.compile(r"\r*\n|\r+")
_EOL_BYTES = re.compile(rb"\r*\n|\r+")


def _crlf(text: str | bytes) -> str | bytes:
    """``text`` with CRLF line ends: CR-only (old Mac) and CR CR LF (files
    converted twice on their way from an iPhone) become CRLF, so neither
    reader sees empty lines or folds cut off from their line."""
    if isinstance(text, bytes):
        if b"\r\r" in text or text.count(b"\r") != text.count(b"\r\n"):
            return _EOL_BYTES.sub(b"\r\n", text)
        return text
    if "\r\r" in text or text.count("\r") != text.count("\r\n"):
        return _EOL.sub("\r\n", text)
    return text
