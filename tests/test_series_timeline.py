"""A recurring series with RECURRENCE-ID overrides on a customer's timeline:
every occurrence once, the moved one at its new time with the override's
text, through an .ics file (the demo) and through CalDAV (Radicale)."""

from __future__ import annotations

import shutil
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

from tests.conftest import Crm, write_config
from tests.dav_servers import radicale  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
PW_ENV = "CRM_TEST_SERIES_PASSWORD"


def test_demo_moved_occurrence_shows_once(tmp_path):
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    shutil.copy2(REPO / "config.example.toml", tmp_path / "crm.toml")
    crm = Crm(tmp_path / "crm.toml")
    crm("sync")
    items = crm.json("timeline", "Stadtwerke Lindenau GmbH", "--limit", "0")
    jour_fixe = [i for i in items if i["kind"] == "appointment" and i["subject"].startswith("Jour fixe")]
    days = Counter(i["date"][:10] for i in jour_fixe)
    assert len(days) >= 10
    assert [d for d, n in days.items() if n > 1] == []
    assert "2026-05-12" not in days and "2026-04-07" not in days  # moved away, EXDATE
    [moved] = [i for i in jour_fixe if i["date"].startswith("2026-05-13")]
    assert moved["snippet"].startswith("Verschoben")  # the override's own text, not the master's
    # a rerun changes nothing
    crm("sync")
    assert crm.json("timeline", "Stadtwerke Lindenau GmbH", "--limit", "0") == items


def test_caldav_series_with_moved_and_cancelled_override(radicale, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv(PW_ENV, radicale.password)
    cal = radicale.unique("series")
    col = radicale.make_calendar(cal)
    first = (datetime.now(timezone.utc) - timedelta(days=21)).replace(hour=9, minute=0, second=0, microsecond=0)
    stamp = "%Y%m%dT%H%M%SZ"
    moved_from, moved_to = first + timedelta(days=7), first + timedelta(days=8, hours=3)
    cancelled = first + timedelta(days=14)
    text = (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//client//EN\r\n"
        f"BEGIN:VEVENT\r\nUID:weekly-kunde\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:{first.strftime(stamp)}\r\n"
        f"DTEND:{(first + timedelta(hours=1)).strftime(stamp)}\r\nRRULE:FREQ=WEEKLY;COUNT=5\r\n"
        "SUMMARY:Jour fixe Kunde\r\nDESCRIPTION:weekly\r\nORGANIZER;CN=Anna:mailto:anna@nordlicht.example\r\n"
        "ATTENDEE;PARTSTAT=ACCEPTED:mailto:kim@kunde.example\r\nEND:VEVENT\r\n"
        f"BEGIN:VEVENT\r\nUID:weekly-kunde\r\nDTSTAMP:20260101T000000Z\r\nRECURRENCE-ID:{moved_from.strftime(stamp)}\r\n"
        f"DTSTART:{moved_to.strftime(stamp)}\r\nDTEND:{(moved_to + timedelta(hours=1)).strftime(stamp)}\r\n"
        "SUMMARY:Jour fixe Kunde\r\nDESCRIPTION:moved\r\nORGANIZER;CN=Anna:mailto:anna@nordlicht.example\r\n"
        "ATTENDEE;PARTSTAT=ACCEPTED:mailto:kim@kunde.example\r\nEND:VEVENT\r\n"
        f"BEGIN:VEVENT\r\nUID:weekly-kunde\r\nDTSTAMP:20260101T000000Z\r\nRECURRENCE-ID:{cancelled.strftime(stamp)}\r\n"
        f"DTSTART:{cancelled.strftime(stamp)}\r\nDTEND:{(cancelled + timedelta(hours=1)).strftime(stamp)}\r\n"
        "STATUS:CANCELLED\r\nSUMMARY:Jour fixe Kunde\r\nDESCRIPTION:cancelled\r\n"
        "ORGANIZER;CN=Anna:mailto:anna@nordlicht.example\r\n"
        "ATTENDEE;PARTSTAT=ACCEPTED:mailto:kim@kunde.example\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    assert radicale.put(col, "weekly.ics", text).status == 201
    config = write_config(
        tmp_path / "crm.toml", customers=(("Kunde GmbH", ["kunde.example"]),), store=str(tmp_path / "crm.db"),
        sources={"dav-cal": {"type": "caldav", "calendars": [cal], "owner": ["anna@nordlicht.example"],
                             "url": radicale.url, "username": radicale.user, "password_env": PW_ENV,
                             "allow_plaintext": True}},
    )
    crm = Crm(config)
    crm("sync")
    items = [i for i in crm.json("timeline", "Kunde GmbH", "--limit", "0") if i["kind"] == "appointment"]
    starts = Counter(datetime.fromisoformat(i["start"]).astimezone(timezone.utc) for i in items)
    assert [s for s, n in starts.items() if n > 1] == []
    assert len(items) == 5  # five occurrences: three as the master's, two as overrides
    assert moved_from not in starts and moved_to in starts and cancelled in starts
    [moved] = [i for i in items if datetime.fromisoformat(i["start"]) == moved_to]
    assert moved["snippet"] == "moved"
    [gone] = [i for i in items if datetime.fromisoformat(i["start"]) == cancelled]
    assert gone["status"] == "CANCELLED" and gone["snippet"] == "cancelled"
