"""What staff read of the CRM outside the browser: follow-up tasks in their calendar and customer
cards in their address book speak the office's language ([company] language), give times in the
office's zone ([company] timezone), and link to the customer's page ([web] base_url) instead of
telling them to run shell commands.  Pushed to a real Radicale through `crm sync`.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import icalendar
import pytest
import vobject

from crm_bridge.crm_core import i18n
from crm_bridge.crm_core.followup import apply_rules
from crm_bridge.crm_core.i18n import Office
from crm_bridge.crm_core.settings import FollowupSettings
from crm_bridge.crm_core.store import Store
from crm_bridge.sync.config import ConfigError, parse_config
from tests.conftest import Crm, make_mail, write_config
from tests.dav_servers import radicale  # noqa: F401

PW_ENV = "CRM_TEST_PUSHTEXTS_PASSWORD"
CRM_CORE = Path(i18n.__file__).parent
MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()


def german(value: datetime | date) -> str:
    return value.strftime("%d.%m.%Y %H:%M" if isinstance(value, datetime) else "%d.%m.%Y")


def english(value: datetime | date) -> str:
    day = f"{value.day} {MONTHS[value.month - 1]} {value.year}"
    return f"{day} {value:%H:%M}" if isinstance(value, datetime) else day


class Groupware:
    """One Radicale calendar with a visit that ended late in the evening (UTC), a tasks calendar and an
    address book; ``config(company, web)`` writes a crm.toml that pushes tasks and cards there."""

    def __init__(self, server, tmp_path: Path):
        self.server, self.tmp = server, tmp_path
        cal, tasks, book = server.unique("work"), server.unique("tasks"), server.unique("book")
        col = server.make_calendar(cal)
        # 23:10 UTC three days ago: already the next day in Berlin, still the evening in New York
        self.start = (datetime.now(timezone.utc) - timedelta(days=3)).replace(hour=23, minute=10, second=0,
                                                                               microsecond=0)
        end = self.start + timedelta(minutes=30)
        server.put(col, "visit.ics", (
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//client//EN\r\nBEGIN:VEVENT\r\nUID:visit-1\r\n"
            f"DTSTAMP:20260101T000000Z\r\nDTSTART:{self.start:%Y%m%dT%H%M%SZ}\r\nDTEND:{end:%Y%m%dT%H%M%SZ}\r\n"
            "SUMMARY:Begehung Heizungskeller\r\nORGANIZER;CN=Anna:mailto:anna@nordlicht.example\r\n"
            "ATTENDEE;CN=Kim;PARTSTAT=ACCEPTED:mailto:kim@kunde.example\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"))
        common = {"url": server.url, "username": server.user, "password_env": PW_ENV, "allow_plaintext": True}
        self.sources = {
            "dav-cal": {"type": "caldav", "calendars": [cal], "tasks_calendar": tasks,
                        "owner": ["anna@nordlicht.example"], **common},
            "dav-book": {"type": "carddav", "addressbooks": [book], "cards_addressbook": book, **common},
        }
        self.tasks_url, self.book_url = f"{server.home}{tasks}/", f"{server.contacts_home}{book}/"

    def crm(self, company: dict | None = None, web: dict | None = None) -> Crm:
        return Crm(write_config(
            self.tmp / "crm.toml", customers=(("Kunde GmbH", ["kunde.example"]),), store=str(self.tmp / "crm.db"),
            followup={"after_appointment_days": 1, "unanswered_days": 0}, push={"tasks": "dav-cal", "cards": "dav-book"},
            sources=self.sources, company=company, web=web))

    def todos(self) -> list[icalendar.Todo]:
        return [todo for href in self.server.hrefs(self.tasks_url)
                for todo in icalendar.Calendar.from_ical(self.server.get(href).body).walk("VTODO")]

    def notes(self) -> dict[str, str]:
        """FN -> NOTE of every card in the address book."""
        cards = [vobject.readOne(self.server.get(h).text) for h in self.server.hrefs(self.book_url)]
        return {c.fn.value: c.note.value for c in cards}

    def customer_id(self) -> int:
        return Store(self.tmp / "crm.db").customer_id("Kunde GmbH")


@pytest.fixture
def dav(radicale, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv(PW_ENV, radicale.password)
    return Groupware(radicale, tmp_path)


def test_pushed_task_and_cards_in_german_local_time_with_the_customer_link(dav):
    crm = dav.crm({"language": "de", "timezone": "Europe/Berlin"}, {"base_url": "https://crm.firma.de/"})
    crm("sync")
    berlin = dav.start.astimezone(ZoneInfo("Europe/Berlin"))
    [task] = crm.json("tasks", "list")
    [todo] = dav.todos()
    assert str(todo["SUMMARY"]) == task["title"] == "Nachfassen: Begehung Heizungskeller"
    cid = dav.customer_id()
    # the rule's due date (the day after the visit, in Berlin) had passed: due today, and it says so
    rule_due = berlin.date() + timedelta(days=1)
    assert str(todo["DESCRIPTION"]).splitlines() == [
        f"Nach dem Ende des Termins angelegt. Das Fälligkeitsdatum der Regel, {german(rule_due)}, war beim "
        "Anlegen schon vorbei: fällig am Tag des Anlegens.",
        "Kunde: Kunde GmbH",
        f"Kundenseite: https://crm.firma.de/customers/{cid}",
        f"Zum Termin „Begehung Heizungskeller“ am {german(berlin)}",
        f"crm-bridge-Aufgabe {task['id']}",
    ]
    assert german(dav.start) not in str(todo["DESCRIPTION"])  # never UTC
    notes = dav.notes()
    assert notes["Kunde GmbH"] == (f"Kunde in crm-bridge. Letzter Kontakt: {german(berlin.date())}. Offene Aufgaben: 1."
                                   f"\nKundenseite: https://crm.firma.de/customers/{cid}")
    assert notes["Kim"].startswith(f"Kunde: Kunde GmbH. Letzter Kontakt mit dem Kunden: {german(berlin.date())}.")
    assert notes["Kim"].endswith(f"\nKundenseite: https://crm.firma.de/customers/{cid}")
    # nothing changed, nothing is written again: the texts are the same from one run to the next
    tasks_before, cards_before = dav.server.hrefs(dav.tasks_url), dav.server.hrefs(dav.book_url)
    for _ in range(2):
        results = {r["source"]: r for r in crm.json("sync")["results"]}
        assert results["dav-cal (tasks)"]["tasks_updated"] == 0 and results["dav-book (cards)"]["updated"] == 0
    assert dav.server.hrefs(dav.tasks_url) == tasks_before
    assert dav.server.hrefs(dav.book_url) == cards_before


def test_english_office_in_another_zone(dav):
    crm = dav.crm({"language": "en", "timezone": "America/New_York"}, {"base_url": "http://127.0.0.1:8080"})
    crm("sync")
    new_york = dav.start.astimezone(ZoneInfo("America/New_York"))
    [todo] = dav.todos()
    lines = str(todo["DESCRIPTION"]).splitlines()
    assert str(todo["SUMMARY"]) == "Follow up: Begehung Heizungskeller"
    assert lines[1:4] == ["Customer: Kunde GmbH", f"Customer page: http://127.0.0.1:8080/customers/{dav.customer_id()}",
                          f'About the appointment "Begehung Heizungskeller" on {english(new_york)}']
    assert dav.notes()["Kunde GmbH"].startswith(f"crm-bridge customer. Last contact: {english(new_york.date())}.")
    for _ in range(2):
        results = {r["source"]: r for r in crm.json("sync")["results"]}
        assert results["dav-cal (tasks)"]["tasks_updated"] == 0 and results["dav-book (cards)"]["updated"] == 0


def test_without_base_url_no_link_and_no_shell_commands(dav):
    crm = dav.crm({"language": "de", "timezone": "Europe/Berlin"})
    crm("sync")
    [todo] = dav.todos()
    text = str(todo["DESCRIPTION"])
    assert "Der ganze Verlauf mit dem Kunden steht in crm-bridge." in text.splitlines()
    assert "http" not in text and "crm timeline" not in text and "crm explain" not in text
    assert all("http" not in note and "Kundenseite" not in note for note in dav.notes().values())


def test_a_title_is_written_once_and_the_rest_follows_a_new_language(dav):
    crm = dav.crm({"language": "en", "timezone": "Europe/Berlin"}, {"base_url": "https://crm.firma.de"})
    crm("sync")
    [task] = crm.json("tasks", "list")
    assert task["title"] == "Follow up: Begehung Heizungskeller"
    crm = dav.crm({"language": "de", "timezone": "Europe/Berlin"}, {"base_url": "https://crm.firma.de"})
    crm("sync")
    # the title (maybe edited by someone since) stays; the cards speak German at once
    [todo] = dav.todos()
    assert str(todo["SUMMARY"]) == "Follow up: Begehung Heizungskeller"
    assert dav.notes()["Kunde GmbH"].startswith("Kunde in crm-bridge.")
    # the next change of the task writes the lines below the rule's text in German
    crm("tasks", "edit", str(task["id"]), "--due", "+7")
    crm("sync")
    [todo] = dav.todos()
    lines = str(todo["DESCRIPTION"]).splitlines()
    assert lines[0].startswith("Created after the appointment ended.") and lines[1] == "Kunde: Kunde GmbH"


# -- the follow-up rules' days and words --------------------------------------------------------------
def _store(tmp_path: Path, mail_at: datetime) -> Store:
    from crm_bridge.crm_core.domains import AddressSet
    from crm_bridge.crm_core.records import Address, AppointmentRecord, Attendee, Batch, Location, MailRecord
    from crm_bridge.crm_core.settings import LinkingSettings, SourcePolicy

    store = Store(tmp_path / "rules.db", LinkingSettings(internal_domains=AddressSet(["nordlicht.example"])))
    store.add_customer("Kunde GmbH", ["kunde.example"])
    kim, anna = Address("kim@kunde.example", "Kim"), Address("anna@nordlicht.example", "Anna")
    recs = [MailRecord(Location("INBOX", "1"), "q1@x", sender=kim, to=(anna,), date=mail_at, subject="Frage"),
            AppointmentRecord(Location("cal", "e1"), "e1", start=date(2026, 11, 2), end=date(2026, 11, 3),
                              organizer=Attendee(anna, "organizer"), attendees=(Attendee(kim),), summary="")]
    with store.transaction():
        store.apply_batch(SourcePolicy("anna", owner=frozenset({"anna@nordlicht.example"})), Batch(records=recs))
    return store


@pytest.mark.parametrize("zone, today, due", [
    ("Pacific/Auckland", "2026-11-05", "2026-11-05"),  # the mail came on 2 Nov, 09:00 there
    ("UTC", "2026-11-04", "2026-11-04"),
])
def test_rules_count_days_in_the_office_zone(tmp_path, zone, today, due):
    store = _store(tmp_path, datetime(2026, 11, 1, 20, 0, tzinfo=timezone.utc))
    now = datetime(2026, 11, 4, 21, 0, tzinfo=timezone.utc)  # 5 Nov, 10:00 in Auckland
    rules = FollowupSettings(after_appointment_days=1, unanswered_days=3, lookback_days=30)
    assert apply_rules(store, rules, now, Office(language="de", timezone=zone)) == 2
    tasks = {t["title"]: t for t in store.tasks()}
    reply = tasks["Antworten an kim@kunde.example: Frage"]
    assert reply["due"] == due and reply["description"] == "Eine E-Mail des Kunden, auf die wir noch nicht geantwortet haben."
    # an all-day appointment (no subject) ended at the start of 3 Nov, the office's day: due the 4th, or today
    visit = tasks["Nachfassen: Termin"]
    assert visit["due"] == max("2026-11-04", today)


def test_a_late_rule_task_says_its_due_date_in_the_office_language(tmp_path):
    store = _store(tmp_path, datetime(2026, 11, 1, 20, 0, tzinfo=timezone.utc))
    now = datetime(2026, 11, 10, 12, 0, tzinfo=timezone.utc)
    apply_rules(store, FollowupSettings(after_appointment_days=0, unanswered_days=3), now,
                Office(language="en", timezone="Pacific/Auckland"))
    [task] = store.tasks()
    assert task["title"] == "Reply to kim@kunde.example: Frage" and task["due"] == "2026-11-11"  # today in Auckland
    assert task["description"] == ("A customer's mail that got no reply from us. The rule's due date, 5 Nov 2026, "
                                   "had passed when the task was made: due the day it was made.")


# -- the catalogue and the setting --------------------------------------------------------------------
def test_every_text_has_its_german_and_every_catalogue_entry_is_used():
    english_ids, german_texts = i18n.catalogue("en"), i18n.catalogue("de")
    assert english_ids and set(english_ids) == set(german_texts)
    assert all(german_texts[t] for t in german_texts), [t for t in german_texts if not german_texts[t]]
    code = "\n".join(p.read_text(encoding="utf-8") for p in CRM_CORE.glob("*.py"))
    in_code = set(re.findall(r'_\(\s*"((?:[^"\\]|\\.)*)"', code)) | set(re.findall(r"_\(\s*'([^']*)'", code))
    assert in_code and in_code <= set(english_ids), in_code - set(english_ids)
    assert [t for t in english_ids if f'"{t}"' not in code and f"'{t}'" not in code] == []
    # the placeholders survive translation
    for text, translated in german_texts.items():
        assert sorted(re.findall(r"{\w+}", text)) == sorted(re.findall(r"{\w+}", translated)), text


@pytest.mark.parametrize("value", ["crm.firma.de", "https://crm.firma.de/?tab=1", "ftp://crm.firma.de", 8080,
                                   "https://", "https://crm.firma.de:port"])
def test_a_wrong_base_url_is_one_readable_line(tmp_path, value):
    with pytest.raises(ConfigError) as err:
        parse_config({"web": {"base_url": value}}, tmp_path / "crm.toml")
    [line] = err.value.problems
    assert "web.base_url must be the address staff open crm serve at" in line and "\n" not in line


def test_a_base_url_with_a_password_is_refused_without_repeating_it(tmp_path):
    with pytest.raises(ConfigError) as err:
        parse_config({"web": {"base_url": "https://anna:geheim@crm.firma.de"}}, tmp_path / "crm.toml")
    [line] = err.value.problems
    assert "web.base_url" in line and "without a user name or password" in line and "geheim" not in line


def test_a_wrong_base_url_stops_crm_with_exit_2_and_no_traceback(tmp_path):
    crm = Crm(write_config(tmp_path / "crm.toml", web={"base_url": "crm.firma.de"}))
    result = crm("sync", ok=False)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "web.base_url must be the address staff open crm serve at" in result.output


# -- the command line shows the office's time too -----------------------------------------------------
def test_cli_timeline_tasks_and_search_in_the_office_zone(tmp_path, maildir):
    (tmp_path / "cal.ics").write_text(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//x//EN\r\nBEGIN:VEVENT\r\nUID:call-1\r\nDTSTAMP:20261001T000000Z\r\n"
        "DTSTART:20261005T060000Z\r\nDTEND:20261005T063000Z\r\nSUMMARY:Telefonat\r\n"
        "ORGANIZER;CN=Anna:mailto:anna@nordlicht.example\r\nATTENDEE;CN=Kim:mailto:kim@kunde.example\r\n"
        "END:VEVENT\r\nEND:VCALENDAR\r\n")
    maildir.add(make_mail(subject="Spät am Abend", date=datetime(2026, 10, 1, 23, 30, tzinfo=timezone.utc)))
    crm = Crm(write_config(
        tmp_path / "crm.toml", customers=(("Kunde GmbH", ["kunde.example"]),), company={"timezone": "Europe/Berlin"},
        followup={"after_appointment_days": 0, "unanswered_days": 0}, store=str(tmp_path / "crm.db"),
        sources={"mail": {"type": "maildir", "path": str(maildir.root), "owner": ["anna@nordlicht.example"]},
                 "cal": {"type": "ics", "path": str(tmp_path / "cal.ics"), "owner": ["anna@nordlicht.example"]}}))
    crm("sync")
    timeline = crm("timeline", "Kunde GmbH").output
    assert "2026-10-05 08:00  appointment: Telefonat" in timeline  # 06:00 UTC, summer time in Berlin
    assert "2026-10-02 01:30  mail <- kim@kunde.example: Spät am Abend" in timeline
    assert "2026-10-02" in crm("search", "Abend").output.split("Spät")[0]
    store = Store(tmp_path / "crm.db")
    store.add_task("Rückruf", due=datetime(2026, 11, 29, 23, 30, tzinfo=timezone.utc))  # a due time a calendar set
    assert "due 2026-11-30" in crm("tasks", "list").output


def test_without_a_configured_zone_times_follow_the_systems_rules_all_year(monkeypatch):
    """No [company] timezone: the system's zone with its summer time, not the offset it has today."""
    import time

    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        office = Office(language="de")
        assert office.when("2026-01-15T12:00:00Z") == "15.01.2026 13:00"
        assert office.when("2026-07-15T12:00:00Z") == "15.07.2026 14:00"
        assert office.when("2026-10-25T00:30:00Z") == "25.10.2026 02:30"  # still summer time
        assert office.when("2026-10-25T01:30:00Z") == "25.10.2026 02:30"  # the repeated hour, winter time
        start = datetime(2026, 7, 1, tzinfo=i18n.zone("")).astimezone(timezone.utc)
        assert start == datetime(2026, 6, 30, 22, 0, tzinfo=timezone.utc)
    finally:
        monkeypatch.undo()
        time.tzset()
