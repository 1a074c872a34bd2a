"""What both iCalendar readers share: time zones, recurrence ids, limits.

A ``TZID`` is mapped to its IANA name where that is possible (IANA ids,
Windows names, vendor prefixed ids, ``X-LIC-LOCATION``); see
:class:`_Zones`.
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from datetime import date, datetime, timezone, tzinfo
from typing import Any

from crm_bridge.crm_core.records import Address, Attendee

#: how long ``description`` may get
DESCRIPTION_LIMIT = 300
#: at most this many occurrences of one series inside the window
MAX_OCCURRENCES = 5000

_SUBDAILY = {"SECONDLY", "MINUTELY", "HOURLY"}
_UTC_ZONE = zoneinfo.ZoneInfo("UTC")


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
# values both readers make the same way

#: the escapes icalendar undoes in a value (RFC 5545 3.3.11, plus ``\:``); others keep their backslash
_ESCAPE = re.compile(r"\\([\\,;:nN])")


def unescape_value(value: str) -> str:
    """A raw property value unescaped exactly as icalendar does it."""
    if "\\" not in value:
        return value
    return _ESCAPE.sub(lambda m: "\n" if m.group(1) in "nN" else m.group(1), value)


def tidy_text(value: str) -> str:
    """A TEXT value after unescaping, with ``\"`` read as ``"``: RFC 5545
    knows no such escape, but real tools write it (both readers apply this to
    what they unescaped, so they agree on every input)."""
    return value.replace('\\"', '"') if '\\"' in value else value


def normalise_rrule(text: str) -> str:
    """An RRULE as written, without the spaces some tools put in (``BYDAY=MO, TU``)."""
    return re.sub(r"\s+", "", text)



def _fold(text: str, limit: int) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


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


def _window_bound(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def _sort_key(value: datetime | date) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
