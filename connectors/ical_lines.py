"""Content lines for the fast iCalendar reader: unfolding, splitting,
unescaping, date-times.  Anything unusual raises :class:`_NotSimple`, and
the thorough reader (:mod:`connectors.ical_slow`) takes the text instead.
"""

from __future__ import annotations

import re
from datetime import date, datetime

from crm_bridge.crm_core.contentlines import PARAM_SPLIT, value_colon

from .ical_common import _UTC_ZONE, _Zones, tidy_text, unescape_value


class _NotSimple(Exception):
    """The text needs the thorough reader."""


_DT_RE = re.compile(r"^(\d{4})(\d{2})(\d{2})(?:T(\d{2})(\d{2})(\d{2})(Z?))?$")


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
    return tidy_text(unescape_value(value))


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
