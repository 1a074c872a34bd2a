"""iCalendar as real exports write it: RRULEs with spaces, escapes the RFC
does not know (``\\"``), CR-only and CR CR LF line ends, rules that cannot be
read at all.  The fast reader and the icalendar fallback must give the same
records for the same text; an event whose rule cannot be read is kept as a
single appointment with a warning, not quarantined."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crm_bridge.connectors.ical import parse_calendar
from crm_bridge.connectors.ical_fast import _fast_parse
from crm_bridge.connectors.ical_slow import _slow_parse
from crm_bridge.crm_core.records import AppointmentRecord, Location

LOC = Location("cal", "item.ics", '"1"')
WINDOW = (datetime(2024, 1, 1, tzinfo=timezone.utc), datetime(2024, 2, 1, tzinfo=timezone.utc))


def cal(*lines: str, eol: str = "\r\n") -> str:
    body = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//test//EN", "BEGIN:VEVENT", "UID:e1",
            "DTSTAMP:20240101T000000Z", "DTSTART:20240101T100000Z", "DTEND:20240101T110000Z",
            *lines, "END:VEVENT", "END:VCALENDAR"]
    return eol.join(body) + eol


def both(text: str) -> list:
    """The records of the fast reader and of the fallback, which must agree."""
    fast = _fast_parse(text, LOC, WINDOW)
    slow, failures = _slow_parse(text, LOC, WINDOW)
    assert failures == []
    assert fast is not None, "the fast reader refused:\n" + text
    assert fast == slow
    return fast


# ------------------------------------------------------------ escapes


@pytest.mark.parametrize("raw, expected", [
    (r'Termin \"Kick-off\" mit Kunde', 'Termin "Kick-off" mit Kunde'),  # not RFC 5545, but written by real tools
    (r"a\, b\; c\: d", "a, b; c: d"),
    (r"line\nbreak\Nthere", "line break there"),  # folded to one line for the snippet
    (r"C:\temp\x", r"C:\temp\x"),  # an unknown escape keeps its backslash (a Windows path)
    (r"back\\slash", "back\\slash"),
    (r"literal \\n", r"literal \n"),
    ("trailing\\", "trailing\\"),
])
def test_both_paths_read_text_escapes_alike(raw, expected):
    [rec] = both(cal(f"SUMMARY:{raw}", f"LOCATION:{raw}", f"DESCRIPTION:{raw}"))
    assert rec.summary == rec.location_text == rec.description == expected


_PIECES = st.sampled_from(["\\", '"', "\\\"", "\\\\", "\\,", "\\;", "\\:", "\\n", "\\N", "\\t", ",", ";", ":", "a", " ", "ä", "€"])


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, max_size=12).map("".join))
def test_both_paths_agree_on_any_escaped_text(value):
    both(cal(f"SUMMARY:{value}", f"DESCRIPTION:x{value}"))


# ------------------------------------------------------------ recurrence rules


@pytest.mark.parametrize("rule", [
    "FREQ=WEEKLY;BYDAY=MO, TU",
    "FREQ=WEEKLY; BYDAY=MO,TU",
    " FREQ = WEEKLY ; BYDAY = MO , TU ",
])
def test_rrule_with_spaces_is_read_as_without(rule):
    [rec] = both(cal(f"RRULE:{rule}"))
    assert rec.rrule == "FREQ=WEEKLY;BYDAY=MO,TU"
    assert [o.start.day for o in rec.occurrences] == [1, 2, 8, 9, 15, 16, 22, 23, 29, 30]
    assert rec.warnings == ()
    # the slow path alone (a VTIMEZONE-only zone sends the text there) expands it too
    slow, failures = _slow_parse(cal(f"RRULE:{rule}", "DURATION:PT1H").replace("DTEND:20240101T110000Z\r\n", ""),
                                 LOC, WINDOW)
    assert failures == [] and len(slow[0].occurrences) == 10


@pytest.mark.parametrize("rule", ["FREQ=WEEKLY;BYDAY=XX", "FREQ=SOMETIMES", "BYDAY=MO", "FREQ=WEEKLY;UNTIL=2024-01-15"])
def test_unreadable_rrule_keeps_a_single_appointment_with_a_warning(rule):
    records, failures = parse_calendar(cal(f"RRULE:{rule}", "SUMMARY:Jour fixe"), LOC, WINDOW)
    assert failures == []
    [rec] = records
    assert isinstance(rec, AppointmentRecord)
    assert rec.summary == "Jour fixe" and rec.start == datetime(2024, 1, 1, 10, tzinfo=timezone.utc)
    assert rec.rrule == "" and rec.occurrences == ()  # shown once, at its start
    assert rec.warnings and "RRULE" in rec.warnings[0]


def test_unreadable_exdate_keeps_the_series_without_it():
    records, failures = parse_calendar(cal("RRULE:FREQ=DAILY;COUNT=3", "EXDATE:2024-01-02"), LOC, WINDOW)
    assert failures == []
    [rec] = records
    assert rec.warnings == ("EXDATE cannot be read and was left out: '2024-01-02'",)
    assert rec.rrule == "FREQ=DAILY;COUNT=3" and [o.start.day for o in rec.occurrences] == [1, 2, 3]



# ------------------------------------------------------------ line ends


@pytest.mark.parametrize("eol", ["\r", "\r\r\n", "\n"])
def test_odd_line_ends_read_as_crlf(eol):
    text = cal("RRULE:FREQ=DAILY;COUNT=3", "SUMMARY:a long summary that is fol", " ded here")
    expected, failures = parse_calendar(text, LOC, WINDOW)
    assert failures == [] and expected[0].summary == "a long summary that is folded here"
    assert parse_calendar(text.replace("\r\n", eol), LOC, WINDOW) == (expected, [])
    assert parse_calendar(text.replace("\r\n", eol).encode(), LOC, WINDOW) == (expected, [])


# ------------------------------------------------------------ damage that costs a property, not the event


def only(text: str | bytes) -> AppointmentRecord:
    records, failures = parse_calendar(text, LOC, WINDOW)
    assert failures == []
    [rec] = records
    assert isinstance(rec, AppointmentRecord)
    return rec


@pytest.mark.parametrize("line", ["DTEND:tomorrow", "DTEND:20241301T100000Z", "DURATION:1 hour"])
def test_unreadable_end_keeps_the_event_with_its_start(line):
    text = cal(line, "SUMMARY:Begehung").replace("DTEND:20240101T110000Z\r\n", "")
    rec = only(text)
    assert rec.summary == "Begehung" and rec.start == rec.end == datetime(2024, 1, 1, 10, tzinfo=timezone.utc)
    assert len(rec.warnings) == 1 and "end is left out" in rec.warnings[0]


@pytest.mark.parametrize("start, expected", [
    ("DTSTART:2024-01-05T10:00:00Z", datetime(2024, 1, 5, 10, tzinfo=timezone.utc)),
    ("DTSTART:2024-01-05 10:00", datetime(2024, 1, 5, 10, tzinfo=timezone.utc)),  # floating: read as UTC
    ("DTSTART;TZID=Europe/Berlin:2024-01-05T10:00:00", datetime(2024, 1, 5, 9, tzinfo=timezone.utc)),
    ("DTSTART:2024-01-05T10:00:00+02:00", datetime(2024, 1, 5, 8, tzinfo=timezone.utc)),
])
def test_iso_8601_extended_times_are_read_with_a_warning(start, expected):
    rec = only(cal("SUMMARY:x").replace("DTSTART:20240101T100000Z", start).replace("DTEND:20240101T110000Z\r\n", ""))
    assert rec.start == expected
    assert rec.warnings and "not in iCalendar form" in rec.warnings[0]


def test_iso_date_reads_as_an_all_day_event():
    rec = only(cal("SUMMARY:x").replace("DTSTART:20240101T100000Z", "DTSTART;VALUE=DATE:2024-01-05")
               .replace("DTEND:20240101T110000Z\r\n", ""))
    assert rec.start == date(2024, 1, 5) and rec.end == date(2024, 1, 6)


@pytest.mark.parametrize("cut", ["SUMMARY:Hallenbad\r\n", "SUMMARY:Hallenbad\r\nDESCRIPTION:Agenda: Ter", "SUMMARY:Hallenbad\r\nDTE"])
def test_text_cut_inside_an_event_keeps_the_events(cut):
    first = cal("SUMMARY:first").replace("END:VCALENDAR\r\n", "")
    text = first + "BEGIN:VEVENT\r\nUID:e2\r\nDTSTAMP:20240101T000000Z\r\nDTSTART:20240110T100000Z\r\n" + cut
    records, failures = parse_calendar(text.encode(), LOC, WINDOW)
    assert failures == []
    assert [(r.uid, r.summary) for r in records] == [("e1", "first"), ("e2", "Hallenbad")]
    assert records[0].warnings == () and "cut off" in records[1].warnings[0]


def test_text_cut_inside_a_task_still_fails():
    text = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VTODO\r\nUID:t1\r\nDTSTAMP:20240101T000000Z\r\n"
            "SUMMARY:call back\r\n")
    records, failures = parse_calendar(text, LOC, WINDOW)
    assert records == [] and failures


def test_content_hash_ignores_odd_line_ends():
    from crm_bridge.connectors.ical import normalised_hash

    text = cal("SUMMARY:a long summary that is fol", " ded here")
    assert {normalised_hash(text.replace("\r\n", eol)) for eol in ("\r\n", "\n", "\r", "\r\r\n")} == {normalised_hash(text)}


def test_a_repaired_appointment_keeps_its_warning_for_crm_explain(tmp_path):
    """What the reader left out is stored with the appointment and shown by `crm explain UID`."""
    from tests.conftest import Crm, write_config

    now = datetime.now(timezone.utc)
    start = now.strftime("%Y%m%dT100000Z")
    (tmp_path / "cal.ics").write_text(
        cal("ORGANIZER:mailto:kim@kunde.example", "ATTENDEE:mailto:anna@nordlicht.example",
            "SUMMARY:Jour fixe", "RRULE:FREQ=DAILY;COUNT=3", "EXDATE:2024-01-02")
        .replace("DTSTART:20240101T100000Z", f"DTSTART:{start}").replace("DTEND:20240101T110000Z", ""))
    crm = Crm(write_config(tmp_path / "crm.toml", customers=(("Kunde GmbH", ["kunde.example"]),),
                           store=str(tmp_path / "crm.db"),
                           sources={"cal": {"type": "ics", "path": str(tmp_path / "cal.ics")}}))
    crm("sync")
    [item] = crm.json("explain", "e1")
    assert item["warnings"] == ["EXDATE cannot be read and was left out: '2024-01-02'"]
    assert "warning: EXDATE cannot be read" in crm("explain", "e1").output
