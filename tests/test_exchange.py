"""Exchange Server sources against the EWS emulator (exchangelib unmodified, nothing mocked)."""

from __future__ import annotations

import json
import os
import time
from decimal import Decimal
from datetime import datetime, timedelta, timezone

import pytest
from lxml import etree

from crm_bridge.connectors.base import AuthError, ConnectorError, SourceUnavailable, TransientError, make_connector
from crm_bridge.crm_core.records import AppointmentRecord, ContactCard, MailRecord
from tests.conftest import Crm, write_config
from tests.ews_emulator import EwsEmulator, make_event, make_message, populate, weekly_recurrence
from tests.ews_emulator.model import t
from tests.imap_server import dovecot  # noqa: F401  (fixture)
from tests.test_contract import Pulled, View

PW_ENV = "CRM_TEST_EWS_PW"
OWN = ("Alice Adler", "alice@nordlicht.example")
KIM = ("Kim Kunde", "kim@kunde.example")
CUSTOMERS = (("Kunde GmbH", ["kunde.example"]),)
WHEN = datetime(2026, 10, 1, 9, 30, tzinfo=timezone.utc)


@pytest.fixture
def ews(monkeypatch):
    emulator = EwsEmulator()
    store = emulator.store
    store.add_user("svc-crm", "service-pw", impersonation=True)
    store.add_user("eve", "eve-pw")  # no impersonation rights
    store.add_user("alice", "alice-pw", mailbox="alice@nordlicht.example", name="Alice Adler")
    store.add_user("bob", "bob-pw", mailbox="bob@nordlicht.example", name="Bob Bauer")
    monkeypatch.setenv(PW_ENV, "service-pw")
    with emulator:
        yield emulator


def options(ews: EwsEmulator, mailbox: str = "alice@nordlicht.example", **extra) -> dict:
    return {"type": "exchange", "server": ews.url, "allow_plaintext": True, "username": "svc-crm",
            "password_env": PW_ENV, "auth": "basic", "mailbox": mailbox, "access": "impersonation",
            "owner": [mailbox], **extra}


def tls_emulator(tmp_path, monkeypatch) -> tuple[EwsEmulator, str, str]:
    """An emulator over TLS with its own self-signed certificate, the service account (impersonation) and
    alice's mailbox, not started yet; with the certificate (a CA file) and its key file."""
    from tests.imap_server import _self_signed

    cert, key = _self_signed(tmp_path)
    emulator = EwsEmulator(tls=(str(cert), str(key)))
    emulator.store.add_user("svc-crm", "service-pw", impersonation=True)
    emulator.store.add_user("alice", "alice-pw", mailbox="alice@nordlicht.example")
    monkeypatch.setenv(PW_ENV, "service-pw")
    return emulator, str(cert), str(key)


def pull(ews: EwsEmulator, view: View | None = None, cursor=None, **extra) -> Pulled:
    conn = make_connector("ex", options(ews, **extra))
    view = view if view is not None else View()
    try:
        batches = list(conn.pull(cursor, view))
    finally:
        conn.close()
    for b in batches:
        view.apply(b)
    return Pulled(batches)


def mail(ews: EwsEmulator, subject: str, folder: str = "inbox", mailbox: str = "alice@nordlicht.example",
         sender=KIM, message_id: str | None = None, **kw):
    store = ews.store
    elem = make_message(subject=subject, sender=sender, to=[OWN], date=kw.pop("date", WHEN),
                        message_id=message_id or f"<{subject.replace(' ', '-')}@kunde.example>",
                        body=kw.pop("body", f"Guten Tag, es geht um {subject}."), **kw)
    return store.create(store.folder(mailbox, folder), elem)


def mails(got: Pulled) -> list[MailRecord]:
    return [r for r in got.records if isinstance(r, MailRecord)]


# -- pulling ------------------------------------------------------------------------


def test_first_and_incremental_sync_of_mail_calendar_and_contacts(ews):
    populate(ews.store, "alice@nordlicht.example", mails=10, events=3, contacts=2)
    view = View()
    first = pull(ews, view)
    assert len(mails(first)) == 10 and not first.failures and not first.problems
    assert {r.location.scope for r in first.records} == {"Inbox", "Sent Items", "Calendar", "Contacts"}
    kinds = {type(r).__name__ for r in first.records}
    assert kinds == {"MailRecord", "AppointmentRecord", "ContactCard"}
    answer = next(r for r in mails(first) if r.subject.startswith("AW:"))
    assert answer.direction == "out" and answer.in_reply_to and answer.references == answer.in_reply_to
    inbound = next(r for r in mails(first) if r.message_id == "m0.alice@stadtwerke-lindenau.de")
    assert inbound.sender.email == "petra.brandt@stadtwerke-lindenau.de" and inbound.direction == "in"
    assert inbound.snippet.startswith("Guten Tag, anbei unsere Anfrage Nr. 0.")
    assert inbound.date == datetime(2026, 10, 1, 8, 0, tzinfo=timezone.utc)
    card = next(r for r in first.records if isinstance(r, ContactCard))
    assert card.emails and card.phones and card.organisation
    again = pull(ews, view, first.cursor)
    assert again.records == [] and again.removed == []
    mail(ews, "Neue Anfrage")
    ews.store.create(ews.store.folder("alice@nordlicht.example", "calendar"), make_event(
        subject="Neuer Termin", start=WHEN, end=WHEN + timedelta(hours=1), organizer=KIM, attendees=[OWN], uid="new-1"))
    third = pull(ews, view, first.cursor)
    assert sorted(getattr(r, "subject", "") or r.summary for r in third.records) == ["Neue Anfrage", "Neuer Termin"]


def test_only_the_needed_fields_are_asked_for_and_nothing_is_written(ews):
    populate(ews.store, "alice@nordlicht.example", mails=3, events=1, contacts=1)
    mail(ews, "mit Kategorie", categories=["CRM"])
    pull(ews)
    syncs = [r for r in ews.requests if r["op"] == "SyncFolderItems"]
    assert syncs
    for r in syncs:
        assert "BaseShape:IdOnly" in r["fields"]
        assert "IncludeMimeContent" not in r["fields"]
        assert not {"item:MimeContent", "item:Attachments", "item:Body"} & set(r["fields"])
    assert ews.operations(write_only=True) == []
    assert all(i.elem.findtext(t("IsRead")) != "true" for i in ews.store.items.values()
               if i.kind == "Message" and i.folder.distinguished == "inbox")


def test_a_deleted_mail_is_reported_removed(ews):
    keep, gone = mail(ews, "bleibt"), mail(ews, "geht")
    view = View()
    first = pull(ews, view)
    ews.store.delete(gone)
    second = pull(ews, view, first.cursor)
    assert [(loc.scope, loc.local_id) for loc in second.removed] == [("Inbox", gone.id)]
    assert keep.id in view.known("Inbox") and gone.id not in view.known("Inbox")


def test_paging_a_cut_run_goes_on_from_the_last_stored_page(ews):
    for n in range(10):
        mail(ews, f"Mail {n}")
    conn = make_connector("ex", options(ews, page_size=3, calendar=False, contacts=False, folders=["inbox"]))
    view = View()
    pulled = conn.pull(None, view)
    got = []
    for _ in range(2):  # the run is cut after two pages
        batch = next(pulled)
        view.apply(batch)
        got.extend(r.subject for r in batch.records)
        cursor = batch.cursor
    pulled.close()
    conn.close()
    assert len(got) == 6
    rest = pull(ews, view, cursor, page_size=3, calendar=False, contacts=False, folders=["inbox"])
    assert sorted(got + [r.subject for r in rest.records]) == sorted(f"Mail {n}" for n in range(10))
    assert len(rest.batches) == 2  # 3 + 1, not from zero


def test_the_next_page_is_fetched_while_this_one_is_stored(ews):
    for n in range(9):
        mail(ews, f"Mail {n}")
    opts = dict(page_size=3, calendar=False, contacts=False, folders=["inbox"])
    plain = pull(ews, **opts)
    ews.fail("slow", count=10, operation="SyncFolderItems", delay=0.6)
    conn = make_connector("ex", options(ews, **opts))
    waits, batches = [], []
    try:
        pulled = conn.pull(None, View())
        while True:
            started = time.monotonic()
            try:
                batch = next(pulled)
            except StopIteration:
                break
            waits.append(time.monotonic() - started)
            batches.append(batch)
            time.sleep(1.2)  # the engine storing the page
    finally:
        conn.close()
    # the first page is waited for; the later ones arrived while the one before was stored
    assert waits[0] >= 0.6 and max(waits[1:]) < 0.4, waits
    # the same pages and cursors as one request after the other
    assert [[r.subject for r in b.records] for b in batches] == [[r.subject for r in b.records] for b in plain.batches]
    assert [b.cursor for b in batches] == [b.cursor for b in plain.batches]


def test_the_read_ahead_thread_ends_with_a_cut_run_and_with_a_failed_page(ews):
    import threading

    for n in range(10):
        mail(ews, f"Mail {n}")
    opts = dict(page_size=3, calendar=False, contacts=False, folders=["inbox"])

    def readers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "ews-pages"]

    def all_ended() -> bool:
        for t in readers():
            t.join(5)
        return not readers()

    # cut after the first page (the engine stops storing): the page asked for ahead is dropped, the thread ends
    conn = make_connector("ex", options(ews, **opts))
    pulled = conn.pull(None, View())
    assert next(pulled).records
    assert readers()  # the second page was asked for ahead
    pulled.close()
    conn.close()
    assert all_ended()
    # the second page fails: the error comes out of the pull, and the thread ends as well
    conn = make_connector("ex", options(ews, **opts))
    pulled = conn.pull(None, View())
    assert next(pulled).records
    ews.fail("http", count=5, operation="SyncFolderItems", status=500)
    with pytest.raises(ConnectorError):
        list(pulled)
    conn.close()
    assert all_ended()


def test_named_and_globbed_folders_and_a_vanished_folder(ews):
    store = ews.store
    projects = store.add_folder("alice@nordlicht.example", "Projekte", parent="inbox")
    store.add_folder("alice@nordlicht.example", "Alt", parent="inbox")
    store.create(projects, make_message(subject="im Projekt", sender=KIM, to=[OWN], date=WHEN, message_id="<p@k>"))
    view = View()
    first = pull(ews, view, folders=["inbox", "Inbox/Proj*"], calendar=False, contacts=False)
    assert {(r.location.scope, r.subject) for r in first.records} == {("Inbox/Projekte", "im Projekt")}
    store.delete_folder(projects)
    second = pull(ews, view, first.cursor, folders=["inbox", "Inbox/Proj*"], calendar=False, contacts=False)
    assert second.removed == []
    assert any("Inbox/Projekte" in p and "gone" in p for p in second.problems)


# -- calendar -----------------------------------------------------------------------


def test_recurring_meeting_with_a_moved_and_a_cancelled_occurrence_in_its_time_zone(ews):
    berlin = timezone(timedelta(hours=2))  # CEST on the first Monday
    first = datetime(2026, 10, 5, 10, 0, tzinfo=berlin)
    elem = make_event(subject="Jour fixe", start=first, end=first + timedelta(hours=1), organizer=OWN,
                      attendees=[KIM], uid="jf-1", recurrence=weekly_recurrence(first, 6, "Monday"))
    modified = etree.SubElement(elem, t("ModifiedOccurrences"))
    occ = etree.SubElement(modified, t("Occurrence"))
    etree.SubElement(occ, t("ItemId"), Id="AAMkOcc1", ChangeKey="CK1")
    etree.SubElement(occ, t("Start")).text = "2026-10-13T13:00:00Z"  # the second one moved to Tuesday
    etree.SubElement(occ, t("End")).text = "2026-10-13T14:00:00Z"
    etree.SubElement(occ, t("OriginalStart")).text = "2026-10-12T08:00:00Z"
    deleted = etree.SubElement(elem, t("DeletedOccurrences"))
    etree.SubElement(etree.SubElement(deleted, t("DeletedOccurrence")), t("Start")).text = "2026-10-19T08:00:00Z"
    from tests.ews_emulator.soap import order

    order("CalendarItem", elem)
    ews.store.create(ews.store.folder("alice@nordlicht.example", "calendar"), elem)
    got = pull(ews, folders=["inbox"], contacts=False)
    [master] = [r for r in got.records if isinstance(r, AppointmentRecord)]
    assert master.tzid == "Europe/Berlin"
    assert master.rrule == "FREQ=WEEKLY;BYDAY=MO;WKST=MO;COUNT=6"
    assert master.start.utcoffset() == timedelta(hours=2)
    starts = [(o.recurrence_id, o.start.astimezone(timezone.utc).strftime("%m-%d %H:%M")) for o in master.occurrences]
    assert starts == [
        ("2026-10-05T08:00:00+00:00", "10-05 08:00"),
        ("2026-10-12T08:00:00+00:00", "10-13 13:00"),  # moved
        ("2026-10-26T09:00:00+00:00", "10-26 09:00"),  # 19th cancelled; after the DST change: 10:00 in Berlin
        ("2026-11-02T09:00:00+00:00", "11-02 09:00"),
        ("2026-11-09T09:00:00+00:00", "11-09 09:00"),
    ]
    assert all(o.start.astimezone(master.start.tzinfo).hour in (10, 15) for o in master.occurrences)


# -- through the whole command --------------------------------------------------------


def crm_for(tmp_path, ews, sources: dict, **kw) -> Crm:
    return Crm(write_config(tmp_path / "crm.toml", customers=CUSTOMERS, internal=("nordlicht.example",),
                            sources=sources, **kw))


def test_a_moved_mail_stays_one_interaction(tmp_path, ews):
    item = mail(ews, "Angebot", message_id="<move@kunde.example>")
    projects = ews.store.add_folder("alice@nordlicht.example", "Projekte", parent="inbox")
    crm = crm_for(tmp_path, ews, {"alice": options(ews, folders=["inbox", "Inbox/Projekte"])})
    crm("sync")
    ews.store.move(item, projects)
    crm("sync")
    [row] = crm.json("explain", "move@kunde.example")
    assert [p["scope"] for p in row["seen_in"] if not p.get("gone")] == ["Inbox/Projekte"]
    assert crm.json("status")["counts"]["mails"] == 1


def test_the_same_mail_in_two_mailboxes_is_one_interaction(tmp_path, ews):
    for box in ("alice@nordlicht.example", "bob@nordlicht.example"):
        mail(ews, "Rundschreiben", mailbox=box, message_id="<both@kunde.example>")
    crm = crm_for(tmp_path, ews, {"alice": options(ews), "bob": options(ews, mailbox="bob@nordlicht.example")})
    crm("sync")
    [row] = crm.json("explain", "both@kunde.example")
    assert sorted(p["source"] for p in row["seen_in"]) == ["alice", "bob"]
    assert crm.json("status")["counts"]["mails"] == 1
    assert {r.get("mailbox") for r in ews.requests if r["op"] == "SyncFolderItems"} == {
        "alice@nordlicht.example", "bob@nordlicht.example"}


def test_outlook_categories_and_sensitivity_decide_what_is_logged(tmp_path, ews):
    stranger = ("Fremd", "fremd@gmail.com")
    mail(ews, "bitte loggen", sender=stranger, message_id="<log@gmail.com>", categories=["CRM"])
    mail(ews, "nicht geloggt", sender=stranger, message_id="<plain@gmail.com>")
    mail(ews, "privat", message_id="<priv@kunde.example>", categories=["Private"])
    mail(ews, "vertraulich", message_id="<conf@kunde.example>", sensitivity="Confidential")
    later = mail(ews, "offen", message_id="<open@kunde.example>")
    crm = crm_for(tmp_path, ews, {"alice": options(ews)})
    crm("sync")
    logged = crm.json("explain", "log@gmail.com")[0]
    assert logged["logged"] and [(link["target"], link["reason"]) for link in logged["links"]] == [("contact", "log folder")]
    assert not crm.json("explain", "plain@gmail.com")[0]["links"]
    for mid in ("priv@kunde.example", "conf@kunde.example"):
        assert "private" in crm.json("explain", mid)[0]["reason"]
    assert crm.json("explain", "open@kunde.example")[0]["logged"]
    # tagged private in Outlook later: gone from the CRM at the next sync; the mailbox itself unchanged
    cats = etree.SubElement(later.elem, t("Categories"))
    etree.SubElement(cats, t("String")).text = "Private"
    from tests.ews_emulator.soap import order

    order("Message", later.elem)
    ews.store.touch(later)
    crm("sync")
    assert "private" in crm.json("explain", "open@kunde.example")[0]["reason"]
    assert ews.operations(write_only=True) == []


def test_invalid_sync_state_means_a_full_comparison_without_duplicates(tmp_path, ews):
    items = [mail(ews, f"Mail {n}") for n in range(5)]
    crm = crm_for(tmp_path, ews, {"alice": options(ews, calendar=False, contacts=False)})
    crm("sync")
    ews.invalidate_sync_states()
    ews.store.delete(items[0])
    mail(ews, "Mail neu")
    result = crm.json("sync")["results"]
    assert result[0]["status"] == "ok", result
    counts = crm.json("status")["counts"]
    assert counts["mails"] == 6  # 5 + 1, none twice
    [gone] = crm.json("explain", "Mail-0@kunde.example")
    assert all(p.get("gone") for p in gone["seen_in"])
    # the comparison: ids only, for the one folder the store knows something of (Sent Items is empty)
    assert [r["op"] for r in ews.requests].count("FindItem") == 1


# -- faults -------------------------------------------------------------------------


def test_server_busy_backoff_is_honoured_then_the_pull_goes_on(ews):
    mail(ews, "eins")
    ews.fail("busy", operation="SyncFolderItems", back_off_ms=700)
    started = time.monotonic()
    got = pull(ews, folders=["inbox"], calendar=False, contacts=False)
    assert time.monotonic() - started >= 0.7
    assert [r.subject for r in got.records] == ["eins"]
    assert [r.get("fault") for r in ews.requests if r["op"] == "SyncFolderItems"] == ["busy", None]


def test_server_busy_longer_than_allowed_is_a_transient_error(ews):
    mail(ews, "eins")
    ews.fail("busy", operation="SyncFolderItems", back_off_ms=120_000)
    with pytest.raises(TransientError, match="busy"):
        pull(ews, max_backoff=60)


@pytest.mark.parametrize("status", [500, 503])
def test_http_5xx_is_transient(ews, status):
    mail(ews, "eins")
    ews.fail("http", operation="SyncFolderItems", status=status)
    with pytest.raises(TransientError):
        pull(ews)


def test_a_dropped_connection_and_a_too_slow_answer_are_transient(ews):
    mail(ews, "eins")
    ews.fail("drop", operation="SyncFolderItems")
    with pytest.raises(TransientError):
        pull(ews)
    ews.fail("slow", operation="SyncFolderItems", delay=2.5)
    with pytest.raises(TransientError):
        pull(ews, timeout=1)
    ews.fail("slow", operation="SyncFolderItems", delay=0.3)
    assert [r.subject for r in pull(ews, timeout=10).records] == ["eins"]


def test_a_wrong_password_is_one_line_and_one_request(ews, monkeypatch):
    monkeypatch.setenv(PW_ENV, "wrong")
    with pytest.raises(AuthError) as info:
        pull(ews)
    assert "\n" not in str(info.value) and "svc-crm" in str(info.value) and "wrong" not in str(info.value)
    assert ews.operations() == []  # refused at the HTTP door, not retried


def test_http_401_from_the_server_is_an_auth_error(ews):
    ews.fail("http", status=401)
    with pytest.raises(AuthError):
        pull(ews)


def test_impersonation_denied_fails_that_source_with_its_own_line(tmp_path, ews, monkeypatch):
    mail(ews, "für alice")
    monkeypatch.setenv("CRM_TEST_EVE_PW", "eve-pw")
    with pytest.raises(ConnectorError, match="eve may not impersonate alice@nordlicht.example"):
        pull(ews, username="eve", password_env="CRM_TEST_EVE_PW")
    crm = crm_for(tmp_path, ews, {
        "denied": options(ews, username="eve", password_env="CRM_TEST_EVE_PW"),
        "alice": options(ews)})
    result = crm("sync", "--json", ok=False)
    assert result.exit_code == 1
    import json

    rows = {r["source"]: r for r in json.loads(result.stdout)["results"]}
    assert rows["alice"]["status"] == "ok"
    assert rows["denied"]["status"] == "error" and "ApplicationImpersonation" in rows["denied"]["message"]


def test_delegate_access_reads_a_shared_mailbox_and_is_refused_without_rights(ews, monkeypatch):
    mail(ews, "geteilt", mailbox="bob@nordlicht.example")
    monkeypatch.setenv("CRM_TEST_ALICE_PW", "alice-pw")
    opts = dict(username="alice", password_env="CRM_TEST_ALICE_PW", access="delegate", calendar=False, contacts=False)
    with pytest.raises(ConnectorError, match="no access"):
        pull(ews, mailbox="bob@nordlicht.example", **opts)
    ews.store.mailboxes["bob@nordlicht.example"].delegates.add("alice")
    assert [r.subject for r in pull(ews, mailbox="bob@nordlicht.example", **opts).records] == ["geteilt"]


def test_an_item_that_cannot_be_read_is_quarantined_and_the_rest_synced(ews):
    bad = make_message(subject="kaputt", sender=KIM, to=[OWN], date=WHEN, message_id="x")
    bad.remove(bad.find(t("From")))
    bad.remove(bad.find(t("Sender")))
    bad.remove(bad.find(t("InternetMessageId")))
    ews.store.create(ews.store.folder("alice@nordlicht.example", "inbox"), bad)
    mail(ews, "gut")
    got = pull(ews, calendar=False, contacts=False)
    assert [r.subject for r in got.records] == ["gut"]
    assert len(got.failures) == 1 and "sender" in got.failures[0].reason


# -- autodiscover ---------------------------------------------------------------------


def test_autodiscover_finds_the_ews_url_and_follows_an_address_redirect(ews):
    mail(ews, "über Autodiscover")
    opts = {k: v for k, v in options(ews).items() if k != "server"}
    opts.update(autodiscover=True, autodiscover_url=ews.autodiscover_url, calendar=False, contacts=False)
    conn = make_connector("ex", opts)
    try:
        assert [r.subject for b in conn.pull(None, View()) for r in b.records] == ["über Autodiscover"]
    finally:
        conn.close()
    ews.autodiscover_redirect = "alice@nordlicht.example"
    opts["mailbox"] = "alice.alias@nordlicht.example"
    from crm_bridge.connectors.ewsdiscover import discover

    assert discover("alias@nordlicht.example", "svc-crm", "service-pw", ews.autodiscover_url,
                    allow_plaintext=True) == ews.url


def test_autodiscover_follows_an_http_redirect_but_never_down_from_https(ews):
    from crm_bridge.connectors.ewsdiscover import discover

    ews.redirects["/old/autodiscover.xml"] = ews.autodiscover_url
    old = ews.autodiscover_url.replace("/autodiscover/autodiscover.xml", "/old/autodiscover.xml")
    assert discover("alice@nordlicht.example", "svc-crm", "service-pw", old, allow_plaintext=True) == ews.url
    # a redirect to another origin over plain http is refused (the password would travel in clear text)
    ews.redirects["/old/autodiscover.xml"] = "http://localhost:1/autodiscover/autodiscover.xml"
    with pytest.raises(SourceUnavailable, match="redirect to plain http refused"):
        discover("alice@nordlicht.example", "svc-crm", "service-pw", old, allow_plaintext=True)


def test_autodiscover_that_fails_is_one_clear_line(ews):
    ews.autodiscover_fails = True
    opts = {k: v for k, v in options(ews).items() if k != "server"}
    opts.update(autodiscover=True, autodiscover_url=ews.autodiscover_url)
    with pytest.raises(SourceUnavailable, match="autodiscover found no EWS URL .* set server"):
        list(make_connector("ex", opts).pull(None, View()))


def test_config_mistakes_are_named(ews):
    from crm_bridge.connectors.base import ConfigError

    with pytest.raises(ConfigError, match="mailbox"):
        make_connector("ex", {**options(ews), "mailbox": "nobody"})
    with pytest.raises(ConfigError, match="clear text"):
        make_connector("ex", {**options(ews), "allow_plaintext": False})
    with pytest.raises(ConfigError, match="server"):
        make_connector("ex", {k: v for k, v in options(ews).items() if k != "server"})
    with pytest.raises(ConfigError, match="page_size"):
        make_connector("ex", {**options(ews), "page_size": 1000})


# -- task push ------------------------------------------------------------------------


def tasks_in(ews: EwsEmulator, mailbox: str = "alice@nordlicht.example") -> list:
    return [i for i in ews.store.items.values() if i.kind == "Task" and i.folder.mailbox.address == mailbox]


def crm_uid(item) -> str:
    for prop in item.elem.findall(t("ExtendedProperty")):
        if prop.find(t("ExtendedFieldURI")).get("PropertyName") == "crm-bridge-task-uid":
            return prop.findtext(t("Value"))
    return ""


def outlook_completes(ews: EwsEmulator, subject: str) -> None:
    """Alice ticks the task off in Outlook: her own, independent EWS session (exchangelib, own credentials)."""
    from exchangelib import BASIC, DELEGATE, Account, Configuration, Credentials

    config = Configuration(service_endpoint=ews.url, credentials=Credentials("alice", "alice-pw"), auth_type=BASIC)
    account = Account("alice@nordlicht.example", config=config, autodiscover=False, access_type=DELEGATE)
    try:
        task = account.tasks.get(subject=subject)
        task.status = "Completed"
        task.percent_complete = Decimal(100)
        task.save(update_fields=["status", "percent_complete"])
    finally:
        account.protocol.close()


def test_tasks_are_pushed_once_read_back_when_completed_in_outlook(tmp_path, ews):
    crm = crm_for(tmp_path, ews, {"alice": options(ews, tasks_folder="tasks", folders=["inbox"])},
                  push={"tasks": "alice"}, followup={"after_appointment_days": 0, "unanswered_days": 0})
    crm("tasks", "add", "Angebot nachfassen", "--customer", "Kunde GmbH", "--due", "+3")
    crm("sync")
    [item] = tasks_in(ews)
    [task] = crm.json("tasks", "list")
    assert crm_uid(item) == task["uid"]
    assert item.elem.findtext(t("Subject")) == "Angebot nachfassen" and item.elem.findtext(t("Status")) == "NotStarted"
    for _ in range(10):
        crm("sync")
    assert len(tasks_in(ews)) == 1
    crm("tasks", "edit", str(task["id"]), "--title", "Angebot nachfassen (neu)")
    crm("sync")
    [item] = tasks_in(ews)
    assert item.elem.findtext(t("Subject")) == "Angebot nachfassen (neu)"
    outlook_completes(ews, "Angebot nachfassen (neu)")
    crm("sync")
    [done] = crm.json("tasks", "list", "--all")
    assert done["status"] == "done"
    assert len(tasks_in(ews)) == 1 and tasks_in(ews)[0].elem.findtext(t("Status")) == "Completed"


def test_a_crash_between_create_and_commit_still_ends_with_one_task(ews):
    from crm_bridge.crm_core.records import TaskPush

    conn = make_connector("ex", options(ews, tasks_folder="tasks"))
    push = TaskPush(uid="crm-task-7", summary="Rückruf", description="", due=None, status="NEEDS-ACTION",
                    completed=None)
    try:
        [first] = conn.push_tasks([push], View())
        # the CRM never stored first.href (crashed): the next run pushes the same task as new again
        [again] = conn.push_tasks([push], View())
    finally:
        conn.close()
    assert first.ok and again.ok and first.href == again.href
    assert [crm_uid(i) for i in tasks_in(ews)] == ["crm-task-7"]


def test_task_changed_on_both_sides_client_wins_and_deleted_in_outlook_is_cancelled(tmp_path, ews):
    import sqlite3

    crm = crm_for(tmp_path, ews, {"alice": options(ews, tasks_folder="tasks", folders=["inbox"])},
                  push={"tasks": "alice"}, followup={"after_appointment_days": 0, "unanswered_days": 0})
    crm("tasks", "add", "Rückruf Kim", "--customer", "Kunde GmbH")
    crm("tasks", "add", "Mahnung", "--customer", "Kunde GmbH")
    crm("sync")
    by_title = {t_["title"]: t_ for t_ in crm.json("tasks", "list")}
    outlook_completes(ews, "Rückruf Kim")
    crm("tasks", "edit", str(by_title["Rückruf Kim"]["id"]), "--due", "+9")
    [gone] = [i for i in tasks_in(ews) if i.elem.findtext(t("Subject")) == "Mahnung"]
    ews.store.delete(gone)
    crm("sync")
    after = {t_["title"]: t_ for t_ in crm.json("tasks", "list", "--all")}
    assert after["Rückruf Kim"]["status"] == "done"  # the client's change won
    assert after["Mahnung"]["status"] == "cancelled"
    with sqlite3.connect(tmp_path / "crm.db") as db:
        kinds = [r[0] for r in db.execute("SELECT resolution FROM conflicts ORDER BY id")]
    assert any("client" in k for k in kinds) and any("deleted in the client" in k for k in kinds)
    assert len(tasks_in(ews)) == 1


def test_the_readme_config_with_three_mailboxes_is_valid():
    from tests.conftest import readme_config

    config = readme_config("exchange")
    assert sorted(config.sources) == ["anna-exchange", "ben-exchange", "office-exchange"]
    assert {s["username"] for s in config.sources.values()} == {"EXAMPLE\\svc-crm"}
    for name, table in config.sources.items():
        make_connector(name, table)  # every key is one the connector declares


def test_ntlm_the_on_premises_default(ews, monkeypatch):
    mail(ews, "über NTLM")
    opts = {k: v for k, v in options(ews).items() if k != "auth"}  # auth defaults to ntlm
    opts.update(username="EXAMPLE\\svc-crm", calendar=False, contacts=False)
    conn = make_connector("ex", opts)
    try:
        assert [r.subject for b in conn.pull(None, View()) for r in b.records] == ["über NTLM"]
    finally:
        conn.close()
    monkeypatch.setenv(PW_ENV, "wrong")
    with pytest.raises(AuthError):
        list(make_connector("ex", opts).pull(None, View()))


def test_mail_read_from_the_xml_equals_mail_read_through_exchangelib_objects(ews):
    populate(ews.store, "alice@nordlicht.example", mails=12)
    mail(ews, "mit allem", cc=[("Carla", "carla@kunde.example")], categories=["CRM", "Projekt"],
         sensitivity="Private", in_reply_to="<m0@x>", references="<a@x> <m0@x>", has_attachments=True)
    conn = make_connector("ex", options(ews))
    try:
        account = conn._connect()
        folder = conn._distinguished(account, "inbox")
        fields = conn._fields(folder, "mail")
        got = {}
        for raw in (False, True):
            changes, _state, last = conn._sync_page(folder, fields, None, raw=raw)
            assert last and len(changes) == 11
            batch = __import__("crm_bridge.crm_core.records", fromlist=["Batch"]).Batch()
            for change, item in changes:
                conn._add_change(batch, "Inbox", "mail", change, item, conn._window())
            assert not batch.failures
            got[raw] = batch.records
    finally:
        conn.close()
    assert got[True] == got[False]
    special = next(r for r in got[True] if r.subject == "mit allem")
    assert special.cc and special.has_attachments and "$Private" in special.flags and "$CRM" in special.flags


def test_a_no_change_run_is_one_sync_folder_items_per_folder(ews):
    populate(ews.store, "alice@nordlicht.example", mails=5, events=1, contacts=1)
    view = View()
    first = pull(ews, view)
    ews.requests.clear()
    again = pull(ews, view, first.cursor)
    assert again.records == [] and again.removed == []
    assert ews.operations() == ["SyncFolderItems"] * 4  # Inbox, Sent Items, Calendar, Contacts


def test_a_remembered_folder_id_that_no_longer_holds_is_looked_up_again(ews):
    mail(ews, "eins")
    view = View()
    first = pull(ews, view, folders=["inbox"], calendar=False, contacts=False)
    cursor = json.loads(json.dumps(first.cursor))
    from tests.ews_emulator.model import encode_id

    cursor["folders"]["Inbox"]["id"] = encode_id("F", "alice@nordlicht.example/gone")
    mail(ews, "zwei")
    second = pull(ews, view, cursor, folders=["inbox"], calendar=False, contacts=False)
    assert [r.subject for r in second.records] == ["eins", "zwei"]  # read again from the start: no duplicates stored
    assert not second.problems


def test_a_503_mid_sync_is_retried_by_the_engine_from_the_last_stored_page(tmp_path, ews):
    for n in range(6):
        mail(ews, f"Mail {n}")
    crm = crm_for(tmp_path, ews, {"alice": options(ews, page_size=2, folders=["inbox"], calendar=False,
                                                   contacts=False)})
    syncs = 0

    def count() -> int:
        return sum(1 for r in ews.requests if r["op"] == "SyncFolderItems")

    # the first page goes through, the second answers 503 once
    original = ews.take_fault

    def second_fails(operation):
        nonlocal syncs
        if operation == "SyncFolderItems":
            syncs += 1
            if syncs == 2:
                from tests.ews_emulator.server import FaultRule

                return FaultRule("http", 1, status=503)
        return original(operation)

    ews.take_fault = second_fails
    result = crm.json("sync")["results"]
    assert result[0]["status"] == "ok", result
    assert crm.json("status")["counts"]["mails"] == 6
    # page 1, the 503, then pages 2 and 3 again from the stored cursor: not from zero (that would be 5)
    assert count() == 4


def test_the_same_mail_through_imap_and_through_exchange_is_one_interaction(tmp_path, ews, dovecot):
    from tests.conftest import make_mail

    body = "Guten Tag,\n\nbitte senden Sie uns ein Angebot für die Wartung.\n\nGrüße\nKim Kunde"
    dovecot.append("alice", "INBOX", make_mail(sender="Kim Kunde <kim@kunde.example>", to="alice@nordlicht.example",
                                               subject="Wartung", body=body, message_id="both-ways@kunde.example",
                                               date=WHEN))
    mail(ews, "Wartung", mailbox="bob@nordlicht.example", message_id="<both-ways@kunde.example>", body=body)
    os.environ["CRM_TEST_EWS_IMAP"] = dovecot.users["alice"]
    crm = crm_for(tmp_path, ews, {
        "alice-imap": {"type": "imap", "host": "127.0.0.1", "port": dovecot.port, "tls": "none",
                       "allow_plaintext": True, "username": "alice", "password_env": "CRM_TEST_EWS_IMAP",
                       "owner": ["alice@nordlicht.example"], "folders": ["INBOX"]},
        "bob-exchange": options(ews, mailbox="bob@nordlicht.example", calendar=False, contacts=False)})
    crm("sync")
    [row] = crm.json("explain", "both-ways@kunde.example")
    assert sorted(p["source"] for p in row["seen_in"]) == ["alice-imap", "bob-exchange"]
    assert crm.json("status")["counts"]["mails"] == 1


def test_customer_cards_go_to_an_outlook_contacts_folder_once_and_user_edits_are_respected(tmp_path, ews):
    populate(ews.store, "alice@nordlicht.example", contacts=0)
    mail(ews, "Anfrage", sender=("Kim Kunde", "kim@kunde.example"))
    crm = crm_for(tmp_path, ews, {"alice": options(ews, cards_folder="CRM Kunden", folders=["inbox"])},
                  push={"cards": "alice"}, followup={"after_appointment_days": 0, "unanswered_days": 0})
    crm("sync")

    def cards() -> dict:
        out = {}
        for item in ews.store.items.values():
            if item.kind == "Contact" and item.folder.name == "CRM Kunden":
                out[item.elem.findtext(t("DisplayName"))] = item
        return out

    first = cards()
    assert set(first) == {"Kunde GmbH", "Kim Kunde"}
    kim = first["Kim Kunde"]
    assert kim.elem.findtext(t("CompanyName")) == "Kunde GmbH"
    assert [e.text for e in kim.elem.iter(t("Entry"))] == ["kim@kunde.example"]
    assert "Customer: Kunde GmbH" in kim.elem.findtext(t("Body"))
    assert kim.folder.parent.distinguished == "contacts"
    mail(ews, "Noch eine Anfrage", sender=("Kim Kunde", "kim@kunde.example"), message_id="<zwei@kunde.example>",
         date=WHEN + timedelta(days=1))
    for _ in range(3):
        crm("sync")
    again = cards()
    assert set(again) == {"Kunde GmbH", "Kim Kunde"} and len([i for i in ews.store.items.values()
                                                               if i.folder.name == "CRM Kunden"]) == 2
    # the user edits the card in Outlook: it stays as the user left it
    customer = again["Kunde GmbH"]
    customer.elem.find(t("DisplayName")).text = "Kunde GmbH (Zentrale)"
    ews.store.touch(customer)
    mail(ews, "Dritte Anfrage", sender=("Kim Kunde", "kim@kunde.example"), message_id="<drei@kunde.example>",
         date=WHEN + timedelta(days=2))
    crm("sync")
    assert cards()["Kunde GmbH (Zentrale)"].elem.findtext(t("DisplayName")) == "Kunde GmbH (Zentrale)"


def test_cards_pushed_into_the_contacts_folder_itself_are_not_read_back(tmp_path, ews):
    import sqlite3

    mail(ews, "Anfrage", sender=("Kim Kunde", "kim@kunde.example"))
    crm = crm_for(tmp_path, ews, {"alice": options(ews, cards_folder="contacts", folders=["inbox"])},
                  push={"cards": "alice"})
    crm("sync")
    crm("sync")
    assert sum(1 for i in ews.store.items.values() if i.kind == "Contact") == 2  # the customer and Kim
    with sqlite3.connect(tmp_path / "crm.db") as db:
        names = sorted(r[0] for r in db.execute("SELECT name FROM contacts"))
    assert names == ["Kim Kunde"]  # no phantom contact "Kunde GmbH" from the CRM's own card


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_certificates_are_verified_unless_the_config_says_otherwise(tmp_path, monkeypatch):
    emulator, cert, _key = tls_emulator(tmp_path, monkeypatch)
    with emulator:
        mail(emulator, "verschlüsselt")
        assert emulator.url.startswith("https://127.0.0.1:")
        opts = dict(folders=["inbox"], calendar=False, contacts=False, allow_plaintext=False)
        with pytest.raises(SourceUnavailable, match="TLS"):
            pull(emulator, **opts)
        assert [r.subject for r in pull(emulator, ca_file=str(cert), **opts).records] == ["verschlüsselt"]
        assert [r.subject for r in pull(emulator, verify_tls=False, **opts).records] == ["verschlüsselt"]
