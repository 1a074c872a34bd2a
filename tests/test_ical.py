"""crm_bridge.connectors.ical: iCalendar text to records, VTODO out, content hash."""

from __future__ import annotations

import os
import random
import re
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import icalendar
import pytest
import recurring_ical_events
from hypothesis import given, settings
from hypothesis import strategies as st

from crm_bridge.connectors.ical import (
    _fast_parse,
    _slow_parse,
    build_vtodo,
    normalised_hash,
    parse_calendar,
    recurrence_key,
)
from crm_bridge.crm_core.records import AppointmentRecord, Failure, Location, TaskPush, TaskState

LOC = Location("cal", "item.ics", '"1"')
WINDOW = (datetime(2020, 1, 1, tzinfo=timezone.utc), datetime(2030, 1, 1, tzinfo=timezone.utc))
ICALENDAR_TESTS = Path(os.path.dirname(icalendar.__file__)) / "tests"
ICS_FILES = sorted(ICALENDAR_TESTS.rglob("*.ics"))

BERLIN_VTIMEZONE_WINDOWS = """BEGIN:VTIMEZONE
TZID:W. Europe Standard Time
BEGIN:STANDARD
DTSTART:16010101T030000
TZOFFSETFROM:+0200
TZOFFSETTO:+0100
RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=10
END:STANDARD
BEGIN:DAYLIGHT
DTSTART:16010101T020000
TZOFFSETFROM:+0100
TZOFFSETTO:+0200
RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=3
END:DAYLIGHT
END:VTIMEZONE
"""


def cal(*components: str) -> str:
    body = "".join(components)
    return f"BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//test//EN\n{body}END:VCALENDAR\n".replace("\n", "\r\n")


def event(uid: str = "e1", **props: str) -> str:
    lines = [f"UID:{uid}", "DTSTAMP:20240101T000000Z"]
    lines += [f"{k.replace('_', '-')}:{v}" if ":" not in k else f"{k}{v}" for k, v in props.items()]
    return "BEGIN:VEVENT\n" + "\n".join(lines) + "\nEND:VEVENT\n"


def raw_event(*lines: str) -> str:
    return "BEGIN:VEVENT\n" + "\n".join(lines) + "\nEND:VEVENT\n"


# --------------------------------------------------------------- the basics


def test_single_event_fields():
    text = cal(raw_event(
        "UID:abc@example.com",
        "DTSTAMP:20240101T000000Z",
        "DTSTART;TZID=Europe/Berlin:20240305T100000",
        "DTEND;TZID=Europe/Berlin:20240305T113000",
        "SUMMARY:Quarterly review\\, Q1",
        "LOCATION:Room 4",
        "DESCRIPTION:" + "word " * 200,
        "STATUS:TENTATIVE",
        "CLASS:CONFIDENTIAL",
        "SEQUENCE:3",
        "ORGANIZER;CN=Boss Person:mailto:Boss@Example.COM",
        'ATTENDEE;CN="Doe, Jane";PARTSTAT=ACCEPTED:MAILTO:jane@example.com',
        "ATTENDEE;PARTSTAT=DECLINED:mailto:bob@example.com",
        "ATTENDEE;CN=Room:urn:uuid:1234",
        "ATTENDEE;CN=Jane again:mailto:JANE@example.com",
    ))
    records, failures = parse_calendar(text, LOC, WINDOW)
    assert failures == []
    [rec] = records
    assert isinstance(rec, AppointmentRecord)
    assert rec.uid == "abc@example.com"
    assert rec.location == LOC
    assert rec.start == datetime(2024, 3, 5, 10, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    assert rec.start.tzinfo == ZoneInfo("Europe/Berlin")
    assert rec.end - rec.start == timedelta(minutes=90)
    assert rec.tzid == "Europe/Berlin"
    assert rec.summary == "Quarterly review, Q1"
    assert rec.location_text == "Room 4"
    assert len(rec.description) <= 300 and rec.description.startswith("word word")
    assert rec.status == "TENTATIVE"
    assert rec.private is True
    assert rec.sequence == 3
    assert rec.organizer.address.email == "boss@example.com"
    assert rec.organizer.address.name == "Boss Person"
    assert rec.organizer.role == "organizer"
    emails = [(a.address.email, a.address.name, a.status) for a in rec.attendees]
    assert emails == [("jane@example.com", "Doe, Jane", "ACCEPTED"), ("bob@example.com", "", "DECLINED")]
    assert rec.rrule == "" and rec.occurrences == () and rec.recurrence_id == ""


def test_all_day_and_cancelled_and_utc():
    text = cal(
        raw_event("UID:a", "DTSTART;VALUE=DATE:20240701", "SUMMARY:holiday"),
        raw_event("UID:b", "DTSTART:20240701T120000Z", "DURATION:PT2H", "STATUS:CANCELLED"),
        raw_event("UID:c", "DTSTART:20240701T120000", "CLASS:PUBLIC"),
    )
    records, failures = parse_calendar(text, LOC, WINDOW)
    assert failures == []
    by_uid = {r.uid: r for r in records}
    assert by_uid["a"].start == date(2024, 7, 1) and by_uid["a"].end == date(2024, 7, 2)
    assert by_uid["a"].tzid == ""
    assert by_uid["b"].status == "CANCELLED"
    assert by_uid["b"].tzid == "UTC"
    assert by_uid["b"].end - by_uid["b"].start == timedelta(hours=2)
    # floating time: read as UTC, zone unknown
    assert by_uid["c"].start == datetime(2024, 7, 1, 12, tzinfo=timezone.utc)
    assert by_uid["c"].tzid == "" and by_uid["c"].private is False


@pytest.mark.parametrize(
    "tzid, extra, expected",
    [
        ("W. Europe Standard Time", BERLIN_VTIMEZONE_WINDOWS, "Europe/Berlin"),
        ("/mozilla.org/20050126_1/America/New_York", "", "America/New_York"),
        ("My Custom Zone", BERLIN_VTIMEZONE_WINDOWS.replace("W. Europe Standard Time", "My Custom Zone")
         .replace("END:VTIMEZONE", "X-LIC-LOCATION:Europe/Berlin\nEND:VTIMEZONE"), "Europe/Berlin"),
    ],
)
def test_time_zone_names_mapped_to_iana(tzid, extra, expected):
    text = cal(extra, raw_event("UID:z", f"DTSTART;TZID={tzid}:20240105T100000",
                                f"DTEND;TZID={tzid}:20240105T110000"))
    [rec], failures = parse_calendar(text, LOC, WINDOW)
    assert failures == []
    assert rec.tzid == expected
    assert rec.start == datetime(2024, 1, 5, 10, tzinfo=ZoneInfo(expected))
    assert rec.start.utcoffset() == ZoneInfo(expected).utcoffset(datetime(2024, 1, 5, 10))


def test_unknown_custom_zone_stays_aware():
    vtz = BERLIN_VTIMEZONE_WINDOWS.replace("W. Europe Standard Time", "Totally Custom")
    text = cal(vtz, raw_event("UID:z", "DTSTART;TZID=Totally Custom:20240705T100000"))
    [rec], failures = parse_calendar(text, LOC, WINDOW)
    assert failures == []
    assert rec.tzid == ""
    assert rec.start.tzinfo is not None
    assert rec.start.utcoffset() == timedelta(hours=2)  # the VTIMEZONE's summer offset


def test_recurring_master_with_moved_cancelled_and_excluded_occurrences():
    text = cal(
        BERLIN_VTIMEZONE_WINDOWS,
        raw_event(
            "UID:series",
            "DTSTART;TZID=W. Europe Standard Time:20240105T100000",
            "DTEND;TZID=W. Europe Standard Time:20240105T110000",
            "RRULE:FREQ=WEEKLY;COUNT=6",
            "EXDATE;TZID=W. Europe Standard Time:20240112T100000",
            "SUMMARY:weekly",
            "ATTENDEE;CN=Bob;PARTSTAT=ACCEPTED:mailto:bob@example.com",
        ),
        raw_event(
            "UID:series",
            "RECURRENCE-ID;TZID=W. Europe Standard Time:20240119T100000",
            "DTSTART;TZID=W. Europe Standard Time:20240119T150000",
            "DTEND;TZID=W. Europe Standard Time:20240119T160000",
            "SUMMARY:weekly (moved)",
        ),
        raw_event(
            "UID:series",
            "RECURRENCE-ID;TZID=W. Europe Standard Time:20240126T100000",
            "DTSTART;TZID=W. Europe Standard Time:20240126T100000",
            "STATUS:CANCELLED",
        ),
    )
    records, failures = parse_calendar(text, LOC, WINDOW)
    assert failures == []
    masters = [r for r in records if not r.recurrence_id]
    overrides = {r.recurrence_id: r for r in records if r.recurrence_id}
    [master] = masters
    berlin = ZoneInfo("Europe/Berlin")
    assert master.rrule == "FREQ=WEEKLY;COUNT=6"
    starts = {o.recurrence_id: (o.start, o.status) for o in master.occurrences}
    key = lambda d: recurrence_key(datetime(2024, 1, d, 10, tzinfo=berlin))  # noqa: E731
    assert key(12) not in starts  # EXDATE
    assert starts[key(5)] == (datetime(2024, 1, 5, 10, tzinfo=berlin), "CONFIRMED")
    assert starts[key(19)] == (datetime(2024, 1, 19, 15, tzinfo=berlin), "CONFIRMED")  # moved
    assert starts[key(26)][1] == "CANCELLED"
    assert len(master.occurrences) == 5  # 6 minus the EXDATE
    assert set(overrides) == {key(19), key(26)}
    assert overrides[key(19)].summary == "weekly (moved)"
    assert overrides[key(26)].status == "CANCELLED"
    assert all(o.start.tzinfo == berlin for o in master.occurrences)


def test_occurrences_limited_to_window():
    text = cal(raw_event("UID:daily", "DTSTART:20190101T080000Z", "RRULE:FREQ=DAILY"))
    window = (datetime(2024, 1, 1, tzinfo=timezone.utc), datetime(2024, 1, 11, tzinfo=timezone.utc))
    [rec], failures = parse_calendar(text, LOC, window)
    assert failures == []
    assert [o.start.day for o in rec.occurrences] == list(range(1, 11))


def test_endless_minutely_rule_is_bounded():
    text = cal(raw_event("UID:m", "DTSTART:20240101T000000Z", "RRULE:FREQ=MINUTELY"))
    window = (datetime(2024, 1, 1, tzinfo=timezone.utc), datetime(2024, 1, 1, 2, tzinfo=timezone.utc))
    [rec], _ = parse_calendar(text, LOC, window)
    assert len(rec.occurrences) == 120


def test_broken_component_is_a_failure_and_the_rest_parses():
    text = cal(
        raw_event("UID:good", "DTSTART:20240101T100000Z", "SUMMARY:fine"),
        raw_event("UID:bad", "DTSTART:2024010XT100000", "SUMMARY:broken"),
        raw_event("UID:nostart", "SUMMARY:no start"),
        "BEGIN:VTODO\nUID:t\nDUE:notadate\nEND:VTODO\n",
    )
    records, failures = parse_calendar(text, LOC, WINDOW)
    assert [r.uid for r in records] == ["good"]
    assert len(failures) == 3
    assert all(f.location == LOC for f in failures)
    reasons = " | ".join(f.reason for f in failures)
    assert "DTSTART" in reasons and "VTODO" in reasons and "notadate" in reasons


@pytest.mark.parametrize("text", ["", "   ", "not a calendar", "BEGIN:VCALENDAR\nBEGIN:VEVENT\n", "\x00\x01",
                                  "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nEND:VCALENDAR\r\n"])
def test_garbage_gives_a_failure_not_an_exception(text):
    records, failures = parse_calendar(text, LOC, WINDOW)
    assert records == []
    assert failures and all(isinstance(f, Failure) for f in failures)


def test_vtodo_becomes_taskstate():
    text = cal(
        "BEGIN:VTODO\nUID:t1\nDTSTAMP:20240101T000000Z\nSUMMARY:call back\nDUE;VALUE=DATE:20240110\n"
        "STATUS:COMPLETED\nCOMPLETED:20240109T120000Z\nLAST-MODIFIED:20240109T120001Z\n"
        "DESCRIPTION:about the offer\nEND:VTODO\n",
        "BEGIN:VTODO\nUID:t2\nSUMMARY:open one\nPERCENT-COMPLETE:100\nEND:VTODO\n",
        "BEGIN:VTODO\nUID:t3\nSUMMARY:plain\nEND:VTODO\n",
    )
    records, failures = parse_calendar(text, LOC, WINDOW)
    assert failures == []
    tasks = {r.uid: r for r in records}
    assert all(isinstance(r, TaskState) for r in records)
    assert tasks["t1"].status == "COMPLETED"
    assert tasks["t1"].due == date(2024, 1, 10)
    assert tasks["t1"].completed == datetime(2024, 1, 9, 12, tzinfo=timezone.utc)
    assert tasks["t1"].last_modified == datetime(2024, 1, 9, 12, 0, 1, tzinfo=timezone.utc)
    assert tasks["t1"].description == "about the offer"
    assert tasks["t2"].status == "COMPLETED"
    assert tasks["t3"].status == "NEEDS-ACTION"


def test_event_without_uid_gets_a_stable_one():
    text = cal(raw_event("DTSTART:20240101T100000Z", "SUMMARY:old export"))
    [a], _ = parse_calendar(text, LOC, WINDOW)
    [b], _ = parse_calendar(text, LOC, WINDOW)
    assert a.uid.startswith("nouid-") and a.uid == b.uid


def test_bytes_and_bom_accepted():
    text = "\ufeff" + cal(raw_event("UID:x", "DTSTART:20240101T100000Z"))
    [rec], failures = parse_calendar(text.encode("utf-8"), LOC, WINDOW)
    assert rec.uid == "x" and failures == []


# ----------------------------------------- every icalendar test file


def test_icalendar_ships_test_files():
    assert len(ICS_FILES) > 50


@pytest.mark.parametrize("path", ICS_FILES, ids=lambda p: str(p.relative_to(ICALENDAR_TESTS)))
def test_icalendar_test_files_never_raise(path):
    text = path.read_bytes().decode("utf-8", "replace")
    records, failures = parse_calendar(text, Location("file", path.name), WINDOW)
    assert all(isinstance(r, (AppointmentRecord, TaskState)) for r in records)
    assert all(isinstance(f, Failure) and f.reason for f in failures)
    if re.search(r"^BEGIN:(VEVENT|VTODO)", text, re.I | re.M):
        assert records or failures
    for rec in records:
        for value in (getattr(rec, "start", None), getattr(rec, "end", None)):
            if isinstance(value, datetime):
                assert value.tzinfo is not None


def test_fast_reader_agrees_with_icalendar():
    """The fast line reader must give exactly what the icalendar path gives."""
    samples = [p.read_bytes().decode("utf-8", "replace") for p in ICS_FILES]
    samples += [
        cal(raw_event("UID:a", "DTSTART;TZID=Europe/Berlin:20240305T100000", "SUMMARY:x\\, y\\nz",
                      'ATTENDEE;CN="A, B";PARTSTAT=TENTATIVE:mailto:A@B.org', "CLASS:PRIVATE")),
        cal(raw_event("UID:b", "DTSTART;VALUE=DATE:20240305", "DTEND;VALUE=DATE:20240307")),
        cal("BEGIN:VTODO\nUID:t\nDUE:20240101T100000Z\nCOMPLETED:20240102T100000Z\nEND:VTODO\n",
            raw_event("UID:c", "DTSTART:20240305T100000Z", "ORGANIZER:mailto:o@x.org")),
    ]
    compared = 0
    for text in samples:
        fast = _fast_parse(text, LOC, WINDOW)
        if fast is None:
            continue
        slow, failures = _slow_parse(text, LOC, WINDOW)
        assert failures == []
        assert [repr(r) for r in fast] == [repr(r) for r in slow]
        compared += 1
    assert compared >= 20


# ------------------------------------------- the fast path for simple series


RIE_TESTS = Path(os.path.dirname(recurring_ical_events.__file__)) / "test"
SERIES_FILES = [p for p in ICS_FILES + sorted(RIE_TESTS.rglob("*.ics"))
                if re.search(r"^(RRULE|RECURRENCE-ID)", p.read_bytes().decode("utf-8", "replace"), re.M | re.I)]


def has_series(records) -> bool:
    return any(getattr(r, "rrule", "") or getattr(r, "recurrence_id", "") for r in records)


def assert_fast_equals_slow(text: str, window=WINDOW, expect_fast: bool = True) -> list:
    fast = _fast_parse(text, LOC, window)
    if fast is None:
        assert not expect_fast, "the fast path refused:\n" + text
        return []
    slow, failures = _slow_parse(text, LOC, window)
    assert failures == []
    assert [repr(r) for r in fast] == [repr(r) for r in slow]
    return fast


def test_series_fast_path_agrees_on_every_recurring_test_file():
    """icalendar's and recurring_ical_events' own test calendars: wherever the
    fast path takes a series, it gives exactly the occurrences the thorough
    reader gives."""
    assert len(SERIES_FILES) > 40
    compared = 0
    for path in SERIES_FILES:
        text = path.read_bytes().decode("utf-8", "replace")
        compared += has_series(assert_fast_equals_slow(text, WINDOW, expect_fast=False))
    assert compared >= 30  # most simple series of those folders do take the fast path


BERLIN = ZoneInfo("Europe/Berlin")


def series(*lines: str, overrides: tuple = ()) -> str:
    master = raw_event("UID:s", "DTSTAMP:20240101T000000Z", "SUMMARY:series", *lines)
    return cal(master, *(raw_event("UID:s", "DTSTAMP:20240101T000000Z", "SUMMARY:override", *o) for o in overrides))


def master_of(records):
    [master] = [r for r in records if not r.recurrence_id]
    return master


def test_series_across_both_dst_changes_in_berlin():
    text = series("DTSTART;TZID=Europe/Berlin:20240325T020000", "DTEND;TZID=Europe/Berlin:20240325T030000",
                  "RRULE:FREQ=DAILY;COUNT=8")
    occ = master_of(assert_fast_equals_slow(text)).occurrences
    assert len(occ) == 8
    assert all(o.start.tzinfo is BERLIN for o in occ)
    assert occ[0].start.utcoffset() == timedelta(hours=1) and occ[-1].start.utcoffset() == timedelta(hours=2)
    # 02:00 on 31 March does not exist; both readers keep the wall time
    assert occ[6].start.replace(tzinfo=None) == datetime(2024, 3, 31, 2)
    autumn = series("DTSTART;TZID=Europe/Berlin:20241025T023000", "DTEND;TZID=Europe/Berlin:20241025T033000",
                    "RRULE:FREQ=DAILY;UNTIL=20241030T000000Z", "EXDATE;TZID=Europe/Berlin:20241026T023000")
    occ = master_of(assert_fast_equals_slow(autumn)).occurrences
    assert [o.start.day for o in occ] == [25, 27, 28, 29]  # 02:30 on the 27th happens twice: once here


def test_series_with_exdates_moved_and_cancelled_occurrences():
    text = series(
        "DTSTART;TZID=Europe/Berlin:20240105T100000", "DTEND;TZID=Europe/Berlin:20240105T110000",
        "RRULE:FREQ=WEEKLY;COUNT=6", "EXDATE;TZID=Europe/Berlin:20240112T100000,20240209T100000",
        "EXDATE:20240202T090000Z",
        overrides=(
            ("RECURRENCE-ID;TZID=Europe/Berlin:20240119T100000", "DTSTART;TZID=Europe/Berlin:20240119T150000",
             "DTEND;TZID=Europe/Berlin:20240119T160000"),
            ("RECURRENCE-ID;TZID=Europe/Berlin:20240126T100000", "DTSTART;TZID=Europe/Berlin:20240126T100000",
             "STATUS:CANCELLED"),
        ),
    )
    records = assert_fast_equals_slow(text)
    occ = master_of(records).occurrences
    assert [(o.start.day, o.start.hour, o.status) for o in occ] == [
        (5, 10, "CONFIRMED"), (19, 15, "CONFIRMED"), (26, 10, "CANCELLED")]
    assert master_of(records).rrule == "FREQ=WEEKLY;COUNT=6"
    assert len(records) == 3


def test_series_moved_into_and_out_of_the_window():
    window = (datetime(2024, 1, 10, tzinfo=timezone.utc), datetime(2024, 1, 31, tzinfo=timezone.utc))
    text = series("DTSTART:20240101T080000Z", "DTEND:20240101T090000Z", "RRULE:FREQ=WEEKLY",
                  overrides=(("RECURRENCE-ID:20240108T080000Z", "DTSTART:20240111T080000Z"),  # moved in
                             ("RECURRENCE-ID:20240115T080000Z", "DTSTART:20240215T080000Z"),  # moved out
                             ("RECURRENCE-ID:20240103T080000Z", "DTSTART:20240112T080000Z")))  # no such occurrence
    occ = master_of(assert_fast_equals_slow(text, window)).occurrences
    assert [o.start.day for o in occ] == [11, 12, 22, 29]


def test_series_rule_parts_count_until_and_all_day():
    cases = [
        ("DTSTART;VALUE=DATE:20240101", "DTEND;VALUE=DATE:20240102", "RRULE:FREQ=YEARLY;UNTIL=20270101"),
        ("DTSTART;VALUE=DATE:20240131", "RRULE:BYMONTHDAY=31;FREQ=MONTHLY;COUNT=7",
         "EXDATE;VALUE=DATE:20240331"),
        ("DTSTART;VALUE=DATE:20240101", "DTEND;VALUE=DATE:20240103", "RRULE:FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,FR"),
        ("DTSTART;TZID=America/New_York:20240308T233000", "RRULE:FREQ=DAILY;COUNT=5"),
        ("DTSTART;TZID=Europe/Berlin:20240102T090000", "DTEND;TZID=Europe/Berlin:20240102T093000",
         "RRULE:FREQ=MONTHLY;BYDAY=-1FR;UNTIL=20241231T230000Z;WKST=SU"),
        ("DTSTART:20240101T120000Z", "RRULE:FREQ=DAILY;COUNT=3", "EXDATE;VALUE=DATE:20240102"),
    ]
    for lines in cases:
        records = assert_fast_equals_slow(series(*lines))
        assert master_of(records).occurrences
    all_day = master_of(assert_fast_equals_slow(series(*cases[0]))).occurrences
    assert [o.start for o in all_day] == [date(y, 1, 1) for y in (2024, 2025, 2026, 2027)]
    assert all(o.end - o.start == timedelta(days=1) for o in all_day)
    rule = master_of(assert_fast_equals_slow(series(*cases[1]))).rrule
    assert rule == "FREQ=MONTHLY;COUNT=7;BYMONTHDAY=31"  # icalendar's order


@pytest.mark.parametrize("lines, overrides", [
    (("DTSTART:20240101T080000Z", "RRULE:FREQ=DAILY;COUNT=3", "RDATE:20240110T080000Z"), ()),
    (("DTSTART:20240101T080000Z", "RRULE:FREQ=HOURLY;COUNT=3"), ()),
    (("DTSTART:20240101T080000Z", "RRULE:FREQ=DAILY;COUNT=-3"), ()),
    (("DTSTART:20240101T080000", "RRULE:FREQ=DAILY;COUNT=3"), ()),  # floating
    (("DTSTART;TZID=W. Europe Standard Time:20240101T080000", "RRULE:FREQ=DAILY;COUNT=3"), ()),
    (("DTSTART;TZID=Europe/Berlin:20240101T080000", "RRULE:FREQ=DAILY;UNTIL=20240105"), ()),
    (("DTSTART:20240101T080000Z", "RRULE:FREQ=DAILY;COUNT=3", "RRULE:FREQ=WEEKLY;COUNT=3"), ()),
    (("DTSTART:20240101T080000Z", "RRULE:FREQ=DAILY;COUNT=9"),
     (("RECURRENCE-ID;RANGE=THISANDFUTURE:20240103T080000Z", "DTSTART:20240103T100000Z"),)),
    (("DTSTART:20240101T080000Z", "RRULE:FREQ=DAILY;COUNT=9"),
     (("RECURRENCE-ID:20240103T080000Z", "DTSTART:20240103T100000Z", "SEQUENCE:1"),
      ("RECURRENCE-ID:20240103T080000Z", "DTSTART:20240103T110000Z", "SEQUENCE:2"))),
    (("DTSTART:20240101T080000Z", "DURATION:PT1H", "RRULE:FREQ=DAILY;COUNT=3"), ()),
])
def test_unusual_series_take_the_thorough_path(lines, overrides):
    text = series(*lines, overrides=overrides)
    assert _fast_parse(text, LOC, WINDOW) is None
    records, failures = parse_calendar(text, LOC, WINDOW)
    assert records or failures


def _random_series(rng: random.Random) -> tuple[str, tuple[datetime, datetime]]:
    """A series with random zone, length, rule, EXDATEs and overrides."""
    all_day = rng.random() < 0.25
    zone = rng.choice(["Europe/Berlin", "Europe/Berlin", "UTC", "America/New_York"])
    base = datetime(2024, rng.choice([1, 3, 3, 10, 10, 12]), rng.randint(1, 28),
                    rng.choice([0, 1, 2, 3, 9, 23]), rng.choice([0, 30]))

    def prop(name: str, when: datetime, tz: str = zone) -> str:
        if all_day:
            return f"{name};VALUE=DATE:{when:%Y%m%d}"
        if tz == "UTC":
            return f"{name}:{when:%Y%m%dT%H%M%S}Z"
        return f"{name};TZID={tz}:{when:%Y%m%dT%H%M%S}"

    length = (timedelta(days=rng.choice([1, 2])) if all_day
              else timedelta(minutes=rng.choice([0, 30, 60, 1440, 1500])))
    freq = rng.choice(["DAILY", "WEEKLY", "WEEKLY", "MONTHLY", "YEARLY"])
    parts = [f"FREQ={freq}"]
    if rng.random() < 0.3:
        parts.append(f"INTERVAL={rng.randint(1, 3)}")
    ending = rng.choice(["COUNT", "UNTIL", ""])
    if ending == "COUNT":
        parts.append(f"COUNT={rng.randint(1, 40)}")
    elif ending == "UNTIL":
        until = base + timedelta(days=rng.randint(-3, 400))
        parts.append(f"UNTIL={until:%Y%m%d}" if all_day else
                     f"UNTIL={until.replace(tzinfo=ZoneInfo(zone)).astimezone(timezone.utc):%Y%m%dT%H%M%S}Z")
    if freq == "WEEKLY" and rng.random() < 0.5:
        parts.append("BYDAY=" + ",".join(rng.sample(["MO", "TU", "WE", "TH", "FR", "SA", "SU"], rng.randint(1, 3))))
    if freq == "MONTHLY" and rng.random() < 0.5:
        parts.append(rng.choice(["BYMONTHDAY=31", "BYMONTHDAY=-1", "BYDAY=2TU", "BYDAY=-1FR"]))
    rng.shuffle(parts)
    step = {"DAILY": timedelta(days=1), "WEEKLY": timedelta(weeks=1),
            "MONTHLY": timedelta(days=31), "YEARLY": timedelta(days=365)}[freq]
    lines = [prop("DTSTART", base), "RRULE:" + ";".join(parts), "STATUS:" + rng.choice(["CONFIRMED", "TENTATIVE"])]
    if rng.random() < 0.85:
        lines.append(prop("DTEND", base + length))
    for _ in range(rng.randint(0, 3)):
        when = base + step * rng.randint(0, 10) + rng.choice([timedelta(0), timedelta(0), timedelta(hours=1)])
        if not all_day and zone != "UTC" and rng.random() < 0.3:
            lines.append(prop("EXDATE", when.replace(tzinfo=ZoneInfo(zone)).astimezone(timezone.utc), "UTC"))
        else:
            lines.append(prop("EXDATE", when))
    overrides = []
    for k in sorted(set(rng.randint(0, 8) for _ in range(rng.randint(0, 3)))):
        rid = base + step * k
        moved = rid + rng.choice([timedelta(0), timedelta(hours=3), timedelta(days=-2), timedelta(days=400)])
        lines_o = [prop("RECURRENCE-ID", rid), prop("DTSTART", moved),
                   "STATUS:" + rng.choice(["CONFIRMED", "CANCELLED"])]
        if rng.random() < 0.7:
            lines_o.append(prop("DTEND", moved + length))
        overrides.append(tuple(lines_o))
    lo = datetime(2024, rng.choice([1, 2, 6]), rng.randint(1, 28), rng.choice([0, 9, 23]), tzinfo=timezone.utc)
    return series(*lines, overrides=tuple(overrides)), (lo, lo + timedelta(days=rng.choice([10, 40, 365, 800])))


def test_series_fast_path_agrees_on_generated_series():
    taken = 0
    for seed in range(400):
        text, window = _random_series(random.Random(seed))
        taken += has_series(assert_fast_equals_slow(text, window, expect_fast=False))
    assert taken >= 300


# ------------------------------------------------------------- build_vtodo


def test_build_vtodo_round_trip():
    task = TaskPush(uid="crm-task-42", summary="Call Jane; re: offer, v2", description="line 1\nline 2 " + "é" * 80,
                    due=datetime(2024, 5, 1, 9, 30, tzinfo=ZoneInfo("Europe/Berlin")), status="NEEDS-ACTION",
                    completed=None)
    text = build_vtodo(task)
    assert "PRODID:-//crm-bridge//crm-bridge//EN" in text
    assert all(len(line.encode()) <= 75 for line in text.split("\r\n"))
    parsed = icalendar.Calendar.from_ical(text)
    [todo] = parsed.walk("VTODO")
    assert str(todo["UID"]) == "crm-task-42"
    [state], failures = parse_calendar(text, LOC, WINDOW)
    assert failures == []
    assert state.uid == task.uid
    assert state.summary == task.summary
    assert state.status == "NEEDS-ACTION"
    assert state.due == task.due
    assert state.completed is None


def test_build_vtodo_completed_and_date_due():
    done = datetime(2024, 5, 2, 10, tzinfo=timezone.utc)
    task = TaskPush(uid="t", summary="s", description="", due=date(2024, 5, 1), status="COMPLETED", completed=done)
    [state], _ = parse_calendar(build_vtodo(task), LOC, WINDOW)
    assert state.status == "COMPLETED" and state.completed == done and state.due == date(2024, 5, 1)


_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")) | st.just("\n"), max_size=400)


@settings(max_examples=80, deadline=None)
@given(summary=_TEXT, description=_TEXT)
def test_build_vtodo_text_survives(summary, description):
    task = TaskPush(uid="u-1", summary=summary, description=description, due=None, status="NEEDS-ACTION",
                    completed=None)
    [state], failures = parse_calendar(build_vtodo(task), LOC, WINDOW)
    assert failures == []

    def folded(value: str, limit: int) -> str:
        value = re.sub(r"\s+", " ", value).strip()
        return value if len(value) <= limit else value[: limit - 1].rstrip() + "…"

    assert state.summary == folded(summary, 500)
    assert state.description == folded(description, 300)


def test_build_vtodo_is_stable_apart_from_dtstamp():
    task = TaskPush(uid="t", summary="s", description="d", due=None, status="NEEDS-ACTION", completed=None)
    a = build_vtodo(task, now=datetime(2024, 1, 1, tzinfo=timezone.utc))
    b = build_vtodo(task, now=datetime(2025, 1, 1, tzinfo=timezone.utc))
    assert a != b
    assert normalised_hash(a) == normalised_hash(b)


# ---------------------------------------------------------- normalised_hash


BASE = cal(raw_event("UID:h", "DTSTAMP:20240101T000000Z", "DTSTART:20240101T100000Z",
                     "SUMMARY:A rather long summary that will need folding when it is written out again",
                     "LAST-MODIFIED:20240101T000000Z"))


def test_hash_ignores_stamps_prodid_folding_order_and_line_ends():
    other = (BASE.replace("DTSTAMP:20240101T000000Z", "DTSTAMP:20250101T000000Z")
             .replace("LAST-MODIFIED:20240101T000000Z", "LAST-MODIFIED:20250101T000000Z")
             .replace("PRODID:-//test//EN", "PRODID:-//Radicale//NONSGML//EN"))
    assert normalised_hash(other) == normalised_hash(BASE)
    assert normalised_hash(BASE.replace("\r\n", "\n")) == normalised_hash(BASE)
    folded = BASE.replace("will need folding", "will need\r\n  folding")
    assert normalised_hash(folded) == normalised_hash(BASE.replace("will need folding", "will need folding"))
    reordered = BASE.replace("DTSTART:20240101T100000Z\r\n", "").replace("UID:h\r\n", "UID:h\r\nDTSTART:20240101T100000Z\r\n")
    assert reordered != BASE
    assert normalised_hash(reordered) == normalised_hash(BASE)


def test_hash_sees_real_changes():
    assert normalised_hash(BASE.replace("SUMMARY:A rather", "SUMMARY:A very")) != normalised_hash(BASE)
    assert normalised_hash(BASE.replace("UID:h\r\n", "UID:h\r\nSEQUENCE:1\r\n")) != normalised_hash(BASE)
    assert normalised_hash(BASE.replace("DTSTART:20240101T100000Z", "DTSTART:20240101T110000Z")) != normalised_hash(BASE)


def test_hash_of_icalendar_reserialisation_is_equal():
    """What a server does to stored text (icalendar re-serialises, reorders)."""
    text = cal(raw_event("UID:r", "DTSTAMP:20240101T000000Z", "DTSTART;TZID=Europe/Berlin:20240101T100000",
                         "SUMMARY:x", "ATTENDEE;PARTSTAT=ACCEPTED;CN=Bob:mailto:bob@example.com"))
    again = icalendar.Calendar.from_ical(text).to_ical().decode()
    assert normalised_hash(again) == normalised_hash(text)
