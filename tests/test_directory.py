"""Customers, contacts and notes managed from the command line."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from crm_bridge.crm_core.store import Store
from tests.conftest import make_mail


def store_of(crm) -> Store:
    return Store(Path(crm.config).parent / "crm.db")


def footprint(store: Store, name: str) -> dict[str, int]:
    cid = store.conn.execute("SELECT id FROM customers WHERE name=?", (name,)).fetchone()[0]
    one = lambda sql: store.conn.execute(sql, (cid,)).fetchone()[0]  # noqa: E731
    return {"domains": one("SELECT COUNT(*) FROM customer_domains WHERE customer_id=?"),
            "contacts": one("SELECT COUNT(*) FROM contacts WHERE customer_id=?"),
            "interactions": one("SELECT COUNT(*) FROM links WHERE target='customer' AND target_id=?"),
            "tasks": one("SELECT COUNT(*) FROM tasks WHERE customer_id=?")}


@pytest.fixture
def office(crm_env, maildir):
    crm = crm_env(customers=())
    crm("customers", "add", "Kunde GmbH", "--domain", "kunde.example")
    crm("customers", "add", "Kunde Zweigwerk", "--domain", "kunde-zweig.example")
    crm("customers", "add", "Kundenservice AG", "--domain", "kundenservice.example")
    day = datetime(2026, 10, 1, 9, tzinfo=timezone.utc)
    maildir.add(make_mail(sender="Kim <kim@kunde.example>", subject="Angebot", message_id="<a1@kunde.example>", date=day))
    maildir.add(make_mail(sender="Max <max@kunde-zweig.example>", subject="Wartung Halle 2",
                          message_id="<z1@kunde-zweig.example>", date=day))
    maildir.add(make_mail(sender="Max <max@kunde-zweig.example>", subject="Rechnung", message_id="<z2@kunde-zweig.example>",
                          date=day))
    maildir.add(make_mail(sender="Kerstin Berger <k.berger@gmail.com>", subject="Privat: Anfrage Halle",
                          message_id="<g1@gmail.com>", date=day))
    crm("sync")
    return crm


def test_customer_names_match_by_case_and_unique_prefix(office):
    assert "Kunde Zweigwerk" in office("customers", "show", "kunde zw").output
    assert "Kunde Zweigwerk" in office("customers", "show", "KUNDE ZWEIGWERK").output
    assert "Kunde GmbH" in office("customers", "show", "kunde gmbh").output
    ambiguous = office("timeline", "Kunde", ok=False)
    assert ambiguous.exit_code == 1 and "fits 3 customers" in ambiguous.output
    typo = office("timeline", "Kunde Zwiegwerk", ok=False)
    assert "did you mean 'Kunde Zweigwerk'?" in typo.output
    assert office("tasks", "add", "Anrufen", "--customer", "kundens").exit_code == 0
    assert office.json("tasks", "list")[0]["customer"] == "Kundenservice AG"


def test_merging_customers_moves_everything_and_loses_nothing(office):
    office("tasks", "add", "Angebot nachfassen", "--customer", "Kunde Zweig")
    office("note", "add", "--customer", "Kunde Zweig", "Telefonat mit Max: Halle 2 im Mai")
    office("contacts", "attach", "k.berger@gmail.com", "--customer", "Kunde Zweig")
    store = store_of(office)
    keep, other = footprint(store, "Kunde GmbH"), footprint(store, "Kunde Zweigwerk")
    assert other == {"domains": 1, "contacts": 2, "interactions": 4, "tasks": 1}
    store.close()
    result = office("customers", "merge", "Kunde GmbH", "Kunde Zweig")
    assert "1 domains, 2 contacts, 4 interactions, 1 tasks moved" in result.output
    store = store_of(office)
    assert footprint(store, "Kunde GmbH") == {k: keep[k] + other[k] for k in keep}
    assert store.conn.execute("SELECT COUNT(*) FROM customers WHERE name='Kunde Zweigwerk'").fetchone()[0] == 0
    store.close()
    office("sync")  # the rules agree with the merge: nothing comes back, nothing is lost
    store = store_of(office)
    assert footprint(store, "Kunde GmbH") == {k: keep[k] + other[k] for k in keep}
    assert [c["name"] for c in office.json("customers", "list")] == ["Kunde GmbH", "Kundenservice AG"]


def test_remove_asks_and_says_what_goes(office):
    office("tasks", "add", "Angebot nachfassen", "--customer", "Kunde Zweig")
    before = office.json("status")["counts"]
    no = office("customers", "remove", "Kunde Zweig", input="n\n", ok=False)
    assert no.exit_code == 1 and "its 1 domains and its links to 2 mails" in no.output
    assert "its 1 contacts and 1 tasks (1 open) stay" in no.output
    assert office.json("status")["counts"] == before
    yes = office("customers", "remove", "Kunde Zweig", input="y\n")
    assert "removed Kunde Zweigwerk" in yes.output
    after = office.json("status")["counts"]
    assert after["customers"] == before["customers"] - 1
    assert after["contacts"] == before["contacts"] and after["interactions"] == before["interactions"]
    assert after["tasks"] == before["tasks"]
    assert after["links"] == before["links"] - 2
    office("customers", "remove", "Kundenservice", "--yes")
    assert [c["name"] for c in office.json("customers", "list")] == ["Kunde GmbH"]


def test_a_customer_from_the_config_is_changed_there(crm_env):
    crm = crm_env()  # "Kunde GmbH" under [[customers]]
    for args in (("remove", "kunde", "--yes"), ("rename", "kunde", "Kunde AG")):
        result = crm("customers", *args, ok=False)
        assert result.exit_code == 1 and "listed under [[customers]]" in result.output
    assert crm.json("customers", "list")[0]["name"] == "Kunde GmbH"


def test_contacts_attach_detach_merge(office):
    office("contacts", "attach", "K.Berger@gmail.com", "--customer", "kunde gmbh", "--name", "Kerstin Berger")
    assert len(office.json("timeline", "Kunde GmbH")) == 2  # her past mail links at once
    office("sync")  # and what was stored as metadata only (it matched nobody) is filled in
    assert "Privat: Anfrage Halle" in [i["subject"] for i in office.json("timeline", "Kunde GmbH")]
    shown = office.json("contacts", "show", "k.berger@gmail.com")
    assert shown["customer"] == "Kunde GmbH" and shown["interactions"] == 1
    office("contacts", "detach", "k.berger@gmail.com")
    assert "Privat: Anfrage Halle" not in [i["subject"] for i in office.json("timeline", "Kunde GmbH")]
    assert office.json("contacts", "show", "k.berger@gmail.com")["customer"] is None
    # the same person under two addresses
    merged = office("contacts", "merge", "max@kunde-zweig.example", "k.berger@gmail.com")
    assert "1 addresses, 1 interactions, 0 tasks moved" in merged.output
    max_ = office.json("contacts", "show", "k.berger@gmail.com")
    assert set(max_["emails"].split()) == {"max@kunde-zweig.example", "k.berger@gmail.com"}
    assert max_["customer"] == "Kunde Zweigwerk" and max_["interactions"] == 3
    assert "Privat: Anfrage Halle" in [i["subject"] for i in office.json("timeline", "Kunde Zweig")]
    office("sync")
    assert office.json("contacts", "show", "k.berger@gmail.com")["interactions"] == 3
    own = office("contacts", "attach", "anna@nordlicht.example", "--customer", "Kunde GmbH", ok=False)
    assert own.exit_code == 1 and "company's own addresses" in own.output
    unknown = office("contacts", "show", "max@kunde-zweig.exampel", ok=False)
    assert "did you mean max@kunde-zweig.example?" in unknown.output


def test_notes_are_on_the_timeline_searchable_and_explained(office):
    result = office("note", "add", "--customer", "kunde gmbh", "Anruf von Kim: Wartungsvertrag verlängern")
    note_id = int(result.output.split()[1])
    text = office("timeline", "Kunde GmbH").output
    assert f"{note_id:>6}  " in text and "note: Anruf von Kim" in text
    hits = office.json("search", "Wartungsvertrag")
    assert [h["id"] for h in hits] == [note_id]
    assert "by manual" in office("explain", str(note_id)).output
    office("sync")
    assert note_id in [i["id"] for i in office.json("timeline", "Kunde GmbH")]


def test_the_timeline_id_is_what_link_unlink_and_explain_take(office):
    text = office("timeline", "Kunde Zweig").output
    first = text.splitlines()[0]
    iid = first.split()[0]
    assert iid.isdigit()
    assert f"interaction {iid} (mail)" in office("explain", iid).output
    office("unlink", iid, "--customer", "kunde zw")
    assert int(iid) not in [i["id"] for i in office.json("timeline", "Kunde Zweig")]
    office("link", iid, "--customer", "Kundenservice")
    assert int(iid) in [i["id"] for i in office.json("timeline", "Kundenservice AG")]


def test_empty_lists_say_so(crm_env):
    crm = crm_env(customers=())
    assert "no customers yet" in crm("customers", "list").output
    assert "no contacts yet" in crm("contacts", "list").output
    assert "no open tasks" in crm("tasks", "list").output


def test_merging_keeps_the_hand_made_links_of_the_one_kept(office, maildir):
    # a mail to both customers: the one kept is linked, the other was unlinked by hand
    maildir.add(make_mail(sender="Kim <kim@kunde.example>", to="Max <max@kunde-zweig.example>",
                          subject="Gemeinsam", message_id="<both@kunde.example>"))
    office("sync")
    office("unlink", "both@kunde.example", "--customer", "Kunde Zweig")
    office("customers", "merge", "Kunde GmbH", "Kunde Zweig")
    office("contacts", "attach", "kim@kunde.example", "--customer", "Kunde GmbH")  # re-links Kim's mail
    assert "Gemeinsam" in [i["subject"] for i in office.json("timeline", "Kunde GmbH")]


def test_the_timeline_shows_local_time(office, monkeypatch):
    import time

    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        text = office("timeline", "Kunde GmbH").output
    finally:
        monkeypatch.undo()
        time.tzset()
    assert "2026-10-01 11:00  mail <- kim@kunde.example: Angebot" in text  # sent 09:00 UTC, summer time
