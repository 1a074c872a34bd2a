"""Follow-up tasks and customer cards pushed to a real Radicale through `crm sync`.

The "client" here is an independent HTTP writer (tests/dav_servers.py), the
way Thunderbird or Apple Reminders would change a task.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import icalendar
import pytest

from crm_bridge.crm_core.store import Store
from tests.conftest import Crm, write_config
from tests.dav_servers import radicale  # noqa: F401

PW_ENV = "CRM_TEST_PUSH_PASSWORD"


@pytest.fixture
def setup(radicale, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv(PW_ENV, radicale.password)
    cal = radicale.unique("work")
    tasks = radicale.unique("tasks")
    book = radicale.unique("crm-book")
    col = radicale.make_calendar(cal)
    ended = datetime.now(timezone.utc) - timedelta(days=2)
    radicale.put(col, "visit.ics", (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//client//EN\r\nBEGIN:VEVENT\r\nUID:visit-1\r\n"
        f"DTSTAMP:20260101T000000Z\r\nDTSTART:{(ended - timedelta(hours=1)).strftime('%Y%m%dT%H%M%SZ')}\r\n"
        f"DTEND:{ended.strftime('%Y%m%dT%H%M%SZ')}\r\nSUMMARY:Begehung Heizungskeller\r\n"
        "ORGANIZER;CN=Anna:mailto:anna@nordlicht.example\r\n"
        "ATTENDEE;CN=Kim;PARTSTAT=ACCEPTED:mailto:kim@kunde.example\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"))
    common = {"url": radicale.url, "username": radicale.user, "password_env": PW_ENV, "allow_plaintext": True}
    config = write_config(
        tmp_path / "crm.toml", customers=(("Kunde GmbH", ["kunde.example"]),), store=str(tmp_path / "crm.db"),
        followup={"after_appointment_days": 1, "unanswered_days": 0},
        push={"tasks": "dav-cal", "cards": "dav-book"},
        sources={
            "dav-cal": {"type": "caldav", "calendars": [cal], "tasks_calendar": tasks,
                        "owner": ["anna@nordlicht.example"], **common},
            "dav-book": {"type": "carddav", "addressbooks": [book], "cards_addressbook": book, **common},
        },
    )
    tasks_url = f"{radicale.home}{tasks}/"
    return Crm(config), radicale, tasks_url, f"{radicale.contacts_home}{book}/", tmp_path


def vtodos(server, collection: str) -> dict[str, icalendar.Todo]:
    out = {}
    for href in server.hrefs(collection):
        cal = icalendar.Calendar.from_ical(server.get(href).body)
        for todo in cal.walk("VTODO"):
            out[href] = todo
    return out


def client_edit(server, href: str, **changes: str) -> None:
    """Change a VTODO the way a calendar client does: GET, edit, PUT with If-Match."""
    resp = server.get(href)
    cal = icalendar.Calendar.from_ical(resp.body)
    todo = next(iter(cal.walk("VTODO")))
    for key, value in changes.items():
        todo.pop(key.upper(), None)
        todo.add(key.upper(), value)
    put = server.request("PUT", href, cal.to_ical(), {"Content-Type": "text/calendar", "If-Match": resp.etag})
    assert put.status in (201, 204), put.status


def test_follow_up_task_goes_to_the_calendar_once_and_comes_back_done(setup):
    crm, server, tasks_url, _, _ = setup
    crm("sync")
    [task] = crm.json("tasks", "list")
    assert task["title"] == "Follow up: Begehung Heizungskeller" and task["customer"] == "Kunde GmbH"
    todos = vtodos(server, tasks_url)
    assert len(todos) == 1
    [(href, todo)] = todos.items()
    assert str(todo["UID"]) == task["uid"] and str(todo["STATUS"]) == "NEEDS-ACTION"
    assert "Kunde GmbH" in str(todo["DESCRIPTION"])
    for _ in range(10):
        crm("sync")
    assert list(vtodos(server, tasks_url)) == [href]
    assert len(crm.json("tasks", "list", "--all")) == 1
    # done in the client means done in the CRM
    client_edit(server, href, status="COMPLETED", completed=datetime.now(timezone.utc))
    crm("sync")
    assert crm.json("tasks", "list") == []
    assert [t["status"] for t in crm.json("tasks", "list", "--all")] == ["done"]


def test_task_added_and_closed_in_the_crm_reaches_the_calendar(setup):
    crm, server, tasks_url, _, _ = setup
    crm("sync")
    crm("tasks", "add", "Angebot schicken", "--customer", "Kunde GmbH", "--due", "2026-12-24")
    crm("sync")
    titles = {str(t["SUMMARY"]): t for t in vtodos(server, tasks_url).values()}
    assert set(titles) == {"Follow up: Begehung Heizungskeller", "Angebot schicken"}
    assert titles["Angebot schicken"]["DUE"].dt.isoformat().startswith("2026-12-24")
    manual = next(t for t in crm.json("tasks", "list") if t["title"] == "Angebot schicken")
    # an edit in the CRM changes the VTODO in place
    crm("tasks", "edit", str(manual["id"]), "--title", "Angebot schicken (mit Rabatt)", "--due", "2027-01-08")
    crm("sync")
    titles = {str(t["SUMMARY"]): t for t in vtodos(server, tasks_url).values()}
    assert set(titles) == {"Follow up: Begehung Heizungskeller", "Angebot schicken (mit Rabatt)"}
    assert titles["Angebot schicken (mit Rabatt)"]["DUE"].dt.isoformat().startswith("2027-01-08")
    crm("tasks", "done", str(manual["id"]))
    crm("sync")
    titles = {str(t["SUMMARY"]): t for t in vtodos(server, tasks_url).values()}
    assert str(titles["Angebot schicken (mit Rabatt)"]["STATUS"]) == "COMPLETED"
    assert len(titles) == 2


def test_both_sides_changed_the_client_wins_and_it_is_logged(setup):
    crm, server, tasks_url, _, tmp = setup
    crm("sync")
    [task] = crm.json("tasks", "list")
    [href] = vtodos(server, tasks_url)
    crm("tasks", "done", str(task["id"]))  # CRM: done ...
    client_edit(server, href, summary="Begehung nachbereiten (verschoben)")  # ... client: renamed, still open
    crm("sync")
    [after] = crm.json("tasks", "list", "--all")
    assert after["status"] == "open" and after["title"] == "Begehung nachbereiten (verschoben)"
    [todo] = vtodos(server, tasks_url).values()
    assert str(todo["STATUS"]) == "NEEDS-ACTION"
    store = Store(tmp / "crm.db")
    conflicts = store.conn.execute("SELECT kind, item, resolution FROM conflicts").fetchall()
    assert conflicts == [("task", task["uid"], "changed in the CRM and in the client: the client's version wins")]


def test_edit_beats_delete(setup):
    crm, server, tasks_url, _, tmp = setup
    crm("sync")
    crm("tasks", "add", "Bleibt", "--customer", "Kunde GmbH")
    crm("sync")
    hrefs = {str(t["SUMMARY"]): h for h, t in vtodos(server, tasks_url).items()}
    # deleted in the client and not touched in the CRM: cancelled in the CRM
    assert server.delete(hrefs["Follow up: Begehung Heizungskeller"]).status in (200, 204)
    # deleted in the client but edited in the CRM: uploaded again
    kept = next(t for t in crm.json("tasks", "list") if t["title"] == "Bleibt")
    assert server.delete(hrefs["Bleibt"]).status in (200, 204)
    crm("tasks", "done", str(kept["id"]))
    crm("sync")
    status = {t["title"]: t["status"] for t in crm.json("tasks", "list", "--all")}
    assert status == {"Follow up: Begehung Heizungskeller": "cancelled", "Bleibt": "done"}
    summaries = {str(t["SUMMARY"]): str(t["STATUS"]) for t in vtodos(server, tasks_url).values()}
    assert summaries == {"Bleibt": "COMPLETED"}
    resolutions = [r for (r,) in Store(tmp / "crm.db").conn.execute("SELECT resolution FROM conflicts")]
    assert any("uploaded again" in r for r in resolutions) and any("cancelled in the CRM" in r for r in resolutions)


def test_customers_go_into_the_address_book_and_user_edits_survive(setup):
    crm, server, _, book_url, _ = setup
    crm("customers", "add", "Kunde GmbH", "--owner", "Anna Weber")
    crm("sync")
    cards = {h: server.get(h).text.replace("\r\n ", "") for h in server.hrefs(book_url)}  # unfolded
    org = [t for t in cards.values() if "KIND:org" in t]
    people = [t for t in cards.values() if "kim@kunde.example" in t]
    assert len(org) == 1 and "Kunde GmbH" in org[0] and "Account owner: Anna Weber" in org[0]
    assert len(people) == 1 and "ORG:Kunde GmbH" in people[0] and "Open tasks: 1" in people[0]
    for _ in range(3):
        crm("sync")
    assert len(server.hrefs(book_url)) == len(cards)
    # the user edits the card of the customer; the CRM does not overwrite it blindly
    [org_href] = [h for h, t in cards.items() if "KIND:org" in t]
    edited = server.get(org_href).text.replace("FN:Kunde GmbH", "FN:Kunde GmbH (Stammkunde)")
    assert server.request("PUT", org_href, edited, {"Content-Type": "text/vcard"}).status in (201, 204)
    crm("tasks", "add", "Neuer Termin", "--customer", "Kunde GmbH")  # changes the CRM's card (open tasks)
    result = crm.json("sync")
    assert "FN:Kunde GmbH (Stammkunde)" in server.get(org_href).text
    cards_result = next(r for r in result["results"] if r["source"] == "dav-book (cards)")
    assert cards_result["status"] == "warning" and "not overwritten" in cards_result["message"]
    # said once; the card is the user's from now on
    again = next(r for r in crm.json("sync")["results"] if r["source"] == "dav-book (cards)")
    assert again["status"] == "ok"
    assert "FN:Kunde GmbH (Stammkunde)" in server.get(org_href).text
