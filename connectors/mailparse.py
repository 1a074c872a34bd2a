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
first, message/rfc822 parts not entered), else the first text/html leaf;
of that part the first :data:`SNIPPET_RAW_BYTES` raw (still transfer
encoded) bytes, after CRLF line ends are turned into LF, are decoded.  Both paths therefore produce the same snippet,
which the store's duplicate detection relies on.
"""

from __future__ import annotations

import binascii
import codecs
import html
import re
from datetime import datetime, timedelta, timezone
from email.header import decode_header
from email.utils import getaddresses, parsedate_to_datetime
from typing import Iterable, Iterator
from urllib.parse import unquote

from crm_core.records import Address, Location, MailRecord

#: raw bytes of the chosen text part that the snippet is made from
SNIPPET_RAW_BYTES = 4096
#: characters kept of the snippet
SNIPPET_CHARS = 300
#: bytes of a message file read at most: headers and the text part come
#: first, and a 200 MB attachment must not cost 200 MB of memory (a text
#: part that only starts after 1 MB of attachments gives no snippet)
MAX_MESSAGE_BYTES = 1024 * 1024

#: the header fields the CRM reads (IMAP fetches exactly these)
HEADER_FIELDS = (
    "From", "To", "Cc", "Bcc", "Date", "Subject", "Message-ID", "In-Reply-To",
    "References", "List-Id", "List-Unsubscribe", "Precedence", "Auto-Submitted",
    "X-Auto-Response-Suppress", "X-Autoreply", "X-Autorespond", "Content-Type",
    "Content-Transfer-Encoding", "Content-Disposition", "Sender", "Reply-To",
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
_SIMPLE_ADDR = re.compile(r'^\s*(?:([^<>",;:()\\]*?)\s*<\s*([^<>\s",;:()\\]+@[^<>\s",;:()\\]+)\s*>|([^<>\s",;:()\\]+@[^<>\s",;:()\\]+))\s*$')
_QUOTED_ADDR = re.compile(r'^\s*"((?:[^"\\]|\\.)*)"\s*<\s*([^<>\s",;:()\\]+@[^<>\s",;:()\\]+)\s*>\s*$')
_PARAM = re.compile(r';\s*([A-Za-z0-9_\-*]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s]+)')
_TAGS = re.compile(r"<[^>]*>")
_SCRIPT = re.compile(r"(?is)<(script|style|head)\b.*?</\1\s*>")


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
    try:
        return block.decode("utf-8")
    except UnicodeDecodeError:
        return block.decode("cp1252", "replace")


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
    try:
        fields = (_ANY_FIELD_STR if wanted is None else _WANTED_FIELDS_STR).findall(block.decode("utf-8"))
    except UnicodeDecodeError:
        fields = _fields_one_by_one(block, wanted)
    return _collect_fields(fields, wanted)


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
    if "\n" not in value and value.isascii():
        try:
            return _decode_words_fast(value)
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
    return "".join(chunks)


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


def _decode_bytes(data: bytes, charset: str, cut: bool = False) -> str:
    """Decode with a charset from a mail; never raises.

    ``cut``: ``data`` may end inside a multi-byte character (a prefix of a
    part), which is then dropped instead of failing the whole decode.
    """
    charset = (charset or "").strip().strip('"').lower() or "utf-8"
    if charset in ("us-ascii", "ascii", "unknown-8bit", "x-unknown", "utf8"):
        charset = "utf-8"
    elif charset not in _KNOWN_CHARSETS:
        try:
            codecs.lookup(charset)
            _KNOWN_CHARSETS.add(charset)
        except LookupError:
            charset = "utf-8"
    try:
        return data.decode(charset)
    except UnicodeDecodeError as exc:
        if cut and exc.end >= len(data) and exc.start >= len(data) - 4:
            try:
                return data[:exc.start].decode(charset)
            except UnicodeDecodeError:
                pass
        if charset != "utf-8":
            return data.decode(charset, "replace")
        try:
            return data.decode("cp1252")
        except UnicodeDecodeError:
            return data.decode("latin-1")


_KNOWN_CHARSETS = {"utf-8", "iso-8859-1", "iso-8859-15", "windows-1252", "cp1252", "latin-1"}


def parse_addresses(value: str) -> tuple[Address, ...]:
    """Addresses of one header value, e-mail lower-cased, names decoded."""
    if not value:
        return ()
    m = _SIMPLE_ADDR.match(value)
    if m is not None:
        if m.group(3):
            return (Address(m.group(3).lower()),)
        return (Address(m.group(2).lower(), decode_words(m.group(1).strip())),)
    m = _QUOTED_ADDR.match(value)
    if m is not None:
        name = re.sub(r"\\(.)", r"\1", m.group(1))
        return (Address(m.group(2).lower(), decode_words(name).strip()),)
    out = []
    seen = set()
    try:
        pairs = getaddresses([value])
    except Exception:
        pairs = []
    for name, email in pairs:
        email = email.strip().lower()
        if "@" not in email or email in seen:
            continue
        seen.add(email)
        out.append(Address(email, decode_words(name).strip()))
    return tuple(out)


def parse_ids(value: str) -> tuple[str, ...]:
    ids = _ANGLE_IDS.findall(value)
    if ids:
        return tuple(ids)
    token = value.strip().strip("<>").strip()
    return (token,) if token and " " not in token else ()


_MONTHS = {m: i for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split(), 1)}
_RFC5322_DATE = re.compile(
    r"^\s*(?:[A-Za-z]{3},\s*)?(\d{1,2})\s+([A-Za-z]{3})\s+(\d{4})\s+(\d{2}):(\d{2})(?::(\d{2}))?\s+([+-])(\d{2})(\d{2})\s*(?:\(.*\))?\s*$"
)


def parse_date(value: str) -> datetime | None:
    if not value:
        return None
    m = _RFC5322_DATE.match(value)  # the usual form, without email.utils' general parser
    if m is not None and m.group(2).lower() in _MONTHS:
        day, _mon, year, hour, minute, second, sign, oh, om = m.groups()
        try:
            offset = timedelta(hours=int(oh), minutes=int(om))
            when = datetime(int(year), _MONTHS[_mon.lower()], int(day), int(hour), int(minute), int(second or 0),
                            tzinfo=timezone(-offset if sign == "-" else offset))
            return when.astimezone(timezone.utc)
        except (ValueError, OverflowError):
            pass  # let the general parser have a go
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    try:
        return when.astimezone(timezone.utc)
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


def decode_transfer(data: bytes, cte: str) -> bytes:
    cte = cte.strip().lower()
    if cte == "base64":
        data = b"".join(data.split())
        data = data[: len(data) - len(data) % 4]
        try:
            return binascii.a2b_base64(data)
        except (binascii.Error, ValueError):
            return b""
    if cte == "quoted-printable":
        # a cut at the prefix boundary may leave "=" or "=X": drop it
        tail = data[-2:]
        if b"=" in tail:
            data = data[: len(data) - 2 + tail.index(b"=")]
        try:
            return binascii.a2b_qp(data)
        except (binascii.Error, ValueError):
            return data
    return data


def html_to_text(text: str) -> str:
    text = _SCRIPT.sub(" ", text)
    text = re.sub(r"(?i)<br\s*/?>|</p\s*>|</div\s*>", "\n", text)
    return html.unescape(_TAGS.sub(" ", text))


#: characters of a text part looked at first; the rest only when these do not make the snippet
_SNIPPET_HEAD = 1024


def text_snippet(prefix: bytes, cte: str, charset: str, subtype: str) -> str:
    """The snippet of a text part from its first raw bytes.

    ``prefix`` must be the part's first :data:`SNIPPET_RAW_BYTES` raw bytes
    (or all of them when shorter).  Quoted lines and signatures are left
    out; whitespace is folded.  A character cut in two at the end of the
    prefix is dropped, not allowed to turn the whole text into mojibake.
    """
    data = decode_transfer(prefix[:SNIPPET_RAW_BYTES], cte)
    text = _decode_bytes(data, charset, cut=True)
    if subtype == "html":
        text = html_to_text(text)
    if len(text) > _SNIPPET_HEAD:  # most texts give their snippet early: split only their head into lines
        snippet = _snippet_of(text[:_SNIPPET_HEAD], partial=True)
        if snippet is not None:
            return snippet
    return _snippet_of(text, partial=False) or ""


def _snippet_of(text: str, partial: bool) -> str | None:
    """The snippet of ``text``; None when ``partial`` (text is a head) and the head's last line was needed."""
    lines = []
    size = 0
    all_lines = text.splitlines()
    last = len(all_lines) - 1
    for i, line in enumerate(all_lines):
        if partial and i == last:
            return None  # the head may end inside this line
        stripped = line.strip()
        if stripped == "--" and line.rstrip("\r\n") in ("-- ", "--"):
            break
        if not stripped or stripped.startswith(">"):
            continue
        lines.append(stripped)
        size += len(stripped) + 1
        if size > SNIPPET_CHARS * 2:  # enough text: folding whitespace only shortens it
            break
    return " ".join(" ".join(lines).split())[:SNIPPET_CHARS]


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
    disp = h.get("content-disposition", "").lower()
    return disp.startswith("attachment") or "filename" in disp


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
    yield Part(
        ctype,
        params.get("charset", ""),
        h.get("content-transfer-encoding", ""),
        _is_attachment(h) or ctype == "message/rfc822",
        body,
        section or "1",
    )


def record_from_headers(
    h: dict[str, str],
    location: Location,
    *,
    snippet: str = "",
    flags: Iterable[str] = (),
    size: int = 0,
    has_attachments: bool = False,
) -> MailRecord:
    """Build a record from a parsed header block; raises MailParseError."""
    if not any(k in h for k in ("from", "date", "message-id", "subject", "to", "sender")):
        raise MailParseError("no mail header fields (From, Date, Message-ID, Subject, To) found")
    senders = parse_addresses(h.get("from", "")) or parse_addresses(h.get("sender", ""))
    sender = senders[0] if senders else None
    mids = parse_ids(h.get("message-id", ""))
    return MailRecord(
        location=location,
        message_id=mids[0] if mids else "",
        in_reply_to=parse_ids(h.get("in-reply-to", ""))[-1:],
        references=parse_ids(h.get("references", "")),
        sender=sender,
        to=parse_addresses(h.get("to", "")),
        cc=parse_addresses(h.get("cc", "")),
        bcc=parse_addresses(h.get("bcc", "")),
        date=parse_date(h.get("date", "")),
        subject=" ".join(decode_words(h.get("subject", "")).split())[:998],
        snippet=snippet,
        flags=tuple(flags),
        bulk=bulk_reason(h, sender),
        size=size,
        has_attachments=has_attachments,
    )


def parse_message(raw: bytes, location: Location, flags: Iterable[str] = (), size: int | None = None) -> MailRecord:
    """Parse a whole message (a Maildir file, an mbox entry, an .eml).

    ``raw`` may be the first :data:`MAX_MESSAGE_BYTES` of a larger message
    whose full ``size`` is given; what was cut off counts as attachments.
    """
    if not raw.strip():
        raise MailParseError("empty message")
    if raw.startswith(b"From ") and b"\n" in raw[:1000]:  # an mbox separator left in
        raw = raw.split(b"\n", 1)[1]
    block, body = split_message(raw)
    h = parse_header_block(block)
    if not h:
        raise MailParseError("no mail header fields found")
    part, attachments = choose_text_part(iter_parts(h, body))
    snippet = ""
    if part is not None:
        # IMAP servers hand out CRLF line ends; files may have either: compare like with like
        prefix = part.body[: 2 * SNIPPET_RAW_BYTES].replace(b"\r\n", b"\n")[:SNIPPET_RAW_BYTES]
        snippet = text_snippet(prefix, part.cte, part.charset, part.ctype[5:])
    truncated = size is not None and size > len(raw)
    return record_from_headers(h, location, snippet=snippet, flags=flags, size=size or len(raw),
                               has_attachments=attachments or truncated)
