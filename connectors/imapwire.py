"""The IMAP wire, below the connector: FETCH responses tokenized and merged,
pipelined UID FETCHes (:class:`Fetches`), ESEARCH/SEARCH results, UID sets,
and the text parts of a BODYSTRUCTURE.  connectors/imap.py builds on it.
"""

from __future__ import annotations

import imaplib
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
    return tuple(sorted(f for f in (_s(x) for x in raw) if f and f.lower() != "\\recent"))


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
    responses are read straight off the connection and parsed with
    :func:`parse_fetch`.  Untagged responses other than FETCH (EXISTS,
    EXPUNGE, RECENT) are dropped: the next SELECT / SEARCH sees their
    effect anyway.  A connection left with commands in flight (``busy``)
    must be dropped, not reused.
    """

    def __init__(self, client: Any):
        self._imap = client._imap
        self._open: set[bytes] = set()
        self._failed: dict[bytes, str] = {}
        self._messages: dict[int, dict[bytes, Any]] = {}

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

    def wait(self, *tags: bytes) -> None:
        """Read until every command in ``tags`` is complete; raise if one failed."""
        readline, read = self._imap.readline, self._imap.read
        data: list[Any] = []
        try:
            while self._open.intersection(tags):
                line = readline()
                if not line:
                    raise imaplib.IMAP4.abort("socket error: EOF")
                if not line.startswith(b"* "):
                    tag, _, rest = line.partition(b" ")
                    if tag in self._open:
                        self._open.discard(tag)
                        if rest[:2].upper() != b"OK":
                            self._failed[tag] = line.decode("utf-8", "replace").strip()
                    continue
                if line.startswith(b"* BYE"):
                    raise imaplib.IMAP4.abort(line.decode("utf-8", "replace").strip())
                is_fetch = b" FETCH " in line[:40]
                while True:
                    m = _LITERAL_AT_END.search(line)
                    if m is None:
                        break
                    size = int(m.group(1))
                    literal = read(size)
                    if len(literal) != size:
                        raise imaplib.IMAP4.abort("socket error: EOF inside a literal")
                    if is_fetch:
                        data.append((line[: m.start()], literal))
                    line = readline()
                    if not line:
                        raise imaplib.IMAP4.abort("socket error: EOF")
                if is_fetch:
                    data.append(line)
        finally:
            if data:
                messages = self._messages
                for uid, items in parse_fetch(data).items():
                    if uid in messages:
                        messages[uid].update(items)
                    else:
                        messages[uid] = items
        for tag in tags:
            if tag in self._failed:
                raise imaplib.IMAP4.error(f"UID FETCH failed: {self._failed.pop(tag)}")

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


def uid_search_all(client: Any, esearch: bool) -> list[int]:
    """Every UID of the selected folder, ascending.

    With ESEARCH (RFC 4731) the answer is a compact set ("1:20000"), which
    also stays under imaplib's 1 MB line limit for very large folders.
    """
    if not esearch:
        return sorted(client.search(["ALL"]))
    imap = client._imap
    typ, data = imap._simple_command("UID", "SEARCH", "RETURN", "(ALL)", "ALL")
    client._checkok("search", typ, data)
    typ, data = imap._untagged_response(typ, data, "ESEARCH")
    for line in data or []:
        if isinstance(line, bytes):
            m = _ESEARCH_ALL.search(line)
            if m:
                return expand_set(m.group(1))
    return []
