"""The office's language, time zone and web address, for the texts crm_core writes.

What crm-bridge puts into other people's programs (the titles and
descriptions of follow-up tasks in their calendars, the notes of customer
cards in their address books) is written for office staff: in the office's
language (``[company] language``; English when it is not set), with times in
the office's zone (``[company] timezone``; the system's when not set) written
the way people of that language write them, and with a link to the
customer's page of ``crm serve`` when ``[web] base_url`` says where that is.

The texts live in gettext catalogues, ``crm_core/locale/<lang>.po`` (msgid:
the English text with ``{name}`` placeholders, msgstr: the translation; an
empty msgstr falls back to the msgid).  :func:`parse_po` reads the PO
format's plain subset (one-line and continued strings, escapes); the web
front end reads its own catalogues with it too.
"""

from __future__ import annotations

import ast
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from crm_bridge.crm_core.settings import WebSettings

LANGUAGES = ("de", "en")
#: the language of pushed texts when ``[company] language`` is not set
DEFAULT = "en"
_LOCALE = Path(__file__).with_name("locale")
_MONTHS_EN = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def parse_po(text: str) -> dict[str, str]:
    """msgid -> msgstr of a PO file (plural and context entries are not used here)."""
    out: dict[str, str] = {}
    msgid: list[str] | None = None
    msgstr: list[str] | None = None
    current: list[str] | None = None

    def flush() -> None:
        if msgid is not None and msgstr is not None and "".join(msgid):
            out["".join(msgid)] = "".join(msgstr)

    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("msgid "):
            flush()
            msgid, msgstr = [ast.literal_eval(line[6:])], None
            current = msgid
        elif line.startswith("msgstr "):
            msgstr = [ast.literal_eval(line[7:])]
            current = msgstr
        elif line.startswith('"') and current is not None:
            current.append(ast.literal_eval(line))
    flush()
    return out


@lru_cache(maxsize=None)
def read_catalogue(path: Path) -> dict[str, str]:
    """The PO file at ``path`` (empty when there is none)."""
    return parse_po(path.read_text(encoding="utf-8")) if path.is_file() else {}


def catalogue(language: str) -> dict[str, str]:
    """crm_core's own texts in ``language``."""
    return read_catalogue(_LOCALE / f"{language}.po")


def gettext(language: str, text: str) -> str:
    return catalogue(language).get(text) or text


class SystemZone(tzinfo):
    """The system's time zone with its rules (summer time), as the C library knows them (``TZ``,
    /etc/localtime): the offset of each moment, not the one of today."""

    def fromutc(self, dt: datetime) -> datetime:
        gmtoff = time.localtime(dt.replace(tzinfo=timezone.utc).timestamp()).tm_gmtoff
        return dt + timedelta(seconds=gmtoff)

    def _local(self, dt: datetime | None) -> time.struct_time:
        if dt is None:
            return time.localtime()
        return time.localtime(time.mktime((dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second, 0, 0, -1)))

    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(seconds=self._local(dt).tm_gmtoff)

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None

    def tzname(self, dt: datetime | None) -> str:
        return self._local(dt).tm_zone


def zone(name: str) -> tzinfo:
    """The configured time zone, or the system's (:class:`SystemZone`)."""
    return ZoneInfo(name) if name else SystemZone()


def parse_stored(value: str | None) -> datetime | date | None:
    """A stored time (UTC ISO with Z, ISO with an offset) or date (YYYY-MM-DD), or None."""
    if not value:
        return None
    try:
        if len(value) <= 10:
            return date.fromisoformat(value)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def format_date(value: date, language: str) -> str:
    """29.11.2026 (de), 29 Nov 2026 (en: day, month's name, year; never the ambiguous 11/29)."""
    if language == "de":
        return f"{value.day:02d}.{value.month:02d}.{value.year:04d}"
    return f"{value.day} {_MONTHS_EN[value.month - 1]} {value.year:04d}"


def format_datetime(value: datetime, language: str, tz: tzinfo) -> str:
    """29.11.2026 14:30 (de), 29 Nov 2026 14:30 (en), in ``tz``."""
    local = value.astimezone(tz) if value.tzinfo else value
    return f"{format_date(local.date(), language)} {local.hour:02d}:{local.minute:02d}"


@dataclass(frozen=True)
class Office:
    """What the texts for staff need: language, zone, and where ``crm serve`` is reachable."""

    language: str = DEFAULT
    timezone: str = ""  # IANA name; empty: the system's
    base_url: str = ""  # https://crm.example.com (no trailing slash); empty: no links

    @classmethod
    def of(cls, web: "WebSettings | None") -> "Office":
        if web is None:
            return cls()
        return cls(language=web.language or DEFAULT, timezone=web.timezone, base_url=web.base_url)

    @property
    def tz(self) -> tzinfo:
        return zone(self.timezone)

    def _(self, text: str, **values: Any) -> str:
        """``text`` in the office's language, with ``{name}`` placeholders filled in."""
        translated = gettext(self.language, text)
        return translated.format(**values) if values else translated

    def today(self, now: datetime | None = None) -> date:
        return (now or datetime.now(timezone.utc)).astimezone(self.tz).date()

    def day(self, value: date | datetime) -> str:
        """The day of ``value`` (in the office's zone when it is a time)."""
        if isinstance(value, datetime):
            value = value.astimezone(self.tz).date() if value.tzinfo else value.date()
        return format_date(value, self.language)

    def when(self, value: str | None, with_time: bool = True) -> str:
        """A stored time or date as staff read it ("" when there is none)."""
        parsed = parse_stored(value)
        if parsed is None:
            return value or ""
        if not isinstance(parsed, datetime):
            return format_date(parsed, self.language)
        return format_datetime(parsed, self.language, self.tz) if with_time else self.day(parsed)

    def customer_url(self, customer_id: int) -> str:
        """The customer's page in ``crm serve``, or "" without ``[web] base_url``."""
        return f"{self.base_url}/customers/{customer_id}" if self.base_url else ""
