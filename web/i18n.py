"""Languages and local time for the pages.

The texts live in gettext catalogues, ``web/locale/<lang>.po`` (msgid: the
English text, msgstr: the translation; an empty msgstr falls back to the
msgid).  They are read with a small reader of the PO format's plain subset
(one-line and continued strings, escapes), because compiling .mo files would
need a build step; templates call ``_("...")`` through Jinja2's i18n
extension like any gettext user.

The language: the one a person picked (cookie), else the office's
(``[company] language``), else the browser's Accept-Language, else German.
"""

from __future__ import annotations

import ast
from datetime import datetime, timezone, tzinfo
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

LANGUAGES = ("de", "en")
DEFAULT = "de"
_LOCALE = Path(__file__).with_name("locale")


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
def catalogue(language: str) -> dict[str, str]:
    path = _LOCALE / f"{language}.po"
    return parse_po(path.read_text(encoding="utf-8")) if path.is_file() else {}


def gettext(language: str, text: str) -> str:
    return catalogue(language).get(text) or text


def pick_language(chosen: str | None, office: str, accept: list[tuple[str, float]]) -> str:
    """The page's language (see the module's docstring); ``accept``: Accept-Language, best first."""
    if chosen in LANGUAGES:
        return str(chosen)
    if office in LANGUAGES:
        return office
    for tag, _quality in accept:
        base = tag.split("-")[0].lower()
        if base in LANGUAGES:
            return base
    return DEFAULT


def zone(name: str) -> tzinfo:
    """The configured time zone, or the system's."""
    if name:
        return ZoneInfo(name)
    local = datetime.now().astimezone().tzinfo
    return local or timezone.utc


def local_time(value: str | None, tz: tzinfo, with_time: bool = True) -> str:
    """A stored time (UTC ISO, or a date, or an appointment's floating time) as the viewer reads it."""
    if not value:
        return ""
    text = value.replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return value
    if len(value) <= 10:  # a date (all-day, a due date)
        return parsed.strftime("%d.%m.%Y")
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(tz)
    return parsed.strftime("%d.%m.%Y %H:%M" if with_time else "%d.%m.%Y")
