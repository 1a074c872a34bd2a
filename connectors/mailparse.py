"""Fast, forgiving RFC 5322 / MIME parsing into :class:`MailRecord`.

The standard library's ``email`` package with ``policy.default`` parses a
header block about seven times slower than we can afford for mailbox
imports, so this module unfolds the header block itself, decodes only the
fields the CRM uses (RFC 2047 through :func:`email.header.decode_header`,
addresses through :func:`email.utils.getaddresses` when they are not
simple) and walks MIME multiparts by their boundaries without building a
message tree.

The snippet rule is shared with IMAP, which fetches only a prefix of one
body part: the first text/plain leaf that is not an attachment (depth
first, message/rfc822 parts not entered; an inline part with a file name
is text), else the first text/html leaf; of that part the first
:func:`prefix_bytes` raw (still transfer encoded) bytes, after CRLF line
ends are turned into LF, are decoded (:func:`part_snippet`).  Both paths
therefore produce the same snippet, which the store's duplicate detection
relies on.  Quoted lines, reply headers of the common mail programs with
the quoted message after them, signatures, and HTML heads, style sheets,
scripts and comments are left out.

What cannot be read as it was is read as well as it can be and said in
the record's ``warnings``: a header block cut by the read limit, an
address list too deep for the address parser, Message-IDs with spaces.
Header bytes that are not UTF-8 are read as cp1252 one by one, NUL bytes
are dropped, CR-only line ends (old Mac OS) are read like LF, and
two- and three-digit years follow RFC 5322 4.3.
"""

from __future__ import annotations

import binascii
import re
from datetime import datetime, timedelta, timezone
from email.header import decode_header
from email.utils import getaddresses, parsedate_to_datetime
from typing import Iterable, Iterator
from urllib.parse import unquote

from crm_bridge.connectors.snippet import (  # noqa: F401  (the snippet rule and text decoding, re-exported)
    SNIPPET_CHARS,
    SNIPPET_HTML_RAW_BYTES,
    SNIPPET_RAW_BYTES,
    _decode_bytes,
    _snippet_of,
    decode_transfer,
    html_to_text,
    part_snippet,
    prefix_bytes,
    text_snippet,
)
from crm_bridge.crm_core.records import Address, Location, MailRecord

#: bytes of a message file read at most: headers and the text part come
#: first, and a 200 MB attachment must not cost 200 MB of memory (a text
#: part that only starts after 1 MB of attachments gives no snippet)
MAX_MESSAGE_BYTES = 1024 * 1024

#: the header fields the CRM reads (IMAP fetches exactly these, and the server repeats the
#: list in every answer: a field nothing reads costs bytes on every mail)
HEADER_FIELDS = (
    "From", "To", "Cc", "Bcc", "Date", "Subject", "Message-ID", "In-Reply-To",
    "References", "List-Id", "List-Unsubscribe", "Precedence", "Auto-Submitted",
    "X-Autoreply", "X-Autorespond", "Content-Type",
    "Content-Transfer-Encoding", "Content-Disposition", "Sender",
)
_WANTED = frozenset(f.lower() for f in HEADER_FIELDS)
_MULTI = frozenset(("to", "cc", "bcc"))  # repeated fields that are merged

#: local parts that mark automatic senders
GROUP_LOCALPARTS = frozenset(
    """noreply no-reply no_reply donotreply do-not-reply do_not_reply mailer-daemon
    postmaster bounce bounces newsletter news notification notifications
    notify alerts automailer""".split()
)


class MailParseError(ValueError):
    """The bytes are not a mail the CRM can use; the message says why."""


_ANGLE_IDS = re.compile(r"<([^<>\s]+)>")
_ANGLE_IDS_LOOSE = re.compile(r"<([^<>]*)>")
_SIMPLE_ADDR = re.compile(r'^\s*(?:([^<>",;:()\\]*?)\s*<\s*([^<>\s",;:()\\]+@[^<>\s",;:()\\]+)\s*>|([^<>\s",;:()\\]+@[^<>\s",;:()\\]+))\s*$')
_QUOTED_ADDR = re.compile(r'^\s*"((?:[^"\\]|\\.)*)"\s*<\s*([^<>\s",;:()\\]+@[^<>\s",;:()\\]+)\s*>\s*$')
_PARAM = re.compile(r';\s*([A-Za-z0-9_\-*]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s]+)')


def split_message(raw: bytes) -> tuple[bytes, bytes]:
    """Split raw bytes into the header block and the body."""
    lf = raw.find(b"\n\n")
    crlf = raw.find(b"\r\n\r\n")
    if crlf != -1 and (lf == -1 or crlf < lf):
        return raw[:crlf], raw[crlf + 4:]
    if lf != -1:
        head = raw[:lf]
        return (head[:-1] if head.endswith(b"\r") else head), raw[lf + 2:]
    return raw, b""


def _text(block: bytes) -> str:
    """UTF-8 where the bytes are UTF-8, cp1252 for the bytes between that are not."""
    return block.decode("utf-8", "crm-cp1252")


def _field_regex(names: Iterable[str] | None) -> re.Pattern[bytes]:
    alternatives = b"|".join(re.escape(n.encode()) for n in names) if names else rb"[!-9;-~]+"
    # a field name at the start of a line, its value and any folded continuation lines
    return re.compile(rb"^(" + alternatives + rb")[ \t]*:[ \t]*(.*(?:\r?\n[ \t].*)*)", re.M | re.I)


_WANTED_FIELDS = _field_regex(HEADER_FIELDS)
_ANY_FIELD = _field_regex(None)
# the same on text, for a header block that is valid UTF-8 as a whole (nearly all)
_WANTED_FIELDS_STR = re.compile(_WANTED_FIELDS.pattern.decode("ascii"), re.M | re.I | re.ASCII)
_ANY_FIELD_STR = re.compile(_ANY_FIELD.pattern.decode("ascii"), re.M | re.I | re.ASCII)
_FOLD = re.compile(r"\r?\n[ \t]")


def parse_header_block(block: bytes, wanted: frozenset[str] | None = _WANTED) -> dict[str, str]:
    """Unfold a header block; return lower-cased name -> value.

    The first occurrence of a field wins, except To/Cc/Bcc, which are
    joined.  ``wanted=None`` keeps every field.  Each field's bytes are
    UTF-8, or else cp1252: a block that is UTF-8 throughout is decoded in
    one go, one with stray 8-bit bytes field by field.
    """
    if b"\x00" in block:  # NUL bytes are never stored
        block = block.replace(b"\x00", b"")
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        return _collect_fields(_fields_one_by_one(block, wanted), wanted)
    if wanted is _WANTED and "\n " not in text and "\n\t" not in text:
        return _wanted_unfolded(text)
    return _collect_fields((_ANY_FIELD_STR if wanted is None else _WANTED_FIELDS_STR).findall(text), wanted)


#: a field name as written (before its colon) -> the wanted field it is, "" for none; bounded
_KEY_OF: dict[str, str] = {}


def _key_of(name: str) -> str:
    """What :data:`_WANTED_FIELDS_STR` reads ``name`` as: a name of HEADER_FIELDS in any ASCII case,
    blanks before the colon allowed; "" when it does not match."""
    bare = name.rstrip(" \t")
    key = bare.lower() if bare.isascii() else ""
    if key not in _WANTED:
        key = ""
    if len(_KEY_OF) >= 1024:
        _KEY_OF.clear()
    _KEY_OF[name] = key
    return key


def _wanted_unfolded(text: str) -> dict[str, str]:
    """:func:`parse_header_block` of a block without folded lines, for the wanted fields: the same
    dict, line by line instead of through the field regex (an IMAP header FETCH, nearly always)."""
    out: dict[str, str] = {}
    key_of = _KEY_OF.get
    for line in text.split("\n"):
        name, colon, value = line.partition(":")
        if not colon:
            continue
        key = key_of(name)
        if key is None:
            key = _key_of(name)
        if not key:
            continue
        if key in out:
            if key in _MULTI:
                out[key] = f"{out[key]}, {value.strip()}"
            continue
        out[key] = value.strip()
    return out


def _fields_one_by_one(block: bytes, wanted: frozenset[str] | None) -> list[tuple[str, str]]:
    """(name, value) of every field, each value decoded on its own."""
    pattern = _ANY_FIELD if wanted is None else _WANTED_FIELDS
    return [(name.decode("ascii", "replace"), _text(value)) for name, value in pattern.findall(block)]


def _collect_fields(fields: list[tuple[str, str]], wanted: frozenset[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in fields:
        key = name.lower()
        if wanted is not None and wanted is not _WANTED and key not in wanted:
            continue
        if "\n" in value:
            value = _FOLD.sub(" ", value)
        value = value.strip()
        if key in out:
            if key in _MULTI:
                out[key] = f"{out[key]}, {value}"
            continue
        out[key] = value
    return out


_ENCODED_WORD = re.compile(r"=\?([^?]*?)\?([qQbB])\?(.*?)\?=")


def decode_words(value: str) -> str:
    """Decode RFC 2047 encoded words; never raises.

    The usual one-line value is decoded here, the way
    :func:`email.header.decode_header` does it (whitespace between two
    encoded words dropped, adjacent words of one charset joined before
    decoding, so a character split across words survives) at a fraction
    of its cost; anything unusual goes through ``decode_header``.
    """
    if "=?" not in value:
        return value
    found = _DECODED.get(value)
    if found is None:
        found = _decode_words(value)
        if len(value) <= 1000:
            if len(_DECODED) >= 2048:
                _DECODED.clear()
            _DECODED[value] = found
    return found


#: encoded values -> :func:`decode_words` (a thread's subject, a correspondent's name: decoded once; bounded)
_DECODED: dict[str, str] = {}


def _decode_words(value: str) -> str:
    if "\n" not in value and value.isascii():
        try:
            out = _decode_words_fast(value)
            return out.replace("\x00", "") if "\x00" in out else out
        except (ValueError, binascii.Error):
            pass
    try:
        parts = decode_header(value)
    except Exception:
        return value
    chunks = []
    for data, charset in parts:
        if isinstance(data, str):
            chunks.append(data)
        else:
            chunks.append(_decode_bytes(data, charset or "ascii"))
    out = "".join(chunks)
    return out.replace("\x00", "") if "\x00" in out else out


def _decode_words_fast(value: str) -> str:
    out: list[str] = []
    run: list[bytes] = []
    run_charset = ""
    pos = 0
    for m in _ENCODED_WORD.finditer(value):
        gap = value[pos:m.start()]
        if pos == 0:
            gap = gap.lstrip()
        if gap and not (run and gap.isspace()):
            if run:
                out.append(_decode_bytes(b"".join(run), run_charset))
                run = []
            out.append(gap)
        charset, encoding, encoded = m.group(1).lower(), m.group(2), m.group(3).encode("ascii")
        if encoding in "qQ":
            if b"=" in encoded[-2:]:
                raise ValueError("a cut =XX: leave it to decode_header")
            word = binascii.a2b_qp(encoded.replace(b"_", b" "))
        else:
            if len(encoded) % 4:
                encoded += b"==="[: 4 - len(encoded) % 4]
            word = binascii.a2b_base64(encoded)
        if run and charset != run_charset:
            out.append(_decode_bytes(b"".join(run), run_charset))
            run = []
        run_charset = charset
        run.append(word)
        pos = m.end()
    if run:
        out.append(_decode_bytes(b"".join(run), run_charset))
    out.append(value[pos:])
    return "".join(out)


_ADDR_SPEC = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)*")


#: header values -> the addresses they read as, where no warning came of them; bounded
_ONE_ADDRESS: dict[str, tuple[Address, ...]] = {}
_ONE_ADDRESS_MAX = 4096


def _remember(value: str, addresses: tuple[Address, ...]) -> tuple[Address, ...]:
    if len(_ONE_ADDRESS) >= _ONE_ADDRESS_MAX:
        _ONE_ADDRESS.clear()
    _ONE_ADDRESS[value] = addresses
    return addresses


def parse_addresses(value: str, warnings: list[str] | None = None, field: str = "") -> tuple[Address, ...]:
    """Addresses of one header value, e-mail lower-cased, names decoded.

    A value the address parser cannot read (nesting too deep for it, ...)
    still gives the addresses in it, without names; ``warnings`` is told.
    """
    if not value:
        return ()
    known = _ONE_ADDRESS.get(value)
    if known is not None:  # the mailbox owner, the regular correspondents: read once
        return known
    m = _SIMPLE_ADDR.match(value)
    if m is not None:
        if m.group(3):
            one = (Address(m.group(3).lower()),)
        else:
            one = (Address(m.group(2).lower(), decode_words(m.group(1).strip())),)
        return _remember(value, one)
    m = _QUOTED_ADDR.match(value)
    if m is not None:
        name = re.sub(r"\\(.)", r"\1", m.group(1))
        return _remember(value, (Address(m.group(2).lower(), decode_words(name).strip()),))
    out = []
    seen = set()
    parsed = True
    try:
        pairs = getaddresses([value])
    except Exception as exc:  # RecursionError on deeply nested comments, ...
        parsed = False
        pairs = [("", a) for a in _ADDR_SPEC.findall(value)]
        if warnings is not None:
            warnings.append(f"{field or 'address'} field could not be parsed ({type(exc).__name__}): "
                            f"{len(pairs)} addresses taken from it without names")
    for name, email in pairs:
        email = email.strip().lower()
        if "@" not in email or email in seen:
            continue
        seen.add(email)
        out.append(Address(email, decode_words(name).strip()))
    if parsed and len(value) <= 2000:  # a team's usual recipients, a thread's Cc line: read once
        return _remember(value, tuple(out))
    return tuple(out)


def parse_ids(value: str, warnings: list[str] | None = None, field: str = "") -> tuple[str, ...]:
    """Message-IDs of a header value, without angle brackets.

    White space inside an id (broken software, folding in the middle of
    an id) is removed, the way every copy of the id reads the same; then
    ``warnings`` is told.
    """
    if not value:
        return ()
    ids = _ANGLE_IDS.findall(value)
    if not ids:
        if "<" in value:  # ids with spaces or folded in the middle
            ids = [i for i in ("".join(m.split()) for m in _ANGLE_IDS_LOOSE.findall(value)) if i]
            if ids and warnings is not None:
                warnings.append(f"{field or 'Message-ID'} contained spaces: read as <{'> <'.join(ids[:3])}>")
            return tuple(ids)
        token = value.strip().strip("<>").strip()
        if not token:
            return ()
        if " " in token and ("@" not in token or len(token.split()) > 3):
            return ()  # free text ("your message of ..."), not an id
        ids = ["".join(token.split())]
        if " " in token and warnings is not None:
            warnings.append(f"{field or 'Message-ID'} contained spaces: read as <{ids[0]}>")
        return tuple(ids)
    if value.count("<") != len(ids):  # some ids of the list had spaces
        ids = [i for i in ("".join(m.split()) for m in _ANGLE_IDS_LOOSE.findall(value)) if i]
        if warnings is not None:
            warnings.append(f"{field or 'Message-ID'} contained spaces: ids read without them")
    return tuple(ids)


_MONTHS = {m: i for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split(), 1)}
_RFC5322_DATE = re.compile(
    r"^\s*(?:[A-Za-z]{3},\s*)?(\d{1,2})\s+([A-Za-z]{3})\s+(\d{2,4})\s+(\d{2}):(\d{2})(?::(\d{2}))?\s+([+-])(\d{2})(\d{2})\s*(?:\(.*\))?\s*$"
)
#: the year after "day month" in any other form, for :func:`full_year` before email.utils reads it
_DATE_YEAR = re.compile(r"(\b\d{1,2}[\s-]+[A-Za-z]{3}[a-z]*\.?,?[\s-]+)(\d{1,4})(?=\s|$)")


def full_year(year: int) -> int:
    """A year as written in a Date header, read the way mail programs read it.

    RFC 5322 4.3 (obsolete syntax): a two-digit year below 50 is 20xx,
    50 to 99 and any three-digit year (1900 + n, from software that wrote
    ``tm_year``) is 19xx/2xxx.  A zero-padded "0001" counts by its value.
    """
    if year < 50:
        return year + 2000
    if year < 1000:
        return year + 1900
    return year


#: "+0100" -> what turns the wall time into UTC (-1 hour); the offsets seen so far (bounded)
_TO_UTC: dict[str, timedelta] = {}


def _to_utc(sign: str, hours: int, minutes: int) -> timedelta | None:
    offset = timedelta(hours=hours, minutes=minutes)
    if offset >= timedelta(hours=24):
        return None  # timezone() refuses it
    if len(_TO_UTC) >= 1024:
        _TO_UTC.clear()
    _TO_UTC[f"{sign}{hours:02d}{minutes:02d}"] = found = offset if sign == "-" else -offset
    return found


def parse_date(value: str) -> datetime | None:
    if not value:
        return None
    m = _RFC5322_DATE.match(value)  # the usual form, without email.utils' general parser
    if m is not None and (month := _MONTHS.get(m.group(2).lower())) is not None:
        day, _mon, year, hour, minute, second, sign, oh, om = m.groups()
        to_utc = _TO_UTC.get(sign + oh + om)
        if to_utc is None:
            to_utc = _to_utc(sign, int(oh), int(om))
        if to_utc is not None:  # else an offset of a day or more: datetime refuses it
            try:
                # the wall time as if it were UTC, moved by the offset: what astimezone(utc) gives
                return datetime(full_year(int(year)), month, int(day), int(hour), int(minute), int(second or 0),
                                tzinfo=timezone.utc) + to_utc
            except (ValueError, OverflowError):
                pass  # let the general parser have a go
    # email.utils reads two-digit years with another pivot (69) and leaves three-digit ones: fix the year first
    value = _DATE_YEAR.sub(lambda y: y.group(1) + str(full_year(int(y.group(2)))), value, count=1)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    try:
        when = when.astimezone(timezone.utc)
        if when.year < 1000:  # a form with the year elsewhere
            when = when.replace(year=full_year(when.year))
        return when
    except (OverflowError, ValueError):
        return None


def bulk_reason(h: dict[str, str], sender: Address | None) -> str:
    """Why a mail is bulk or automatic, or "" when a person sent it."""
    if h.get("list-id"):
        return "List-Id"
    if h.get("list-unsubscribe"):
        return "List-Unsubscribe"
    prec = h.get("precedence", "").strip().lower()
    if prec in ("bulk", "list", "junk"):
        return f"Precedence: {prec}"
    auto = h.get("auto-submitted", "").strip().lower()
    if auto and not auto.startswith("no"):
        return f"Auto-Submitted: {auto.split(';')[0]}"
    if h.get("x-autoreply") or h.get("x-autorespond"):
        return "X-Autoreply"
    if sender is not None:
        local = sender.email.partition("@")[0]
        if local in GROUP_LOCALPARTS or local.startswith(("noreply", "no-reply", "donotreply")):
            return f"automatic sender {local}@"
    return ""


def content_type(value: str) -> tuple[str, dict[str, str]]:
    """``text/plain; charset=utf-8`` -> ("text/plain", {"charset": "utf-8"})."""
    main, _, _rest = value.partition(";")
    params: dict[str, str] = {}
    for key, val in _PARAM.findall(value):
        if val.startswith('"'):
            val = val[1:-1].replace('\\"', '"')
        if key.endswith("*") and val.count("'") >= 2:  # RFC 2231: charset'language'percent-encoded
            charset, _, rest = val.partition("'")
            try:
                val = unquote(rest.partition("'")[2], encoding=charset or "utf-8", errors="replace")
            except LookupError:
                val = unquote(rest.partition("'")[2], errors="replace")
        params[key.lower().rstrip("*")] = val
    ctype = main.strip().lower() or "text/plain"
    if "/" not in ctype:
        ctype = "text/plain"
    return ctype, params


class Part:
    """A leaf of a MIME tree, as both the file and the IMAP paths see it."""

    __slots__ = ("ctype", "charset", "cte", "attachment", "body", "section")

    def __init__(self, ctype: str, charset: str, cte: str, attachment: bool, body: bytes = b"", section: str = ""):
        self.ctype = ctype
        self.charset = charset
        self.cte = cte
        self.attachment = attachment
        self.body = body
        self.section = section


def choose_text_part(parts: Iterable[Part]) -> tuple[Part | None, bool]:
    """The part the snippet comes from, and whether any attachment exists."""
    plain = html_part = None
    attachments = False
    for part in parts:
        if part.attachment or not part.ctype.startswith("text/"):
            attachments = attachments or part.attachment or not part.ctype.startswith(("text/", "multipart/"))
            continue
        if part.ctype == "text/plain" and plain is None:
            plain = part
        elif part.ctype == "text/html" and html_part is None:
            html_part = part
    return (plain or html_part), attachments


def _is_attachment(h: dict[str, str]) -> bool:
    """A part is a file when its disposition says attachment, or it names a file without saying inline.

    An explicitly inline part with a file name (Apple Mail, PGP, list
    software) is shown inline by mail programs: its text is the body.
    """
    disp = h.get("content-disposition", "").lower()
    return disp.startswith("attachment") or ("filename" in disp and not disp.lstrip().startswith("inline"))


def iter_parts(h: dict[str, str], body: bytes, depth: int = 0, section: str = "", digest: bool = False) -> Iterator[Part]:
    """Leaves of the MIME tree of a message or part, depth first.

    Inside multipart/digest a part without a Content-Type is a message/rfc822
    (RFC 2046 5.1.5).
    """
    params: dict[str, str]
    if digest and not h.get("content-type"):
        ctype, params = "message/rfc822", {}
    else:
        ctype, params = content_type(h.get("content-type", ""))
    if ctype.startswith("multipart/") and depth < 20:
        boundary = params.get("boundary", "")
        if not boundary:
            yield Part("text/plain", params.get("charset", ""), h.get("content-transfer-encoding", ""), False, body, section or "1")
            return
        delim = b"--" + boundary.encode("ascii", "replace")
        chunks = body.split(delim)
        index = 0
        for chunk in chunks[1:]:
            if chunk.startswith(b"--"):
                break
            index += 1
            if chunk.startswith(b"\r\n"):
                chunk = chunk[2:]
            elif chunk.startswith(b"\n"):
                chunk = chunk[1:]
            if chunk.endswith(b"\r\n"):
                chunk = chunk[:-2]
            elif chunk.endswith(b"\n"):
                chunk = chunk[:-1]
            if chunk.startswith((b"\r\n", b"\n")):
                ph, pb = {}, chunk.lstrip(b"\r\n")
            else:
                hb, pb = split_message(chunk)
                ph = parse_header_block(hb, None)
            sub = f"{section}.{index}" if section else str(index)
            yield from iter_parts(ph, pb, depth + 1, sub, ctype == "multipart/digest")
        return
    yield _leaf(h, ctype, params, body, section)


def _leaf(h: dict[str, str], ctype: str, params: dict[str, str], body: bytes, section: str) -> Part:
    return Part(ctype, params.get("charset", ""), h.get("content-transfer-encoding", ""),
                _is_attachment(h) or ctype == "message/rfc822", body, section or "1")


def single_part(h: dict[str, str]) -> tuple[Part | None, bool] | None:
    """:func:`choose_text_part` of a mail whose header says it is one part (its body section "1");
    None for a multipart mail, whose parts only its body (or BODYSTRUCTURE) tells."""
    raw = h.get("content-type", "")
    if raw.partition(";")[0].strip().lower().startswith("multipart/"):
        return None  # what content_type() says, without reading the parameters (a boundary each)
    key = (raw, h.get("content-transfer-encoding", ""), h.get("content-disposition", ""))
    found = _SINGLE.get(key)
    if found is None:
        ctype, params = content_type(raw)
        found = choose_text_part((_leaf(h, ctype, params, b"", ""),))
        if len(_SINGLE) >= 1024:
            _SINGLE.clear()
        _SINGLE[key] = found
    return found


#: (Content-Type, Content-Transfer-Encoding, Content-Disposition) -> :func:`single_part` (bounded): a
#: handful of values make nearly all mail; the Part is shared and never changed
_SINGLE: dict[tuple[str, str, str], tuple[Part | None, bool]] = {}


#: a header block with none of these is not a mail's
_MAIL_FIELDS = frozenset(("from", "date", "message-id", "subject", "to", "sender"))


def record_from_headers(
    h: dict[str, str],
    location: Location,
    *,
    snippet: str = "",
    flags: Iterable[str] = (),
    size: int = 0,
    has_attachments: bool = False,
    warnings: Iterable[str] = (),
) -> MailRecord:
    """Build a record from a parsed header block; raises MailParseError."""
    if h.keys().isdisjoint(_MAIL_FIELDS):
        raise MailParseError("no mail header fields (From, Date, Message-ID, Subject, To) found")
    notes = list(warnings)
    senders = parse_addresses(h.get("from", ""), notes, "From") or parse_addresses(h.get("sender", ""), notes, "Sender")
    sender = senders[0] if senders else None
    mids = parse_ids(h.get("message-id", ""), notes, "Message-ID")
    get = h.get
    # positional (in MailRecord's field order): a third of the cost of 16 keywords
    return MailRecord(
        location,  # location
        mids[0] if mids else "",  # message_id
        parse_ids(get("in-reply-to", ""), notes, "In-Reply-To")[-1:],  # in_reply_to
        parse_ids(get("references", ""), notes, "References"),  # references
        sender,  # sender
        parse_addresses(get("to", ""), notes, "To"),  # to
        parse_addresses(get("cc", ""), notes, "Cc"),  # cc
        parse_addresses(get("bcc", ""), notes, "Bcc"),  # bcc
        parse_date(get("date", "")),  # date
        " ".join(decode_words(get("subject", "")).split())[:998],  # subject
        snippet,  # snippet
        flags if flags.__class__ is tuple else tuple(flags),  # flags
        bulk_reason(h, sender),  # bulk
        "",  # direction
        size,  # size
        has_attachments,  # has_attachments
        tuple(notes),  # warnings
    )


def bare_cr_lines(raw: bytes) -> bool:
    """Whether the first line of ``raw`` ends with a lone CR (old Mac OS line ends).

    Looks at the first line only: a few bytes for every ordinary mail.
    """
    lf = raw.find(b"\n")
    cr = raw.find(b"\r", 0, lf if lf != -1 else len(raw))
    return cr != -1 and cr != lf - 1


_LAST_FIELD = re.compile(rb"^([!-9;-~]+)[ \t]*:", re.M)


def parse_message(raw: bytes, location: Location, flags: Iterable[str] = (), size: int | None = None) -> MailRecord:
    """Parse a whole message (a Maildir file, an mbox entry, an .eml).

    ``raw`` may be the first :data:`MAX_MESSAGE_BYTES` of a larger message
    whose full ``size`` is given; what was cut off counts as attachments.
    A header block that does not end within ``raw`` is read up to its last
    whole line, and the record says so in its warnings.  Line ends may be
    LF, CRLF or CR alone (old Mac OS).
    """
    if not raw.strip():
        raise MailParseError("empty message")
    if bare_cr_lines(raw):
        raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if raw.startswith(b"From ") and b"\n" in raw[:1000]:  # an mbox separator left in
        raw = raw.split(b"\n", 1)[1]
    truncated = size is not None and size > len(raw)
    warnings = []
    block, body = split_message(raw)
    if truncated and not body and block is raw:  # the read limit cut the header block
        block = block[:block.rfind(b"\n")]  # its last line may be cut in the middle: leave it out
        fields = _LAST_FIELD.findall(block[-65536:])
        last = fields[-1].decode("ascii", "replace") if fields else "start"
        warnings.append(f"header larger than {len(raw) // 1024} KiB: read up to the {last} field, "
                        f"the fields after it were cut")
    h = parse_header_block(block)
    if not h:
        raise MailParseError("no mail header fields found")
    part, attachments = choose_text_part(iter_parts(h, body))
    snippet = part_snippet(part.body, part) if part is not None else ""
    return record_from_headers(h, location, snippet=snippet, flags=flags, size=size or len(raw),
                               has_attachments=attachments or truncated, warnings=warnings)
