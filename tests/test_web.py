"""`crm serve` over HTTP (Flask's test client on the demo store): access, CSRF, escaping, every write."""

from __future__ import annotations

from urllib.parse import quote

import json
import re
import urllib.request

import pytest

from crm_bridge.crm_core.pages import PageReads
from crm_bridge.crm_core.store import Store
from crm_bridge.crm_core.users import Users, check_password
from crm_bridge.sync.config import load_config
from crm_bridge.web import i18n
from tests.conftest import Crm
from tests.web_fixtures import HOSTILE_SUBJECT, PASSWORD, csrf_of, demo_store, free_port, login, make_app, start_server
from tests.web_fixtures import app, store  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def config_path(tmp_path_factory):
    return demo_store(tmp_path_factory.mktemp("web"))


def customer_id(store, name="Stadtwerke Lindenau GmbH") -> int:
    return store.customer_id(name)


def hostile_id(store) -> int:
    return store.interaction_id("hostile-1@stadtwerke-lindenau.de")


def writes(store) -> list[tuple[str, str]]:
    """Every write route with a valid target (method POST)."""
    cid, iid = customer_id(store), hostile_id(store)
    task = store.add_task("a task to close", customer_id=cid)
    return [
        ("/logout", ""), ("/language", "lang=en"), (f"/customers/{cid}/notes", "text=hello"),
        (f"/interactions/{iid}/link", f"customer={cid}&action=unlink"), ("/tasks", "title=x"),
        (f"/tasks/{task}/done", ""), (f"/tasks/{task}/edit", "title=evil"), (f"/api/tasks/{task}", "title=evil"), ("/admin/users", "name=mallory&password=password123&role=admin"),
        ("/admin/users/bob/remove", ""), ("/api/tasks", "title=x"), (f"/api/tasks/{task}/done", ""),
        (f"/api/customers/{cid}/notes", "text=x"), (f"/api/interactions/{iid}/link", f"customer_id={cid}"),
        ("/review", "email=x@y.example&action=dismiss"), ("/customers", "name=Evil&domains=evil.example"),
        (f"/customers/{cid}/rename", "name=Evil"), (f"/customers/{cid}/merge", "other=2"),
        (f"/customers/{cid}/remove", ""), (f"/customers/{cid}/domains", "domain=evil.example"),
        ("/contacts", f"email=evil@gmail.com&customer={cid}"),
        ("/review", "email=k.brodersen@stadtwerke-lindenau.de&action=block"), (f"/customers/{cid}/owner", "owner=evil"),
        ("/admin/blocks/unblock", "entry=betriebsrat@stadtwerke-lindenau.de"), ("/admin/users/bob/change", "role=admin"),
    ]


def test_unauthenticated_requests_are_sent_to_the_login(app, store):
    client = app.test_client()
    for path in ("/", "/customers", f"/customers/{customer_id(store)}", "/tasks", "/search?q=x", "/admin/",
                 "/review", f"/customers/{customer_id(store)}/remove", "/contacts"):
        done = client.get(path)
        assert done.status_code == 302 and done.headers["Location"].startswith("/login"), path
    for path, body in writes(store):
        if path in ("/logout", "/language"):
            continue
        done = client.post(path, data=body, content_type="application/x-www-form-urlencoded")
        if path.startswith("/api/"):
            assert done.status_code == 401 and done.json == {"error": done.json["error"]}, path
        else:
            assert done.status_code == 302 and done.headers["Location"].startswith("/login"), path
    assert client.get("/api/customers?email=x@stadtwerke-lindenau.de").status_code == 401
    assert Users(store).get("mallory") is None


def test_every_write_without_the_csrf_token_is_refused(app, store):
    client = app.test_client()
    login(client, "anna")
    before = store.counts()
    for path, body in writes(store):
        done = client.post(path, data=body, content_type="application/x-www-form-urlencoded")
        assert done.status_code == 403, (path, done.status_code)
        wrong = client.post(path, data=body + "&csrf=forged", content_type="application/x-www-form-urlencoded")
        assert wrong.status_code == 403, path
    after = store.counts()
    assert after["interactions"] == before["interactions"] and after["links"] == before["links"]
    assert after["customers"] == before["customers"] and not store._one("SELECT COUNT(*) FROM review_dismissed")
    assert after["contacts"] == before["contacts"] and not store._one("SELECT COUNT(*) FROM blocks")
    assert Users(store).get("bob") is not None and Users(store).get("mallory") is None
    assert client.get("/customers").status_code == 200  # still logged in: /logout without a token did nothing
    # the login form needs its token too (no login CSRF)
    assert app.test_client().post("/login", data={"name": "anna", "password": PASSWORD}).status_code == 403


def test_a_staff_account_is_refused_admin_pages(app):
    client = app.test_client()
    token = login(client, "bob")
    assert client.get("/admin/").status_code == 403
    assert client.get("/admin/users").status_code == 403
    assert client.post("/admin/users", data={"csrf": token, "name": "eve", "password": "password123",
                                             "role": "admin"}).status_code == 403
    assert client.post("/admin/users/anna/remove", data={"csrf": token}).status_code == 403
    assert "Verwaltung" not in client.get("/customers").text  # no admin link either
    admin = app.test_client()
    login(admin, "anna")
    assert admin.get("/admin/").status_code == 200 and "anna-mail" in admin.get("/admin/").text


def test_hostile_subjects_and_names_are_shown_as_text(app, store):
    client = app.test_client()
    login(client)
    for path in (f"/customers/{customer_id(store)}", "/search?q=Pumpe"):
        page = client.get(path).text
        assert "&lt;script&gt;alert(1)&lt;/script&gt; Angebot Pumpe" in page, path
        assert "<script>" not in page and "<img src=x" not in page and "<b>Evil</b>" not in page, path
    api = client.get(f"/api/customers/{customer_id(store)}/timeline?limit=500")
    assert api.content_type == "application/json"
    assert HOSTILE_SUBJECT in [i["subject"] for i in api.json["items"]]
    assert "script-src 'self'" in client.get("/customers").headers["Content-Security-Policy"]


def test_notes_links_and_tasks_from_the_pages(app, store):
    client = app.test_client()
    token = login(client, "bob")
    cid, iid = customer_id(store), hostile_id(store)
    done = client.post(f"/customers/{cid}/notes", data={"csrf": token, "text": "Anruf: Rückruf <morgen>\nDetails"})
    assert done.status_code == 302
    page = client.get(f"/customers/{cid}").text
    assert "Anruf: Rückruf &lt;morgen&gt;" in page
    assert "Rückruf" in client.get("/search?q=Rückruf").text
    note = store.search("Rückruf")[0]
    assert note["kind"] == "note" and store._one("SELECT logged_by FROM interactions WHERE id=?", (note["id"],)) == "bob"

    # unlink by hand: gone from the timeline and stays gone; link again: back
    assert f"/interactions/{iid}/link" in client.get(f"/customers/{cid}?kind=mail").text
    client.post(f"/interactions/{iid}/link", data={"csrf": token, "customer": cid, "action": "unlink"})
    assert cid not in [c["id"] for c in PageReads(store).interaction_customers(iid)]
    assert f"/interactions/{iid}/link" not in client.get(f"/customers/{cid}?kind=mail").text
    client.post(f"/interactions/{iid}/link", data={"csrf": token, "customer": "Stadtwerke Lindenau GmbH",
                                                   "action": "link"})
    assert cid in [c["id"] for c in PageReads(store).interaction_customers(iid)]
    assert store._one("SELECT reason FROM links WHERE interaction_id=? AND target='customer'", (iid,)) == "manual"

    # a task: made by bob is bob's; done from the list
    client.post("/tasks", data={"csrf": token, "title": "Angebot <schicken>", "customer": cid, "due": "2026-12-01"})
    mine = client.get("/tasks?who=mine").text
    assert "Angebot &lt;schicken&gt;" in mine
    task = next(t for t in store.tasks("open") if t["title"] == "Angebot <schicken>")
    assert "Angebot &lt;schicken&gt;" not in app.test_client().get("/tasks").text  # (not logged in: no list)
    client.post(f"/tasks/{task['id']}/edit", data={"csrf": token, "title": "Angebot schicken", "due": "2026-12-24"})
    changed = next(t for t in store.tasks() if t["id"] == task["id"])
    assert (changed["title"], changed["due"][:10], changed["version"]) == ("Angebot schicken", "2026-12-24",
                                                                           task["version"] + 1)
    client.post(f"/tasks/{task['id']}/done", data={"csrf": token})
    assert next(t for t in store.tasks() if t["id"] == task["id"])["status"] == "done"
    assert client.post("/tasks", data={"csrf": token, "title": "x", "due": "soon"}).status_code == 302
    assert not [t for t in store.tasks() if t["title"] == "x"]


def test_timeline_pages_cover_everything_once_and_filters_narrow(app, store):
    client = app.test_client()
    login(client)
    cid = customer_id(store)
    seen: list[tuple] = []
    url = f"/api/customers/{cid}/timeline?limit=7"
    while url:
        page = client.get(url).json
        seen += [(i["src"], i["id"], i["rid"]) for i in page["items"]]
        url = f"/api/customers/{cid}/timeline?limit=7&after={quote(page['next'])}" if page["next"] else ""
    assert len(seen) == len(set(seen))
    expected = {(0, i["id"], i.get("recurrence_id", "")) for i in store.timeline(str(cid), limit=0)}
    assert {s for s in seen if s[0] == 0} == expected
    assert {s[1] for s in seen if s[0] == 1} == {t["id"] for t in store.tasks() if t["customer_id"] == cid
                                                and t["status"] != "cancelled"}
    mails = client.get(f"/api/customers/{cid}/timeline?limit=500&kind=mail").json["items"]
    assert mails and {i["kind"] for i in mails} == {"mail"}
    contact = store.contact_id("k.brodersen@stadtwerke-lindenau.de")
    theirs = client.get(f"/api/customers/{cid}/timeline?limit=500&contact={contact}").json["items"]
    assert theirs and all(any(w["target"] == "contact" and w["id"] == contact for w in i["why"]) for i in theirs)
    html = client.get(f"/customers/{cid}").text
    assert "<svg" in html and "<rect" in html and 'id="older"' in html


def test_the_api_by_token_and_by_address(app, store):
    token = Users(store).new_token("bob")
    auth = {"Authorization": f"Bearer {token}"}
    client = app.test_client()
    found = client.get("/api/customers?email=Someone@Einkauf.Bauhaus-Kramer.de", headers=auth)
    assert found.status_code == 200 and found.json["name"] == "Bauhaus Kramer GmbH & Co. KG"
    assert client.get("/api/customers?email=x@nowhere.example", headers=auth).status_code == 404
    cid = found.json["id"]
    made = client.post(f"/api/customers/{cid}/notes", json={"text": "per API"}, headers=auth)
    assert made.status_code == 201
    assert any(r["id"] == made.json["id"] for r in client.get("/api/search?q=API", headers=auth).json)
    task = client.post("/api/tasks", json={"title": "per API", "customer_id": cid}, headers=auth).json["id"]
    assert task in [t["id"] for t in client.get("/api/tasks?who=mine", headers=auth).json]
    assert client.post(f"/api/tasks/{task}", json={"due": "2027-01-15"}, headers=auth).json["due"] == "2027-01-15"
    assert client.post(f"/api/tasks/{task}/done", headers=auth).json["status"] == "done"
    assert client.get("/api/tasks", headers={"Authorization": "Bearer crm_wrong"}).status_code == 401
    # a session may use the API too, writes with the X-CSRF-Token header
    browser = app.test_client()
    csrf = login(browser, "anna")
    assert browser.post("/api/tasks", json={"title": "y"}).status_code == 403
    assert browser.post("/api/tasks", json={"title": "y"}, headers={"X-CSRF-Token": csrf}).status_code == 201


def test_passwords_are_salted_scrypt_and_logins_are_rate_limited(app, store):
    stored = [p for (p,) in store._x("SELECT password FROM users WHERE name IN ('anna', 'bob')")]
    assert all(p.startswith("scrypt$") and PASSWORD not in p for p in stored) and stored[0] != stored[1]
    assert check_password(PASSWORD, stored[0]) and not check_password("wrong", stored[0])
    client = app.test_client()
    token = csrf_of(client.get("/login").text)
    for _ in range(5):
        assert client.post("/login", data={"csrf": token, "name": "anna", "password": "nope"}).status_code == 401
    locked = client.post("/login", data={"csrf": token, "name": "anna", "password": PASSWORD})
    assert locked.status_code == 429
    assert client.get("/customers").status_code == 302


def test_session_cookie_flags_and_no_open_redirect(app):
    client = app.test_client()
    token = csrf_of(client.get("/login").text)
    done = client.post("/login", data={"csrf": token, "name": "anna", "password": PASSWORD, "next": "//evil.example/x"})
    assert done.headers["Location"] == "/customers"
    cookie = done.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    token = csrf_of(client.get("/tasks").text)
    for back in ("//evil.example/", "/\\evil.example/", "https://evil.example/"):
        went = client.post("/tasks", data={"csrf": token, "title": "t", "back": back})
        assert went.headers["Location"] == "/tasks", back
    bad = client.post("/api/tasks", json={"title": "t", "customer_id": "abc"}, headers={"X-CSRF-Token": token})
    assert bad.status_code == 400 and bad.json == {"error": "customer_id is a number"}


def test_trusted_header_logs_in_known_users_only(config_path):
    app = make_app(config_path, trusted_header="X-Remote-User")
    client = app.test_client()
    assert client.get("/customers", headers={"X-Remote-User": "bob"}).status_code == 200
    assert client.get("/customers", headers={"X-Remote-User": "nobody"}).status_code == 302
    assert make_app(config_path).test_client().get("/customers", headers={"X-Remote-User": "bob"}).status_code == 302


def test_language_from_the_office_the_browser_and_the_switch(config_path):
    german = make_app(config_path).test_client()  # the demo's office language is German
    assert "Anmelden" in german.get("/login", headers={"Accept-Language": "en"}).text
    no_office = make_app(config_path, language="").test_client()
    assert "Log in" in no_office.get("/login", headers={"Accept-Language": "en-GB,en;q=0.8"}).text
    assert "Anmelden" in no_office.get("/login", headers={"Accept-Language": "de-DE"}).text
    token = login(german)
    assert "Kunden" in german.get("/customers").text
    german.post("/language", data={"csrf": token, "lang": "en", "next": "/tasks"})
    page = german.get("/customers").text
    assert "Customers" in page and "Last contact" in page


def test_every_text_in_the_templates_has_a_german_translation():
    from pathlib import Path

    texts = set()
    for template in (Path(i18n.__file__).parent / "templates").glob("*.html"):
        texts |= set(re.findall(r'_\("([^"]+)"\)', template.read_text(encoding="utf-8")))
    missing = sorted(t for t in texts if t not in i18n.catalogue("de"))
    assert not missing


def test_times_are_shown_in_the_configured_zone():
    from zoneinfo import ZoneInfo

    assert i18n.local_time("2026-11-02T09:00:00Z", ZoneInfo("Europe/Berlin")) == "02.11.2026 10:00"
    assert i18n.local_time("2026-07-02T09:00:00Z", ZoneInfo("Europe/Berlin")) == "02.07.2026 11:00"
    assert i18n.local_time("2026-07-02T09:00:00Z", ZoneInfo("America/New_York")) == "02.07.2026 05:00"
    assert i18n.local_time("2026-12-01", ZoneInfo("Europe/Berlin")) == "01.12.2026"


def test_crm_users_add_and_crm_serve_on_the_demo(tmp_path):
    import shutil
    from pathlib import Path

    import os
    import subprocess
    import sys

    from tests.web_fixtures import REPO

    def run_crm(*args: str, cwd, input: str = "") -> subprocess.CompletedProcess:
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        return subprocess.run([sys.executable, "-m", "crm_bridge.cli", *args], cwd=cwd, capture_output=True,
                              text=True, input=input, env={**os.environ, "PYTHONPATH": path}, timeout=120)

    shutil.copytree(REPO / "examples", tmp_path / "examples")
    shutil.copy2(REPO / "config.example.toml", tmp_path / "crm.toml")
    port = free_port()
    proc = start_server(Path(tmp_path / "crm.toml"), port)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        demo = proc.stdout.readline()
        assert f"http://localhost:{port}/" in first
        name, password = re.search(r"name (\S+), password (\S+)", demo).groups()
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/login").read().decode()
        assert "Anmelden" in page
    finally:
        proc.terminate()
        proc.wait(10)
    config = load_config(str(tmp_path / "crm.toml"))
    store = Store(config.store_path, config.linking)
    assert Users(store).verify(name, password) == {"name": "demo", "role": "admin"}
    assert store.counts()["customers"] == 6  # the demo customers are there before any sync
    store.close()
    added = run_crm("--config", "crm.toml", "users", "add", "carla", cwd=tmp_path, input="long-enough-pw\n")
    assert added.returncode == 0, added.stderr
    short = run_crm("--config", "crm.toml", "users", "add", "dora", cwd=tmp_path, input="short\n")
    assert short.returncode == 1 and short.stderr.strip() == "crm: a password has at least 8 characters"
    listed = run_crm("--config", "crm.toml", "users", "list", cwd=tmp_path)
    assert "carla" in listed.stdout and "staff" in listed.stdout and "dora" not in listed.stdout
    token = run_crm("--config", "crm.toml", "users", "token", "carla", cwd=tmp_path).stdout.strip()
    proc = start_server(Path(tmp_path / "crm.toml"), port)
    try:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/customers?q=Hotel",
                                         headers={"Authorization": f"Bearer {token}"})
        assert json.loads(urllib.request.urlopen(request).read())[0]["name"] == "Hotel Seeblick Plön GmbH"
    finally:
        proc.terminate()
        output = proc.communicate(timeout=10)[0]
    assert "open http://localhost" in output and "demo login" not in output  # the demo login: first start only


@pytest.mark.parametrize("parallel", ["0", "1"], ids=["in process", "reader process"])
def test_web_writes_while_a_sync_runs_are_quick_and_kept(tmp_path, parallel):
    """A sync stores batches in short transactions: a note written meanwhile waits at most for one batch,
    or, where the reader process runs ahead of the store, for the half second a commit is held."""
    import os
    import statistics
    import subprocess
    import sys
    import time

    from tests.web_fixtures import REPO

    config_path = demo_store(tmp_path)
    new = tmp_path / "examples/mail/new"
    for n in range(6000):
        (new / f"17620{n:05d}.bulk{n}.eml").write_text(
            f"From: Kunde {n} <k{n}@stadtwerke-lindenau.de>\nTo: anna.weber@nordlicht-haustechnik.de\n"
            f"Subject: Zaehlerstand {n}\nDate: Tue, 03 Nov 2026 10:{n % 60:02d}:00 +0100\n"
            f"Message-ID: <load-{n}@stadtwerke-lindenau.de>\n\nZaehlerstand Nummer {n} anbei.\n")
    app = make_app(config_path)
    client = app.test_client()
    token = login(client, "bob")
    store = Store(load_config(str(config_path)).store_path)
    cid = customer_id(store)
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    sync = subprocess.Popen([sys.executable, "-m", "crm_bridge.cli", "--config", str(config_path), "sync"],
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": path, "CRM_PARALLEL_PULL": parallel},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    took, written = [], []
    while sync.poll() is None:
        text = f"Notiz waehrend der Synchronisierung {len(written)}"
        started = time.monotonic()
        done = client.post(f"/customers/{cid}/notes", data={"csrf": token, "text": text})
        took.append(time.monotonic() - started)
        assert done.status_code == 302
        written.append(text)
        time.sleep(0.05)
    out, err = sync.communicate()
    assert sync.returncode == 0, err
    assert store._one("SELECT COUNT(*) FROM interactions WHERE subject LIKE 'Zaehlerstand %'") == 6000
    assert len(written) >= 3, out  # the sync ran long enough to overlap
    notes = {s for (s,) in store._x("SELECT subject FROM interactions WHERE kind='note'")}
    assert set(written) <= notes  # none lost
    assert statistics.median(took) < 1.0 and max(took) < 2.0, took
    store.close()


def test_the_web_layer_talks_to_crm_core_only():
    from pathlib import Path

    web = Path(i18n.__file__).parent
    for module in web.glob("*.py"):
        text = module.read_text(encoding="utf-8")
        assert not re.search(r"^\s*(from|import) crm_bridge\.(connectors|sync|cli)", text, re.M), module.name


def test_the_review_queue_makes_contacts_customers_or_dismisses(tmp_path):
    config_path = demo_store(tmp_path)
    new = tmp_path / "examples/mail/new"
    for n, sender in enumerate(["a.neu@brandneu.example"] * 3 + ["b.neu@brandneu.example", "spam@gmail.com",
                                                                  "private.kunde@gmx.de", "private.kunde@gmx.de"]):
        (new / f"17630{n:05d}.review{n}.eml").write_text(
            f"From: Neu {n} <{sender}>\nTo: anna.weber@nordlicht-haustechnik.de\nSubject: Anfrage {n}\n"
            f"Date: Wed, 04 Nov 2026 1{n}:00:00 +0100\nMessage-ID: <review-{n}@example>\n\nAnfrage Text {n}\n")
    Crm(config_path)("sync")
    app = make_app(config_path)
    client = app.test_client()
    token = login(client, "bob")
    page = client.get("/review").text
    order = [e for e in ("a.neu@brandneu.example", "private.kunde@gmx.de", "b.neu@brandneu.example") if e in page]
    assert order == sorted(order, key=page.index) and len(order) == 3  # most frequent first
    assert "anna.weber@nordlicht-haustechnik.de" not in page  # internal
    store = Store(load_config(str(config_path)).store_path)

    # a freemail address: a contact of an existing customer; its mail links at once
    hotel = store.customer_id("Hotel Seeblick Plön GmbH")
    client.post("/review", data={"csrf": token, "email": "private.kunde@gmx.de", "action": "contact",
                                 "customer": hotel})
    linked = [i for i in store.timeline(str(hotel), limit=0) if i["sender"] == "private.kunde@gmx.de"]
    assert len(linked) == 2  # stored as metadata: the next sync reads their text again
    Crm(config_path)("sync")
    subjects = [i["subject"] for i in store.timeline(str(hotel), limit=0)]
    assert "Anfrage 5" in subjects and "Anfrage 6" in subjects
    # a company domain: a new customer with every mail from that domain
    client.post("/review", data={"csrf": token, "email": "a.neu@brandneu.example", "action": "customer",
                                 "name": "Brandneu GmbH"})
    brandneu = store.customer_id("Brandneu GmbH")
    assert len(store.timeline(str(brandneu))) == 4
    Crm(config_path)("sync")
    assert {"Anfrage 0", "Anfrage 1", "Anfrage 2", "Anfrage 3"} == {i["subject"] for i in store.timeline(str(brandneu))}
    client.post("/review", data={"csrf": token, "email": "spam@gmail.com", "action": "dismiss"})
    page = client.get("/review").text
    assert "spam@gmail.com" not in page and "brandneu" not in page and "private.kunde" not in page
    assert client.post("/review", data={"email": "spam@gmail.com", "action": "dismiss"}).status_code == 403
    store.close()


def test_customer_merge_loses_nothing_and_remove_says_what_goes(tmp_path):
    config_path = demo_store(tmp_path)
    app = make_app(config_path)
    client = app.test_client()
    token = login(client, "bob")
    store = Store(load_config(str(config_path)).store_path)
    client.post("/customers", data={"csrf": token, "name": "Kramer <Filiale>", "domains": "filiale-kramer.example"})
    keep = store.customer_id("Kramer <Filiale>")
    page = client.get(f"/customers/{keep}").text
    assert "Kramer &lt;Filiale&gt;" in page and "filiale-kramer.example" in page
    client.post("/tasks", data={"csrf": token, "title": "Filiale anrufen", "customer": keep})
    client.post(f"/customers/{keep}/notes", data={"csrf": token, "text": "Notiz zur Filiale"})
    # a config customer cannot be merged away or renamed here (the config would bring it back)
    kramer = store.customer_id("Bauhaus Kramer GmbH & Co. KG")
    client.post(f"/customers/{keep}/merge", data={"csrf": token, "other": str(kramer)})
    assert store._one("SELECT id FROM customers WHERE id=?", (kramer,)) == kramer
    client.post(f"/customers/{kramer}/rename", data={"csrf": token, "name": "Kramer"})
    assert store._one("SELECT name FROM customers WHERE id=?", (kramer,)) == "Bauhaus Kramer GmbH & Co. KG"

    client.post("/customers", data={"csrf": token, "name": "Zweite Filiale", "domains": "zweite-filiale.example"})
    other = store.customer_id("Zweite Filiale")
    client.post("/tasks", data={"csrf": token, "title": "Zweite anrufen", "customer": other})
    client.post(f"/customers/{other}/notes", data={"csrf": token, "text": "Notiz zur zweiten"})
    from crm_bridge.crm_core.directory import customer_footprint

    a, b = customer_footprint(store, keep), customer_footprint(store, other)
    client.post(f"/customers/{keep}/merge", data={"csrf": token, "other": "Zweite Filiale"})
    merged = customer_footprint(store, keep)
    assert store._one("SELECT id FROM customers WHERE id=?", (other,)) is None
    assert all(merged[k] == a[k] + b[k] for k in merged), (a, b, merged)
    client.post(f"/customers/{keep}/domains", data={"csrf": token, "domain": "zweite-filiale.example",
                                                    "action": "remove"})
    assert customer_footprint(store, keep)["domains"] == 1
    confirm = client.get(f"/customers/{keep}/remove").text
    assert "Das wird entfernt" in confirm and f"{merged['tasks']} Aufgaben" in confirm and merged["tasks"] == 2
    before = store.counts()
    client.post(f"/customers/{keep}/remove", data={"csrf": token})
    after = store.counts()
    assert store._one("SELECT id FROM customers WHERE id=?", (keep,)) is None
    assert after["interactions"] == before["interactions"] and after["tasks"] == before["tasks"]
    store.close()


def test_the_cli_timeline_shows_the_configured_zone(config_path):
    import os

    from tests.test_cli_and_rules import run_crm

    done = run_crm("--config", str(config_path), "timeline", "stadtw", "--limit", "0", cwd=config_path.parent,
                   env={"TZ": "UTC"})
    line = next(l for l in done.stdout.splitlines() if "Angebot Pumpe" in l)
    assert "2026-11-02 10:00" in line, line  # 09:00 UTC in Europe/Berlin (the demo's [company] timezone)
    assert os.environ.get("TZ") != "Europe/Berlin"


def test_cli_status_shows_the_last_run_in_the_configured_zone(config_path):
    import sqlite3

    from tests.test_cli_and_rules import run_crm

    done = run_crm("--config", str(config_path), "status", "--json", cwd=config_path.parent, env={"TZ": "UTC"})
    data = json.loads(done.stdout)
    with sqlite3.connect(data["store"]) as conn:
        conn.execute("UPDATE sources SET last_run_at='2026-11-02T09:00:00+00:00', last_status='ok'")
    done = run_crm("--config", str(config_path), "status", cwd=config_path.parent, env={"TZ": "UTC"})
    assert done.returncode == 0, done.stderr
    assert "ok at 2026-11-02 10:00" in done.stdout, done.stdout  # 09:00 UTC, shown in Europe/Berlin
    assert "ok at 2026-11-02 09:00" not in done.stdout


def test_contacts_attach_a_private_address_and_detach(app, store):
    client = app.test_client()
    token = login(client, "bob")
    assert "k.brodersen@stadtwerke-lindenau.de" in client.get("/contacts?q=brodersen").text
    hotel = store.customer_id("Hotel Seeblick Plön GmbH")
    before = len(store.timeline(str(hotel), limit=0))
    client.post("/contacts", data={"csrf": token, "email": "k.hoffmann1971@gmail.com", "customer": "Hotel Seeblick",
                                   "name": "K. <Hoffmann>"})
    contact = store.contact_id("k.hoffmann1971@gmail.com")
    assert len(store.timeline(str(hotel), limit=0)) == before + 2  # their past mail links at once
    assert "K. &lt;Hoffmann&gt;" in client.get("/contacts?q=hoffmann").text
    client.post("/contacts", data={"csrf": token, "action": "detach", "contact": contact})
    assert len(store.timeline(str(hotel), limit=0)) == before
    assert client.post("/contacts", data={"action": "detach", "contact": contact}).status_code == 403
    assert "Hotel Seeblick" not in client.get("/contacts?q=hoffmann&unattached=1").text.split("contact-list")[1]
