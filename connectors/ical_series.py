"""Expanding simple recurring series without icalendar."""

from __future__ import annotations

import re
from datetime import date, datetime, timezone
from typing import Any, cast

from crm_bridge.crm_core.records import AppointmentRecord, Occurrence

from .ical_common import (
    MAX_OCCURRENCES,
    _SUBDAILY,
    _UTC_ZONE,
    _iana_names,
    _sort_key,
    _window_bound,
    _Zones,
    normalise_rrule,
    recurrence_key,
)
from .ical_lines import _fast_dt, _first, _NotSimple

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
    for piece in normalise_rrule(raw).split(";"):
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
