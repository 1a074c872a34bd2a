"""The snippet of a mail and the decoding of its text (used by connectors.mailparse and IMAP).

A snippet is made from a prefix of the raw bytes of one text part
(:func:`prefix_bytes`: both the file path and IMAP, which fetches just that
prefix, cut at the same place, so both give the same snippet).  It is the
text a reader sees first: quoted lines (``>``), reply headers with the
quoted message after them, signatures, and in HTML the head, style sheets,
scripts and comments are left out; whitespace is folded; at most
:data:`SNIPPET_CHARS` characters.

Reply headers of the common mail programs, English and German::

    Outlook       -----Original Message----- / -----Ursprüngliche Nachricht-----
                  From: X / Sent: Y (or Date:), Von: X / Gesendet: Y (or Datum:),
                  often after a line of underscores
    Thunderbird   On 12.03.2024 10:15, X wrote:    Am 12.03.24 um 10:15 schrieb X:
    Apple Mail    On 12 Mar 2024, at 10:15, X wrote:    Am 12.03.2024 um 10:15 schrieb X <x@y>:
    Gmail         On Tue, Mar 12, 2024 at 10:15 AM X <      (wrapped over two lines)
                  x@y> wrote:
    Notes & co.   X <x@y> schrieb am 12.03.2024 10:15:05:   (only before a quoted block)

Own text, then a reply header: the snippet stops there.  A reply header
with a quoted (``>``) block after it is left out and the text after the
block is kept (answers written below the quote).  A mail with nothing of
its own before the reply header (a forward) keeps the quoted text, which
is better than nothing.  Only the head of a text is looked at.
"""

from __future__ import annotations

import binascii
import codecs
import html
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crm_bridge.connectors.mailparse import Part

#: raw bytes of the chosen text part that the snippet is made from (see :func:`prefix_bytes`)
SNIPPET_RAW_BYTES = 4096
#: the same for a text/html part
SNIPPET_HTML_RAW_BYTES = 32768
#: characters kept of the snippet
SNIPPET_CHARS = 300

_TAGS = re.compile(r"<[^>]*>")


#: a byte that is not UTF-8 read as cp1252, or as Latin-1 where cp1252 has no character
_FALLBACK_CHARS = [bytes([b]).decode("cp1252", "ignore") or chr(b) for b in range(256)]


def _utf8_fallback(exc: UnicodeError) -> tuple[str, int]:
    """Error handler ``crm-cp1252``: only the bytes that are not UTF-8 are read as cp1252."""
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return "".join(_FALLBACK_CHARS[b] for b in exc.object[exc.start:exc.end]), exc.end


codecs.register_error("crm-cp1252", _utf8_fallback)  # used by connectors.mailparse too


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
        if charset == "utf-8":
            # mixed: the UTF-8 stays UTF-8, only the other bytes are read as cp1252;
            # a character cut by the end of a prefix is left out (the incremental decoder keeps it back)
            if cut:
                return codecs.getincrementaldecoder("utf-8")("crm-cp1252").decode(data, False)
            return data.decode("utf-8", "crm-cp1252")
        if cut and exc.end >= len(data) and exc.start >= len(data) - 4:
            try:
                return data[:exc.start].decode(charset)
            except UnicodeDecodeError:
                pass
        return data.decode(charset, "replace")


_KNOWN_CHARSETS = {"utf-8", "iso-8859-1", "iso-8859-15", "windows-1252", "cp1252", "latin-1"}


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


#: what a reader never sees: comments, scripts, style sheets, the head; one left open by the
#: end of the prefix runs to that end (the prefix ended inside it: what follows is not text)
_HIDDEN = re.compile(
    r"(?is)<!--.*?(?:-->|\Z)|<(script|style|title|xml)\b.*?(?:</\1\s*>|\Z)|<head\b.*?(?:</head\s*>|(?=<body\b)|\Z)"
)
_BLOCK_END = re.compile(r"(?i)<(?:br|hr)\b[^>]*>|</(?:p|div|tr|li|h[1-6]|blockquote|table)\s*>")


def html_to_text(text: str) -> str:
    """The readable text of (a prefix of) HTML: never style sheets or scripts."""
    text = _HIDDEN.sub(" ", text)
    if text.rfind("<") > text.rfind(">"):  # a tag cut by the end of the prefix
        text = text[:text.rfind("<")]
    text = _BLOCK_END.sub("\n", text)
    return html.unescape(_TAGS.sub(" ", text))


#: characters of a text part looked at first; the rest only when these do not make the snippet
_SNIPPET_HEAD = 1024
#: RFC 2045 6.7: trailing white space on a quoted-printable line was added in transport and is deleted
#: (text_snippet and prefix_bytes must agree on the sizes)
_QP_TRAILING_WS = re.compile(rb"[ \t]+(?=\r?\n)")


def prefix_bytes(ctype: str, cte: str) -> int:
    """Raw bytes of a text part the snippet is made from (both paths cut here).

    :data:`SNIPPET_RAW_BYTES` in general; HTML gets :data:`SNIPPET_HTML_RAW_BYTES`
    (style sheets in the head often run past 4 KiB), quoted-printable
    text three times as much, as QP may triple the text (``=20`` padding).
    """
    if ctype == "text/html":
        return SNIPPET_HTML_RAW_BYTES
    if cte and cte.strip().lower() == "quoted-printable":
        return 3 * SNIPPET_RAW_BYTES
    return SNIPPET_RAW_BYTES


def part_snippet(raw: bytes, part: "Part") -> str:
    """The snippet of ``part`` from a prefix of its raw bytes (at least ``2 * prefix_bytes`` or all of it).

    IMAP servers hand out CRLF line ends; files may have either: the prefix
    is cut after CRLF became LF, so both give the same snippet.  (CRLF -> LF
    only matters where the cut falls: line splitting, QP and base64 treat
    both alike.)
    """
    n = prefix_bytes(part.ctype, part.cte)
    if len(raw) > n:
        raw = crlf_to_lf(raw[: 2 * n])[:n]
    return text_snippet(raw, part.cte, part.charset, part.ctype[5:])


#: raw bytes of a text part IMAP asks for first (:func:`head_snippet` settles most snippets from
#: them; more of the :func:`prefix_bytes` prefix is fetched only for the others).  A snippet needs
#: about 1,100 characters of text: 1.3 KiB of 8-bit text settled 99 % of bench/mailgen.py's mails
FIRST_FETCH_BYTES = 1536
#: the same for base64 and quoted-printable (4/3 and up to 3 bytes a character, umlauts 6 in QP)
FIRST_FETCH_ENCODED_BYTES = 2048
#: the same for HTML (markup around the text, often a style sheet in the head)
FIRST_FETCH_HTML_BYTES = 8192
#: characters at the end of a head's text that may read differently once more bytes follow
#: (a cut entity, a cut =XX, a cut character): never part of the text a head snippet is made from
_TAIL_MARGIN = 64
_BASE64_CLEAN = re.compile(rb"[A-Za-z0-9+/=\s]*")


def first_fetch_bytes(ctype: str, cte: str) -> int:
    """Raw bytes of a text part worth asking for first (see :func:`head_snippet`)."""
    if ctype == "text/html":
        return FIRST_FETCH_HTML_BYTES
    if cte and cte.strip().lower() in ("quoted-printable", "base64"):
        return FIRST_FETCH_ENCODED_BYTES
    return FIRST_FETCH_BYTES


_LONE_CR = re.compile(rb"\r(?!\n)")


def crlf_to_lf(raw: bytes) -> bytes:
    """``raw.replace(b"\\r\\n", b"\\n")``; where every CR comes before an LF (IMAP's line ends), through
    the quicker one-byte replace."""
    if _LONE_CR.search(raw) is None:
        return raw.replace(b"\r", b"")
    return raw.replace(b"\r\n", b"\n")


def prefix_snippet(raw: bytes, part: "Part", complete: bool) -> str | None:
    """:func:`part_snippet` of a part of which only the first bytes ``raw`` are at hand, or None
    when they do not settle it (then the part's first ``2 * prefix_bytes`` bytes are needed).

    ``complete``: ``raw`` is the whole part.  The answer, when there is one,
    is the one :func:`part_snippet` gives for the longer prefix.
    """
    n = prefix_bytes(part.ctype, part.cte)
    if complete or len(raw) >= 2 * n:
        return part_snippet(raw, part)
    data = crlf_to_lf(raw)
    if len(data) >= n:  # the prefix part_snippet cuts is all here
        return part_snippet(raw, part)
    return head_snippet(data, part.cte, part.charset, part.ctype[5:])


def head_snippet(head: bytes, cte: str, charset: str, subtype: str) -> str | None:
    """The snippet :func:`text_snippet` gives for any longer prefix that starts with ``head``
    (LF line ends), or None when ``head`` cannot tell.

    text_snippet looks at the first :data:`_SNIPPET_HEAD` characters of the
    decoded text first.  Decoding a prefix (transfer encoding, charset,
    HTML) gives the text of the longer prefix up to a short tail; where a
    construct is left open at the end (an HTML tag or comment, blanks that a
    later padded soft break would strip) the text is cut before it.  So
    when more than ``_SNIPPET_HEAD + _TAIL_MARGIN`` characters remain and
    those first characters make the snippet, it is the longer prefix's too.
    """
    qp = bool(cte) and cte.strip().lower() == "quoted-printable"
    data = head
    if qp:
        padded = b"= " in data or b"=\t" in data
        # _QP_TRAILING_WS.search(data), without trying the regex at every blank of the text
        if not padded and (b" \n" in data or b"\t\n" in data or b" \r\n" in data or b"\t\r\n" in data):
            return None  # a padded soft break further on would strip these blanks in the longer prefix
        data = data.rstrip(b" \t")  # blanks at the cut: stripped or not depends on what follows
        if padded:
            data = _QP_TRAILING_WS.sub(b"", data)
    elif cte and cte.strip().lower() == "base64" and not _BASE64_CLEAN.fullmatch(data):
        return None  # stray bytes: whether the longer prefix decodes at all depends on the rest
    text = _decode_bytes(decode_transfer(data, cte), charset, cut=True)
    if "\x00" in text:
        text = text.replace("\x00", "")
    if subtype == "html":
        last_close = text.rfind(">")
        open_at = text.find("<", last_close + 1)
        if open_at != -1:  # a "<" not closed within the head: what follows it depends on the rest
            text = text[:open_at]
        text = html_to_text(text)
    if len(text) <= _SNIPPET_HEAD + _TAIL_MARGIN:
        return None
    return _snippet_of(text[:_SNIPPET_HEAD], partial=True)


def text_snippet(prefix: bytes, cte: str, charset: str, subtype: str) -> str:
    """The snippet of a text part from its first raw bytes.

    ``prefix`` must be the part's first :func:`prefix_bytes` raw bytes (or
    all of them when shorter).  Quoted lines, reply headers with what
    follows them, and signatures are left out; whitespace is folded.  A
    character cut in two at the end of the prefix is dropped, not allowed
    to turn the whole text into mojibake.
    """
    qp = bool(cte) and cte.strip().lower() == "quoted-printable"
    n = SNIPPET_HTML_RAW_BYTES if subtype == "html" else 3 * SNIPPET_RAW_BYTES if qp else SNIPPET_RAW_BYTES
    data = prefix[:n]
    if qp and (b"= " in data or b"=\t" in data):  # soft line breaks padded with blanks: only there it matters
        data = _QP_TRAILING_WS.sub(b"", data)
    data = decode_transfer(data, cte)
    text = _decode_bytes(data, charset, cut=True)
    if "\x00" in text:
        text = text.replace("\x00", "")
    if subtype == "html":
        text = html_to_text(text)
    if len(text) > _SNIPPET_HEAD:  # most texts give their snippet early: split only their head into lines
        snippet = _snippet_of(text[:_SNIPPET_HEAD], partial=True)
        if snippet is not None:
            return snippet
    return _snippet_of(text, partial=False) or ""


# reply headers: see the module docstring
_ORIGINAL_MESSAGE = re.compile(r"(?i)-{2,}\s*(?:original message|ursprüngliche nachricht|original-nachricht)\s*-{2,}")
_OUTLOOK_FROM = re.compile(r"(?i)\*?(?:from|von)\s*:")
_OUTLOOK_SENT = re.compile(r"(?i)\*?(?:sent|date|gesendet|datum)\s*:")
_ATTRIBUTION = re.compile(r"(?is)(?:on|am)\s(?=.*\d).{3,400}?(?:\bwrote|\bschrieb\b.{0,300}?)\s*:")
_OUTLOOK_FIELD = re.compile(r"(?i)\*?(?:from|von|sent|gesendet|date|datum|to|an|cc|subject|betreff)\s*:")
_MAYBE_REPLY = frozenset("-_FfVv*OA")  # first characters of the reply headers above
_WROTE = re.compile(r"(?i).*(?:\bwrote|\bschrieb\b.*)\s*:")


class _NeedMore(Exception):
    """The head of a text ended where a rule had to look further."""


def _snippet_of(text: str, partial: bool) -> str | None:
    """The snippet of ``text``; None when ``partial`` (text is a head) and the head's last line was needed."""
    try:
        return _snippet_lines(text.splitlines(), partial)
    except _NeedMore:
        return None


def _snippet_lines(all_lines: list[str], partial: bool) -> str:
    lines: list[str] = []
    size = 0
    # in a head the last line may be cut: any rule that has to read it needs the whole text
    usable = len(all_lines) - 1 if partial else len(all_lines)

    def after(i: int, k: int = 1) -> str:
        """The k-th non-blank line after line i, "" at the end of the text."""
        j = i + 1
        while True:
            if j >= usable:
                if partial:
                    raise _NeedMore
                return ""
            s = all_lines[j].strip()
            if s:
                k -= 1
                if not k:
                    return s
            j += 1

    i = -1
    while True:
        i += 1
        if i >= usable:
            if partial:
                raise _NeedMore
            break
        line = all_lines[i]
        stripped = line.strip()
        if stripped == "--" and line.rstrip("\r\n") in ("-- ", "--"):
            break
        if not stripped or stripped[0] == ">":
            continue
        if stripped[0] in _MAYBE_REPLY or stripped[-1] == ":":  # cheap test first: most lines are plain text
            head = stripped[0]
            skip = 0  # a reply header: lines to leave out when nothing came before it
            if head == "-" and _ORIGINAL_MESSAGE.fullmatch(stripped):
                skip = 1
            elif head == "_" and len(stripped) >= 10 and not stripped.strip("_") and _OUTLOOK_FROM.match(after(i)):
                skip = 1
            elif head in "FfVv*" and _OUTLOOK_FROM.match(stripped) and (
                    _OUTLOOK_SENT.match(after(i)) or _OUTLOOK_SENT.match(after(i, 2))):
                skip = 1
                while i + skip < usable and _OUTLOOK_FIELD.match(all_lines[i + skip].strip()):
                    skip += 1
            elif stripped.startswith(("On ", "Am ")):
                if stripped[-1] == ":" and _ATTRIBUTION.fullmatch(stripped):
                    skip = 1
                elif stripped[-1] != ":" and _ATTRIBUTION.fullmatch(stripped + " " + after(i)):
                    skip = 2  # Gmail wraps its attribution
                if skip and after(i, skip).startswith(">"):
                    i += skip - 1  # a quoted block follows: leave the attribution out, go on after the block
                    continue
            elif stripped[-1] == ":" and _WROTE.fullmatch(stripped) and after(i).startswith(">"):
                continue  # "X wrote:" before a quoted block
            if skip:
                if lines:
                    break  # own text, then the quoted message: stop
                i += skip - 1  # nothing of its own (a forward): the quoted text is better than nothing
                continue
        lines.append(stripped)
        size += len(stripped) + 1
        if size > SNIPPET_CHARS * 2:  # enough text: folding whitespace only shortens it
            break
    return _fold(" ".join(lines))


def _fold(text: str) -> str:
    """``" ".join(text.split())[:SNIPPET_CHARS]``, folding only the head where that decides it.

    Folding a prefix of ``text`` gives a prefix of folding all of it (a word
    cut at the end is a prefix of the whole word), so once a folded head
    has SNIPPET_CHARS characters, those are the answer; and a head whose
    only white space is single blanks folds to itself, but for a blank at
    its end.
    """
    head = text[: SNIPPET_CHARS + 100]
    if len(head) > SNIPPET_CHARS:
        if "  " not in head and head.isprintable():  # no white space but single blanks (all others are not printable)
            return head[:SNIPPET_CHARS]
        folded = " ".join(head.split())
        if len(folded) >= SNIPPET_CHARS:
            return folded[:SNIPPET_CHARS]
    return " ".join(text.split())[:SNIPPET_CHARS]
