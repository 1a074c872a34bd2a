"""Microsoft 365 sources against the Graph emulator (MSAL and the HTTP client unmodified, nothing mocked)."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from crm_bridge.connectors.base import AuthError, ConnectorError, TransientError, make_connector
from crm_bridge.crm_core.records import AppointmentRecord, ContactCard, MailRecord
from tests.graph_emulator import GraphEmulator, make_contact, make_event, make_message, populate, recurring
from tests.test_contract import Pulled, View

SECRET_ENV = "CRM_TEST_M365_SECRET"
CLIENT = "11111111-2222-3333-4444-555555555555"
ANNA = ("Anna Adler", "anna@firma.de")
KIM = ("Kim Kunde", "kim@kunde.example")
WHEN = datetime(2026, 10, 1, 9, 30, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def _server():
    emulator = GraphEmulator()
    with emulator:
        yield emulator


@pytest.fixture
def graph(_server, monkeypatch):
    """The module's emulator (one TLS server, one certificate), emptied for each test."""
    from tests.graph_emulator.model import Store

    _server.store = Store()
    _server.apps = {CLIENT: "app-secret"}
    _server.tokens.clear()
    _server.faults.clear()
    _server.requests.clear()
    _server.token_requests = 0
    _server.grants.clear()
    _server.public_apps.clear()
    _server.device_flows.clear()
    _server.refresh_tokens.clear()
    _server.token_users.clear()
    _server.device_interval, _server.device_expires = 1, 900
    _server.store.add_mailbox("anna@firma.de", "Anna Adler")
    _server.store.add_mailbox("bob@firma.de", "Bob Bauer")
    monkeypatch.setenv(SECRET_ENV, "app-secret")
    return _server


def options(graph: GraphEmulator, mailbox: str = "anna@firma.de", **extra) -> dict:
    return {"type": "m365", "tenant": graph.tenant, "client_id": CLIENT, "client_secret_env": SECRET_ENV,
            "authority": graph.authority, "graph_url": graph.graph_url, "ca_file": str(graph.ca_file),
            "mailbox": mailbox, "owner": [mailbox], "page_size": 5, "max_backoff": 5, **extra}


def pull(graph: GraphEmulator, view: View | None = None, cursor=None, **extra) -> Pulled:
    conn = make_connector("m365", options(graph, **extra))
    view = view if view is not None else View()
    try:
        batches = list(conn.pull(cursor, view))
    finally:
        conn.close()
    for b in batches:
        view.apply(b)
    return Pulled(batches)


def mail(graph: GraphEmulator, subject: str, folder: str = "inbox", mailbox: str = "anna@firma.de", sender=KIM,
         **kw) -> dict:
    mb = graph.store.mailbox(mailbox)
    msg = make_message(subject, sender, [ANNA], kw.pop("date", WHEN),
                       kw.pop("message_id", f"<{subject.replace(' ', '-')}@kunde.example>"),
                       body=kw.pop("body", f"Guten Tag, es geht um {subject}."), **kw)
    return graph.store.put(mb.folder(folder), msg)


def mails(got: Pulled) -> list[MailRecord]:
    return [r for r in got.records if isinstance(r, MailRecord)]


# -- pulling ------------------------------------------------------------------------------


def test_first_and_incremental_sync_of_mail_calendar_and_contacts(graph):
    mb = graph.store.mailbox("anna@firma.de")
    populate(mb, mails=12, events=3, contacts=2)
    view = View()
    first = pull(graph, view)
    assert len(mails(first)) == 12 and not first.failures and not first.problems
    assert {r.location.scope for r in mails(first)} == {"Inbox", "Sent Items"}
    assert len([r for r in first.records if isinstance(r, AppointmentRecord)]) == 3
    assert len([r for r in first.records if isinstance(r, ContactCard)]) == 2
    rec = next(r for r in mails(first) if r.subject == "Angebot 0")
    assert rec.sender.email == "kunde0@kunde0.example" and rec.to[0].email == "anna@firma.de"
    assert rec.message_id == "m0.anna@firma.de@mail.example" and rec.direction == "in"
    assert rec.snippet.startswith("Guten Tag") and rec.date == datetime(2026, 10, 1, 8, 0, tzinfo=timezone.utc)
    sent = next(r for r in mails(first) if r.location.scope == "Sent Items")
    assert sent.direction == "out"
    assert json.loads(json.dumps(first.cursor)) == first.cursor
    # paging: five per page, the deltaLink kept as each folder's cursor
    assert all(len(b.records) <= 5 for b in first.batches)

    mail(graph, "Neu")
    graph.store.put(mb.contacts, make_contact("Nina Neu", "nina@neu.example"))
    graph.requests.clear()
    second = pull(graph, view, first.cursor)
    assert {getattr(r, "subject", getattr(r, "full_name", "")) for r in second.records} == {"Neu", "Nina Neu"}
    # nothing asked again but the delta of each folder
    assert len(graph.graph_requests()) == 4 and all("delta" in p for p in graph.graph_requests())
    graph.requests.clear()
    third = pull(graph, view, second.cursor)
    assert third.records == [] and third.removed == [] and len(graph.graph_requests()) == 4


def test_requests_select_only_what_is_needed_and_prefer_immutable_ids(graph):
    mail(graph, "Eins")
    pull(graph, contacts=False, calendar=False)
    deltas = [(p, h) for m, p, h in graph.requests if "messages/delta" in p]
    assert deltas and all(m == "GET" for m, _p, _h in graph.requests if _p.startswith("/v1.0/"))
    path, headers = deltas[0]
    assert "$select=" in path and "body," not in path
    assert 'IdType="ImmutableId"' in headers["prefer"] and "odata.maxpagesize=5" in headers["prefer"]


def test_removed_entries_become_deletions(graph):
    mb = graph.store.mailbox("anna@firma.de")
    a, b = mail(graph, "Bleibt"), mail(graph, "Geht")
    view = View()
    first = pull(graph, view)
    graph.store.delete(b["id"], mb)
    second = pull(graph, view, first.cursor)
    assert [(loc.scope, loc.local_id) for loc in second.removed] == [("Inbox", b["id"])]
    assert a["id"] in view.known("Inbox") and b["id"] not in view.known("Inbox")


def test_a_moved_mail_keeps_its_id_and_is_one_item(graph):
    mb = graph.store.mailbox("anna@firma.de")
    projects = mb.add_folder("Projekte")
    m = mail(graph, "Verschoben")
    view = View()
    first = pull(graph, view, folders=["inbox", "Inbox/Projekte"])
    graph.store.move(m["id"], mb, projects.id)
    second = pull(graph, view, first.cursor, folders=["inbox", "Inbox/Projekte"])
    assert [loc.local_id for loc in second.removed] == [m["id"]]
    assert [(r.location.scope, r.location.local_id) for r in mails(second)] == [("Inbox/Projekte", m["id"])]
    assert view.known("Inbox") == {} and list(view.known("Inbox/Projekte")) == [m["id"]]


def test_the_same_mail_in_two_mailboxes_has_one_message_id(graph):
    mail(graph, "Beide", mailbox="anna@firma.de")
    mail(graph, "Beide", mailbox="bob@firma.de")
    a = mails(pull(graph, contacts=False, calendar=False))
    b = mails(pull(graph, mailbox="bob@firma.de", contacts=False, calendar=False))
    assert a[0].message_id == b[0].message_id == "Beide@kunde.example"


def test_categories_and_sensitivity_as_for_exchange(graph):
    mail(graph, "Loggen", categories=["CRM"])
    mail(graph, "Privat", categories=["Private"])
    mail(graph, "Vertraulich", sensitivity="confidential")
    mail(graph, "Normal")
    got = {r.subject: set(r.flags) for r in mails(pull(graph, contacts=False, calendar=False))}
    assert got["Loggen"] == {"CRM", "$CRM"}
    assert got["Privat"] == {"Private", "$Private"}
    assert got["Vertraulich"] == {"$Private"}
    assert got["Normal"] == set()
    custom = {r.subject: set(r.flags) for r in mails(pull(graph, contacts=False, calendar=False,
                                                          log_keyword="Kunde", private_keyword="Geheim"))}
    assert "Kunde" in custom["Loggen"] and "Geheim" in custom["Vertraulich"]


def test_in_reply_to_and_references_come_from_the_mapi_properties(graph):
    mail(graph, "Antwort", in_reply_to="<frage@kunde.example>")
    rec = mails(pull(graph, contacts=False, calendar=False))[0]
    assert rec.in_reply_to == ("frage@kunde.example",)


def test_recurring_meeting_with_an_exception_and_a_cancelled_occurrence(graph):
    mb = graph.store.mailbox("anna@firma.de")
    first = datetime.now(timezone.utc).replace(hour=9, minute=0, second=0, microsecond=0) + timedelta(days=2)
    recurring(mb, "Jour fixe", first, 4, ANNA, [KIM], moved=1, cancelled=2)
    got = [r for r in pull(graph, contacts=False, folders=[]).records if isinstance(r, AppointmentRecord)]
    starts = sorted(r.start for r in got)
    assert starts == [first, first + timedelta(weeks=1, days=1), first + timedelta(weeks=3)]
    assert all(r.summary == "Jour fixe" and r.organizer.address.email == "anna@firma.de" for r in got)
    assert len({r.uid for r in got}) == 3


def test_events_outside_the_window_are_not_read(graph):
    mb = graph.store.mailbox("anna@firma.de")
    graph.store.put(mb.calendar, make_event("Alt", datetime(2001, 1, 1, 9, tzinfo=timezone.utc)))
    graph.store.put(mb.calendar, make_event("Bald", datetime.now(timezone.utc) + timedelta(days=3)))
    got = pull(graph, contacts=False, folders=[])
    assert {r.summary for r in got.records} == {"Bald"}


# -- faults ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
def test_busy_with_retry_after_is_honoured_and_the_run_goes_on(graph, status):
    for n in range(12):
        mail(graph, f"Mail {n}")
    graph.fail(status, "TooManyRequests" if status == 429 else "ServiceUnavailable", match="messages/delta",
               after=1, retry_after=1)
    started = time.monotonic()
    got = pull(graph, contacts=False, calendar=False, folders=["inbox"])
    assert len(mails(got)) == 12 and time.monotonic() - started >= 1
    # one refused request, repeated once: no tight loop
    assert len(graph.graph_requests("messages/delta")) == 3 + 1


def test_busy_longer_than_max_backoff_stops_and_the_rerun_goes_on_from_the_last_page(graph):
    for n in range(12):
        mail(graph, f"Mail {n}")
    graph.fail(429, "TooManyRequests", match="messages/delta", after=1, retry_after=600)
    view, batches = View(), []
    conn = make_connector("m365", options(graph, contacts=False, calendar=False))
    with pytest.raises(TransientError):
        for b in conn.pull(None, view):
            view.apply(b)
            batches.append(b)
    conn.close()
    cursor = Pulled(batches).cursor
    assert len(mails(Pulled(batches))) == 5
    graph.requests.clear()
    rest = pull(graph, view, cursor, contacts=False, calendar=False)
    assert len(mails(rest)) == 7
    assert "$skiptoken=" in graph.graph_requests("messages/delta")[0]


def test_an_invalid_delta_token_means_a_full_comparison_without_duplicates(graph):
    mb = graph.store.mailbox("anna@firma.de")
    a, b = mail(graph, "A"), mail(graph, "B")
    view = View()
    first = pull(graph, view, contacts=False, calendar=False)
    graph.store.delete(b["id"], mb)
    mail(graph, "C")
    graph.store.invalidate_tokens()
    second = pull(graph, view, first.cursor, contacts=False, calendar=False)
    assert [loc.local_id for loc in second.removed] == [b["id"]]
    assert sorted(view.known("Inbox")) == sorted([a["id"], *[r.location.local_id for r in mails(second)
                                                               if r.subject == "C"]])
    assert sorted(r.subject for r in mails(second)) == ["A", "C"]  # A again (same id: an update), no duplicate
    third = pull(graph, view, second.cursor, contacts=False, calendar=False)
    assert third.records == [] and third.removed == []


def test_token_expiry_mid_backfill_refreshes_and_goes_on(graph):
    for n in range(12):
        mail(graph, f"Mail {n}")
    conn = make_connector("m365", options(graph, contacts=False, calendar=False))
    got = []
    for i, batch in enumerate(conn.pull(None, View())):
        got.append(batch)
        if i == 0:
            graph.expire_access_tokens()
    conn.close()
    assert len(mails(Pulled(got))) == 12 and graph.token_requests == 2


def test_wrong_client_secret_is_one_line(graph, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, "Qx-falsch-9")
    with pytest.raises(AuthError) as err:
        pull(graph)
    assert "client secret" in str(err.value) and "\n" not in str(err.value) and "Qx-falsch-9" not in str(err.value)


def test_access_denied_and_unknown_mailbox_fail_that_source_only(graph):
    graph.store.mailbox("bob@firma.de").denied = True
    with pytest.raises(ConnectorError) as denied:
        pull(graph, mailbox="bob@firma.de")
    assert "bob@firma.de" in str(denied.value) and "403" in str(denied.value)
    with pytest.raises(ConnectorError) as missing:
        pull(graph, mailbox="nobody@firma.de")
    assert "no mailbox nobody@firma.de" in str(missing.value)
    mail(graph, "Geht")
    assert len(mails(pull(graph))) == 1


def test_surprising_json_is_quarantined_not_a_crash(graph):
    mb = graph.store.mailbox("anna@firma.de")
    mail(graph, "Gut")
    graph.store.put(mb.folder("inbox"), {"@odata.type": "#microsoft.graph.contact", "displayName": "Falsch hier"})
    graph.store.put(mb.folder("inbox"), {"@odata.type": "#microsoft.graph.message", "subject": "Leer",
                                         "from": None, "sender": {"emailAddress": None}, "toRecipients": None})
    graph.store.put(mb.folder("inbox"), make_message("Einladung", KIM, [ANNA], WHEN, "<inv@kunde.example>",
                                                      odata_type="#microsoft.graph.eventMessageRequest"))
    got = pull(graph, contacts=False, calendar=False)
    assert sorted(r.subject for r in mails(got)) == ["Einladung", "Gut"]
    reasons = sorted(f.reason for f in got.failures)
    assert len(reasons) == 2 and any("microsoft.graph.contact" in r for r in reasons)
    assert any("no sender and no Message-ID" in r for r in reasons)


def test_token_cache_file_is_readable_only_by_its_owner_and_reused(graph, tmp_path):
    cache = tmp_path / "tokens" / "m365.json"
    pull(graph, contacts=False, calendar=False, token_cache=str(cache))
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o600
    assert "app-secret" not in cache.read_text()
    pull(graph, contacts=False, calendar=False, token_cache=str(cache))
    assert graph.token_requests == 1  # the second run took the cached token


def test_a_literal_secret_is_refused(graph):
    from crm_bridge.connectors.base import ConfigError

    with pytest.raises(ConfigError) as err:
        make_connector("m365", {**options(graph), "client_secret": "x"})._access_token()
    assert "client_secret_env" in str(err.value)


# -- through the whole command --------------------------------------------------------------


def crm_for(tmp_path, sources: dict, **kw):
    from tests.conftest import Crm, write_config

    return Crm(write_config(tmp_path / "crm.toml", customers=(("Kunde GmbH", ["kunde.example"]),),
                            internal=("firma.de",), sources=sources, **kw))


def test_a_moved_mail_stays_one_interaction_through_sync(tmp_path, graph):
    mb = graph.store.mailbox("anna@firma.de")
    projects = mb.add_folder("Projekte")
    m = mail(graph, "Angebot", message_id="<move@kunde.example>")
    crm = crm_for(tmp_path, {"anna": options(graph, folders=["inbox", "Inbox/Projekte"])})
    crm("sync")
    graph.store.move(m["id"], mb, projects.id)
    crm("sync")
    [row] = crm.json("explain", "move@kunde.example")
    assert [p["scope"] for p in row["seen_in"] if not p.get("gone")] == ["Inbox/Projekte"]
    assert crm.json("status")["counts"]["mails"] == 1


def test_a_denied_mailbox_fails_with_its_own_line_and_the_others_sync(tmp_path, graph):
    mail(graph, "für anna")
    graph.store.mailbox("bob@firma.de").denied = True
    crm = crm_for(tmp_path, {"bob": options(graph, mailbox="bob@firma.de"), "anna": options(graph),
                             "ghost": options(graph, mailbox="ghost@firma.de")})
    result = crm("sync", "--json", ok=False)
    assert result.exit_code == 1
    rows = {r["source"]: r for r in json.loads(result.stdout)["results"]}
    assert rows["anna"]["status"] == "ok"
    assert rows["bob"]["status"] == "error" and "403" in rows["bob"]["message"]
    assert rows["ghost"]["status"] == "error" and "no mailbox ghost@firma.de" in rows["ghost"]["message"]
    assert "\n" not in rows["bob"]["message"]


def test_the_config_check_knows_the_m365_keys(tmp_path, graph):
    crm = crm_for(tmp_path, {"anna": {**options(graph), "client_secret": "literal"}})
    result = crm("sync", ok=False)
    assert result.exit_code != 0 and "client_secret_env" in result.output and "literal" not in result.output


# -- To Do ------------------------------------------------------------------------------------


def todo_tasks(graph: GraphEmulator, name: str = "CRM") -> list[dict]:
    mb = graph.store.mailbox("anna@firma.de")
    [lst] = [c for c in mb.lists.values() if c.name == name]
    return list(lst.items.values())


def a_push(uid: str = "task-1", **kw):
    from crm_bridge.crm_core.records import TaskPush

    base = dict(uid=uid, summary="Angebot nachfassen", description="Kunde GmbH: Angebot 17", due=None,
                status="NEEDS-ACTION", completed=None)
    return TaskPush(**{**base, **kw})


def test_task_push_creates_the_list_and_one_task_with_a_linked_resource(graph):
    conn = make_connector("m365", options(graph, tasks_list="CRM"))
    [res] = conn.push_tasks([a_push()], View())
    assert res.ok and res.scope == "To Do/CRM" and res.etag
    [task] = todo_tasks(graph)
    assert task["title"] == "Angebot nachfassen" and task["_linked"][0]["externalId"] == "task-1"
    assert task["_linked"][0]["applicationName"] == "crm-bridge"
    # a crash between the POST and the local commit: pushed again without href, still one task
    for _ in range(10):
        [again] = conn.push_tasks([a_push(summary="Angebot nachfassen (neu)")], View())
        assert again.ok and again.href == res.href
    assert len(todo_tasks(graph)) == 1 and todo_tasks(graph)[0]["title"] == "Angebot nachfassen (neu)"
    conn.close()


@pytest.mark.parametrize("status", [500, 502, 504])
def test_a_post_carried_out_but_answered_with_a_5xx_is_not_repeated_and_leaves_one_task(tmp_path, graph, status):
    crm = crm_for(tmp_path, {"anna": options(graph, tasks_list="CRM", folders=[], calendar=False, contacts=False)},
                  push={"tasks": "anna"}, followup={"after_appointment_days": 0, "unanswered_days": 0})
    crm("tasks", "add", "Angebot nachfassen", "--customer", "Kunde GmbH", "--due", "+3")
    crm("sync")  # the list exists; the task too
    crm("tasks", "add", "Vertrag schicken", "--customer", "Kunde GmbH", "--due", "+5")
    crm("tasks", "add", "Rechnung prüfen", "--customer", "Kunde GmbH", "--due", "+6")
    # Graph stores the POST of the first new task, then answers 5xx with Retry-After (as if the answer were lost)
    graph.fail(status, "UnknownError", match="/tasks", method="POST", done=True, retry_after=1)
    graph.requests.clear()
    first = crm("sync", ok=False)
    assert first.exit_code != 0 and f"HTTP {status}" in first.output and "Traceback" not in first.output
    posts = [p for m, p, _h in graph.requests if m == "POST" and "/tasks" in p]
    assert len(posts) == 2  # one per new task: none repeated, and the other task still went out
    assert sorted(t["title"] for t in todo_tasks(graph)) == ["Angebot nachfassen", "Rechnung prüfen",
                                                             "Vertrag schicken"]
    graph.faults.clear()
    crm("sync")  # the next run finds the task by its linked resource: updated, not created again
    crm("sync")
    titles = sorted(t["title"] for t in todo_tasks(graph))
    assert titles == ["Angebot nachfassen", "Rechnung prüfen", "Vertrag schicken"]
    assert {t["_linked"][0]["externalId"] for t in todo_tasks(graph)} == {t["uid"] for t in crm.json("tasks", "list")}


def test_a_post_refused_with_429_or_503_is_repeated_after_retry_after(graph):
    conn = make_connector("m365", options(graph, tasks_list="CRM"))
    conn.push_tasks([a_push("task-0")], View())  # the list exists
    graph.fail(503, "ServiceUnavailable", match="/tasks", method="POST", retry_after=1)
    graph.fail(429, "TooManyRequests", match="/tasks", method="POST", retry_after=1)
    [res] = conn.push_tasks([a_push()], View())
    conn.close()
    assert res.ok and [t["_linked"][0]["externalId"] for t in todo_tasks(graph)].count("task-1") == 1
    assert not [f for f in graph.faults if f.times]  # both answers were seen, and the POST repeated


def test_completion_in_to_do_is_read_back_and_an_edit_there_wins(graph):
    conn = make_connector("m365", options(graph, tasks_list="CRM", folders=[], calendar=False, contacts=False))
    [res] = conn.push_tasks([a_push()], View())
    conn.close()
    view = View()
    first = pull(graph, view, folders=[], calendar=False, contacts=False, tasks_list="CRM")
    [state] = first.records
    assert state.uid == "task-1" and state.status == "NEEDS-ACTION" and state.location.etag == res.etag
    mb = graph.store.mailbox("anna@firma.de")
    graph.store.update(res.href, mb, status="completed",
                       completedDateTime={"dateTime": "2026-11-02T10:00:00.0000000", "timeZone": "UTC"})
    second = pull(graph, view, first.cursor, folders=[], calendar=False, contacts=False, tasks_list="CRM")
    [done] = second.records
    assert done.status == "COMPLETED" and done.completed == datetime(2026, 11, 2, 10, tzinfo=timezone.utc)
    # the CRM pushes its older version with the old etag: the client's version comes back as a conflict
    conn = make_connector("m365", options(graph, tasks_list="CRM"))
    [conflict] = conn.push_tasks([a_push(href=res.href, etag=res.etag, scope=res.scope)], View())
    conn.close()
    assert not conflict.ok and conflict.conflict.status == "COMPLETED"
    # deleted in To Do: gone
    graph.store.delete(res.href, mb)
    conn = make_connector("m365", options(graph, tasks_list="CRM"))
    [gone] = conn.push_tasks([a_push(href=res.href, etag=done.location.etag, scope=res.scope)], View())
    conn.close()
    assert gone.gone and not gone.ok


def test_pull_writes_nothing_to_the_mailbox(graph):
    populate(graph.store.mailbox("anna@firma.de"), mails=6, events=2, contacts=2)
    conn = make_connector("m365", options(graph, tasks_list="CRM"))
    conn.push_tasks([a_push()], View())
    conn.close()
    graph.requests.clear()
    pull(graph, tasks_list="CRM")
    assert {m for m, p, _h in graph.requests if p.startswith("/v1.0/")} == {"GET"}


def test_tasks_go_to_to_do_through_sync_once_and_completion_comes_back(tmp_path, graph):
    crm = crm_for(tmp_path, {"anna": options(graph, tasks_list="CRM Aufgaben", folders=["inbox"])},
                  push={"tasks": "anna"}, followup={"after_appointment_days": 0, "unanswered_days": 0})
    crm("tasks", "add", "Angebot nachfassen", "--customer", "Kunde GmbH", "--due", "+3")
    crm("sync")
    [item] = todo_tasks(graph, "CRM Aufgaben")
    [task] = crm.json("tasks", "list")
    assert item["_linked"][0]["externalId"] == task["uid"] and item["status"] == "notStarted"
    for _ in range(10):
        crm("sync")
    assert len(todo_tasks(graph, "CRM Aufgaben")) == 1
    crm("tasks", "edit", str(task["id"]), "--title", "Angebot nachfassen (neu)")
    crm("sync")
    [item] = todo_tasks(graph, "CRM Aufgaben")
    assert item["title"] == "Angebot nachfassen (neu)"
    graph.store.update(item["id"], graph.store.mailbox("anna@firma.de"), status="completed")
    crm("sync")
    [done] = crm.json("tasks", "list", "--all")
    assert done["status"] == "done"
    assert len(todo_tasks(graph, "CRM Aufgaben")) == 1


def test_the_readme_config_is_valid():
    from tests.conftest import readme_config

    config = readme_config("m365")
    assert sorted(config.sources) == ["anna-m365", "chef-m365", "office-m365"]
    for name, table in config.sources.items():
        make_connector(name, table)


def test_an_unreachable_or_untrusted_sign_in_service_is_one_line(graph):
    from crm_bridge.connectors.base import SourceUnavailable
    from tests.dav_servers import free_port

    closed = f"https://127.0.0.1:{free_port()}/{graph.tenant}"
    with pytest.raises(TransientError, match="could not be reached"):
        pull(graph, authority=closed)
    opts = {k: v for k, v in options(graph).items() if k != "ca_file"}  # the system's CAs: not the emulator's
    conn = make_connector("m365", opts)
    with pytest.raises(SourceUnavailable, match="not trusted"):
        list(conn.pull(None, View()))


def test_the_calendar_round_starts_again_when_its_window_is_a_week_old(graph):
    mb = graph.store.mailbox("anna@firma.de")
    graph.store.put(mb.calendar, make_event("Bald", datetime.now(timezone.utc) + timedelta(days=3)))
    view = View()
    first = pull(graph, view, contacts=False, folders=[])
    state = first.cursor["folders"]["Calendar"]
    assert state["window"] == f"{datetime.now(timezone.utc) - timedelta(days=730):%Y-%m-%d}"
    graph.requests.clear()
    again = pull(graph, view, first.cursor, contacts=False, folders=[])
    assert again.records == [] and "$deltatoken=" in graph.graph_requests("calendarView")[0]
    old = json.loads(json.dumps(first.cursor))
    old["folders"]["Calendar"]["window"] = "2020-01-01"
    graph.requests.clear()
    renewed = pull(graph, view, old, contacts=False, folders=[])
    assert "startDateTime=" in graph.graph_requests("calendarView")[0]  # a new round, with today's window
    assert [r.summary for r in renewed.records] == ["Bald"] and renewed.removed == []
    assert renewed.cursor["folders"]["Calendar"]["window"] == state["window"]


def test_a_well_known_folder_the_mailbox_lacks_is_a_problem_line_and_the_rest_syncs(graph):
    mb = graph.store.mailbox("anna@firma.de")
    del mb.folders[mb.folder("archive").id]
    mail(graph, "Da")
    got = pull(graph, folders=["inbox", "archive"], calendar=False, contacts=False)
    assert got.problems == ["folder 'archive' is not in the mailbox anna@firma.de"]
    assert [r.subject for r in mails(got)] == ["Da"]


def test_the_same_mail_in_two_mailboxes_is_one_interaction_through_sync(tmp_path, graph):
    mail(graph, "Für beide", mailbox="anna@firma.de", message_id="<beide@kunde.example>")
    mail(graph, "Für beide", mailbox="bob@firma.de", message_id="<beide@kunde.example>")
    crm = crm_for(tmp_path, {"anna": options(graph), "bob": options(graph, mailbox="bob@firma.de")})
    crm("sync")
    assert crm.json("status")["counts"]["mails"] == 1
    [row] = crm.json("explain", "beide@kunde.example")
    assert sorted(p["source"] for p in row["seen_in"]) == ["anna", "bob"]


def test_the_next_delta_pages_are_asked_for_while_the_current_one_is_stored(graph):
    from crm_bridge.connectors.m365 import READ_AHEAD

    for n in range(40):
        mail(graph, f"Mail {n}")
    conn = make_connector("m365", options(graph, contacts=False, calendar=False, folders=["inbox"]))
    view = View()
    pages = conn.pull(None, view)
    first = next(pages)  # the engine stores this one now; the connector already asks for the next ones
    deadline = time.monotonic() + 5
    while len(graph.graph_requests("messages/delta")) < 1 + READ_AHEAD and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    # up to READ_AHEAD pages beyond the one taken, not the whole folder (8 pages of 5)
    assert len(graph.graph_requests("messages/delta")) == 1 + READ_AHEAD and len(first.records) == 5
    view.apply(first)
    rest = list(pages)
    conn.close()
    assert len(mails(Pulled([first, *rest]))) == 40 and len(graph.graph_requests("messages/delta")) == 8
    # the cursor still moves page by page: the first batch's cursor points at the second page
    assert "$skiptoken=" in first.cursor["folders"]["Inbox"]["link"]
    links = [b.cursor["folders"]["Inbox"]["link"] for b in [first, *rest] if b.cursor]
    assert len(set(links)) == 8 and all("$skiptoken=" in link for link in links[:-1]) and "$deltatoken=" in links[-1]


def test_one_read_ahead_thread_serves_a_folder_and_ends_with_the_pull(graph):
    for n in range(23):
        mail(graph, f"Mail {n}")
    conn = make_connector("m365", options(graph, contacts=False, calendar=False, folders=["inbox"]))
    served: list[tuple[str, threading.Thread]] = []
    request = conn._request

    def recording(url, *args, **kwargs):
        served.append((url, threading.current_thread()))
        return request(url, *args, **kwargs)

    conn._request = recording
    got = Pulled(list(conn.pull(None, View())))
    conn.close()
    assert len(mails(got)) == 23
    ahead = [t for url, t in served if "/delta" in url and t is not threading.main_thread()]
    assert len(ahead) == 5  # the 5 pages, read ahead ...
    assert len(set(ahead)) == 1  # ... by one thread, not a new one per page
    ahead[0].join(5)
    assert not ahead[0].is_alive()  # and it ended with the folder's pull
    # cut short (the engine stops storing): the thread ends as well
    conn = make_connector("m365", options(graph, contacts=False, calendar=False, folders=["inbox"]))
    served.clear()
    request = conn._request
    conn._request = recording
    pages = conn.pull(None, View())
    next(pages)
    deadline = time.monotonic() + 5
    while not any(t is not threading.main_thread() for _url, t in served) and time.monotonic() < deadline:
        time.sleep(0.01)
    pages.close()
    conn.close()
    threads = {t for _url, t in served if t is not threading.main_thread()}
    assert len(threads) == 1
    for t in threads:
        t.join(5)
        assert not t.is_alive()



def test_closing_the_read_ahead_waits_for_a_request_under_way():
    """After a cut or failed folder the connector goes on with other requests (task and card push) on the same
    HTTP session: the read-ahead's request must be over by then, not still using the session from its thread."""
    from crm_bridge.connectors.base import PageChain

    over = threading.Event()

    def fetch(url):
        time.sleep(0.3)
        over.set()
        return {"url": url}

    ahead = PageChain(fetch, "page-1", lambda page: None)  # asked ahead, never taken: the run was cut
    ahead.close()
    assert over.is_set()


def test_the_page_chain_reads_ahead_as_deep_as_asked_stops_at_the_last_page_and_hands_over_an_error():
    from crm_bridge.connectors.base import PageChain

    asked: list[int] = []

    def fetch(n):
        asked.append(n)
        if n == 7:
            raise ValueError("page 7 failed")
        return {"n": n}

    def next_key(page):
        return page["n"] + 1 if page["n"] < 5 else None

    chain = PageChain(fetch, 1, next_key, depth=3)
    deadline = time.monotonic() + 5
    while len(asked) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    assert asked == [1, 2, 3]  # three ahead of a reader that took none, no more
    got = [chain.get() for _ in range(5)]
    assert [p["n"] for p in got] == [1, 2, 3, 4, 5] and asked == [1, 2, 3, 4, 5]
    assert chain.get() is None and chain.get() is None  # the chain ended with the last page
    chain.close()

    chain = PageChain(fetch, 6, lambda page: page["n"] + 1)
    assert chain.get() == {"n": 6}
    with pytest.raises(ValueError, match="page 7 failed"):
        chain.get()  # in its page's place, where the caller would have had it
    assert chain.get() is None
    chain.close()
