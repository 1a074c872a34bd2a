"""The text of new IMAP mail, fetched per mail after its header, for
:class:`~connectors.imap.ImapConnector`: what each mail needs next
(:class:`_Mail`), a batch's rounds of text FETCHes (:class:`_Texts`), and the
helpers that parse the header FETCH (:func:`parse_new`), ask for the next round
(:func:`ask_texts`) and make the records (:func:`add_records`).

What is fetched
---------------
First ``UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (...)]`` (the fields
of :data:`connectors.mailparse.HEADER_FIELDS`).  Then, per mail (:class:`_Mail`):

* nothing more for mail the store skips whatever its text says (private,
  blocked, bulk, internal-only, before ``since``: the view's
  :class:`~connectors.base.SkipRule`);
* no text for mail the store keeps as metadata only, known from the header
  (nobody in it is a known contact or at a customer's domain:
  :meth:`~connectors.base.SkipRule.text_unneeded`), only the BODYSTRUCTURE
  of a multipart one (whether it has attachments); the record says
  ``no_text``.  Once such a mail is linked, the store names its location
  (``SourceView.rereads``, :mod:`crm_core.rereads`) and the next pull
  fetches just those UIDs, as new mail is fetched, right after the folder's
  EXAMINE, answering each (read or gone) in ``Batch.rereads``;
* for a single-part mail (Content-Type not multipart, or none) the text part
  is known from the header, read as :func:`~connectors.mailparse.iter_parts`
  reads a file; a multipart mail's ``BODYSTRUCTURE`` is fetched to find it
  (:func:`~connectors.mailparse.choose_text_part`);
* of the text part a prefix ``BODY.PEEK[<section>]<0.N>``: first
  :func:`~connectors.snippet.first_fetch_bytes` (1.5 KiB of text, 2 KiB
  base64 or quoted-printable, 8 KiB HTML), which settles nearly every
  snippet (:func:`~connectors.snippet.prefix_snippet`); where it does not
  (a long style sheet, a quote first), the next bytes up to twice that,
  :func:`~connectors.mailparse.prefix_bytes`, and at most twice
  prefix_bytes: IMAP sends CRLF line ends while Maildir files (Dovecot,
  mbsync) keep LF, so the prefix is normalised to LF and then cut to
  prefix_bytes, which gives the same snippet as
  :func:`~connectors.mailparse.parse_message` on the stored file.

Mails that ask for the same item share one FETCH.  A mail whose header the
server could not split (CR-only line ends of old Mac exports, no known
field) is fetched as a prefix of the whole message instead and read by
``parse_message``.  Folders are opened with EXAMINE and every body fetch
uses ``BODY.PEEK``: the connector never changes the mailbox.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from crm_bridge.connectors.base import SkipRule
from crm_bridge.connectors.imapwire import Fetches, _flags, _s, body_parts, flags_key, uid_set
from crm_bridge.connectors.mailparse import (
    HEADER_FIELDS,
    MAX_MESSAGE_BYTES,
    MailParseError,
    Part,
    bare_cr_lines,
    choose_text_part,
    parse_header_block,
    parse_message,
    part_snippet,
    prefix_bytes,
    record_from_headers,
    single_part,
)
from crm_bridge.connectors.snippet import first_fetch_bytes, prefix_snippet
from crm_bridge.crm_core.records import Batch, Failure, Location, MailRecord

_HEADER_ITEM = "BODY.PEEK[HEADER.FIELDS (" + " ".join(f.upper() for f in HEADER_FIELDS) + ")]"
#: the first FETCH of new mail; BODYSTRUCTURE follows only for multipart mail (see _Mail)
_FETCH_ITEMS = ["UID", "FLAGS", "RFC822.SIZE", _HEADER_ITEM]


class _Mail:
    """A new mail between its header FETCH and its record: what is known, what to ask for next."""

    __slots__ = ("uid", "location", "flags", "size", "record", "part", "structure", "raw", "asked", "snippet",
                 "failed", "textless", "idle")

    def __init__(self, uid: int, location: Location, flags: tuple[str, ...], size: int):
        self.uid = uid
        self.location = location
        self.flags = flags
        self.size = size
        self.record: MailRecord | None = None  # None: read from ``raw`` by the file parser
        self.part: Part | None = None  # the text part to fetch, once known
        self.structure = False  # the BODYSTRUCTURE is to be fetched first
        self.raw = b""  # the part's first bytes as fetched
        self.asked = 0  # bytes asked for so far (from offset 0)
        self.snippet: str | None = None  # settled
        self.failed = ""
        self.textless = False  # metadata only: the BODYSTRUCTURE (for has_attachments), no text
        self.idle = False  # next_item() said None and nothing came since: it says None again

    def next_item(self) -> tuple[str, ...] | None:
        """The FETCH item this mail needs next, None when it needs nothing more."""
        if self.structure:
            return ("BODYSTRUCTURE",)
        part = self.part
        if part is None or self.snippet is not None:
            return None
        if not part.section:  # the whole message, for a mail only the file parser can read (CR line ends)
            return (f"BODY.PEEK[]<0.{MAX_MESSAGE_BYTES}>",) if not self.asked else None
        # the first bytes, twice as many, then up to prefix_bytes (enough unless the server's
        # CRLF line ends were many), then up to the 2 * prefix_bytes that part_snippet reads at most
        n = prefix_bytes(part.ctype, part.cte)
        first = first_fetch_bytes(part.ctype, part.cte)
        size = next((t for t in (first, 2 * first, n, 2 * n) if t > self.asked), 0) - self.asked
        if size <= 0:
            return None
        item = f"BODY.PEEK[{part.section}]<{self.asked}.{size}>"
        self.asked += size
        return (item,)

    def take(self, data: dict[bytes, Any]) -> None:
        """What a FETCH brought for this mail."""
        if self.structure:
            self.structure = False
            self.part, attachments = choose_text_part(body_parts(data.get(b"BODYSTRUCTURE")))
            if self.record is not None:
                self.record.has_attachments = attachments
            if self.textless:
                self.part = None
            return
        part = self.part
        if part is None:
            return
        offset = len(self.raw)
        found = data.get(f"BODY[{part.section}]<{offset}>".encode())
        if found is None:  # a server that names the item otherwise: the one body item there is
            found = next((v for k, v in data.items() if k.startswith(b"BODY[") and not k.startswith(b"BODY[HEADER")),
                         b"")
        self.raw += found or b""
        if not part.section:
            self.snippet = ""  # read with the whole message in add_records
            return
        complete = len(self.raw) < self.asked  # the server sent less than asked: that is the whole part
        self.snippet = prefix_snippet(self.raw, part, complete)
        if self.snippet is None and self.asked >= 2 * prefix_bytes(part.ctype, part.cte):
            self.snippet = part_snippet(self.raw, part)  # all that part_snippet reads is here


class _Texts:
    """A batch of new mail between its header FETCH and its records: the text FETCHes still under way."""

    __slots__ = ("batch", "mails", "uids", "asked")

    def __init__(self, batch: Batch, mails: list[_Mail], uids: Sequence[int], asked: list[bytes]):
        self.batch = batch
        self.mails = mails
        self.uids = uids
        self.asked = asked  # tags of the round of FETCHes on the wire

    def next_round(self, fetches: Fetches) -> None:
        """Take in the round on the wire (mostly answered by now) and send the next one."""
        if self.asked:
            fetches.wait(*self.asked)
            self.asked = ask_texts(fetches, self.mails, fetches.take(self.uids))


def _excerpt_of(record: MailRecord | None) -> str:
    if record is None:
        return ""
    sender = record.sender.email if record.sender else ""
    return f"from: {sender}; subject: {record.subject[:80]}; message-id: {record.message_id[:80]}"


def parse_new(resp: dict[int, dict], scope: str, uidvalidity: int, uids: list[int],
              rule: SkipRule | None = None) -> tuple[Batch, list[_Mail]]:
    """The header FETCH of new mail -> (batch with failures, the mails with what to fetch next).

    A mail whose header the server could not split (no wanted field, or
    CR-only line ends, which the server reads as one long line) gets no
    record yet and the section "": the prefix of the whole message is
    fetched and read by the file parser.  A single-part mail's text part
    is known from its Content-Type (read as the file parser reads it),
    a multipart mail's from its BODYSTRUCTURE, fetched next.  Mail the
    store will skip whatever its text (``rule``) gets no text.
    """
    batch = Batch()
    mails: list[_Mail] = []
    for uid in uids:
        data = resp.get(uid)
        if data is None:  # expunged between SEARCH and FETCH
            continue
        location = Location(scope, f"{uidvalidity}:{uid}")
        header = b""
        h: dict[str, str] | None = None
        try:
            for key, value in data.items():
                if key.startswith(b"BODY[HEADER"):
                    header = value or b""
                    break
            h = parse_header_block(header)
            flags = _flags(data.get(b"FLAGS", ()))
            location = Location(scope, location.local_id, flags_key(flags))
            size = int(data.get(b"RFC822.SIZE", 0) or 0)
            mail = _Mail(uid, location, flags, size)
            if not h or bare_cr_lines(header):
                mail.part = Part("message/raw", "", "", False, b"", "")
                h = None
            else:
                mail.record = record_from_headers(h, location, flags=flags, size=size)
                if rule is not None and rule.skip_reason(mail.record):
                    pass  # no text: the store keeps none of it
                elif (single := single_part(h)) is None:
                    mail.structure = True
                else:  # one part, the whole body: as the file parser sees it
                    mail.part, mail.record.has_attachments = single
                if mail.record is not None and rule is not None and (mail.structure or mail.part) \
                        and rule.text_unneeded(mail.record):
                    # metadata only (nobody known in it): no text; the store asks for it by name
                    # once the mail is linked (crm_core.rereads)
                    mail.record.no_text = mail.textless = True
                    mail.part = None
        except MailParseError as exc:
            batch.failures.append(Failure(location, str(exc), _excerpt(h) if h else _s(header[:300])))
            continue
        except Exception as exc:  # a mail this code did not foresee: quarantine, go on
            batch.failures.append(Failure(location, f"unexpected {type(exc).__name__}: {exc}"))
            continue
        mails.append(mail)
    return batch, mails


def ask_texts(fetches: Fetches, mails: list[_Mail],
              resp: dict[int, dict] | None = None) -> list[bytes]:
    """Take in what the last round of FETCHes brought (``resp``), send the next round; its tags.

    A round asks for the BODYSTRUCTURE of multipart mails, the first
    :func:`~connectors.snippet.first_fetch_bytes` of a text part, or the
    rest of its ``2 * prefix_bytes`` (CRLF from the server, cut after
    CRLF became LF, as :func:`~connectors.mailparse.part_snippet` does)
    where the first bytes did not settle the snippet
    (:func:`~connectors.snippet.prefix_snippet`).  Mails that ask for the
    same thing go in one FETCH.
    """
    wanted: dict[tuple[str, ...], list[int]] = {}
    for mail in mails:
        if mail.failed:
            continue
        data = resp.get(mail.uid) if resp is not None else None
        if data is None and mail.idle:
            continue
        try:
            if data is not None:
                mail.take(data)
            item = mail.next_item()
            mail.idle = item is None
        except Exception as exc:  # a BODYSTRUCTURE or text this code did not foresee: quarantine, go on
            mail.failed = f"unexpected {type(exc).__name__}: {exc}"
            continue
        if item is not None:
            wanted.setdefault(item, []).append(mail.uid)
    return [fetches.send(uid_set(uids), list(items)) for items, uids in wanted.items()]


def add_records(batch: Batch, mails: list[_Mail]) -> None:
    """Records of the mails, with the snippets from their text-part prefixes."""
    for mail in mails:
        location = mail.location
        record = mail.record
        try:
            if mail.failed:
                raise MailParseError(mail.failed)
            if record is None:  # the whole message's prefix, read as a file would be
                record = parse_message(mail.raw, location, mail.flags, mail.size or None)
            elif mail.snippet:
                record.snippet = mail.snippet
        except MailParseError as exc:
            batch.failures.append(Failure(location, str(exc), _excerpt_of(record) or _s(mail.raw[:300])))
            continue
        except Exception as exc:
            batch.failures.append(Failure(location, f"unexpected {type(exc).__name__}: {exc}",
                                          _excerpt_of(record) or _s(mail.raw[:300])))
            continue
        batch.records.append(record)


def _excerpt(h: Mapping[str, str]) -> str:
    return "; ".join(f"{k}: {v[:80]}" for k, v in list(h.items())[:4])
