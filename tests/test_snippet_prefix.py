"""IMAP asks for a short prefix of the text part first (connectors.snippet.prefix_snippet): whatever
it answers from fewer bytes must be what the whole prefix gives, which the file path reads."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.mailgen import generate_messages
from crm_bridge.connectors.mailparse import choose_text_part, iter_parts, parse_header_block, split_message
from crm_bridge.connectors.snippet import first_fetch_bytes, part_snippet, prefix_bytes, prefix_snippet
from tests.test_mailparse_field import OWN, QUOTED, REPLIES, _html, _mail, _padded_qp


def _part_of(raw: bytes):
    head, body = split_message(raw)
    part, _ = choose_text_part(iter_parts(parse_header_block(head), body))
    return part


def _check(part, wire: bytes, sizes) -> int:
    """Every prefix size in ``sizes``: no answer, or the whole prefix's answer. Returns how many answered."""
    n = prefix_bytes(part.ctype, part.cte)
    want = part_snippet(wire[: 2 * n], part)
    answered = 0
    for m in sizes:
        got = prefix_snippet(wire[:m], part, complete=m >= len(wire))
        if got is not None:
            answered += 1
            assert got == want, (m, part.ctype, part.cte)
    return answered


def _field_mails() -> list[bytes]:
    text = OWN + " " + QUOTED + " " + OWN + " " + QUOTED
    out = [_mail(_html(k), "text/html; charset=utf-8") for k in (0, 500, 2_000, 6_000, 20_000, 40_000)]
    out.append(_mail(_html(20_000).replace("=", "=3D").replace(">", ">=\n"), "text/html; charset=utf-8",
                     cte="quoted-printable"))
    out.append(_mail(_padded_qp(text), cte="quoted-printable"))
    out.extend(_mail(body * 12) for body in REPLIES.values())
    out.append(_mail(("<p>Preis < 100 EUR " + OWN + " a < b ") * 40, "text/html; charset=utf-8"))
    # a "<" that is no tag, far from the next ">": the whole prefix drops the text up to that ">"
    out.append(_mail("<p>Hallo, Preis < 100 " + "Wort Wort\n" * 300 + " a < b " + "Wort Wort\n" * 300 + "</p><p>" + OWN,
                     "text/html; charset=utf-8"))
    # "--" with blanks: a signature only once a padded soft break further on makes the blanks go
    out.append(_mail("Kurz.\n--  \n" + "Zeile mit Text\n" * 300 + "x= \n" * 40, cte="quoted-printable"))
    return out


def test_a_short_prefix_answers_only_with_the_whole_prefix_snippet():
    mails = list(generate_messages(400, 7)) + _field_mails()
    answered_first = total = 0
    for raw in mails:
        part = _part_of(raw)
        if part is None:
            continue
        wire = part.body.replace(b"\n", b"\r\n")  # as an IMAP server sends it
        first = first_fetch_bytes(part.ctype, part.cte)
        _check(part, wire, range(1, min(len(wire), 2 * prefix_bytes(part.ctype, part.cte)) + 2, 97))
        total += 1
        answered_first += _check(part, wire, [first])
    assert answered_first > total * 0.8  # the point: most mails need no second fetch


_PIECES = [*"abc äß<>&;=- \n>_:\t", "On Mon, 1 Jan 2024 X wrote:", "&amp;", "<!--", "-->", "<head>", "</head>",
           "=20", "-- \n", "=\n", "<p>", "</p>", "<style>", "Von: X\nGesendet: Y\n", "Vielen Dank fuer das Angebot. "]
_TEXT = st.lists(st.sampled_from(_PIECES), max_size=400).map(lambda xs: "".join(xs) * 3)


@settings(max_examples=300, deadline=None)
@given(text=_TEXT, ctype=st.sampled_from(["text/plain", "text/html"]),
       cte=st.sampled_from(["8bit", "quoted-printable", "base64"]), charset=st.sampled_from(["utf-8", "iso-8859-1"]),
       seed=st.integers(0, 1000))
def test_prefix_snippet_agrees_on_arbitrary_text(text, ctype, cte, charset, seed):
    import binascii

    raw = text.encode(charset, "replace")
    if cte == "base64":
        raw = binascii.b2a_base64(raw * 2)
        raw = b"\n".join(raw[i:i + 76] for i in range(0, len(raw), 76))
    mail = _mail(raw, f"{ctype}; charset={charset}", cte=cte)
    part = _part_of(mail)
    assert part is not None
    wire = part.body.replace(b"\n", b"\r\n")
    rnd = random.Random(seed)
    _check(part, wire, sorted(rnd.randrange(1, len(wire) + 2) for _ in range(20)))


@pytest.mark.parametrize("k", [2_000, 20_000])
def test_html_with_a_large_head_needs_the_longer_prefix(k):
    part = _part_of(_mail(_html(k), "text/html; charset=utf-8"))
    wire = part.body.replace(b"\n", b"\r\n")
    first = first_fetch_bytes(part.ctype, part.cte)
    got = prefix_snippet(wire[:first], part, complete=len(wire) <= first)
    assert got == (OWN if k < first - 1000 else None)
