"""[push] cards for m365 sources: customers and contacts into an Outlook contacts folder through Graph."""

from __future__ import annotations

import copy
import sqlite3
from datetime import timedelta

import pytest

from crm_bridge.connectors.base import ConfigError, make_connector
from crm_bridge.crm_core.records import CardPush
from crm_bridge.connectors.graphpush import CARD_PROPERTY
from tests.graph_emulator import GraphEmulator
from tests.test_contract import View
from tests.test_m365 import WHEN, _server, crm_for, graph, mail, options  # noqa: F401 - fixtures

KIM = ("Kim Kunde", "kim@kunde.example")


def folder_contacts(graph: GraphEmulator, name: str = "CRM Kunden") -> dict[str, dict]:
    mb = graph.store.mailbox("anna@firma.de")
    [folder] = [c for c in mb.contact_folders.values() if c.name == name]
    return {c["displayName"]: c for c in folder.items.values()}


def test_cards_go_to_a_contacts_folder_once_updated_in_place_and_user_edits_are_respected(tmp_path, graph):
    mail(graph, "Anfrage", sender=KIM)
    crm = crm_for(tmp_path, {"anna": options(graph, cards_folder="CRM Kunden", folders=["inbox"])},
                  push={"cards": "anna"}, followup={"after_appointment_days": 0, "unanswered_days": 0})
    crm("sync")
    first = copy.deepcopy(folder_contacts(graph))
    assert set(first) == {"Kunde GmbH", "Kim Kunde"}
    kim = first["Kim Kunde"]
    assert kim["companyName"] == "Kunde GmbH" and kim["givenName"] == "Kim" and kim["surname"] == "Kunde"
    assert [e["address"] for e in kim["emailAddresses"]] == ["kim@kunde.example"]
    assert "Customer: Kunde GmbH" in kim["personalNotes"]
    assert [p["id"] for p in kim["_extended"]] == [CARD_PROPERTY] and kim["_extended"][0]["value"].startswith("crm-bridge-")
    assert first["Kunde GmbH"]["givenName"] is None and first["Kunde GmbH"]["businessHomePage"] == "https://kunde.example"
    mb = graph.store.mailbox("anna@firma.de")
    [folder] = mb.contact_folders.values()
    assert folder.parent == mb.contacts.id
    # ten more runs, each after a new mail from Kim (the cards' "last contact" changes): updated in place
    for n in range(10):
        mail(graph, f"Anfrage {n}", sender=KIM, message_id=f"<n{n}@kunde.example>", date=WHEN + timedelta(days=n + 1))
        crm("sync")
    again = folder_contacts(graph)
    assert set(again) == {"Kunde GmbH", "Kim Kunde"} and len(folder.items) == 2
    assert again["Kim Kunde"]["id"] == kim["id"] and again["Kim Kunde"]["personalNotes"] != kim["personalNotes"]
    assert graph.store.mailbox("anna@firma.de").contacts.items == {}  # nothing in the user's own Contacts
    # the user edits the customer's card in Outlook: it stays as the user left it, and the CRM says so once
    customer = again["Kunde GmbH"]
    graph.store.update(customer["id"], mb, displayName="Kunde GmbH (Zentrale)")
    mail(graph, "Dritte Anfrage", sender=KIM, message_id="<drei@kunde.example>", date=WHEN + timedelta(days=30))
    crm("sync")
    crm("sync")
    after = folder_contacts(graph)
    assert set(after) == {"Kunde GmbH (Zentrale)", "Kim Kunde"}
    assert after["Kunde GmbH (Zentrale)"]["changeKey"] == graph.store.mailbox("anna@firma.de").find(customer["id"])[1]["changeKey"]
    with sqlite3.connect(tmp_path / "crm.db") as db:
        assert db.execute("SELECT count(*) FROM card_pushes WHERE content_hash = 'user-edited'").fetchone()[0] == 1


def a_card(uid: str = "crm-bridge-contact-1", name: str = "Kim Kunde", **kw) -> CardPush:
    text = ("BEGIN:VCARD\r\nVERSION:4.0\r\nUID:" + uid + f"\r\nFN:{name}\r\nORG:Kunde GmbH\r\n"
            "EMAIL:kim@kunde.example\r\nTEL:+49 30 1234\r\nNOTE:Customer: Kunde GmbH.\r\nEND:VCARD\r\n")
    return CardPush(uid=uid, vcard=text, **kw)


def test_a_crash_between_the_post_and_the_local_commit_still_leaves_one_contact(graph):
    conn = make_connector("m365", options(graph, cards_folder="CRM"))
    [res] = conn.push_cards([a_card()], View())
    assert res.ok and res.scope == "Contacts/CRM" and res.etag
    for n in range(10):  # the local commit never happened: pushed again without href or etag
        [again] = conn.push_cards([a_card(name=f"Kim Kunde {n}")], View())
        assert again.ok and again.href == res.href
    conn.close()
    contacts = folder_contacts(graph, "CRM")
    assert list(contacts) == ["Kim Kunde 9"] and contacts["Kim Kunde 9"]["businessPhones"] == ["+49 30 1234"]
    # the folder exists now: found, not created again
    assert len(graph.store.mailbox("anna@firma.de").contact_folders) == 1


@pytest.mark.parametrize("status", [500, 502, 504])
def test_a_contact_post_answered_with_a_5xx_is_not_repeated_and_the_next_run_finds_it(graph, status):
    conn = make_connector("m365", options(graph, cards_folder="CRM"))
    conn.push_cards([a_card("card-0", name="Nina Neu")], View())  # the folder exists
    graph.fail(status, "UnknownError", match="/contacts", method="POST", done=True, retry_after=1, times=5)
    first, second = conn.push_cards([a_card("card-1"), a_card("card-2", name="Olaf Ohm")], View())
    assert not first.ok and not second.ok and all(f"HTTP {status}" in (r.error or "") for r in (first, second))
    graph.faults.clear()
    results = conn.push_cards([a_card("card-1"), a_card("card-2", name="Olaf Ohm")], View())  # the next run
    conn.close()
    assert all(r.ok for r in results)
    assert sorted(folder_contacts(graph, "CRM")) == ["Kim Kunde", "Nina Neu", "Olaf Ohm"]


def test_a_card_with_more_addresses_than_graph_takes_keeps_the_first_three(graph):
    too_many = "".join(f"EMAIL:k{n}@kunde.example\r\n" for n in range(3))
    conn = make_connector("m365", options(graph, cards_folder="CRM"))
    good = a_card("crm-bridge-contact-2", "Gut")
    bad = CardPush(uid="crm-bridge-contact-3", vcard=a_card("crm-bridge-contact-3").vcard.replace("END:VCARD", too_many + "END:VCARD"))
    results = conn.push_cards([bad, good], View())
    conn.close()
    assert [r.ok for r in results] == [True, True]  # at most three addresses are sent: Graph's limit
    assert len(graph.store.mailbox("anna@firma.de").find(results[0].href)[1]["emailAddresses"]) == 3


def test_cards_folder_must_be_below_contacts(graph):
    with pytest.raises(ConfigError, match="below Contacts"):
        make_connector("m365", options(graph, cards_folder="Contacts"))


def test_contact_answers_have_the_reference_keys(graph):
    from tests.test_graph_emulator import SAMPLES, item_keys, samples

    if not SAMPLES.is_file():
        pytest.skip("the Graph reference samples are not on this machine")
    table = samples()
    conn = make_connector("m365", options(graph, cards_folder="CRM"))
    [res] = conn.push_cards([a_card()], View())
    folder = next(iter(graph.store.mailbox("anna@firma.de").contact_folders))
    listed = conn._request(f"{conn._user()}/contactFolders/{folder}/contacts")
    made = conn._request(f"{conn._user()}/contactFolders/{folder}/contacts", "POST", {"displayName": "Neu"})
    conn.close()
    assert item_keys(table[("GET", "contactFolders/*/contacts")]["body"]) <= item_keys(listed)
    assert set(table[("POST", "contactFolders/*/contacts")]["body"]) <= set(made)
    assert res.ok
