"""The FETCH response reader (connectors/imapwire.py Fetches): responses read in big chunks and the
usual shapes split by one regular expression must give exactly what imaplib's line reader plus
:func:`parse_fetch` gave, for every shape and wherever the chunks end; errors stay errors."""

from __future__ import annotations

import imaplib
import io
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crm_bridge.connectors import imapwire
from crm_bridge.connectors.imapwire import Fetches, body_parts, parse_fetch

HEADER_ITEM = b"BODY[HEADER.FIELDS (FROM TO CC DATE SUBJECT MESSAGE-ID CONTENT-TYPE)]"
HEAD = b"From: Kim <kim@kunde.example>\r\nSubject: Termin\r\n\r\n"

#: responses as servers send them: Dovecot's usual ones first, then what other servers and odd mail give
RESPONSES = [
    b"* 1 FETCH (UID 11 FLAGS (\\Seen) RFC822.SIZE 2345 " + HEADER_ITEM + b" {%d}\r\n" % len(HEAD) + HEAD + b")\r\n",
    b"* 2 FETCH (UID 12 FLAGS () RFC822.SIZE 17 " + HEADER_ITEM + b" {0}\r\n)\r\n",
    b"* 3 FETCH (UID 13 FLAGS (\\Seen \\Answered $Forwarded) RFC822.SIZE 9 " + HEADER_ITEM + b" {5}\r\nab\r\nc)\r\n",
    b"* 1 FETCH (UID 11 BODY[1]<0> {12}\r\nHallo Anna\r\n)\r\n",
    b"* 3 FETCH (UID 13 BODY[1.2]<1536> {3}\r\n)x))\r\n",
    b'* 4 FETCH (UID 14 BODYSTRUCTURE (("text" "plain" ("charset" "utf-8") NIL NIL "8bit" 1852 29 NIL NIL NIL NIL)'
    b'("text" "html" ("charset" "utf-8") NIL NIL "quoted-printable" 2050 18 NIL NIL NIL NIL) "alternative" '
    b'("boundary" "=_alt_2_1") NIL ("de-DE") NIL))\r\n',
    b'* 5 FETCH (UID 15 BODYSTRUCTURE (("text" "plain" ("charset" "NIL") NIL NIL "7bit" 0 0 NIL NIL NIL NIL)'
    b'("application" "pdf" ("name" "NILS.pdf") NIL NIL "base64" 10 NIL ("attachment" ("filename" "NILS.pdf")) NIL '
    b'NIL) "mixed" ("boundary" "b") NIL NIL NIL))\r\n',
    b'* 6 FETCH (UID 16 BODYSTRUCTURE (("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 1 1 NIL NIL NIL NIL)'
    b'("application" "pdf" ("name" "my file.pdf") NIL NIL "base64" 10 NIL ("attachment" ("filename" "my file.pdf"))'
    b' NIL NIL) "mixed" ("boundary" "b") NIL NIL NIL))\r\n',
    b'* 7 FETCH (UID 17 BODYSTRUCTURE ("text" "plain" ("charset" "a \\"q\\"") NIL NIL "7bit" 1 1 NIL NIL NIL NIL))\r\n',
    b'* 8 FETCH (UID 18 BODYSTRUCTURE ("text" "plain" ("name" {5}\r\nx y z) NIL NIL "7bit" 1 1 NIL NIL NIL NIL))\r\n',
    '* 9 FETCH (UID 19 BODYSTRUCTURE ("text" "plain" ("name" "Grüße\u2028.txt") NIL NIL "7bit" 01 1 NIL NIL))\r\n'
    .encode(),
    b'* 10 FETCH (UID 20 BODYSTRUCTURE ("text" "plain" ("name" "b\xe4d") NIL NIL "7bit" 1 1 NIL NIL NIL NIL))\r\n',
    b'* 11 FETCH (UID 21 BODYSTRUCTURE ("text""plain" NILNIL NIL "7bit" 1 1))\r\n',
    b"* 12 FETCH (UID 22 FLAGS (\\Seen))\r\n",
    b"* 13 FETCH (FLAGS (\\Flagged) UID 23 MODSEQ (12345))\r\n",
    b"* 14 FETCH (UID 24 FLAGS (NIL) RFC822.SIZE 3 " + HEADER_ITEM + b" {3}\r\nabc)\r\n",
    b"* 15 FETCH (UID 25 RFC822.SIZE 3 FLAGS (\\Seen) " + HEADER_ITEM + b" {3}\r\nabc)\r\n",  # another order
    b"* 16 FETCH (UID 26 BODY[1]<0> NIL)\r\n",
    b'* 17 FETCH (UID 27 BODY[1]<0> "quoted text")\r\n',
    b"* 18 FETCH (UID 28 X-GM-MSGID 1278455344230334865 BODY[1]<0> {2}\r\nab X-GM-LABELS (\\Inbox))\r\n",
    b"* 19 FETCH (UID 29 BODY[1]<0> {2}\r\nab BODY[2]<0> {3}\r\nabc)\r\n",
    b"* 20 FETCH (UID 30 BODY[1]<0> {2+}\r\nab)\r\n",
    b"* 21 FETCH (UID 11 FLAGS (\\Seen \\Flagged))\r\n",  # a second response for UID 11: merged
    b"* 22 FETCH (FLAGS (\\Deleted))\r\n",  # no UID: dropped
    b"* 23 EXISTS\r\n",
    b"* 2 EXPUNGE\r\n",
    b"* OK [HIGHESTMODSEQ 99] still here\r\n",
    b"* 24 FETCH (uid 31 flags (\\Seen) rfc822.size 3 body[header.fields (from)] {3}\r\nabc)\r\n",  # lower case
]


class Pieces:
    """A socket file that hands out ``data`` in the given piece sizes (as TCP may deliver it)."""

    def __init__(self, data: bytes, sizes: list[int]):
        self.stream = io.BytesIO(data)
        self.sizes = sizes or [len(data) or 1]
        self.k = 0

    def read1(self, n: int) -> bytes:
        size = self.sizes[self.k % len(self.sizes)]
        self.k += 1
        return self.stream.read(min(n, size))

    def readline(self, limit: int = -1) -> bytes:
        return self.stream.readline(limit)

    def read(self, n: int = -1) -> bytes:
        return self.stream.read(n)


class Conn:
    """What Fetches uses of imaplib's connection: its socket file, and the commands it sends."""

    def __init__(self, data: bytes, sizes: list[int]):
        self.file = Pieces(data, sizes)
        self.tagged_commands: dict = {}
        self.tags = iter([b"A1", b"A2", b"A3"])

    def _command(self, *args: str) -> bytes:
        return next(self.tags)

    def readline(self) -> bytes:  # imaplib's line reader, over the same file
        return self.file.readline(imaplib._MAXLINE + 1)

    def read(self, size: int) -> bytes:
        return self.file.read(size)


class Client:
    def __init__(self, data: bytes, sizes: list[int] = ()):  # type: ignore[assignment]
        self._imap = Conn(data, list(sizes))


def reference(data: bytes) -> dict:
    """What the connector read before: imaplib's line reader, every FETCH through parse_fetch."""
    f = io.BytesIO(data)
    lines: list = []
    while True:
        line = f.readline()
        if not line or not line.startswith(b"* "):
            break
        is_fetch = b" FETCH " in line[:40]
        while (m := imapwire._LITERAL_AT_END.search(line)) is not None:
            literal = f.read(int(m.group(1)))
            if is_fetch:
                lines.append((line[: m.start()], literal))
            line = f.readline()
        if is_fetch:
            lines.append(line)
    return parse_fetch(lines)


def norm(messages: dict) -> dict:
    """A BODYSTRUCTURE read as JSON has str and int where parse_fetch has bytes: compare its parts."""
    return {uid: {k: [vars_of(p) for p in body_parts(v)] if k == b"BODYSTRUCTURE" else v for k, v in items.items()}
            for uid, items in messages.items()}


def read(data: bytes, sizes: list[int] = ()) -> Fetches:  # type: ignore[assignment]
    fetches = Fetches(Client(data, sizes))
    tag = fetches.send("1:*", ["UID"])
    fetches.wait(tag)
    return fetches


def test_every_shape_reads_as_parse_fetch_read_it_wherever_the_chunks_end():
    data = b"".join(RESPONSES) + b"A1 OK done\r\n"
    want = reference(data)
    assert len(want) > 20
    rng = random.Random(5)
    for sizes in ([len(data)], [1], [2], [7], [64], *([rng.randint(1, 300) for _ in range(20)] for _ in range(30))):
        fetches = read(data, sizes)
        assert norm(fetches.take()) == norm(want), sizes
        assert not fetches.busy


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(RESPONSES), max_size=12), st.lists(st.integers(1, 400), min_size=1, max_size=8))
def test_any_sequence_of_responses_reads_the_same(responses, sizes):
    data = b"".join(responses) + b"A1 OK done\r\n"
    assert norm(read(data, sizes).take()) == norm(reference(data))


def test_the_usual_responses_do_not_go_through_the_general_parser(monkeypatch):
    calls = []
    real = imapwire.parse_fetch
    monkeypatch.setattr(imapwire, "parse_fetch", lambda data: calls.append(data) or real(data))
    usual = RESPONSES[:7]  # headers, text prefixes, BODYSTRUCTUREs as Dovecot sends them
    fetches = read(b"".join(usual) + b"A1 OK done\r\n", [4096])
    assert sorted(fetches.take()) == [11, 12, 13, 14, 15]
    assert not calls


def test_bodystructure_read_as_json_gives_the_parts_parse_fetch_gives():
    for response in RESPONSES[5:13]:
        want = reference(response)
        got = read(response + b"A1 OK done\r\n").take()
        assert got.keys() == want.keys()
        for uid, items in want.items():
            mine, theirs = got[uid].get(b"BODYSTRUCTURE"), items.get(b"BODYSTRUCTURE")
            assert [vars_of(p) for p in body_parts(mine)] == [vars_of(p) for p in body_parts(theirs)], response


def vars_of(part) -> tuple:
    return part.ctype, part.charset, part.cte, part.attachment, part.body, part.section


def test_a_failed_command_a_bye_and_a_cut_connection_stay_errors():
    with pytest.raises(imaplib.IMAP4.error, match="UID FETCH failed: A1 NO"):
        read(RESPONSES[0] + b"A1 NO [SERVERBUG] sorry\r\n")
    with pytest.raises(imaplib.IMAP4.abort, match="BYE"):
        read(RESPONSES[0] + b"* BYE shutting down\r\n")
    whole = RESPONSES[0] + b"A1 OK done\r\n"
    for cut in (5, len(RESPONSES[0]) - 20, len(RESPONSES[0]) - 2, len(RESPONSES[0]) + 3):
        with pytest.raises(imaplib.IMAP4.abort, match="EOF"):
            read(whole[:cut], [3])


def test_an_unsolicited_response_read_in_part_with_the_last_answer_is_read_to_its_end():
    """Bytes past the last answer can only be unsolicited responses (nothing else is asked): one read
    in part is read to its end, so imaplib's next read starts at a response; a FETCH among them is
    kept as during the wait, others are dropped as during the wait."""
    tail = b"* 5 EXISTS\r\n* 6 FETCH (UID 40 FLAGS (\\Seen))\r\n"
    data = RESPONSES[0] + b"A1 OK done\r\n" + tail
    for cut in range(1, len(tail)):
        fetches = Fetches(Client(data, [len(data) - len(tail) + cut, 4096]))
        fetches.wait(fetches.send("1:*", ["UID"]))
        assert fetches._buf == b""
        if cut == len(b"* 5 EXISTS\r\n"):  # read up to a response's start: the rest is imaplib's
            assert fetches._imap.file.read() == b"* 6 FETCH (UID 40 FLAGS (\\Seen))\r\n"
            assert set(fetches.take()) == {11}
        else:
            assert fetches._imap.file.read(1) == b""
            assert set(fetches.take()) == {11, 40}


def test_responses_of_pipelined_commands_wait_for_the_next_wait():
    data = RESPONSES[0] + b"A1 OK done\r\n" + RESPONSES[3] + b"A2 OK done\r\n"
    fetches = Fetches(Client(data, [len(data)]))
    first, second = fetches.send("11", ["UID"]), fetches.send("11", ["BODY[1]"])
    fetches.wait(first)
    assert fetches.busy
    assert fetches.take()[11][b"RFC822.SIZE"] == b"2345"
    fetches.wait(second)
    assert fetches.take()[11][b"BODY[1]<0>"] == b"Hallo Anna\r\n"
    assert not fetches.busy
