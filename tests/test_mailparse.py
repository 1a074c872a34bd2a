"""The shared mail parsing helpers: RFC 2047 words and the snippet rule.

Both have a fast path; these tests hold the fast paths to the slow,
obvious definitions (the standard library's decode_header, the snippet
rule applied line by line to the whole text).
"""

from __future__ import annotations

from email.header import decode_header

from hypothesis import given, settings
from hypothesis import strategies as st

from crm_bridge.connectors.mailparse import SNIPPET_CHARS, SNIPPET_RAW_BYTES, _decode_bytes, decode_words, text_snippet

WORDS = [
    "=?utf-8?q?Bj=C3=B6rn?=", "=?UTF-8?B?w7Z4?=", "=?iso-8859-1?q?J=FCrgen_M=FCller?=", "=?utf-8?b?w6Q=?=",
    "=?utf-8?q?=C3?=", "=?utf-8?q?=B6?=",  # one character split across two words
    "=?utf-8?q?a=ZZb?=", "=?utf-8?q?end=?=", "=?utf-8?q?e=A?=", "=?utf-8?b?YWJ?=", "=?bogus?q?x?=",
    "=??q?plain?=", "=?utf-8*de?q?x_y?=", "=?utf-8?b?!!!?=", "=?windows-1252?q?=80?=", "=?utf-8?Q?=e2=82=ac?=",
    "=?utf-8?q??=", "plain", "x y", "<a@b.c>", '"Quoted, Name"', "Müller",
]


def reference_decode(value: str) -> str:
    """decode_header, joined the way mailparse always did it."""
    try:
        parts = decode_header(value)
    except Exception:
        return value
    return "".join(d if isinstance(d, str) else _decode_bytes(d, c or "ascii") for d, c in parts)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(WORDS), st.sampled_from(["", " ", "  ", "\t", ", "])), min_size=1, max_size=6))
def test_encoded_words_decode_like_the_standard_library(pieces):
    value = "".join(w + sep for w, sep in pieces)
    assert decode_words(value) == reference_decode(value)


def test_encoded_words_common_cases():
    assert decode_words("=?utf-8?q?Bj=C3=B6rn_Rossi?= <b@x.example>") == "Björn Rossi <b@x.example>"
    assert decode_words("=?utf-8?q?=C3?= =?utf-8?q?=B6?=") == "ö"  # split character, whitespace between words dropped
    assert decode_words("Re: =?iso-8859-1?q?Angebot_f=FCr?= Sie") == "Re: Angebot für Sie"
    assert decode_words("no words here") == "no words here"


def reference_snippet(text: str) -> str:
    """The snippet rule on the whole text: no quoted lines, stop at the signature, fold whitespace."""
    kept = []
    for line in text.splitlines():
        if line in ("-- ", "--"):
            break
        if line.strip() and not line.strip().startswith(">"):
            kept.append(line.strip())
    return " ".join(" ".join(kept).split())[:SNIPPET_CHARS]


LINES = st.sampled_from([
    "Guten Tag,", "", "   ", "> zitiert", ">> tiefer zitiert", "  > eingerueckt zitiert", "-- ", "--", "---",
    "Wir bitten um Rueckruf zur Wartung der Anlage im Untergeschoss.", "x" * 300, "Gruesse " * 30, "ü" * 120,
])


@settings(max_examples=300, deadline=None)
@given(st.lists(LINES, max_size=60))
def test_snippet_of_a_long_text_equals_the_rule_applied_to_all_of_it(lines):
    text = "\n".join(lines)
    raw = text.encode("utf-8")
    if len(raw) > SNIPPET_RAW_BYTES:  # the rule reads the first SNIPPET_RAW_BYTES bytes
        raw = raw[:SNIPPET_RAW_BYTES]
        text = raw.decode("utf-8", "ignore")
    assert text_snippet(raw, "8bit", "utf-8", "plain") == reference_snippet(text)


def test_character_cut_at_the_prefix_end_does_not_garble_the_snippet():
    body = ("Grüße aus Lindenau. " + "ä" * 3000).encode("utf-8")
    prefix = body[:SNIPPET_RAW_BYTES - 1]  # ends inside a two-byte character
    assert prefix.decode("utf-8", "ignore") != prefix.decode("utf-8", "replace")
    snippet = text_snippet(prefix, "8bit", "utf-8", "plain")
    assert snippet.startswith("Grüße aus Lindenau. ää")
    assert "Ã" not in snippet


def test_header_block_decoded_at_once_reads_like_field_by_field():
    """The one-decode path gives what decoding each field on its own gives."""
    import sysconfig
    from pathlib import Path

    from crm_bridge.connectors.mailparse import _WANTED, _collect_fields, _fields_one_by_one, parse_header_block, split_message

    files = sorted((Path(sysconfig.get_paths()["stdlib"]) / "test" / "test_email" / "data").glob("msg_*.txt"))
    files += sorted((Path(__file__).resolve().parents[1] / "examples" / "mail").rglob("*.demo*"))
    blocks = [split_message(f.read_bytes())[0] for f in files]
    blocks.append("Subject: Grüße\r\nFrom: =?utf-8?q?J=C3=BCrgen?= <j@x.example>\r\nTo: a@x.example,\r\n\tb@x.example\r\n"
                  "to: c@x.example\r\nX-Other: 1\r\n".encode())
    assert len(blocks) > 40
    for block in blocks:
        for wanted in (_WANTED, None):
            assert parse_header_block(block, wanted) == _collect_fields(_fields_one_by_one(block, wanted), wanted)
    assert parse_header_block(blocks[-1])["to"] == "a@x.example, b@x.example, c@x.example"
    # a stray cp1252 byte in one field leaves the others' UTF-8 alone
    mixed = "Subject: Gr\xfc\xdfe\r\n".encode("cp1252") + "From: Jürgen <j@x.example>\r\n".encode()
    assert parse_header_block(mixed) == {"subject": "Grüße", "from": "Jürgen <j@x.example>"}


REPLY_LINES = st.sampled_from([
    "Guten Tag,", "", "> zitiert", "-- ", "Wir bitten um Rueckruf zur Wartung der Anlage im Untergeschoss.", "x" * 300,
    "ü" * 120, "-----Original Message-----", "-----Ursprüngliche Nachricht-----", "________________________________",
    "From: Anna Weber <anna@nordlicht.example>", "Sent: Tuesday, March 12, 2024 10:15 AM", "Von: Anna <a@x.example>",
    "Gesendet: Dienstag, 12. März 2024 10:15", "An: Kim", "Betreff: Termin", "On 12.03.2024 10:15, Anna wrote:",
    "Am 12.03.24 um 10:15 schrieb Anna Weber:", "On Tue, Mar 12, 2024 at 10:15 AM Anna Weber <", "anna@x.example> wrote:",
    "Anna <a@x.example> schrieb am 12.03.2024 10:15:05:", "Am Montag komme ich vorbei.",
])


@settings(max_examples=400, deadline=None)
@given(st.lists(REPLY_LINES, max_size=80))
def test_snippet_from_the_head_equals_the_snippet_from_the_whole_text(lines):
    """Reply headers look ahead a line or two: the head shortcut must not change the outcome."""
    from crm_bridge.connectors.mailparse import _snippet_of

    raw = "\n".join(lines).encode("utf-8")[:SNIPPET_RAW_BYTES]
    text = raw.decode("utf-8", "ignore")
    assert text_snippet(raw, "8bit", "utf-8", "plain") == (_snippet_of(text, partial=False) or "")


def test_mixed_utf8_keeps_the_utf8_and_reads_only_the_bad_bytes_as_cp1252():
    from crm_bridge.connectors.mailparse import parse_header_block

    block = b"Subject: Gr\xc3\xbc\xc3\x9fe \xe4rger \x80\r\nFrom: J\xc3\xbcrgen\x00 <j@x.example>\r\n"
    assert parse_header_block(block) == {"subject": "Grüße ärger €", "from": "Jürgen <j@x.example>"}
    body = "Grüße ".encode() + b"\xe4rger " + "ä".encode() * 3000
    snippet = text_snippet(body[:SNIPPET_RAW_BYTES - 1], "8bit", "utf-8", "plain")  # ends inside a character
    assert snippet.startswith("Grüße ärger ää") and "Ã" not in snippet
