"""vCard text in, :class:`ContactCard` records out; vCard text out for pushes.

Reads vCard 2.1, 3.0 and 4.0, several cards per text::

    cards, failures = parse_vcards(text, location)

A card that cannot be read (no ``END:VCARD``, a line without a colon,
nothing that names the contact) becomes a :class:`Failure`; the other cards
of the text are still read.  Bad input never raises.

The reader is a small line parser rather than vobject: it is several times
faster on large address books, it treats 3.0 and 4.0 alike, and it lets a
broken card fail alone.
"""

from __future__ import annotations

import hashlib
import quopri
import re
from datetime import datetime, timezone
from typing import Iterable

from crm_core.contentlines import escape_text, fold_line, split_content_line
from crm_core.records import ContactCard, Failure, Location

__all__ = ["parse_vcards", "build_vcard", "card_uid"]

_PRODID = "-//crm-bridge//crm-bridge//EN"
_UNFOLD = re.compile(r"\r?\n[ \t]")


class _Bad(Exception):
    pass


def _unescape(value: str) -> str:
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
    return [_unescape(p) for p in parts]


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
        if not eq:  # vCard 2.1: TEL;WORK;VOICE:...
            params.setdefault("TYPE", "")
            params["TYPE"] = ",".join(filter(None, [params["TYPE"], key.strip()]))
            continue
        params[key.strip().upper()] = val.strip().strip('"')
    return name, params, value


def _decode(value: str, params: dict[str, str]) -> str:
    if params.get("ENCODING", "").upper() in {"QUOTED-PRINTABLE", "QP"}:
        charset = params.get("CHARSET", "utf-8") or "utf-8"
        try:
            return quopri.decodestring(value.encode("latin-1", "replace")).decode(charset, "replace")
        except LookupError:
            return quopri.decodestring(value.encode("latin-1", "replace")).decode("utf-8", "replace")
    return value


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
    for line in lines:
        name, params, raw = _content_line(line)
        value = _decode(raw, params)
        if name == "UID":
            uid = _unescape(value).strip()
            if uid.lower().startswith("urn:uuid:"):
                uid = uid  # keep as the client wrote it
        elif name == "FN":
            full_name = _unescape(value).strip()
        elif name == "N":
            parts = _split_escaped(value, ";") + ["", ""]
            family, given = parts[0].strip(), parts[1].strip()
        elif name == "EMAIL":
            email = _unescape(value).strip()
            if email[:7].lower() == "mailto:":
                email = email[7:]
            email = email.strip().lower()
            if "@" in email and email not in emails:
                emails.append(email)
        elif name == "TEL":
            phone = _unescape(value).strip()
            if phone[:4].lower() == "tel:":
                phone = phone[4:]
            if phone and phone not in phones:
                phones.append(phone)
        elif name == "ORG":
            parts = [p.strip() for p in _split_escaped(value, ";") if p.strip()]
            organisation = parts[0] if parts else ""
        elif name == "TITLE":
            title = _unescape(value).strip()
        elif name == "CATEGORIES":
            for item in _split_escaped(value, ","):
                item = item.strip()
                if item and item not in categories:
                    categories.append(item)
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
    )


def parse_vcards(text: str | bytes, location: Location) -> tuple[list[ContactCard], list[Failure]]:
    """Read every vCard in ``text``; never raises for bad input."""
    cards: list[ContactCard] = []
    failures: list[Failure] = []
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        text = text.lstrip("\ufeff")
        lines = _logical_lines(text)
        current: list[str] | None = None
        start = ""
        for line in lines:
            if not line.strip():
                continue
            upper = line.strip().upper()
            if upper == "BEGIN:VCARD":
                if current is not None:
                    failures.append(Failure(location, "card without END:VCARD", excerpt=start))
                current, start = [], line
                continue
            if upper == "END:VCARD":
                if current is None:
                    failures.append(Failure(location, "END:VCARD without BEGIN:VCARD"))
                    continue
                try:
                    cards.append(_card(current, location))
                except _Bad as exc:
                    failures.append(Failure(location, f"vCard cannot be read: {exc}", excerpt=_excerpt(current)))
                current = None
                continue
            if current is None:
                continue  # text between cards
            current.append(line)
        if current is not None:
            failures.append(Failure(location, "card without END:VCARD", excerpt=_excerpt(current)))
        if not cards and not failures:
            failures.append(Failure(location, "no vCard found", excerpt=text[:120]))
    except Exception as exc:  # noqa: BLE001 - the contract is: never raise
        failures.append(Failure(location, f"cannot read vCard data: {type(exc).__name__}: {exc}"[:300]))
    return cards, failures


def _logical_lines(text: str) -> list[str]:
    """Unfold; join quoted-printable soft line breaks (vCard 2.1)."""
    raw = _UNFOLD.sub("", text.replace("\r\n", "\n").replace("\r", "\n")).split("\n")
    lines: list[str] = []
    joining = False
    for line in raw:
        if joining and lines:
            lines[-1] = lines[-1][:-1] + line
        else:
            lines.append(line)
        last = lines[-1]
        joining = last.endswith("=") and "QUOTED-PRINTABLE" in last.split(":", 1)[0].upper()
    return lines


def _excerpt(lines: list[str]) -> str:
    keep = [line for line in lines if line.split(":", 1)[0].split(";", 1)[0].upper() in {"UID", "FN", "VERSION"}]
    return "\n".join(keep)[:300]


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
