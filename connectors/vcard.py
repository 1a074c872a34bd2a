"""vCard text in, :class:`ContactCard` records out; vCard text out for pushes.

Reads vCard 2.1, 3.0 and 4.0, several cards per text::

    cards, failures = parse_vcards(text, location)

A card that cannot be read (nothing names the contact) becomes a
:class:`Failure`; the other cards of the text are still read.  Damage
inside a card that leaves the rest readable does not cost the card: a line
that is not a property (an orphan continuation, a raw line break in a
value) is joined to the property before it, or dropped when there is none;
a card without ``END:VCARD`` (cut by the next card or the end of a
truncated file) keeps what it has; and each such repair is a warning on the
card
(``ContactCard.warnings``).  Line ends may be CRLF, LF, CR or the CR CR LF
of some iPhone exports.  Bad input never raises.

Where a property that names one thing (FN, N, ORG, TITLE, UID) appears
more than once, the one with the lowest ``PREF`` (1..100; ``TYPE=pref`` of
vCard 3.0 and a bare ``PREF`` of 2.1 count as 1) wins, and among equals the
first (RFC 6350, 5.3).  vCard 2.1 values are decoded from quoted-printable
whether the parameter is written ``ENCODING=QUOTED-PRINTABLE`` or bare
(``;QUOTED-PRINTABLE``), in their ``CHARSET`` (UTF-8, else Windows-1252
when no charset is given and the bytes are not UTF-8), with soft line
breaks (``=`` at the end of a line) joined.

The reader is a small line parser rather than vobject: it is several times
faster on large address books, it treats 3.0 and 4.0 alike, and it lets a
broken card fail alone.
"""

from __future__ import annotations

import hashlib
import logging
import quopri
import re
from datetime import datetime, timezone
from typing import Iterable

from crm_bridge.crm_core.contentlines import escape_text, fold_line, split_content_line
from crm_bridge.crm_core.records import ContactCard, Failure, Location

__all__ = ["parse_vcards", "build_vcard", "card_uid"]

log = logging.getLogger(__name__)

_PRODID = "-//crm-bridge//crm-bridge//EN"
#: any line end: CRLF, LF, a lone CR (old Mac) and CR CR LF (iPhone exports through Windows)
_EOL = re.compile(r"\r*\n|\r+")
#: vCard 2.1 lets a parameter be written by its value alone (``TEL;WORK;QUOTED-PRINTABLE:``)
_BARE_ENCODINGS = frozenset({"QUOTED-PRINTABLE", "BASE64", "8BIT", "7BIT"})
_NAME = re.compile(r"[A-Z0-9_-]+")
#: a line that surely starts with a property name (its colon may still be inside a quoted parameter)
_PLAIN_LINE = re.compile(r"(?:[A-Za-z0-9-]+\.)?[A-Za-z0-9_-]+:")
#: the start of a property line (``TEL;TYPE=WORK``): without a colon it is a broken property, not a continuation
_PROPERTY_HEAD = re.compile(r"\s*(?:[A-Za-z0-9-]+\.)?[A-Za-z0-9-]+;[A-Za-z0-9-]+(?:[=;,]|$)")
#: values that are identifiers: a stray line is never joined onto them
_NO_JOIN = frozenset({"UID", "EMAIL", "TEL", "URL", "IMPP", "BEGIN", "END", "VERSION"})
_BARE_VALUES = frozenset({"INLINE", "URL", "CONTENT-ID", "CID"})
#: properties of which a card holds one value: the preferred line wins
_SINGLE = ("UID", "FN", "N", "ORG", "TITLE")
#: the rank of a line without a preference (PREF runs from 1 to 100)
_NO_PREF = 101


class _Bad(Exception):
    pass


def unescape_text(value: str) -> str:
    """A vCard text value unescaped: ``\\n`` a line break, any other ``\\x`` the character x."""
    if "\\" not in value:
        return value
    out = []
    i = 0
    while i < len(value):
        char = value[i]
        if char == "\\" and i + 1 < len(value):
            nxt = value[i + 1]
            out.append("\n" if nxt in "nN" else nxt)
            i += 2
            continue
        out.append(char)
        i += 1
    return "".join(out)


def _split_escaped(value: str, sep: str) -> list[str]:
    """Split on ``sep`` not preceded by a backslash, then unescape."""
    if "\\" not in value:
        return value.split(sep)
    parts = []
    current = []
    i = 0
    while i < len(value):
        char = value[i]
        if char == "\\" and i + 1 < len(value):
            current.append(value[i : i + 2])
            i += 2
            continue
        if char == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    parts.append("".join(current))
    return [unescape_text(p) for p in parts]


def _content_line(line: str) -> tuple[str, dict[str, str], str]:
    split = split_content_line(line)
    if split is None:
        raise _Bad(f"line without a colon: {line[:60]!r}")
    name, raw_params, value = split
    if not name:
        raise _Bad(f"line without a property name: {line[:60]!r}")
    params: dict[str, str] = {}
    for param in raw_params:
        key, eq, val = param.partition("=")
        key = key.strip().upper()
        if not eq:  # vCard 2.1: TEL;WORK;VOICE;QUOTED-PRINTABLE:...
            if key in _BARE_ENCODINGS:
                key, val = "ENCODING", key
            elif key in _BARE_VALUES:
                key, val = "VALUE", key
            else:
                key, val = "TYPE", key
        val = val.strip().strip('"')
        # a parameter given twice (TYPE=WORK;TYPE=pref, as Apple writes it) keeps both values
        params[key] = f"{params[key]},{val}" if params.get(key) and val else (val or params.get(key, ""))
    return name, params, value


def _pref(params: dict[str, str]) -> int:
    """The preference of a line: PREF=1..100, TYPE=pref as 1, none as 101."""
    pref = params.get("PREF", "")
    if pref:
        try:
            return min(max(int(pref.split(",")[0]), 1), 100)
        except ValueError:
            pass
    if "PREF" in {t.strip().upper() for t in params.get("TYPE", "").split(",")}:
        return 1
    return _NO_PREF if not pref else 100


def _is_qp(params: dict[str, str]) -> bool:
    return params.get("ENCODING", "").upper() in {"QUOTED-PRINTABLE", "QP"}


def _decode(value: str, params: dict[str, str]) -> str:
    """The value, with vCard 2.1 quoted-printable and CHARSET undone.

    Bytes that were not UTF-8 reach here as surrogates (see parse_vcards)
    and are read in the line's CHARSET, else as Windows-1252."""
    if value.isascii() and "ENCODING" not in params:
        return value
    qp = _is_qp(params)
    if not qp and not _has_raw(value):
        return value
    raw = value.encode("utf-8", "surrogateescape")
    if qp:
        raw = quopri.decodestring(raw)
    charset = params.get("CHARSET", "")
    if charset:
        try:
            return raw.decode(charset, "replace")
        except LookupError:
            pass
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", "replace")


_RAW = re.compile("[\udc80-\udcff]")


def _has_raw(value: str) -> bool:
    """Does ``value`` hold bytes that were not UTF-8 (kept as surrogates)?"""
    return _RAW.search(value) is not None


def _clean(text: str) -> str:
    """``text`` without surrogates, safe to store and print."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace") if _has_raw(text) else text


def card_uid(full_name: str, emails: Iterable[str]) -> str:
    """The UID given to a card that has none: stable across edits of
    anything but the name and the first address."""
    first = next(iter(emails), "")
    basis = f"{full_name.strip().lower()}|{first}"
    return "nouid-" + hashlib.sha1(basis.encode("utf-8")).hexdigest()[:24]


def _card(lines: list[str], location: Location) -> ContactCard:
    uid = full_name = given = family = organisation = title = ""
    emails: list[str] = []
    phones: list[str] = []
    categories: list[str] = []
    warnings: list[str] = []
    single: dict[str, tuple[int, str]] = {}  # name -> (PREF rank, value) of the preferred line so far
    for line in _repair(lines, warnings):
        name, params, raw = _content_line(line)
        value = _decode(raw, params)
        if name in _SINGLE:
            rank = _pref(params)
            if name not in single or rank < single[name][0]:
                single[name] = (rank, value)
        elif name == "EMAIL":
            email = unescape_text(value).strip()
            if email[:7].lower() == "mailto:":
                email = email[7:]
            email = email.strip().lower()
            if "@" in email and email not in emails:
                emails.append(email)
        elif name == "TEL":
            phone = unescape_text(value).strip()
            if phone[:4].lower() == "tel:":
                phone = phone[4:]
            if phone and phone not in phones:
                phones.append(phone)
        elif name == "CATEGORIES":
            for item in _split_escaped(value, ","):
                item = item.strip()
                if item and item not in categories:
                    categories.append(item)
    if "UID" in single:
        uid = unescape_text(single["UID"][1]).strip()  # urn:uuid:... kept as the client wrote it
    if "FN" in single:
        full_name = unescape_text(single["FN"][1]).strip()
    if "N" in single:
        parts = _split_escaped(single["N"][1], ";") + ["", ""]
        family, given = parts[0].strip(), parts[1].strip()
    if "ORG" in single:
        org_parts = [p.strip() for p in _split_escaped(single["ORG"][1], ";") if p.strip()]
        organisation = org_parts[0] if org_parts else ""
    if "TITLE" in single:
        title = unescape_text(single["TITLE"][1]).strip()
    if not full_name:
        full_name = " ".join(p for p in (given, family) if p) or organisation
    if not (full_name or emails or phones):
        raise _Bad("card names nobody: no FN, N, ORG, EMAIL or TEL")
    if not uid:
        uid = card_uid(full_name, emails)
    return ContactCard(
        location=location,
        uid=uid,
        full_name=full_name,
        given_name=given,
        family_name=family,
        emails=tuple(emails),
        phones=tuple(phones),
        organisation=organisation,
        title=title,
        categories=tuple(categories),
        warnings=tuple(warnings),
    )


def _repair(lines: list[str], warnings: list[str]) -> list[str]:
    """The card's lines with what cannot be read joined or dropped, each
    repair noted in ``warnings``.

    A line that is not a property (no colon, no valid name before it)
    continues the line before it (a fold without its leading space, a raw
    line break in a value, base64 lines of a 2.1 PHOTO): joined with nothing
    inside an encoded value and with a space elsewhere.  It is dropped
    instead when it looks like a property of its own (``TEL;WORK 0431 ...``,
    a colon missing), when there is no line before it, or when the line
    before holds an identifier (UID, EMAIL, TEL, URL) it would corrupt."""
    out: list[str] = []
    joined = 0
    for line in lines:
        if _PLAIN_LINE.match(line) and ":" in line:
            out.append(line)  # the usual case, without the full split
            continue
        split = split_content_line(line)
        if split is not None and _NAME.fullmatch(split[0]):
            out.append(line)
            continue
        prev_name = (split_content_line(out[-1]) or ("",))[0] if out else ""
        if out and not _PROPERTY_HEAD.match(line) and prev_name not in _NO_JOIN:
            encoded = re.search(r"[;=](?:B|BASE64|QUOTED-PRINTABLE|QP)\b", out[-1].split(":", 1)[0], re.I)
            out[-1] += ("" if encoded else " ") + line.strip()
            joined += 1
            continue
        what = "a property line without a colon" if _PROPERTY_HEAD.match(line) else "a line that is not a property"
        warnings.append(_clean(f"{what} was dropped: {line.strip()[:60]!r}"))
    if joined:
        warnings.append(f"{joined} line(s) that are not a property joined to the property before them")
    return out


def parse_vcards(text: str | bytes, location: Location) -> tuple[list[ContactCard], list[Failure]]:
    """Read every vCard in ``text``; never raises for bad input."""
    cards: list[ContactCard] = []
    failures: list[Failure] = []
    try:
        if isinstance(text, bytes):
            # bytes that are not UTF-8 stay as surrogates until the line's CHARSET is known
            text = text.decode("utf-8", "surrogateescape")
        text = text.lstrip("\ufeff")
        lines = _logical_lines(text)
        current: list[str] | None = None
        for line in lines:
            if not line.strip():
                continue
            upper = line.strip().upper()
            if upper == "BEGIN:VCARD":
                if current is not None:
                    _finish(current, location, cards, failures, cut="the next BEGIN:VCARD")
                current = []
                continue
            if upper == "END:VCARD":
                if current is None:
                    failures.append(Failure(location, "END:VCARD without BEGIN:VCARD"))
                    continue
                _finish(current, location, cards, failures)
                current = None
                continue
            if current is None:
                continue  # text between cards
            current.append(line)
        if current is not None:
            _finish(current, location, cards, failures, cut="the end of the data")
        if not cards and not failures:
            failures.append(Failure(location, "no vCard found", excerpt=_clean(text[:120])))
    except Exception as exc:  # noqa: BLE001 - the contract is: never raise
        failures.append(Failure(location, _clean(f"cannot read vCard data: {type(exc).__name__}: {exc}"[:300])))
    return cards, failures


def _finish(lines: list[str], location: Location, cards: list[ContactCard], failures: list[Failure],
            cut: str = "") -> None:
    """Read one card's lines into ``cards``, or a Failure into ``failures``.

    ``cut`` says what ended a card that has no END:VCARD (the next card, the
    end of the data): such a card is kept with a warning when it names
    someone, as what it holds was read whole up to there."""
    try:
        card = _card(lines, location)
    except _Bad as exc:
        reason = f"card without END:VCARD, cut by {cut}: {exc}" if cut else f"vCard cannot be read: {exc}"
        failures.append(Failure(location, _clean(reason), excerpt=_excerpt(lines)))
        return
    if cut:
        card.warnings += (f"the card has no END:VCARD (cut by {cut}); it keeps the lines before",)
    cards.append(card)
    for warning in card.warnings:
        log.warning("%s %s: card %s: %s", location.scope, location.local_id, card.uid, warning)


def _logical_lines(text: str) -> list[str]:
    """Unfold; join quoted-printable soft line breaks (vCard 2.1).

    A continuation line (leading space or tab) belongs to the last line
    that is not empty: blank lines between a line and its fold (CR CR LF
    exports) do not cut it."""
    lines: list[str] = []
    soft = False  # the last line is quoted-printable and ends with "=": the next one continues it
    for line in _EOL.split(text):
        if soft and lines and line.strip().upper() != "END:VCARD":
            lines[-1] = lines[-1][:-1] + line
        elif line[:1] in (" ", "\t") and lines:
            while len(lines) > 1 and not lines[-1].strip():
                lines.pop()
            lines[-1] += line[1:]
        else:
            lines.append(line)
        last = lines[-1]
        soft = last.endswith("=") and _qp_head(last)
    return lines


def _qp_head(line: str) -> bool:
    """Is ``line`` a quoted-printable property (``ENCODING=QUOTED-PRINTABLE``, ``;QUOTED-PRINTABLE``, ``ENCODING=QP``)?"""
    head = line.split(":", 1)[0].upper()
    return "QUOTED-PRINTABLE" in head or "ENCODING=QP" in head


def _excerpt(lines: list[str]) -> str:
    keep = [line for line in lines if line.split(":", 1)[0].split(";", 1)[0].upper() in {"UID", "FN", "VERSION"}]
    return _clean("\n".join(keep)[:300])


# --------------------------------------------------------------------------
# writing


def build_vcard(
    uid: str,
    full_name: str,
    *,
    given_name: str = "",
    family_name: str = "",
    emails: Iterable[str] = (),
    phones: Iterable[str] = (),
    organisation: str = "",
    title: str = "",
    categories: Iterable[str] = (),
    note: str = "",
    url: str = "",
    version: str = "4.0",
    rev: datetime | None = None,
) -> str:
    """A vCard (4.0 by default, or 3.0) with CRLF line ends.

    ``note`` carries the CRM context (last contact, open tasks ...).
    """
    if version not in {"3.0", "4.0"}:
        raise ValueError("version must be '3.0' or '4.0'")
    rev = rev or datetime.now(timezone.utc)
    full = full_name or " ".join(p for p in (given_name, family_name) if p) or organisation or uid
    lines = [
        "BEGIN:VCARD",
        f"VERSION:{version}",
        f"PRODID:{_PRODID}",
        f"UID:{escape_text(uid)}",
        f"FN:{escape_text(full)}",
        f"N:{escape_text(family_name)};{escape_text(given_name)};;;",
    ]
    for index, email in enumerate(emails):
        pref = (";PREF=1" if version == "4.0" else ";TYPE=INTERNET,PREF") if index == 0 else (
            "" if version == "4.0" else ";TYPE=INTERNET")
        lines.append(f"EMAIL{pref}:{escape_text(email)}")
    for phone in phones:
        lines.append(f"TEL;VALUE=uri:tel:{phone}" if version == "4.0" and phone.startswith("+") and " " not in phone
                     else f"TEL:{escape_text(phone)}")
    if organisation:
        lines.append(f"ORG:{escape_text(organisation)}")
    if title:
        lines.append(f"TITLE:{escape_text(title)}")
    cats = [c for c in categories if c]
    if cats:
        lines.append("CATEGORIES:" + ",".join(escape_text(c) for c in cats))
    if url:
        lines.append(f"URL:{url}")
    if note:
        lines.append(f"NOTE:{escape_text(note)}")
    rev_utc = rev.astimezone(timezone.utc) if rev.tzinfo else rev
    lines.append(f"REV:{rev_utc.strftime('%Y%m%dT%H%M%SZ')}")
    lines.append("END:VCARD")
    return "\r\n".join(fold_line(line) for line in lines) + "\r\n"
