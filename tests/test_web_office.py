"""Issue 10's remaining office features over HTTP: the account owner edited on the customer page, the task
list's due filters, the admin page's errors in plain words, changing users, and a block made from the review
queue while a real `crm sync` runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from crm_bridge.crm_core.store import Store
from crm_bridge.crm_core.users import Users
from crm_bridge.sync.config import load_config
from tests.web_fixtures import PASSWORD, REPO, demo_store, login, make_app
from tests.web_fixtures import app, store  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def config_path(tmp_path_factory):
    return demo_store(tmp_path_factory.mktemp("office"))


def test_the_account_owner_is_set_on_the_customer_page_and_shown_in_the_list(app, store):
    client = app.test_client()
    token = login(client, "bob")
    client.post("/customers", data={"csrf": token, "name": "Neubau <Ost> GmbH", "domains": "neubau-ost.example"})
    cid = store.customer_id("Neubau <Ost> GmbH")
    page = client.get(f"/customers/{cid}").text
    assert 'id="owner-form"' in page and '<option value="anna">' in page and '<option value="bob">' in page
    done = client.post(f"/customers/{cid}/owner", data={"csrf": token, "owner": "  anna "})
    assert done.status_code == 302 and done.headers["Location"].endswith(f"/customers/{cid}")
    assert store._one("SELECT account_owner FROM customers WHERE id=?", (cid,)) == "anna"
    assert "Kundenbetreuer geändert." in client.get(f"/customers/{cid}").text
    listed = client.get("/customers?q=Neubau").text
    assert "Neubau &lt;Ost&gt; GmbH" in listed and "<td>anna</td>" in listed
    # "my tasks" of the owner counts the customer's unassigned tasks
    store.add_task("Baustelle ansehen", customer_id=cid)
    anna = app.test_client()
    login(anna, "anna")
    assert "Baustelle ansehen" in anna.get("/tasks?who=mine").text
    # a customer from the config keeps what the config says
    config_customer = store.customer_id("Stadtwerke Lindenau GmbH")
    before = store._one("SELECT account_owner FROM customers WHERE id=?", (config_customer,))
    client.post(f"/customers/{config_customer}/owner", data={"csrf": token, "owner": "bob"})
    assert store._one("SELECT account_owner FROM customers WHERE id=?", (config_customer,)) == before
    # writes need a login and the CSRF token
    assert app.test_client().post(f"/customers/{cid}/owner", data={"owner": "x"}).headers["Location"].startswith("/login")
    assert client.post(f"/customers/{cid}/owner", data={"owner": "x"}).status_code == 403
    assert store._one("SELECT account_owner FROM customers WHERE id=?", (cid,)) == "anna"


def test_the_task_list_filters_by_due_date_in_the_office_s_time_zone(app, store):
    today = datetime.now(ZoneInfo("Europe/Berlin")).date()  # the demo office's zone
    for title, due in (("F-gestern", today - timedelta(days=1)), ("F-heute", today),
                       ("F-bald", today + timedelta(days=3)), ("F-spaeter", today + timedelta(days=20)),
                       ("F-offen", None)):
        store.add_task(title, due=due, assignee="bob")
    client = app.test_client()
    login(client, "bob")

    def titles(query: str) -> set[str]:
        page = client.get("/tasks?who=mine" + query).text
        return {t for t in ("F-gestern", "F-heute", "F-bald", "F-spaeter", "F-offen") if t in page}

    assert titles("") == {"F-gestern", "F-heute", "F-bald", "F-spaeter", "F-offen"}
    assert titles("&due=overdue") == {"F-gestern"}
    assert titles("&due=today") == {"F-heute"}
    assert titles("&due=next") == {"F-bald"}
    assert titles("&due=nonsense") == titles("")
    page = client.get("/tasks?due=today").text
    assert "Heute fällig" in page and 'id="due-overdue"' in page


def test_a_task_is_marked_done_in_the_background_or_by_the_form(app, store):
    client = app.test_client()
    token = login(client, "bob")
    one, two = store.add_task("Hintergrund", assignee="bob"), store.add_task("Formular", assignee="bob")
    assert 'class="inline small inline-js" data-remove="tr"' in client.get("/tasks").text
    done = client.post(f"/tasks/{one}/done", data={"csrf": token}, headers={"X-Requested-With": "fetch"})
    assert done.status_code == 200 and done.json == {"ok": True, "message": "Aufgabe erledigt."}
    plain = client.post(f"/tasks/{two}/done", data={"csrf": token, "back": "/tasks?who=all"})
    assert plain.status_code == 302 and plain.headers["Location"] == "/tasks?who=all"
    assert {t["status"] for t in store.tasks() if t["id"] in (one, two)} == {"done"}
    refused = client.post(f"/tasks/{one}/done", headers={"X-Requested-With": "fetch"})  # no CSRF token
    assert refused.status_code == 403


def test_the_admin_page_says_a_source_s_last_error_in_plain_words(app, store):
    with store.transaction():
        store._x("UPDATE sources SET last_status='error', last_error=? WHERE name='anna-mail'",
                 ("authentication failed: [AUTHENTICATIONFAILED] Authentication failed.",))
        store._x("INSERT INTO quarantine(source, scope, local_id, reason, first_seen, last_seen) "
                 "VALUES ('anna-mail', 'INBOX', '4711', 'cannot parse the header <b>From</b>', "
                 "'2026-11-02T09:00:00Z', '2026-11-02T09:00:00Z')")
    try:
        client = app.test_client()
        login(client, "anna")
        page = client.get("/admin/").text
        assert "Der Server hat die Anmeldung abgelehnt" in page
        assert "[AUTHENTICATIONFAILED] Authentication failed." in page  # the details, folded
        assert "<td>Fehler</td>" in page
        assert "cannot parse the header &lt;b&gt;From&lt;/b&gt;" in page  # the quarantine with its reason, as text
        assert "02.11.2026 10:00" in page  # in the office's time zone
    finally:
        with store.transaction():
            store._x("UPDATE sources SET last_status='ok', last_error=NULL WHERE name='anna-mail'")
            store._x("DELETE FROM quarantine WHERE local_id='4711'")


def test_admins_change_roles_and_passwords_staff_cannot(app, store):
    users = Users(store)
    users.add("carla", PASSWORD, "staff")
    staff = app.test_client()
    staff_token = login(staff, "bob")
    assert staff.post("/admin/users/carla/change", data={"csrf": staff_token, "role": "admin"}).status_code == 403
    admin = app.test_client()
    token = login(admin, "anna")
    assert admin.post("/admin/users/carla/change", data={"role": "admin"}).status_code == 403  # no CSRF token
    assert users.get("carla")["role"] == "staff"
    admin.post("/admin/users/carla/change", data={"csrf": token, "role": "admin", "password": "a-new-password-1"})
    assert users.get("carla")["role"] == "admin" and users.verify("carla", "a-new-password-1")
    admin.post("/admin/users/anna/change", data={"csrf": token, "role": "staff"})
    assert users.get("anna")["role"] == "admin"
    assert "Die eigene Admin-Rolle" in admin.get("/admin/users").text
    short = admin.post("/admin/users/carla/change", data={"csrf": token, "password": "short"})
    assert short.status_code == 302 and users.verify("carla", "a-new-password-1")
    users.remove("carla")


def test_a_block_made_while_a_sync_runs_is_quick_and_nothing_of_the_sender_stays(tmp_path):
    """A real `crm sync` stores 4,000 mails, a third of them from one sender; the web blocks that sender
    meanwhile: the request answers within a second, and at the end none of their mail is stored."""
    config_path = demo_store(tmp_path)
    new = tmp_path / "examples/mail/new"
    for n in range(4000):
        sender = "werbung@reklame-gmbh.example" if n % 3 == 0 else f"k{n}@stadtwerke-lindenau.de"
        (new / f"17640{n:05d}.load{n}.eml").write_text(
            f"From: Absender {n} <{sender}>\nTo: anna.weber@nordlicht-haustechnik.de\n"
            f"Subject: Last {n}\nDate: Tue, 03 Nov 2026 10:{n % 60:02d}:00 +0100\n"
            f"Message-ID: <load-{n}@example>\n\nNummer {n}.\n")
    app = make_app(config_path)
    client = app.test_client()
    token = login(client, "bob")
    config = load_config(str(config_path))
    store = Store(config.store_path, config.linking)
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    sync = subprocess.Popen([sys.executable, "-m", "crm_bridge.cli", "--config", str(config_path), "sync"],
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": path, "CRM_PARALLEL_PULL": "0"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not store._one("SELECT COUNT(*) FROM participants WHERE email='werbung@reklame-gmbh.example'"):
            assert sync.poll() is None and time.monotonic() < deadline, "the sync stored none of the sender's mail"
            time.sleep(0.02)
        started = time.monotonic()
        done = client.post("/review", data={"csrf": token, "email": "werbung@reklame-gmbh.example",
                                            "action": "block", "scope": "address"})
        took = time.monotonic() - started
        assert done.status_code == 302
        running = sync.poll() is None
    finally:
        out, err = sync.communicate(timeout=300)
    assert sync.returncode == 0, err
    assert running, "the sync ended before the block: it did not overlap"
    assert took < 1.0, took
    assert not store._one("SELECT COUNT(*) FROM participants WHERE email='werbung@reklame-gmbh.example'")
    assert store._one("SELECT COUNT(*) FROM interactions WHERE subject LIKE 'Last %'") == 4000 - 1334
    assert store._one("SELECT COUNT(*) FROM skipped WHERE reason LIKE 'blocked sender%' "
                      "AND message_id LIKE 'load-%'") == 1334
    store.close()


def test_the_chart_counts_months_of_the_office_s_calendar_up_to_this_month(tmp_path):
    from crm_bridge.crm_core.domains import AddressSet
    from crm_bridge.crm_core.pages import PageReads
    from crm_bridge.crm_core.records import Address, Batch, Location, MailRecord
    from crm_bridge.crm_core.settings import LinkingSettings, SourcePolicy
    from crm_bridge.web.views_customers import chart

    berlin = ZoneInfo("Europe/Berlin")
    store = Store(tmp_path / "chart.db", LinkingSettings(internal_domains=AddressSet(["nordlicht.example"])))
    cid = store.add_customer("Kunde GmbH", ["kunde.example"])
    now = datetime.now(berlin)
    this_month = now.replace(day=1, hour=0, minute=30, second=0, microsecond=0)  # 00:30 local on the 1st
    long_ago = this_month - timedelta(days=40 * 31)
    dates = [this_month, this_month, long_ago]
    mails = [MailRecord(Location("INBOX", str(n)), f"c{n}@kunde.example", sender=Address("kim@kunde.example", "Kim"),
                        to=(Address("anna@nordlicht.example", "Anna"),), date=when, subject=f"Mail {n}")
             for n, when in enumerate(dates)]
    with store.transaction():
        store.apply_batch(SourcePolicy("anna", owner=frozenset({"anna@nordlicht.example"})), Batch(records=mails))
    key = now.strftime("%Y-%m")
    months = PageReads(store).per_month(cid, berlin)
    # 00:30 in Berlin on the 1st is the day before in UTC: counted in this month, not the one before
    assert months == [(key, 2)]
    utc_key = this_month.astimezone(ZoneInfo("UTC")).strftime("%Y-%m")
    assert utc_key != key and (utc_key, 2) in PageReads(store).per_month(cid, ZoneInfo("UTC"))
    bars = chart(PageReads(store).per_month(cid, berlin), now.date())["bars"]
    assert len(bars) == 1 and bars[0]["label"] == key and bars[0]["value"] == 2
    # a customer with old mail and none lately: the chart runs up to this month, empty at the end
    last_year = this_month - timedelta(days=200)
    drifting = chart([(last_year.strftime("%Y-%m"), 5)], now.date())["bars"]
    assert drifting[0]["label"] == last_year.strftime("%Y-%m") and drifting[-1]["label"] == key
    assert [b["value"] for b in drifting] == [5] + [0] * (len(drifting) - 1)
    old = chart([(long_ago.strftime("%Y-%m"), 1), (key, 2)], now.date())["bars"]
    assert len(old) == 24 and old[-1]["label"] == key
    store.close()


def test_the_api_timeline_period_is_a_year_of_the_office_s_calendar_too(app, store):
    from crm_bridge.crm_core.notes import add_note

    cid = store.customer_id("Stadtwerke Lindenau GmbH")
    with store.transaction():  # New Year's Eve, 23:30 UTC: already 2026 in Berlin (the demo office's zone)
        nid = add_note(store, cid, "Silvester-Anruf", when=datetime(2025, 12, 31, 23, 30, tzinfo=timezone.utc))
    client = app.test_client()
    login(client, "bob")

    def ids(year: str) -> set:
        items = client.get(f"/api/customers/{cid}/timeline?period={year}&kind=note&limit=500").get_json()["items"]
        return {i["id"] for i in items}

    assert nid in ids("2026") and nid not in ids("2025")


def test_the_timeline_period_is_a_year_of_the_office_s_calendar(app, store):
    from crm_bridge.web.views_customers import period

    assert period("2025", ZoneInfo("Europe/Berlin")) == ("2024-12-31T23:00:00Z", "2025-12-31T23:00:00Z")
    assert period("nonsense") == (None, None)
    client = app.test_client()
    login(client, "bob")
    cid = store.customer_id("Stadtwerke Lindenau GmbH")
    year = str(datetime.now(ZoneInfo("Europe/Berlin")).year)
    page = client.get(f"/customers/{cid}?period={year}").text
    assert f'<option value="{year}" selected>' in page
