"""Languages and local time for the pages.

The texts live in gettext catalogues, ``web/locale/<lang>.po`` (msgid: the
English text, msgstr: the translation; an empty msgstr falls back to the
msgid).  They are read with a small reader of the PO format's plain subset
(one-line and continued strings, escapes; crm_core/i18n.py, which reads
crm_core's texts for pushed tasks and cards with it too), because compiling
.mo files would need a build step; templates call ``_("...")`` through
Jinja2's i18n extension like any gettext user.

The language: the one a person picked (cookie), else the office's
(``[company] language``), else the browser's Accept-Language, else German.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from pathlib import Path

from flask import current_app

from crm_bridge.crm_core.i18n import read_catalogue, zone  # noqa: F401 (zone: web/app.py reads it from here)

LANGUAGES = ("de", "en")
DEFAULT = "de"
_LOCALE = Path(__file__).with_name("locale")


def catalogue(language: str) -> dict[str, str]:
    return read_catalogue(_LOCALE / f"{language}.po")


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


def office_zone() -> tzinfo:
    """The office's zone ([company] timezone, else the system's), as create_app worked it out."""
    return current_app.config["CRM_TZ"]


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
