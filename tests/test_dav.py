"""CalDAV/CardDAV connectors against real Radicale and Xandikos servers."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import icalendar
import pytest

from crm_bridge.connectors.base import AuthError, SourceUnavailable, TransientError
from crm_bridge.connectors.dav import CalDavConnector, CardDavConnector
from crm_bridge.connectors.davhttp import _Collection, _href_path, _join, _path
from crm_bridge.connectors.ical import normalised_hash
from crm_bridge.connectors.vcard import build_vcard
from crm_bridge.crm_core.records import (
    AppointmentRecord,
    Batch,
    CardPush,
    ContactCard,
    TaskPush,
    TaskState,
)
from tests.dav_servers import own_radicale, radicale, xandikos  # noqa: F401

PW_ENV = "CRM_TEST_DAV_PASSWORD"


class MemoryView:
    """What the engine keeps: scope -> {href: etag}, plus the records."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, str]] = {}
        self.records: dict[tuple[str, str], list] = {}
        self.cursor: dict | None = None
        self.problems: list[str] = []

    def known(self, scope):
        return dict(self.items.get(scope, {}))

    def scopes(self):
        return [s for s, items in self.items.items() if items]

    def apply(self, batch: Batch) -> None:
        fresh: dict[tuple[str, str], list] = {}
        for rec in batch.records:
            loc = rec.location
            self.items.setdefault(loc.scope, {})[loc.local_id] = loc.etag
            fresh.setdefault((loc.scope, loc.local_id), []).append(rec)
        self.records.update(fresh)
        for failure in batch.failures:
            loc = failure.location
            self.items.setdefault(loc.scope, {})[loc.local_id] = loc.etag
        for loc in batch.removed:
            self.items.get(loc.scope, {}).pop(loc.local_id, None)
            self.records.pop((loc.scope, loc.local_id), None)
        self.problems.extend(batch.problems)
        if batch.cursor is not None:
            self.cursor = batch.cursor

    def sync(self, conn) -> list[Batch]:
        batches = []
        for batch in conn.pull(self.cursor, self):
            self.apply(batch)
            batches.append(batch)
        return batches

    def all_records(self):
        return [r for recs in self.records.values() for r in recs]


def records_of(batches, kind=object):
    return [r for b in batches for r in b.records if isinstance(r, kind)]


def removed_of(batches):
    return [loc for b in batches for loc in b.removed]


@pytest.fixture(params=["radicale", "xandikos"])
def server(request, monkeypatch):
    srv = request.getfixturevalue(request.param)
    monkeypatch.setenv(PW_ENV, srv.password)
    return srv


@pytest.fixture
def rad(radicale, monkeypatch):  # noqa: F811
    monkeypatch.setenv(PW_ENV, radicale.password)
    return radicale


def caldav(srv, **options) -> CalDavConnector:
    opts = {"type": "caldav", "url": srv.url, "username": srv.user, "password_env": PW_ENV, "allow_plaintext": True}
    opts.update(options)
    return CalDavConnector("cal", opts)


def carddav(srv, **options) -> CardDavConnector:
    opts = {"type": "carddav", "url": srv.url, "username": srv.user, "password_env": PW_ENV, "allow_plaintext": True}
    opts.update(options)
    return CardDavConnector("cards", opts)


def ics(uid: str, summary: str = "meeting", start: str = "20260105T100000Z", extra: str = "",
        stamp: str = "20240101T000000Z") -> str:
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//client//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:{uid}\r\nDTSTAMP:{stamp}\r\nDTSTART:{start}\r\nDURATION:PT1H\r\nSUMMARY:{summary}\r\n{extra}"
        "END:VEVENT\r\nEND:VCALENDAR\r\n"
    )


def server_state(srv, collection) -> dict[str, str]:
    return srv.hrefs(collection)


def assert_view_matches(view: MemoryView, srv, collection: str) -> None:
    scope = collection
    assert view.known(scope) == server_state(srv, collection)


# ------------------------------------------------------------ pull: basics


def test_first_and_incremental_sync(server):
    col = server.make_calendar()
    for i in range(3):
        assert server.put(col, f"e{i}.ics", ics(f"e{i}", f"meeting {i}")).status == 201
    conn = caldav(server, calendars=[col])
    view = MemoryView()

    batches = view.sync(conn)
    assert sorted(r.summary for r in records_of(batches)) == ["meeting 0", "meeting 1", "meeting 2"]
    assert all(r.location.scope == col for r in records_of(batches))
    assert_view_matches(view, server, col)

    server.put(col, "e3.ics", ics("e3", "new one"))
    server.put(col, "e1.ics", ics("e1", "meeting 1 moved", start="20260106T100000Z"))
    server.delete(col + "e0.ics")
    batches = view.sync(conn)
    assert sorted(r.summary for r in records_of(batches)) == ["meeting 1 moved", "new one"]
    assert [urlsplit(loc.local_id).path.rsplit("/", 1)[1] for loc in removed_of(batches)] == ["e0.ics"]
    assert_view_matches(view, server, col)

    batches = view.sync(conn)
    assert records_of(batches) == [] and removed_of(batches) == []
    conn.close()


def test_no_change_run_costs_one_request(server):
    name = server.unique("quiet")
    col = server.make_calendar(name)
    server.put(col, "a.ics", ics("a"))
    book = server.make_addressbook()
    server.put(book, "p.vcf", build_vcard("p", "Pat"))
    view = MemoryView()
    by_name = caldav(server, calendars=[name])  # found through discovery
    view.sync(by_name)
    before = by_name.request_count
    assert view.sync(by_name) == []  # nothing changed: no batch at all
    assert by_name.request_count - before == 1  # one depth-0 PROPFIND of the calendar, no REPORT

    cards = carddav(server, addressbooks=[book])  # configured by URL
    view2 = MemoryView()
    view2.sync(cards)
    before = cards.request_count
    assert records_of(view2.sync(cards)) == []
    assert cards.request_count - before == 1  # one depth-0 PROPFIND for the one collection


def test_discovery_from_bare_host_filters_by_name(server):
    wanted, other = server.unique("wanted"), server.unique("other")
    col = server.make_calendar(wanted)
    col2 = server.make_calendar(other)
    server.put(col, "w.ics", ics("w", "wanted event"))
    server.put(col2, "o.ics", ics("o", "other event"))
    view = MemoryView()
    batches = view.sync(caldav(server, calendars=[wanted, "does-not-exist"]))
    assert [r.summary for r in records_of(batches)] == ["wanted event"]
    assert any("does-not-exist" in p for p in view.problems)
    assert view.cursor["home"].endswith(server.home)


def test_collection_url_as_source_url(server):
    col = server.make_calendar()
    server.put(col, "x.ics", ics("x", "direct"))
    view = MemoryView()
    batches = view.sync(caldav(server, url=col))
    assert [r.summary for r in records_of(batches)] == ["direct"]


# ------------------------------------------ change markers and rediscovery


def make_calendar_as(srv, path_name: str, displayname: str) -> str:
    """A calendar at ``<home>/<path_name>/`` whose display name is ``displayname``."""
    path = f"{srv.home}{path_name}/"
    body = (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
        f"<D:set><D:prop><D:displayname>{displayname}</D:displayname></D:prop></D:set></C:mkcalendar>"
    )
    resp = srv.request("MKCALENDAR", path, body, {"Content-Type": "application/xml"})
    assert resp.status in (200, 201), (resp.status, resp.text)
    return srv.abs(path)


def test_ctag_moves_with_every_member_change(server):
    """A no-change run trusts CS:getctag alone; it must move on every add,
    change and delete of a member, and stay put while nothing happens."""
    col = server.make_calendar()
    conn = caldav(server, calendars=[col])

    def ctag() -> str:
        probed = _Collection(col)
        conn._probe(probed, {})
        assert probed.probed == "getctag" and probed.ctag and not probed.missing
        return probed.ctag

    seen = [ctag()]
    assert ctag() == seen[0]
    server.put(col, "a.ics", ics("a"))
    seen.append(ctag())
    assert ctag() == seen[-1]
    server.put(col, "a.ics", ics("a", "changed summary"))
    seen.append(ctag())
    server.put(col, "a.ics", ics("a", "changed summary", stamp="20250101T000000Z"))  # a stamp only
    seen.append(ctag())
    server.put(col, "b.ics", ics("b"))
    seen.append(ctag())
    server.delete(col + "a.ics")
    seen.append(ctag())
    server.put(col, "a.ics", ics("a", "back again"))
    seen.append(ctag())
    assert len(set(seen)) == len(seen), seen
    conn.close()


def test_every_change_after_a_no_change_run_is_read(server):
    """ctag skip, then each kind of change: none is missed."""
    name = server.unique("marker")
    col = server.make_calendar(name)
    server.put(col, "a.ics", ics("a", "one"))
    conn = caldav(server, calendars=[name])
    view = MemoryView()
    view.sync(conn)
    assert view.cursor["collections"][col]["probe"] == "getctag"
    for change, requests in ((lambda: server.put(col, "a.ics", ics("a", "two")), 3),
                             (lambda: server.put(col, "b.ics", ics("b", "three")), 3),
                             (lambda: server.delete(col + "a.ics"), 2)):
        assert view.sync(conn) == []
        change()
        before = conn.request_count
        view.sync(conn)
        # the probe, a sync-collection REPORT, a multiget when there is something to fetch
        assert conn.request_count - before == requests
        assert_view_matches(view, server, col)
    assert [r.summary for r in view.all_records()] == ["three"]


def test_sync_token_is_the_marker_without_getctag(server):
    """A server that gave no getctag is probed for its sync-token instead."""
    col = server.make_calendar()
    server.put(col, "a.ics", ics("a", "one"))
    conn = caldav(server, calendars=[col])
    view = MemoryView()
    view.sync(conn)
    entry = view.cursor["collections"][col]
    entry["ctag"], entry["probe"] = "", "sync-token"  # as if the server had none
    before = conn.request_count
    assert view.sync(conn) == []
    assert conn.request_count - before == 1
    server.put(col, "a.ics", ics("a", "two"))
    batches = view.sync(conn)
    assert [r.summary for r in records_of(batches)] == ["two"]
    assert view.cursor["collections"][col]["probe"] == "sync-token"
    assert view.sync(conn) == []


def test_names_rediscover_new_and_lost_collections(server):
    """Selected by name: the known collection is probed directly; a new one
    with the same name is found at the next listing; a deleted one is
    noticed at once (404) and reported, nothing removed."""
    name = server.unique("team")
    first = server.make_calendar(name)
    server.put(first, "a.ics", ics("a", "in the first"))
    conn = caldav(server, calendars=[name])
    view = MemoryView()
    view.sync(conn)
    listed = view.cursor["listed"]

    second = make_calendar_as(server, server.unique("team-b"), name)
    server.put(second, "b.ics", ics("b", "in the second"))
    before = conn.request_count
    assert view.sync(conn) == []  # not listed again yet: only the known one is asked
    assert conn.request_count - before == 1
    assert view.cursor["listed"] == listed

    conn.REDISCOVER_SECONDS = 0
    batches = view.sync(conn)
    assert [r.summary for r in records_of(batches)] == ["in the second"]
    assert set(view.cursor["collections"]) == {first, second}
    conn.REDISCOVER_SECONDS = 3600
    before = conn.request_count
    assert view.sync(conn) == []
    assert conn.request_count - before == 2  # one probe per collection

    assert server.delete(first).status in (200, 204)
    batches = view.sync(conn)
    assert removed_of(batches) == []
    assert set(view.cursor["collections"]) == {second}
    assert view.known(first)  # kept
    assert server.delete(second).status in (200, 204)
    batches = view.sync(conn)
    assert any(f"no calendar named {name!r}" in p for b in batches for p in b.problems)
    assert removed_of(batches) == [] and view.known(second)


def test_missing_name_is_looked_for_every_run(server):
    name = server.unique("later")
    conn = caldav(server, calendars=[name])
    view = MemoryView()
    view.sync(conn)
    assert any(name in p for p in view.problems)
    col = server.make_calendar(name)
    server.put(col, "x.ics", ics("x", "now it exists"))
    batches = view.sync(conn)
    assert [r.summary for r in records_of(batches)] == ["now it exists"]
    assert view.cursor["missing"] == []


def test_all_collections_vanished_one_is_reported(own_radicale, monkeypatch):
    srv = own_radicale
    monkeypatch.setenv(PW_ENV, srv.password)
    one, two = srv.make_calendar(), srv.make_calendar()
    srv.put(one, "a.ics", ics("a"))
    srv.put(two, "b.ics", ics("b"))
    conn = caldav(srv)  # every calendar of the home
    view = MemoryView()
    view.sync(conn)
    before = conn.request_count
    assert view.sync(conn) == []
    assert conn.request_count - before == 2
    srv.delete(two)
    batches = view.sync(conn)
    assert any(two in p and "no longer listed" in p for b in batches for p in b.problems)
    assert removed_of(batches) == [] and view.known(two)
    three = srv.make_calendar()
    srv.put(three, "c.ics", ics("c", "third"))
    conn.REDISCOVER_SECONDS = 0
    assert [r.summary for r in records_of(view.sync(conn))] == ["third"]


def test_cursor_of_the_previous_version_still_works(server):
    """Entries without "probe" and a cursor without "listed": one listing, no re-read."""
    name = server.unique("old")
    col = server.make_calendar(name)
    server.put(col, "a.ics", ics("a"))
    conn = caldav(server, calendars=[name])
    view = MemoryView()
    view.sync(conn)
    old = {k: v for k, v in view.cursor.items() if k in ("v", "url", "select", "home", "collections")}
    old["collections"] = {u: {"token": e["token"], "ctag": "", "mode": e["mode"]}
                          for u, e in old["collections"].items()}
    view.cursor = old
    assert records_of(view.sync(conn)) == []
    assert view.cursor["collections"][col]["probe"] == "getctag"
    before = conn.request_count
    assert view.sync(conn) == []
    assert conn.request_count - before == 1


# ----------------------------------------------- lost tokens and fallbacks


def test_radicale_forgets_sync_tokens(rad):
    col = rad.make_calendar()
    for i in range(4):
        rad.put(col, f"e{i}.ics", ics(f"e{i}"))
    conn = caldav(rad, calendars=[col])
    view = MemoryView()
    view.sync(conn)
    token = view.cursor["collections"][col]["token"]
    assert token.startswith("http://radicale.org/ns/sync/")

    rad.put(col, "new.ics", ics("new", "arrived while token lost"))
    rad.delete(col + "e2.ics")
    assert rad.forget_sync_tokens() > 0
    # check the premise: Radicale now refuses the old token
    body = ('<?xml version="1.0"?><D:sync-collection xmlns:D="DAV:"><D:sync-token>%s</D:sync-token>'
            "<D:sync-level>1</D:sync-level><D:prop><D:getetag/></D:prop></D:sync-collection>") % token
    refused = rad.request("REPORT", urlsplit(col).path, body, {"Content-Type": "application/xml"})
    assert refused.status == 403 and "valid-sync-token" in refused.text

    batches = view.sync(conn)
    assert [r.summary for r in records_of(batches)] == ["arrived while token lost"]  # unchanged ones not refetched
    assert [loc.local_id.rsplit("/", 1)[1] for loc in removed_of(batches)] == ["e2.ics"]
    assert_view_matches(view, rad, col)
    assert view.cursor["collections"][col]["token"] != token


def test_invalid_token_on_xandikos(xandikos, monkeypatch):  # noqa: F811
    monkeypatch.setenv(PW_ENV, xandikos.password)
    col = xandikos.make_calendar()
    for i in range(3):
        xandikos.put(col, f"e{i}.ics", ics(f"e{i}"))
    conn = caldav(xandikos, calendars=[col])
    view = MemoryView()
    view.sync(conn)
    xandikos.put(col, "n.ics", ics("n", "newer"))
    xandikos.delete(col + "e0.ics")
    view.cursor["collections"][col]["token"] = "0000000000000000000000000000000000000000"
    batches = view.sync(conn)
    assert [r.summary for r in records_of(batches)] == ["newer"]
    assert [loc.local_id.rsplit("/", 1)[1] for loc in removed_of(batches)] == ["e0.ics"]
    assert_view_matches(view, xandikos, col)


def test_listing_without_sync_collection(server):
    """A server without RFC 6578: PROPFIND listing compared with the view."""
    col = server.make_calendar()
    for i in range(3):
        server.put(col, f"e{i}.ics", ics(f"e{i}"))
    conn = caldav(server, calendars=[col])
    view = MemoryView()
    view.cursor = {"v": 1, "url": conn.url, "select": [col], "home": "",
                   "collections": {col: {"token": "", "ctag": "", "mode": "list"}}}
    batches = view.sync(conn)
    assert len(records_of(batches)) == 3
    server.put(col, "e1.ics", ics("e1", "changed"))
    server.delete(col + "e2.ics")
    batches = view.sync(conn)
    assert [r.summary for r in records_of(batches)] == ["changed"]
    assert [loc.local_id.rsplit("/", 1)[1] for loc in removed_of(batches)] == ["e2.ics"]
    assert_view_matches(view, server, col)
    assert view.cursor["collections"][col]["mode"] == "list"


# ----------------------------------------------------------- content


def test_recurring_event_with_exceptions(server):
    col = server.make_calendar()
    text = (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//client//EN\r\n"
        "BEGIN:VEVENT\r\nUID:weekly\r\nDTSTAMP:20240101T000000Z\r\n"
        "DTSTART;TZID=Europe/Berlin:20260105T100000\r\nDTEND;TZID=Europe/Berlin:20260105T110000\r\n"
        "RRULE:FREQ=WEEKLY;COUNT=5\r\nEXDATE;TZID=Europe/Berlin:20260112T100000\r\nSUMMARY:jour fixe\r\n"
        "ORGANIZER;CN=Olga:mailto:olga@example.com\r\n"
        "ATTENDEE;CN=Bob;PARTSTAT=ACCEPTED:mailto:Bob@Example.com\r\n"
        "ATTENDEE;CN=Eve;PARTSTAT=DECLINED:mailto:eve@example.com\r\nEND:VEVENT\r\n"
        "BEGIN:VEVENT\r\nUID:weekly\r\nDTSTAMP:20240101T000000Z\r\n"
        "RECURRENCE-ID;TZID=Europe/Berlin:20260119T100000\r\n"
        "DTSTART;TZID=Europe/Berlin:20260119T140000\r\nDTEND;TZID=Europe/Berlin:20260119T150000\r\n"
        "SUMMARY:jour fixe (moved)\r\nEND:VEVENT\r\n"
        "BEGIN:VEVENT\r\nUID:weekly\r\nDTSTAMP:20240101T000000Z\r\n"
        "RECURRENCE-ID;TZID=Europe/Berlin:20260126T100000\r\n"
        "DTSTART;TZID=Europe/Berlin:20260126T100000\r\nSTATUS:CANCELLED\r\nSUMMARY:jour fixe\r\nEND:VEVENT\r\n"
        "END:VCALENDAR\r\n"
    )
    assert server.put(col, "weekly.ics", text).status == 201
    view = MemoryView()
    records = records_of(view.sync(caldav(server, calendars=[col])), AppointmentRecord)
    [master] = [r for r in records if not r.recurrence_id]
    overrides = sorted(r.recurrence_id for r in records if r.recurrence_id)
    assert len(overrides) == 2
    assert master.rrule == "FREQ=WEEKLY;COUNT=5"
    assert master.tzid == "Europe/Berlin"
    days = {o.start.day: (o.start.hour, o.status) for o in master.occurrences}
    assert days == {5: (10, "CONFIRMED"), 19: (14, "CONFIRMED"), 26: (10, "CANCELLED"), 2: (10, "CONFIRMED")}
    assert master.organizer.address.email == "olga@example.com"
    assert [(a.address.email, a.status) for a in master.attendees] == [
        ("bob@example.com", "ACCEPTED"), ("eve@example.com", "DECLINED")]


def test_etag_change_with_unchanged_content(rad):
    col = rad.make_calendar()
    first = rad.put(col, "same.ics", ics("same", "steady"))
    view = MemoryView()
    conn = caldav(rad, calendars=[col])
    [before] = records_of(view.sync(conn))
    second = rad.put(col, "same.ics", ics("same", "steady", stamp="20250101T000000Z"))
    assert second.etag != first.etag  # the server sees a new version
    assert normalised_hash(rad.get(col + "same.ics").text) == normalised_hash(ics("same", "steady"))
    [after] = records_of(view.sync(conn))
    assert after.location.etag == second.etag
    assert view.known(col)[after.location.local_id] == second.etag
    after.location = before.location
    assert after == before  # the content, as the CRM sees it, did not change
    assert records_of(view.sync(conn)) == []


def test_every_icalendar_test_file_through_radicale(rad):
    col = rad.make_calendar(components="VEVENT,VTODO,VJOURNAL")
    root = Path(os.path.dirname(icalendar.__file__)) / "tests"
    accepted = set()
    for index, path in enumerate(sorted(root.rglob("*.ics"))):
        resp = rad.put(col, f"f{index}.ics", path.read_bytes())
        if resp.status in (200, 201, 204):
            accepted.add(f"f{index}.ics")
    assert len(accepted) > 20
    view = MemoryView()
    batches = view.sync(caldav(rad, calendars=[col]))
    seen = {loc.local_id.rsplit("/", 1)[1] for b in batches for loc in
            [r.location for r in b.records] + [f.location for f in b.failures]}
    listed = {href.rsplit("/", 1)[1] for href in rad.hrefs(col)}
    assert listed == accepted
    with_components = {
        name for name in accepted
        if any(k in rad.get(col + name).text for k in ("BEGIN:VEVENT", "BEGIN:VTODO"))
    }
    assert with_components <= seen
    assert set(view.known(col)) >= {h for h in rad.hrefs(col) if h.rsplit("/", 1)[1] in seen}


# ------------------------------------------------------------- tasks


def test_task_push_then_completion_in_the_client(server):
    tasks_name = server.unique("Tasks")
    conn = caldav(server, tasks_calendar=tasks_name, calendars=[tasks_name])
    assert conn.can_push == frozenset({"tasks"})
    view = MemoryView()
    task = TaskPush(uid="crm-task-1", summary="Call Jane back", description="about the offer",
                    due=datetime(2026, 2, 1, 9, tzinfo=timezone.utc), status="NEEDS-ACTION", completed=None)
    [result] = conn.push_tasks([task], view)
    assert result.ok and result.etag and result.href.endswith("/crm-task-1.ics")
    assert result.scope.endswith(f"/{tasks_name}/")

    [state] = records_of(view.sync(conn), TaskState)
    assert (state.uid, state.status, state.summary) == ("crm-task-1", "NEEDS-ACTION", "Call Jane back")
    assert state.location.etag == result.etag

    # the user ticks it off in their calendar app
    text = server.get(result.href).text
    done = text.replace("STATUS:NEEDS-ACTION", "STATUS:COMPLETED\r\nCOMPLETED:20260120T080000Z")
    resp = server.put(result.scope, "crm-task-1.ics", done, headers={"If-Match": result.etag})
    assert resp.status in (200, 201, 204)
    [state] = records_of(view.sync(conn), TaskState)
    assert state.status == "COMPLETED"
    assert state.completed == datetime(2026, 1, 20, 8, tzinfo=timezone.utc)


def test_same_push_ten_times_makes_one_vtodo(server):
    tasks_name = server.unique("Tasks")
    conn = caldav(server, tasks_calendar=tasks_name)
    task = TaskPush(uid="dup-task", summary="once", description="", due=None, status="NEEDS-ACTION",
                    completed=None)
    results = [conn.push_tasks([task], MemoryView())[0] for _ in range(10)]  # as after ten crashes
    assert all(r.ok for r in results)
    assert len({r.etag for r in results}) == 1
    assert len({r.href for r in results}) == 1
    collection = results[0].scope
    assert list(server.hrefs(collection)) == [results[0].href]


def test_stale_if_match_reports_conflict_and_keeps_server_version(server):
    tasks_name = server.unique("Tasks")
    conn = caldav(server, tasks_calendar=tasks_name)
    view = MemoryView()
    task = TaskPush(uid="t-412", summary="v1", description="", due=None, status="NEEDS-ACTION", completed=None)
    [created] = conn.push_tasks([task], view)
    text = server.get(created.href).text
    client = server.put(created.scope, "t-412.ics", text.replace("STATUS:NEEDS-ACTION", "STATUS:COMPLETED"),
                        headers={"If-Match": created.etag})
    assert client.status in (200, 201, 204)

    update = TaskPush(uid="t-412", summary="v2 from crm", description="", due=None, status="NEEDS-ACTION",
                      completed=None, href=created.href, etag=created.etag, scope=created.scope)
    [result] = conn.push_tasks([update], view)
    assert not result.ok
    assert isinstance(result.conflict, TaskState)
    assert result.conflict.status == "COMPLETED" and result.conflict.summary == "v1"
    assert result.etag == server.hrefs(created.scope)[created.href]
    assert "STATUS:COMPLETED" in server.get(created.href).text  # not overwritten

    # with the fresh etag the update goes through
    update.etag = result.etag
    [ok] = conn.push_tasks([update], view)
    assert ok.ok and ok.etag != result.etag
    assert "v2 from crm" in server.get(created.href).text


def test_create_over_different_content_is_a_conflict(server):
    tasks_name = server.unique("Tasks")
    conn = caldav(server, tasks_calendar=tasks_name)
    [first] = conn.push_tasks([TaskPush(uid="same-uid", summary="A", description="", due=None,
                                        status="NEEDS-ACTION", completed=None)], MemoryView())
    [second] = conn.push_tasks([TaskPush(uid="same-uid", summary="B", description="", due=None,
                                         status="NEEDS-ACTION", completed=None)], MemoryView())
    assert first.ok and not second.ok
    assert second.conflict.summary == "A"
    assert "SUMMARY:A" in server.get(first.href).text


def test_update_of_deleted_task_is_gone(server):
    tasks_name = server.unique("Tasks")
    conn = caldav(server, tasks_calendar=tasks_name)
    [created] = conn.push_tasks([TaskPush(uid="gone-1", summary="x", description="", due=None,
                                          status="NEEDS-ACTION", completed=None)], MemoryView())
    assert server.delete(created.href).status in (200, 204)
    [result] = conn.push_tasks([TaskPush(uid="gone-1", summary="y", description="", due=None,
                                         status="COMPLETED", completed=None, href=created.href,
                                         etag=created.etag, scope=created.scope)], MemoryView())
    assert result.gone and not result.ok
    assert created.href not in server.hrefs(created.scope)


# ------------------------------------------------------------- contacts


def test_carddav_sync_and_push(server):
    book = server.make_addressbook()
    server.put(book, "anna.vcf", build_vcard("anna", "Anna Example", emails=["Anna@Example.com"],
                                             organisation="ACME", version="3.0"))
    conn = carddav(server, addressbooks=[book], cards_addressbook=book)
    assert conn.can_push == frozenset({"cards"})
    view = MemoryView()
    [anna] = records_of(view.sync(conn), ContactCard)
    assert (anna.uid, anna.full_name, anna.emails, anna.organisation) == (
        "anna", "Anna Example", ("anna@example.com",), "ACME")

    card = CardPush(uid="crm-cust-9", vcard=build_vcard("crm-cust-9", "Bert Customer", emails=["bert@c.example"],
                                                         note="CRM: last contact 2026-01-01"))
    [created] = conn.push_cards([card], view)
    assert created.ok and created.etag and created.href.endswith("/crm-cust-9.vcf")
    [again] = conn.push_cards([card], view)  # a retry after a crash
    assert again.ok and again.href == created.href

    [bert] = records_of(view.sync(conn), ContactCard)
    assert bert.full_name == "Bert Customer" and bert.location.etag == created.etag

    # the user edits the card in their phone; our stale update must not win
    edited = server.get(created.href).text.replace("Bert Customer", "Bert C. (edited)")
    assert server.put(book, "crm-cust-9.vcf", edited, headers={"If-Match": created.etag}).status in (200, 201, 204)
    stale = CardPush(uid="crm-cust-9", vcard=build_vcard("crm-cust-9", "Bert Customer", note="CRM: newer"),
                     href=created.href, etag=created.etag, scope=created.scope)
    [conflict] = conn.push_cards([stale], view)
    assert not conflict.ok and "conflict" in conflict.error
    assert "Bert C. (edited)" in server.get(created.href).text

    server.delete(server.abs(urlsplit(book).path + "anna.vcf"))
    batches = view.sync(conn)
    assert [loc.local_id.rsplit("/", 1)[1] for loc in removed_of(batches)] == ["anna.vcf"]
    assert [c.full_name for c in records_of(batches)] == ["Bert C. (edited)"]
    assert_view_matches(view, server, book)


def test_carddav_batches_and_cursor_only_on_last(rad):
    book = rad.make_addressbook()
    for i in range(7):
        rad.put(book, f"p{i}.vcf", build_vcard(f"p{i}", f"Person {i}"))
    conn = carddav(rad, addressbooks=[book])
    conn.MULTIGET_BATCH = 3
    view = MemoryView()
    batches = view.sync(conn)
    fetching = [b for b in batches if b.records]
    assert [len(b.records) for b in fetching] == [3, 3, 1]
    assert [b.cursor is not None for b in fetching] == [False, False, True]
    assert batches[-1].done == 7


def test_batches_fetched_ahead_and_abandoned_pull_leaves_no_thread(server):
    """The next multiget is fetched while a batch is stored; a pull that is
    not read to the end leaves nothing running, and the next run reads what
    the abandoned one did not commit."""
    import threading

    col = server.make_calendar()
    for i in range(10):
        server.put(col, f"e{i}.ics", ics(f"e{i}", f"m{i}"))
    conn = caldav(server, calendars=[col])
    conn.MULTIGET_BATCH = 2
    view = MemoryView()
    pulling = conn.pull(None, view)
    batch = next(pulling)
    while not batch.records:
        batch = next(pulling)
    view.apply(batch)
    pulling.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("dav-prefetch")]
    assert view.cursor is None
    batches = view.sync(conn)
    assert [len(b.records) for b in batches if b.records] == [2] * 4  # the committed two are not read again
    assert sorted(r.summary for r in view.all_records()) == sorted(f"m{i}" for i in range(10))
    assert_view_matches(view, server, col)


@pytest.mark.parametrize("href", [
    "/alice/cal/e1.ics", "/alice/cal/a%40b.ics", "/alice/cal/a@b.ics", "/alice/cal/with space.ics",
    "/alice/cal/%C3%BC.ics", "/alice/cal/ü.ics", "/alice/./cal/../cal/x.ics", "//other/x", "x.ics",
    "http://127.0.0.1:1/alice/cal/e%201.ics", "/alice/cal/a;b=c,d+e!$&'()*~.ics", "/alice/cal/",
    "/alice/cal/.hidden", "/a/b?q=1", "/a/b#frag",
])
def test_href_short_cut_is_the_canonical_path(href):
    base = "http://127.0.0.1:5232/alice/cal/"
    assert _href_path(base, href) == _path(_join(base, href))


# ------------------------------------------------------------- failures


def test_wrong_collection_url_is_a_problem_and_removes_nothing(server):
    col = server.make_calendar()
    server.put(col, "a.ics", ics("a"))
    conn = caldav(server, calendars=[col])
    view = MemoryView()
    view.sync(conn)
    known = view.known(col)
    assert known

    missing = server.abs(server.home + server.unique("nope") + "/")
    wrong = caldav(server, calendars=[missing])
    batches = list(wrong.pull(None, view))
    assert any(missing in p for b in batches for p in b.problems)
    assert removed_of(batches) == [] and records_of(batches) == []
    assert view.known(col) == known


def test_wrong_source_url_is_a_problem(server):
    conn = caldav(server, url=server.abs(server.home + "no-such-place/"))
    batches = list(conn.pull(None, MemoryView()))
    assert batches and batches[0].problems and not removed_of(batches)


def test_collection_suddenly_empty_removes_nothing(server):
    col = server.make_calendar()
    for i in range(4):
        server.put(col, f"e{i}.ics", ics(f"e{i}"))
    conn = caldav(server, calendars=[col])
    view = MemoryView()
    view.sync(conn)
    for href in server.hrefs(col):
        server.delete(href)
    batches = view.sync(conn)
    assert removed_of(batches) == []
    assert any("lists no items" in p for p in view.problems)
    assert len(view.known(col)) == 4


def test_wrong_password_is_auth_error(rad, monkeypatch):
    monkeypatch.setenv(PW_ENV, "wrong")
    with pytest.raises(AuthError):
        list(caldav(rad).pull(None, MemoryView()))
    with pytest.raises(AuthError):
        caldav(rad, tasks_calendar="Tasks").push_tasks(
            [TaskPush(uid="x", summary="x", description="", due=None, status="NEEDS-ACTION", completed=None)],
            MemoryView())


def test_server_stopped_mid_sync_then_rerun(own_radicale, monkeypatch):
    srv = own_radicale
    monkeypatch.setenv(PW_ENV, srv.password)
    col = srv.make_calendar()
    for i in range(7):
        srv.put(col, f"e{i}.ics", ics(f"e{i}", f"m{i}"))
    conn = caldav(srv, calendars=[col])
    conn.MULTIGET_BATCH = 3
    view = MemoryView()
    pulling = conn.pull(None, view)
    view.apply(next(pulling))  # the first batch is committed
    assert view.cursor is None  # ...but the cursor only moves with the last one
    srv.stop()
    with pytest.raises(SourceUnavailable) as raised:
        for batch in pulling:
            view.apply(batch)
    assert isinstance(raised.value, TransientError)

    srv.start()
    srv.put(col, "late.ics", ics("late", "late arrival"))
    view.sync(conn)
    assert_view_matches(view, srv, col)
    assert sorted(r.summary for r in view.all_records()) == sorted([f"m{i}" for i in range(7)] + ["late arrival"])

    srv.stop()  # nothing listening at all, from the start: retrying cannot help, one line says why
    with pytest.raises(SourceUnavailable, match="connection refused by 127.0.0.1:.*is the server running") as raised:
        view.sync(caldav(srv, calendars=[col]))
    assert not isinstance(raised.value, TransientError)


def test_config_errors():
    from crm_bridge.connectors.base import ConfigError

    with pytest.raises(ConfigError):
        CalDavConnector("x", {"type": "caldav"})
    with pytest.raises(ConfigError):
        CalDavConnector("x", {"type": "caldav", "url": "ftp://host/"})
    with pytest.raises(ConfigError):
        CalDavConnector("x", {"type": "caldav", "url": "https://h/", "calendars": [1]})
    with pytest.raises(ConfigError):
        CalDavConnector("x", {"type": "caldav", "url": "https://h/", "password": "literal"}).pull(None, MemoryView()).__next__()
    assert CalDavConnector("x", {"type": "caldav", "url": "https://h/"}).can_push == frozenset()


# ------------------------------------------------------------- end to end


def test_crm_sync_twice_against_radicale(rad, tmp_path):
    """`crm sync` with a caldav and a carddav source: the second run changes nothing."""
    from tests.conftest import Crm, write_config

    cal_name, book_name = rad.unique("e2e-cal"), rad.unique("e2e-book")
    col = rad.make_calendar(cal_name)
    book = rad.make_addressbook(book_name)
    for i in range(3):
        rad.put(col, f"m{i}.ics", ics(f"m{i}", f"Meeting {i}", extra=(
            "ORGANIZER;CN=Anna:mailto:anna@nordlicht.example\r\n"
            "ATTENDEE;CN=Kim;PARTSTAT=ACCEPTED:mailto:kim@kunde.example\r\n")))
    rad.put(book, "kim.vcf", build_vcard("kim", "Kim Kunde", emails=["kim@kunde.example"], organisation="Kunde GmbH"))
    common = {"url": rad.url, "username": rad.user, "password_env": PW_ENV, "allow_plaintext": True}
    crm = Crm(write_config(
        tmp_path / "crm.toml", customers=(("Kunde GmbH", ["kunde.example"]),), store=str(tmp_path / "crm.db"),
        sources={"dav-cal": {"type": "caldav", "calendars": [cal_name], **common},
                 "dav-cards": {"type": "carddav", "addressbooks": [book_name], **common}},
    ))
    first = crm.json("sync")
    counts = crm.json("status")["counts"]
    assert counts["appointments"] == 3
    assert all(r["status"] != "error" for r in first["results"]), first
    second = crm.json("sync")
    assert all(r["status"] != "error" for r in second["results"]), second
    assert crm.json("status")["counts"] == counts
    dav_results = [r for r in second["results"] if r["source"].startswith("dav-")]
    assert len(dav_results) == 2
    for result in dav_results:
        assert result["status"] == "ok", result
        assert result.get("added", 0) == 0 and result.get("updated", 0) == 0, result
