"""The contacts side of `crm serve` over HTTP: a contact's page and timeline, edit, attach/detach,
merge, notes, and the API under /api/contacts (access, CSRF, escaping, nothing lost)."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from crm_bridge.crm_core.contacts import ContactReads, footprint
from crm_bridge.crm_core.store import Store
from crm_bridge.crm_core.users import Users
from crm_bridge.sync.config import load_config
from tests.dav_servers import radicale  # noqa: F401
from tests.web_fixtures import demo_store, login, make_app
from tests.web_fixtures import app, store  # noqa: F401  (fixtures)

BRODERSEN = "k.brodersen@stadtwerke-lindenau.de"  # sender of the hostile mail, a contact of Stadtwerke Lindenau
BRANDT = "t.brandt@stadtwerke-lindenau.de"  # 31 items, a recurring appointment among them


@pytest.fixture(scope="module")
def config_path(tmp_path_factory):
    return demo_store(tmp_path_factory.mktemp("webcontacts"))


def writes(store) -> list[tuple[str, str]]:
    """Every contact write route with a valid target (POST)."""
    kid = store.contact_id(BRODERSEN)
    other = store.contact_id("n.krueger@stadtwerke-lindenau.de")
    return [
        (f"/contacts/{kid}/edit", "name=Evil&title=x&phones=1"), (f"/contacts/{kid}/customer", "action=detach"),
        (f"/contacts/{kid}/customer", "action=attach&customer=Hotel Seeblick"),
        (f"/contacts/{kid}/merge", f"other={other}"), (f"/contacts/{kid}/notes", "text=hello"),
        (f"/api/contacts/{kid}/notes", "text=hello"),
    ]


def state(store, kid: int) -> tuple:
    return (store.conn.execute("SELECT name, title, phones, customer_id FROM contacts WHERE id=?", (kid,)).fetchone(),
            store.counts(), store._one("SELECT COUNT(*) FROM interactions WHERE kind='note'"))


def test_unauthenticated_requests_are_sent_to_the_login(app, store):
    client = app.test_client()
    kid = store.contact_id(BRODERSEN)
    before = state(store, kid)
    assert client.get(f"/contacts/{kid}").headers["Location"].startswith("/login")
    for path, body in writes(store):
        done = client.post(path, data=body, content_type="application/x-www-form-urlencoded")
        if path.startswith("/api/"):
            assert done.status_code == 401 and "error" in done.json, path
        else:
            assert done.status_code == 302 and done.headers["Location"].startswith("/login"), path
    for path in (f"/api/contacts?email={BRODERSEN}", f"/api/contacts/{kid}", f"/api/contacts/{kid}/timeline",
                 "/api/contacts"):
        assert client.get(path).status_code == 401, path
    assert state(store, kid) == before


def test_every_write_without_the_csrf_token_is_refused(app, store):
    client = app.test_client()
    login(client, "bob")
    kid = store.contact_id(BRODERSEN)
    before = state(store, kid)
    for path, body in writes(store):
        assert client.post(path, data=body, content_type="application/x-www-form-urlencoded").status_code == 403, path
        forged = client.post(path, data=body + "&csrf=forged", content_type="application/x-www-form-urlencoded")
        assert forged.status_code == 403, path
    assert client.post(f"/api/contacts/{kid}/notes", json={"text": "x"}).status_code == 403
    assert state(store, kid) == before


def test_the_contact_page_shows_who_they_are_and_their_timeline_escaped_in_local_time(app, store):
    client = app.test_client()
    login(client, "bob")
    kid = store.contact_id(BRODERSEN)
    page = client.get(f"/contacts/{kid}").text
    assert "Kai Brodersen" in page and BRODERSEN in page and "Stadtwerke Lindenau GmbH" in page
    assert f'href="/customers/{store.customer_id("Stadtwerke Lindenau GmbH")}"' in page
    # the hostile mail: subject, sender name and snippet are text; its time is Berlin's (09:00 UTC)
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Angebot Pumpe" in page
    assert "&lt;b&gt;Evil&lt;/b&gt; Brodersen" in page
    assert "<script>" not in page and "<img src=x" not in page and "<b>Evil</b>" not in page
    assert "02.11.2026 10:00" in page and "02.11.2026 09:00" not in page
    assert "Warum zugeordnet" in page  # why linked, as on the customer page
    # linked from the contacts list, the customer page's contact list and its timeline's participants
    link = f'href="/contacts/{kid}"'
    assert link in client.get("/contacts?q=brodersen").text
    customer_page = client.get(f"/customers/{store.customer_id('Stadtwerke Lindenau GmbH')}").text
    assert customer_page.count(link) >= 2
    assert client.get("/contacts/999999").status_code == 404


def test_the_contact_timeline_shows_what_the_customer_page_shows_and_pages_cover_it_once(app, store):
    client = app.test_client()
    login(client)
    kid = store.contact_id(BRANDT)
    cid = store.customer_id("Stadtwerke Lindenau GmbH")
    seen: list[dict] = []
    url = f"/api/contacts/{kid}/timeline?limit=7"
    while url:
        page = client.get(url).json
        seen += page["items"]
        url = f"/api/contacts/{kid}/timeline?limit=7&after={quote(page['next'])}" if page["next"] else ""
    keys = [(i["src"], i["id"], i["rid"]) for i in seen]
    assert len(keys) == len(set(keys)) > 7
    linked = {i for (i,) in store.conn.execute("SELECT interaction_id FROM links WHERE target='contact' AND target_id=?",
                                               (kid,))}
    assert {k[1] for k in keys if k[0] == 0} == linked
    dates = [i["d"] or "" for i in seen]
    assert dates == sorted(dates, reverse=True)  # newest first
    # each item as the customer's timeline has it: the same subject and snippet (the same visibility)
    theirs = client.get(f"/api/customers/{cid}/timeline?limit=500&contact={kid}").json["items"]
    by_key = {(i["src"], i["id"], i["rid"]): i for i in theirs}
    for item in seen:
        if item["src"] == 0:
            same = by_key[(0, item["id"], item["rid"])]
            assert (item["subject"], item["snippet"], item["visibility"]) == (
                same["subject"], same["snippet"], same["visibility"])


def test_edit_a_contact_name_role_and_phones(app, store):
    client = app.test_client()
    token = login(client, "bob")
    kid = store.contact_id("claudia.richter@stadtwerke-lindenau.de")
    done = client.post(f"/contacts/{kid}/edit", data={"csrf": token, "name": "Claudia <i>Richter</i>",
                                                     "title": "Leitung <Einkauf>",
                                                     "phones": "+49 30 1234567\n030 7654321, +49 30 1234567"})
    assert done.status_code == 302 and done.headers["Location"] == f"/contacts/{kid}"
    info = ContactReads(store).contact(kid)
    assert (info["name"], info["title"], info["phones"]) == ("Claudia <i>Richter</i>", "Leitung <Einkauf>",
                                                            ["+49 30 1234567", "030 7654321"])
    page = client.get(f"/contacts/{kid}").text
    assert "Claudia &lt;i&gt;Richter&lt;/i&gt;" in page and "Leitung &lt;Einkauf&gt;" in page
    assert "<i>Richter</i>" not in page and "030 7654321" in page and "Gespeichert." in page
    # a contact needs a name; a phone number needs a digit: refused, nothing changed
    client.post(f"/contacts/{kid}/edit", data={"csrf": token, "name": "  ", "title": "", "phones": ""})
    assert "Ein Kontakt braucht einen Namen." in client.get(f"/contacts/{kid}").text
    client.post(f"/contacts/{kid}/edit", data={"csrf": token, "name": "C. Richter", "phones": "call me"})
    assert "Eine Telefonnummer hat Ziffern" in client.get(f"/contacts/{kid}").text
    assert ContactReads(store).contact(kid)["name"] == "Claudia <i>Richter</i>"
    listed = client.get("/contacts?q=richter").text
    assert "Claudia &lt;i&gt;Richter&lt;/i&gt;" in listed and "<i>Richter</i>" not in listed


def test_attach_and_detach_from_the_contact_page(app, store):
    client = app.test_client()
    token = login(client, "bob")
    kid = store.contact_id("lisa.mertens84@web.de")  # a freemail contact without a customer, with mail
    hotel = store.customer_id("Hotel Seeblick Plön GmbH")
    before = len(store.timeline(str(hotel), limit=0))
    mails = store._one("SELECT COUNT(*) FROM links WHERE target='contact' AND target_id=?", (kid,))
    client.post(f"/contacts/{kid}/customer", data={"csrf": token, "customer": "Hotel Seeblick"})
    assert ContactReads(store).contact(kid)["customer_id"] == hotel
    assert len(store.timeline(str(hotel), limit=0)) == before + mails  # their mail is the customer's at once
    assert "Hotel Seeblick Plön GmbH" in client.get(f"/contacts/{kid}").text
    client.post(f"/contacts/{kid}/customer", data={"csrf": token, "action": "detach"})
    assert ContactReads(store).contact(kid)["customer_id"] is None
    assert len(store.timeline(str(hotel), limit=0)) == before
    client.post(f"/contacts/{kid}/customer", data={"csrf": token, "customer": "no such customer at all"})
    assert ContactReads(store).contact(kid)["customer_id"] is None


def test_a_note_on_a_contact_is_on_both_timelines_and_searchable(app, store):
    client = app.test_client()
    token = login(client, "bob")
    kid = store.contact_id("n.krueger@stadtwerke-lindenau.de")
    cid = store.customer_id("Stadtwerke Lindenau GmbH")
    client.post(f"/contacts/{kid}/notes", data={"csrf": token, "text": "Besuch bei Frau Krüger: <Zählerschrank>\nmehr"})
    note = store.search("Zählerschrank")[0]
    assert note["kind"] == "note" and store._one("SELECT logged_by FROM interactions WHERE id=?", (note["id"],)) == "bob"
    assert {(t, i) for t, i in store.conn.execute("SELECT target, target_id FROM links WHERE interaction_id=?",
                                                  (note["id"],))} == {("contact", kid), ("customer", cid)}
    for path in (f"/contacts/{kid}", f"/customers/{cid}", "/search?q=Zählerschrank"):
        page = client.get(path).text
        assert "Besuch bei Frau Krüger: &lt;Zählerschrank&gt;" in page and "<Zählerschrank>" not in page, path
    # a contact without a customer: the note is theirs alone
    lone = store.contact_id("elektro-fischer@gmx.de")
    client.post(f"/contacts/{lone}/notes", data={"csrf": token, "text": "Fischer angerufen"})
    lone_note = store.search("Fischer angerufen")[0]
    assert store.conn.execute("SELECT target, target_id FROM links WHERE interaction_id=?",
                              (lone_note["id"],)).fetchall() == [("contact", lone)]
    assert "Fischer angerufen" in client.get(f"/contacts/{lone}").text
    assert f'href="/contacts/{lone}"' in client.get("/search?q=Fischer angerufen").text  # found, with who it is about
    # an empty note is refused
    notes = store._one("SELECT COUNT(*) FROM interactions WHERE kind='note'")
    client.post(f"/contacts/{kid}/notes", data={"csrf": token, "text": "   "})
    assert store._one("SELECT COUNT(*) FROM interactions WHERE kind='note'") == notes


def test_the_contacts_api_by_address_id_and_notes(app, store):
    token = Users(store).new_token("bob")
    auth = {"Authorization": f"Bearer {token}"}
    client = app.test_client()
    found = client.get("/api/contacts?email=T.Brandt@Stadtwerke-Lindenau.de", headers=auth)
    assert found.status_code == 200
    assert found.json["name"] == "Thomas Brandt" and found.json["customer"] == "Stadtwerke Lindenau GmbH"
    assert found.json["customer_info"]["domains"] == ["stadtwerke-lindenau.de"]
    kid = found.json["id"]
    assert client.get(f"/api/contacts/{kid}", headers=auth).json["emails"] == [BRANDT]
    assert client.get("/api/contacts?email=nobody@nowhere.example", headers=auth).status_code == 404
    assert client.get("/api/contacts/999999", headers=auth).json == {"error": "no contact 999999"}
    listed = client.get("/api/contacts?q=brandt", headers=auth).json
    assert [k["id"] for k in listed] == [kid] and listed[0]["emails"] == [BRANDT]
    made = client.post(f"/api/contacts/{kid}/notes", json={"text": "per API <notiert>"}, headers=auth)
    assert made.status_code == 201
    top = client.get(f"/api/contacts/{kid}/timeline?limit=500", headers=auth).json["items"]
    assert made.json["id"] in [i["id"] for i in top if i["kind"] == "note"]
    assert any(r["id"] == made.json["id"] for r in client.get("/api/search?q=notiert", headers=auth).json)
    assert client.post(f"/api/contacts/{kid}/notes", json={"text": ""}, headers=auth).status_code == 400
    assert client.post("/api/contacts/999999/notes", json={"text": "x"}, headers=auth).status_code == 404
    # a session writes with the X-CSRF-Token header
    browser = app.test_client()
    csrf = login(browser, "anna")
    assert browser.post(f"/api/contacts/{kid}/notes", json={"text": "y"}).status_code == 403
    assert browser.post(f"/api/contacts/{kid}/notes", json={"text": "y"}, headers={"X-CSRF-Token": csrf}).status_code == 201


def test_contact_merge_loses_nothing(tmp_path):
    config_path = demo_store(tmp_path)
    app = make_app(config_path)
    client = app.test_client()
    token = login(client, "bob")
    store = Store(load_config(str(config_path)).store_path)
    keep, other = store.contact_id(BRANDT), store.contact_id("haustechnik@stadtwerke-lindenau.de")
    cid = store.customer_id("Stadtwerke Lindenau GmbH")
    # give the one merged away a note, a task, phones, a manual link and a second address
    client.post(f"/contacts/{other}/notes", data={"csrf": token, "text": "Notiz zu Herrn Müller"})
    client.post(f"/contacts/{other}/edit", data={"csrf": token, "name": "Jürgen Müller", "phones": "0301111\n0302222"})
    client.post(f"/contacts/{keep}/edit", data={"csrf": token, "name": "Thomas Brandt", "phones": "0302222\n0303333"})
    task = store.add_task("Müller anrufen", customer_id=cid)
    store.conn.execute("UPDATE tasks SET contact_id=? WHERE id=?", (other, task))
    store.conn.commit()
    client.post("/contacts", data={"csrf": token, "email": "j.mueller.privat@gmail.com", "customer": str(cid)})
    store.conn.execute("UPDATE contact_addresses SET contact_id=? WHERE email='j.mueller.privat@gmail.com'", (other,))
    store.conn.commit()
    hostile = store.interaction_id("hostile-1@stadtwerke-lindenau.de")
    store.set_link(hostile, "contact", other, "link")
    store._index = None

    def items(kid: int) -> set[int]:
        return {i for (i,) in store.conn.execute(
            "SELECT interaction_id FROM links WHERE target='contact' AND target_id=?", (kid,))}

    a, b = footprint(store, keep), footprint(store, other)
    union = items(keep) | items(other)
    counts, customer_items = store.counts(), len(store.timeline(str(cid), limit=0))
    assert b["notes"] == 1 and b["tasks"] == 1 and b["addresses"] >= 2 and b["participations"] > 0
    done = client.post(f"/contacts/{keep}/merge", data={"csrf": token, "other": "haustechnik@stadtwerke-lindenau.de"})
    assert done.headers["Location"] == f"/contacts/{keep}"
    merged = footprint(store, keep)
    assert store._one("SELECT id FROM contacts WHERE id=?", (other,)) is None
    for key in ("addresses", "notes", "participations", "tasks"):
        assert merged[key] == a[key] + b[key], (key, a, b, merged)
    assert merged["phones"] == 3  # 0302222 once
    assert items(keep) == union and not items(other)
    assert store._one("SELECT action FROM link_overrides WHERE interaction_id=? AND target='contact' AND target_id=?",
                      (hostile, keep)) == "link"
    after = store.counts()
    assert after["contacts"] == counts["contacts"] - 1 and after["interactions"] == counts["interactions"]
    assert after["tasks"] == counts["tasks"] and len(store.timeline(str(cid), limit=0)) == customer_items
    page = client.get(f"/contacts/{keep}").text
    assert "Notiz zu Herrn Müller" in page and "j.mueller.privat@gmail.com" in page
    # merging a contact with itself, or with one that is not there: refused, nothing changes
    client.post(f"/contacts/{keep}/merge", data={"csrf": token, "other": str(keep)})
    client.post(f"/contacts/{keep}/merge", data={"csrf": token, "other": "nobody@nowhere.example"})
    assert "Diesen Kontakt gibt es nicht." in client.get(f"/contacts/{keep}").text
    assert footprint(store, keep) == merged and store.counts() == after
    # a sync afterwards: the address-book card of the merged-away contact updates the kept one, no new contact
    from tests.conftest import Crm

    Crm(config_path)("sync")
    assert store.counts()["contacts"] == after["contacts"]
    assert store.contact_id("haustechnik@stadtwerke-lindenau.de") == keep
    store.close()


def test_a_long_contact_timeline_pages_newest_first(tmp_path):
    from datetime import datetime, timedelta, timezone

    from crm_bridge.crm_core.notes import add_contact_note

    config_path = demo_store(tmp_path)
    store = Store(load_config(str(config_path)).store_path)
    kid = store.contact_id("n.krueger@stadtwerke-lindenau.de")
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    for n in range(130):
        add_contact_note(store, kid, f"Notiz {n}", "bob", when=start + timedelta(days=n))
    client = make_app(config_path).test_client()
    login(client)
    texts, url, pages = [], f"/contacts/{kid}?kind=note", 0
    while url:
        page = client.get(url).text
        texts += [int(t.split("<")[0]) for t in page.split('<div class="subject">Notiz ')[1:]]
        pages += 1
        found = page.split('id="older"')[0].rsplit('href="', 1) if 'id="older"' in page else None
        url = found[1].split('"')[0].replace("&amp;", "&") if found else ""
    assert pages == 3 and texts == list(range(129, -1, -1))
    store.close()



def test_the_pushed_card_of_a_merged_away_contact_is_emptied_once(radicale, tmp_path, monkeypatch):  # noqa: F811
    """[push] cards: the card of the contact merged away keeps no address (the kept one has them all)
    and says it is no longer kept; pushed once, then left alone."""
    from crm_bridge.crm_core import directory
    from tests.conftest import Crm, write_config

    monkeypatch.setenv("CRM_TEST_CONTACTS_PASSWORD", radicale.password)
    people, crm_book = radicale.unique("kontakte"), radicale.unique("crm")
    people_url = radicale.make_addressbook(people)
    for uid, name, email in (("kim-1", "Kim Kunde", "kim@kunde.example"), ("kim-2", "K. Kunde", "k.kunde@kunde.example")):
        radicale.put(people_url, f"{uid}.vcf", f"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:{uid}\r\nFN:{name}\r\n"
                                               f"ORG:Kunde GmbH\r\nEMAIL:{email}\r\nEND:VCARD\r\n")
    config = write_config(
        tmp_path / "crm.toml", customers=(("Kunde GmbH", ["kunde.example"]),), store=str(tmp_path / "crm.db"),
        push={"cards": "book"},
        sources={"book": {"type": "carddav", "url": radicale.url, "username": radicale.user,
                          "password_env": "CRM_TEST_CONTACTS_PASSWORD", "allow_plaintext": True,
                          "cards_addressbook": crm_book}})
    crm = Crm(config)
    crm("sync")

    def pushed() -> dict[str, str]:
        texts = [radicale.get(h).text.replace("\r\n ", "") for h in radicale.hrefs(f"{radicale.contacts_home}{crm_book}/")]
        return {t.split("UID:", 1)[1].split("\r\n", 1)[0]: t for t in texts}

    assert len(pushed()) == 3  # the customer and its two contacts
    store = Store(tmp_path / "crm.db")
    keep, other = store.contact_id("kim@kunde.example"), store.contact_id("k.kunde@kunde.example")
    directory.merge_contacts(store, keep, other)
    store.close()
    crm("sync")
    cards = pushed()
    gone, kept = cards[f"crm-bridge-contact-{other}"], cards[f"crm-bridge-contact-{keep}"]
    assert "EMAIL" not in gone and "ORG" not in gone and "no longer keeps this card" in gone
    assert "EMAIL:kim@kunde.example" in kept and "EMAIL:k.kunde@kunde.example" in kept
    by_source = {r["source"]: r for r in crm.json("sync")["results"]}
    assert by_source["book (cards)"]["updated"] == 0  # pushed once, then left alone


def test_a_refused_customer_rename_merge_or_attach_is_said_in_the_page_language(app, store):
    client = app.test_client()
    token = login(client, "bob")
    cid = store.add_customer("Testfirma Sprachprobe", ["sprachprobe.example"])
    client.post(f"/customers/{cid}/rename", data={"csrf": token, "name": "  "})
    assert "Ein Kunde braucht einen Namen." in client.get(f"/customers/{cid}").text
    client.post(f"/customers/{cid}/merge", data={"csrf": token, "other": str(cid)})
    assert "Ein Kunde kann nicht mit sich selbst zusammengeführt werden." in client.get(f"/customers/{cid}").text
    kid = store.contact_id(BRODERSEN)
    client.post(f"/contacts/{kid}/customer", data={"csrf": token, "action": "attach", "customer": " "})
    assert "Bitte einen Kunden angeben." in client.get(f"/contacts/{kid}").text
    assert store.customer_id("Testfirma Sprachprobe") == cid
