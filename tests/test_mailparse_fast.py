"""The quicker paths of connectors/mailparse.py read every header as the general ones do (issue 9:
the reader's CPU per mail, without changing a single record)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from crm_bridge.connectors import mailparse
from crm_bridge.connectors.mailparse import (
    _WANTED,
    _WANTED_FIELDS_STR,
    _collect_fields,
    choose_text_part,
    content_type,
    parse_date,
    parse_header_block,
    single_part,
)
from crm_bridge.crm_core.records import Location

NAMES = ["From", "FROM", "from", "To", "TO", "Cc", "Bcc", "Date", "Subject", "Message-ID", "message-id", "In-Reply-To",
         "References", "List-Id", "Precedence", "Auto-Submitted", "Content-Type", "Content-Transfer-Encoding",
         "Content-Disposition", "Sender", "X-Other", "Received", "Fromage", "X-From", " From", "From ", "From\t",
         "\u212aeywords", "Subje\u017ft", "Dat\u0130", "To:x", "", "Re"]
VALUES = ["", " ", "Kim <kim@kunde.example>", " a@b.example ", "=?utf-8?q?Gr=C3=BC=C3=9Fe?=", "x:y", "Grüße\u00a0",
          "a\rb", "\t tabbed \t", "Ünïcödé", "<id@x>", ":", "\u2028sep"]


def reference_block(text: str) -> dict[str, str]:
    """parse_header_block as it read every block before: the field regex, then _collect_fields."""
    return _collect_fields(_WANTED_FIELDS_STR.findall(text), _WANTED)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from([":", ": ", " : ", ""]), st.sampled_from(VALUES)),
                max_size=14),
       st.sampled_from(["\r\n", "\n"]))
def test_a_block_without_folded_lines_reads_as_through_the_field_regex(fields, nl):
    text = nl.join(f"{n}{sep}{v}" for n, sep, v in fields) + nl + nl
    if "\n " in text or "\n\t" in text:
        return  # folded: the regex path reads it
    assert parse_header_block(text.encode()) == reference_block(text)


def test_the_quick_header_path_is_taken_for_unfolded_blocks(monkeypatch):
    calls = []
    real = mailparse._collect_fields
    monkeypatch.setattr(mailparse, "_collect_fields", lambda *a: calls.append(a) or real(*a))
    assert parse_header_block(b"From: a@b.example\r\nTo: c@d.example\r\nTo: e@f.example\r\n\r\n") == {
        "from": "a@b.example", "to": "c@d.example, e@f.example"}
    assert not calls
    assert parse_header_block(b"Subject: a\r\n folded\r\n\r\n") == {"subject": "a folded"}
    assert calls


def reference_date(value: str) -> datetime | None:
    """parse_date's usual form as it was read before: a timezone of the offset, then astimezone(utc)."""
    m = mailparse._RFC5322_DATE.match(value)
    if m is not None and m.group(2).lower() in mailparse._MONTHS:
        day, mon, year, hour, minute, second, sign, oh, om = m.groups()
        try:
            offset = timedelta(hours=int(oh), minutes=int(om))
            when = datetime(mailparse.full_year(int(year)), mailparse._MONTHS[mon.lower()], int(day), int(hour),
                            int(minute), int(second or 0), tzinfo=timezone(-offset if sign == "-" else offset))
            return when.astimezone(timezone.utc)
        except (ValueError, OverflowError):
            pass
    return "general"  # type: ignore[return-value]


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 35), st.sampled_from(["Jan", "feb", "MAR", "Dec", "Foo"]),
       st.sampled_from(["1", "24", "99", "124", "0001", "2024", "9999"]), st.integers(0, 25), st.integers(0, 61),
       st.integers(0, 61), st.sampled_from(["+", "-"]), st.integers(0, 30), st.integers(0, 99))
def test_the_usual_date_form_reads_as_with_a_timezone(day, mon, year, hour, minute, second, sign, oh, om):
    value = f"Tue, {day} {mon} {year} {hour:02d}:{minute:02d}:{second:02d} {sign}{oh:02d}{om:02d}"
    want = reference_date(value)
    got = parse_date(value)
    if want == "general":  # the general parser decides, as before
        return
    assert repr(got) == repr(want)


def test_dates_keep_their_utc_zone_and_offsets_of_a_day_go_to_the_general_parser():
    got = parse_date("Tue, 12 Mar 2024 10:15:00 +0100")
    assert got == datetime(2024, 3, 12, 9, 15, tzinfo=timezone.utc) and got.tzinfo is timezone.utc
    assert parse_date("Tue, 12 Mar 2024 10:15:00 +2400") is None  # no zone is a day ahead: unreadable, as before
    assert parse_date("Tue, 12 Mar 2024 10:15:00 +2359") == datetime(2024, 3, 11, 10, 16, tzinfo=timezone.utc)
    assert parse_date("Fri, 31 Dec 9999 23:00:00 -0200") is None  # past year 9999 in UTC


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["", "text/plain", "TEXT/HTML; charset=utf-8", 'text/plain; charset="iso-8859-1"; format=flowed',
                        "multipart/mixed; boundary=x", " Multipart/Alternative", "application/pdf; name=a.pdf",
                        "message/rfc822", "text", "text/plain; charset*=utf-8''%C3%A4"]),
       st.sampled_from(["", "base64", " Quoted-Printable ", "8bit"]),
       st.sampled_from(["", "inline", "attachment", 'inline; filename="a.txt"', 'x; filename="b"']))
def test_single_part_memo_answers_as_reading_the_header_does(ctype, cte, disposition):
    h = {"content-type": ctype, "content-transfer-encoding": cte, "content-disposition": disposition}
    h = {k: v for k, v in h.items() if v}
    for _ in range(2):  # the second time from the memo
        got = single_part(h)
        main, params = content_type(h.get("content-type", ""))
        if main.startswith("multipart/"):
            assert got is None
            continue
        want = choose_text_part((mailparse._leaf(h, main, params, b"", ""),))
        assert got is not None
        assert (got[1], got[0] and vars_of(got[0])) == (want[1], want[0] and vars_of(want[0]))


def vars_of(part) -> tuple:
    return part.ctype, part.charset, part.cte, part.attachment, part.body, part.section


def test_record_fields_are_in_the_order_the_positional_call_assumes():
    rec = mailparse.record_from_headers(
        {"from": "Kim <kim@kunde.example>", "to": "a@b.example", "cc": "c@d.example", "bcc": "e@f.example",
         "subject": "Betreff", "message-id": "<m@x>", "in-reply-to": "<p@x>", "references": "<r@x> <p@x>",
         "date": "Tue, 12 Mar 2024 10:15:00 +0100", "list-id": "<l.x>"},
        Location("INBOX", "1:1"), snippet="Text", flags=("\\Seen",), size=12, has_attachments=True, warnings=("w",))
    assert (rec.message_id, rec.in_reply_to, rec.references) == ("m@x", ("p@x",), ("r@x", "p@x"))
    assert (rec.sender.email, [a.email for a in rec.to + rec.cc + rec.bcc]) == (
        "kim@kunde.example", ["a@b.example", "c@d.example", "e@f.example"])
    assert (rec.subject, rec.snippet, rec.flags, rec.bulk, rec.direction, rec.size, rec.has_attachments,
            rec.warnings, rec.no_text, rec.key) == ("Betreff", "Text", ("\\Seen",), "List-Id", "", 12, True, ("w",),
                                                    False, None)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(["Wort", "ä", " ", "  ", "\t", "\xa0", "\u2003", "\u200b", "\x1c", "\n", "x" * 50,
                                 "\u2028", ".", "\x85"]), max_size=200))
def test_folding_only_the_head_gives_the_whole_texts_fold(pieces):
    from crm_bridge.connectors.snippet import SNIPPET_CHARS, _fold

    text = "".join(pieces)
    assert _fold(text) == " ".join(text.split())[:SNIPPET_CHARS]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"a", b" ", b"\t", b"\r", b"\n", b"\r\n", b"=", b"=20"]), max_size=60))
def test_the_quoted_printable_blank_check_finds_what_the_regex_finds(pieces):
    from crm_bridge.connectors.snippet import _QP_TRAILING_WS

    data = b"".join(pieces)
    quick = b" \n" in data or b"\t\n" in data or b" \r\n" in data or b"\t\r\n" in data
    assert quick == bool(_QP_TRAILING_WS.search(data))


def test_an_address_list_is_read_once_and_a_broken_one_warns_every_time():
    from crm_bridge.connectors.mailparse import parse_addresses

    team = 'Anna <anna@nordlicht.example>, "Weber, Kim" <kim@kunde.example>, x@y.example (Kommentar)'
    first = parse_addresses(team)
    assert [a.email for a in first] == ["anna@nordlicht.example", "kim@kunde.example", "x@y.example"]
    assert parse_addresses(team) is first  # from the memo
    nested = "(" * 3000 + "x" + ")" * 3000 + " Bob <bob@kunde.example>"
    for _ in range(2):
        notes: list[str] = []
        assert [a.email for a in parse_addresses(nested, notes, "To")] == ["bob@kunde.example"]
        assert notes and "To field could not be parsed" in notes[0]
