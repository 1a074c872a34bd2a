"""The IMAP wire, below the connector: FETCH responses tokenized and merged,
pipelined UID FETCHes (:class:`Fetches`), ESEARCH/SEARCH results, UID sets,
and the text parts of a BODYSTRUCTURE.  connectors/imap.py builds on it.
"""

from __future__ import annotations

import imaplib
import json
import re
from typing import Any, Iterable, Iterator

from crm_bridge.connectors.mailparse import Part

def _s(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def flags_key(flags: Iterable[str]) -> str:
    """The etag of a message: its flags sorted, space separated."""
    return " ".join(sorted(flags))


def _flags(raw: Iterable[Any]) -> tuple[str, ...]:
    items = tuple(raw)
    try:
        found = _FLAGS.get(items)
    except TypeError:  # a list inside: not a FETCH flag list, read it as it is
        return tuple(sorted(f for f in (_s(x) for x in items) if f and f.lower() != "\\recent"))
    if found is None:
        found = tuple(sorted(f for f in (_s(x) for x in items) if f and f.lower() != "\\recent"))
        if len(_FLAGS) >= 256:
            _FLAGS.clear()
        _FLAGS[items] = found
    return found


#: raw FETCH flags -> :func:`_flags` (a few combinations make nearly all mail; bounded)
_FLAGS: dict[tuple[Any, ...], tuple[str, ...]] = {}


def _pairs(params: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    if isinstance(params, (tuple, list)):
        items = list(params)
        for i in range(0, len(items) - 1, 2):
            out[_s(items[i]).lower()] = _s(items[i + 1])
    return out


def body_parts(bs: Any, section: str = "", depth: int = 0) -> Iterator[Part]:
    """Leaves of a raw BODYSTRUCTURE (:func:`parse_fetch` lists) as Parts with IMAP sections.

    Mirrors :func:`connectors.mailparse.iter_parts`: message/rfc822 parts
    are leaves marked as attachments, a part is an attachment when its
    disposition is "attachment" or names a file.
    """
    if not isinstance(bs, (tuple, list)) or not bs:
        return
    if isinstance(bs[0], list):  # multipart: (part part ... subtype params ...)
        n = 0
        while n < len(bs) and isinstance(bs[n], list):
            n += 1
        subs = bs[:n]
        params = _pairs(bs[n + 1]) if len(bs) > n + 1 else {}
        if "boundary" not in params:
            # mailparse reads a multipart without boundary as one text/plain body
            yield Part("text/plain", params.get("charset", ""), "", False, b"", section or "TEXT")
            return
        if depth >= 20:
            return
        for i, sub in enumerate(subs, 1):
            yield from body_parts(sub, f"{section}.{i}" if section else str(i), depth + 1)
        return
    maintype, subtype = _s(bs[0]).lower(), _s(bs[1]).lower() if len(bs) > 1 else ""
    ctype = f"{maintype}/{subtype}"
    if not maintype or not subtype:  # an unparsable Content-Type; mailparse says text/plain
        ctype = "text/plain"
    params = _pairs(bs[2]) if len(bs) > 2 else {}
    cte = _s(bs[5]) if len(bs) > 5 else ""
    if maintype == "text":
        ext = 8
    elif ctype == "message/rfc822":
        ext = 10
    else:
        ext = 7
    disposition = bs[ext + 1] if len(bs) > ext + 1 else None
    attachment = ctype == "message/rfc822"
    if isinstance(disposition, (tuple, list)) and disposition:
        if _s(disposition[0]).lower().startswith("attachment"):
            attachment = True
        elif _s(disposition[0]).lower() != "inline" and len(disposition) > 1 and any(
                "filename" in k for k in _pairs(disposition[1])):
            attachment = True  # as mailparse: a file name makes a file unless the part says inline
    yield Part(ctype, params.get("charset", ""), cte, attachment, b"", section or "1")


def uid_set(uids: Iterable[int]) -> str:
    """Sorted UIDs as a compact IMAP set: [1, 2, 3, 7] -> "1:3,7"."""
    out: list[str] = []
    start = prev = None
    for uid in sorted(uids):
        if prev is not None and uid == prev + 1:
            prev = uid
            continue
        if start is not None:
            out.append(f"{start}:{prev}" if prev != start else str(start))
        start = prev = uid
    if start is not None:
        out.append(f"{start}:{prev}" if prev != start else str(start))
    return ",".join(out)


#: one FETCH token: a paren, a quoted string, an atom (``BODY[HEADER.FIELDS (A B)]<0>`` is one), a literal's size
_TOKEN = re.compile(
    rb'[()]|"(?:[^"\\]|\\.)*"'
    rb'|[^ \t\r\n()"\[{]+(?:\[[^\]]*\][^ \t\r\n()"]*)?|\{\d+\+?\}$'
)
_UNESCAPE = re.compile(rb"\\(.)")


def parse_fetch(data: list[Any]) -> dict[int, dict[bytes, Any]]:
    """Parse untagged FETCH data as imaplib returns it: UID -> {ITEM: value}.

    ``data`` holds ``bytes`` lines and ``(line, literal)`` tuples.  Values
    stay raw: atoms and strings as bytes, lists as Python lists, NIL as
    None; item names are upper-cased (``BODY[1]<0>``).  One regex pass
    per line, dispatching on each token's first byte, keeps this several
    times faster than imapclient's general parser, which took two thirds
    of a full sync.
    """
    out: dict[int, dict[bytes, Any]] = {}
    stack: list[list[Any]] = []
    for item in data:
        if item.__class__ is tuple:
            text, literal = item
        else:
            text, literal = item, None
        if text == b")\r\n" and stack:  # the usual end of a message's list, after its literal
            done = stack.pop()
            if stack:
                stack[-1].append(done)
            else:
                _store_message(out, done)
        elif text:
            for tok in _TOKEN.findall(text):
                first = tok[0]
                if first == 40:  # (
                    stack.append([])
                elif first == 41:  # )
                    if not stack:
                        raise imaplib.IMAP4.error("unbalanced ) in FETCH response")
                    done = stack.pop()
                    if stack:
                        stack[-1].append(done)
                    else:
                        _store_message(out, done)
                elif first == 123:  # {n}: the literal comes with the line
                    continue
                elif stack:  # a token before the list is the sequence number
                    if first == 34:  # "
                        value = tok[1:-1]
                        stack[-1].append(_UNESCAPE.sub(rb"\1", value) if b"\\" in value else value)
                    else:
                        stack[-1].append(None if tok == b"NIL" else tok)
        if literal is not None:
            if not stack:
                raise imaplib.IMAP4.error("literal outside a FETCH list")
            stack[-1].append(bytes(literal))
    if stack:
        raise imaplib.IMAP4.abort("truncated FETCH response")
    return out


def _store_message(out: dict[int, dict[bytes, Any]], items: list[Any]) -> None:
    msg = {}
    for i in range(0, len(items) - 1, 2):
        key = items[i]
        if isinstance(key, bytes):
            msg[key.upper()] = items[i + 1]
    uid = msg.get(b"UID")
    if uid is not None:
        known = out.get(int(uid))
        if known is None:
            out[int(uid)] = msg
        else:  # a second response for the message (pipelined commands, a flag update): merge
            known.update(msg)


_LITERAL_AT_END = re.compile(rb"\{(\d+)\+?\}\r\n$")
#: bytes asked of the socket at a time
_CHUNK = 1 << 16
#: imaplib's limit of a response line
_MAXLINE = getattr(imaplib, "_MAXLINE", 1000000)
#: one untagged FETCH response line: its items, and the size of the literal it ends with (if it does;
#: else the line ends the response).  Matched with ``endpos`` at the line's end.
_FETCH_LINE = re.compile(rb"\* \d+ FETCH \((.*)(?:\{(\d+)\}|\))\r\n\Z")
#: the usual answers, as Dovecot words them: the header FETCH of new mail, and a text prefix
_HEADER_RESPONSE = re.compile(rb"\* \d+ FETCH \(UID ([0-9]+) FLAGS \(([^\s()\"{}\[\]]+(?: [^\s()\"{}\[\]]+)*)?\) "
                              rb"RFC822\.SIZE ([0-9]+) (BODY\[HEADER\.FIELDS \([A-Z0-9 .\-]*\)\]) \{([0-9]+)\}\r\n")
_TEXT_RESPONSE = re.compile(rb"\* \d+ FETCH \(UID ([0-9]+) (BODY\[[0-9.]*\]<[0-9]+>) \{([0-9]+)\}\r\n")
#: a BODYSTRUCTURE answer without quoting, blanks in strings or literals (nearly every one): it is
#: turned into JSON with a few replaces and read by the json module's C parser
_BODYSTRUCTURE_RESPONSE = re.compile(
    rb"\* \d+ FETCH \(UID ([0-9]+) BODYSTRUCTURE (\((?:[() ]|\"[^\"\\\\()\s]*\"|NIL|0|[1-9][0-9]*)*\))\)\r\n")
#: an item name as parse_fetch reads it (``BODY[HEADER.FIELDS (FROM TO)]``, ``BODY[1]<0>``)
_NAME = rb"[A-Za-z0-9.\-]+(?:\[[^\]\r\n]*\])?(?:<\d+>)?"
#: one item with a value that parse_fetch reads without quoting or nesting: a number, NIL, a flat
#: list of atoms (FLAGS); ``(?: |\Z)`` -- items are separated by single blanks
_ITEM = re.compile(rb"(" + _NAME + rb") (?:([0-9]+)|(NIL)|\(([^\s()\"{}\[\]]+(?: [^\s()\"{}\[\]]+)*)?\))(?: |\Z)")
#: the name of the item whose value is the literal after the line
_LITERAL_NAME = re.compile(rb"(" + _NAME + rb") \Z")


_JSON = json.JSONDecoder(strict=False)  # control characters in strings, as parse_fetch keeps them


def _json_structure(text: bytes) -> list[Any] | None:
    """A BODYSTRUCTURE that :data:`_BODYSTRUCTURE_RESPONSE` matched, as :func:`body_parts` reads it: lists,
    strings (str, decoded as ``_s`` decodes bytes), numbers and None; None when it is not well formed."""
    # NIL always follows a blank or "(" (no string holds either); strings hold no blank or parenthesis
    js = text.replace(b" NIL", b" null").replace(b"(NIL", b"(null").replace(b" ", b",").replace(b"(", b"[")
    js = js.replace(b")", b"]")
    try:
        value = _JSON.decode(js.replace(b"][", b"],[").decode("utf-8", "replace"))
    except ValueError:
        return None
    return value if isinstance(value, list) else None


class Fetches:
    """``UID FETCH`` commands pipelined on one connection (RFC 3501 5.5).

    ``send`` writes a command and returns at once, so the server works on
    the next batch while this process parses the last one; ``wait`` reads
    responses until the given commands are complete, and ``take`` hands
    out what arrived for some UIDs: UID -> {ITEM: raw value}, the items of
    every command merged, so responses of commands the server ran side by
    side land in the right place.  Commands in flight at the same time
    must ask for different UIDs, or for different items.

    ``IMAPClient.fetch`` in imapclient 4.1 filters its result through
    ``int()`` of every requested id, which fails for ranges (and thousands
    of comma-separated UIDs overrun servers' line limits), and its
    response parser plus imaplib's response bookkeeping took three
    quarters of a full sync.  So commands go out through imaplib, and
    responses are read straight off the connection, in big chunks (not
    line by line through imaplib), and parsed here.  A response of the
    usual shapes (``* 5 FETCH (UID 5 FLAGS (\\Seen) RFC822.SIZE 12
    BODY[HEADER.FIELDS (...)] {345}`` CRLF, the literal, ``)`` CRLF; or
    one line of numbers, NILs and flag lists) is read by two regular
    expressions into what :func:`parse_fetch` makes of it; anything else
    (a BODYSTRUCTURE, quoted strings, several literals, another server's
    order) goes through :func:`parse_fetch` itself, in the order it came;
    a BODYSTRUCTURE without quoting, blanks in strings or literals is read
    as JSON (its strings are ``str`` there, decoded as :func:`body_parts`
    decodes bytes, its numbers ``int``: body_parts reads both alike).
    Untagged responses other than FETCH (EXISTS, EXPUNGE, RECENT) are
    dropped: the next SELECT / SEARCH sees their effect anyway; BYE ends
    the connection.  Bytes read past the last complete response stay here
    for the next ``wait``; once no command is in flight, a response read
    in part is read to its end, so imaplib goes on at a response's start.
    A connection left with commands in flight (``busy``) must be dropped,
    not reused.
    """

    def __init__(self, client: Any):
        self._imap = client._imap
        self._open: set[bytes] = set()
        self._failed: dict[bytes, str] = {}
        self._messages: dict[int, dict[bytes, Any]] = {}
        self._buf = b""  # read from the socket, not yet parsed from ``_pos`` on
        self._pos = 0
        self._slow: list[Any] = []  # responses in imaplib's shape waiting for parse_fetch

    @property
    def busy(self) -> bool:
        return bool(self._open)

    def send(self, uids: str, items: list[str], modifiers: str | None = None) -> bytes:
        args = ["FETCH", uids, "(" + " ".join(items) + ")"]
        if modifiers:
            args.append(f"({modifiers})")
        tag: bytes = self._imap._command("UID", *args)
        self._imap.tagged_commands.pop(tag, None)  # completion is read here, not by imaplib
        self._open.add(tag)
        return tag

    # -- the buffer ---------------------------------------------------------------------------
    def _fill(self, need: int, what: str = "socket error: EOF") -> None:
        """Read until at least ``need`` bytes wait from ``_pos`` on."""
        parts = [self._buf[self._pos:]]
        have = len(parts[0])
        read1 = self._imap.file.read1
        try:
            while have < need:
                chunk = read1(max(_CHUNK, need - have))
                if not chunk:
                    raise imaplib.IMAP4.abort(what)
                parts.append(chunk)
                have += len(chunk)
        finally:
            self._buf = b"".join(parts)
            self._pos = 0

    def _readline(self) -> bytes:
        while True:
            end = self._buf.find(b"\n", self._pos)
            if end >= 0:
                line = self._buf[self._pos:end + 1]
                self._pos = end + 1
                if len(line) > _MAXLINE:
                    raise imaplib.IMAP4.error(f"got more than {_MAXLINE} bytes")
                return line
            waiting = len(self._buf) - self._pos
            if waiting > _MAXLINE:
                raise imaplib.IMAP4.error(f"got more than {_MAXLINE} bytes")
            self._fill(waiting + 1)

    def _read(self, size: int) -> bytes:
        if len(self._buf) - self._pos < size:
            self._fill(size, "socket error: EOF inside a literal")
        data = self._buf[self._pos:self._pos + size]
        self._pos += size
        return data

    # -- responses --------------------------------------------------------------------------------
    def wait(self, *tags: bytes) -> None:
        """Read until every command in ``tags`` is complete; raise if one failed."""
        try:
            open_ = self._open
            while not open_.isdisjoint(tags):
                self._response()
            while self._pos < len(self._buf) and not self._open:
                self._response()  # an unsolicited response read in part: to its end
        finally:
            self._flush()
            if self._pos:
                self._buf, self._pos = self._buf[self._pos:], 0
        for tag in tags:
            if tag in self._failed:
                raise imaplib.IMAP4.error(f"UID FETCH failed: {self._failed.pop(tag)}")

    def _response(self) -> None:
        """Read one response (from ``_pos``) and keep what it says."""
        buf, pos = self._buf, self._pos
        end = buf.find(b"\n", pos)
        if end < 0:  # no whole line here: read on (imaplib's limit of a line holds)
            if len(buf) - pos > _MAXLINE:
                raise imaplib.IMAP4.error(f"got more than {_MAXLINE} bytes")
            self._fill(len(buf) - pos + 1)
            return
        if buf.startswith(b"* ", pos):
            m = _HEADER_RESPONSE.match(buf, pos, end + 1)
            if m is not None:
                uid, flags, rfc822_size, name, size = m.groups()
                msg = {b"UID": uid, b"FLAGS": flags.split(b" ") if flags else [], b"RFC822.SIZE": rfc822_size}
            elif (m := _TEXT_RESPONSE.match(buf, pos, end + 1)) is not None:
                uid, name, size = m.groups()
                flags = None
                msg = {b"UID": uid}
            if m is not None and not (flags and b"NIL" in msg[b"FLAGS"]):  # a flag NIL: parse_fetch says None
                start = end + 1
                stop = start + int(size)
                if len(buf) < stop + 3:
                    self._fill(stop + 3 - pos)  # the whole response, then look again
                    return
                if buf[stop:stop + 3] == b")\r\n":
                    msg[name] = buf[start:stop]
                    self._keep(int(uid), msg)
                    self._pos = stop + 3
                    return
            m = _BODYSTRUCTURE_RESPONSE.match(buf, pos, end + 1)
            if m is not None and (structure := _json_structure(m.group(2))) is not None:
                self._keep(int(m.group(1)), {b"UID": m.group(1), b"BODYSTRUCTURE": structure})
                self._pos = end + 1
                return
            m = _FETCH_LINE.match(buf, pos, end + 1)
            if m is not None:
                size = m.group(2)
                if size is None:
                    if self._fast(m.group(1), None):
                        self._pos = end + 1
                        return
                else:
                    start = end + 1
                    stop = start + int(size)
                    if len(buf) < stop + 3:
                        self._fill(stop + 3 - pos)  # the whole response, then look again
                        return
                    if buf[stop:stop + 3] == b")\r\n" and self._fast(m.group(1), buf[start:stop]):
                        self._pos = stop + 3
                        return
        self._general()

    def _fast(self, items: bytes, literal: bytes | None) -> bool:
        """Keep a response of the usual shape as :func:`parse_fetch` would read it; False: not that shape."""
        msg: dict[bytes, Any] = {}
        at = 0
        match = _ITEM.match
        while (m := match(items, at)) is not None:
            at = m.end()
            number, nil, flat = m.group(2, 3, 4)
            if number is not None:
                value: Any = number
            elif nil is not None:
                value = None
            elif flat is None:
                value = []
            else:
                value = flat.split(b" ")
                if b"NIL" in value:
                    return False
            msg[m.group(1).upper()] = value
        if literal is None:
            if at != len(items):
                return False
        else:
            m = _LITERAL_NAME.match(items, at)
            if m is None:
                return False
            msg[m.group(1).upper()] = literal
        uid = msg.get(b"UID")
        if uid is None:
            return False
        self._keep(int(uid), msg)
        return True

    def _keep(self, uid: int, msg: dict[bytes, Any]) -> None:
        if self._slow:  # responses before this one first: a later answer for the same item wins
            self._flush()
        known = self._messages.get(uid)
        if known is None:
            self._messages[uid] = msg
        else:
            known.update(msg)

    def _general(self) -> None:
        """One response read as imaplib reads it: a line, and a literal and a line for each literal."""
        line = self._readline()
        if not line.startswith(b"* "):
            tag, _, rest = line.partition(b" ")
            if tag in self._open:
                self._open.discard(tag)
                if rest[:2].upper() != b"OK":
                    self._failed[tag] = line.decode("utf-8", "replace").strip()
            return
        if line.startswith(b"* BYE"):
            raise imaplib.IMAP4.abort(line.decode("utf-8", "replace").strip())
        is_fetch = b" FETCH " in line[:40]
        data: list[Any] = []
        while True:
            m = _LITERAL_AT_END.search(line)
            if m is None:
                break
            literal = self._read(int(m.group(1)))
            if is_fetch:
                data.append((line[: m.start()], literal))
            line = self._readline()
        if is_fetch:
            data.append(line)
            self._slow += data

    def _flush(self) -> None:
        """Responses read by :meth:`_general` -> ``_messages``."""
        if not self._slow:
            return
        data, self._slow = self._slow, []
        messages = self._messages
        for uid, items in parse_fetch(data).items():
            if uid in messages:
                messages[uid].update(items)
            else:
                messages[uid] = items

    def take(self, uids: Iterable[int] | None = None) -> dict[int, dict[bytes, Any]]:
        """Remove and return what arrived for ``uids`` (None: everything)."""
        if uids is None:
            out, self._messages = self._messages, {}
            return out
        pop = self._messages.pop
        return {uid: msg for uid in uids if (msg := pop(uid, None)) is not None}


def uid_fetch(client: Any, uids: str, items: list[str], modifiers: str | None = None) -> dict[int, dict]:
    """One ``UID FETCH`` with a UID *set* (``1:500``, ``1:*``) -> UID -> {ITEM: raw value}."""
    fetches = Fetches(client)
    fetches.wait(fetches.send(uids, items, modifiers))
    return fetches.take()


_ESEARCH_ALL = re.compile(rb"\bALL ([0-9:,]+)", re.I)


def expand_set(text: bytes | str) -> list[int]:
    """An IMAP sequence set without ``*`` -> sorted UIDs ("1:3,7" -> [1, 2, 3, 7])."""
    if isinstance(text, bytes):
        text = text.decode("ascii")
    out: list[int] = []
    for piece in text.split(","):
        if not piece:
            continue
        lo, _, hi = piece.partition(":")
        a, b = int(lo), int(hi or lo)
        if a > b:
            a, b = b, a
        out.extend(range(a, b + 1))
    out.sort()
    return out


def uid_search_all(client: Any, esearch: bool, uids: str = "") -> list[int]:
    """Every UID of the selected folder (or of the UID set ``uids``, e.g. ``"501:*"``: mind that ``*`` is
    the highest UID, which may be below 501), ascending.

    With ESEARCH (RFC 4731) the answer is a compact set ("1:20000"), which
    also stays under imaplib's 1 MB line limit for very large folders.
    """
    criteria = ["UID", uids] if uids else ["ALL"]
    if not esearch:
        return sorted(client.search(criteria))
    imap = client._imap
    typ, data = imap._simple_command("UID", "SEARCH", "RETURN", "(ALL)", *criteria)
    client._checkok("search", typ, data)
    typ, data = imap._untagged_response(typ, data, "ESEARCH")
    for line in data or []:
        if isinstance(line, bytes):
            m = _ESEARCH_ALL.search(line)
            if m:
                return expand_set(m.group(1))
    return []
