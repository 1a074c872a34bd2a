"""Blocking a sender or their domain from the review queue: kept in the store, honoured as the config's
blocklist is (by the web, by `crm sync`, by a sync already running), listed for admins with an unblock,
and visible to the CLI (`crm blocks`)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from crm_bridge.crm_core import blocks
from crm_bridge.crm_core.records import Address, Batch, Location, MailRecord
from crm_bridge.crm_core.settings import SourcePolicy
from crm_bridge.crm_core.store import Store, StoreError
from crm_bridge.sync.config import load_config
from tests.conftest import Crm
from tests.web_fixtures import csrf_of, demo_store, login, make_app

SPAM = "werbung@reklame-gmbh.example"
COLLEAGUE = "vertrieb@reklame-gmbh.example"
FREEMAIL = "jemand@gmail.com"


def add_mail(root, n: int, sender: str, day: int = 4) -> None:
    (root / f"examples/mail/new/17631{n:05d}.block{n}.eml").write_text(
        f"From: Reklame {n} <{sender}>\nTo: anna.weber@nordlicht-haustechnik.de\nSubject: Angebot {n}\n"
        f"Date: Wed, 0{day} Nov 2026 1{n % 10}:00:00 +0100\nMessage-ID: <block-{n}@example>\n\nText {n}\n")


@pytest.fixture
def office(tmp_path):
    """The demo with unknown senders: SPAM (3 mails), COLLEAGUE (1), FREEMAIL (1)."""
    config_path = demo_store(tmp_path)
    for n, sender in enumerate([SPAM, SPAM, SPAM, COLLEAGUE, FREEMAIL]):
        add_mail(tmp_path, n, sender)
    crm = Crm(config_path)
    crm("sync")
    store = Store(load_config(str(config_path)).store_path, load_config(str(config_path)).linking)
    yield config_path, crm, store
    store.close()


def stored(store: Store, n: int) -> bool:
    return store._one("SELECT 1 FROM interactions WHERE message_id=?", (f"block-{n}@example",)) is not None


def test_a_block_from_the_review_queue_removes_stored_mail_and_stops_logging_until_unblocked(office):
    config_path, crm, store = office
    app = make_app(config_path)
    client = app.test_client()
    token = login(client, "bob")
    page = client.get("/review").text
    assert SPAM in page and COLLEAGUE in page and 'value="block"' in page
    assert "Alle sperren von reklame-gmbh.example" in page

    done = client.post("/review", data={"csrf": token, "email": SPAM, "action": "block", "scope": "address"})
    assert done.status_code == 302
    flash = client.get("/review").text
    assert "3" in flash and SPAM not in flash.split("review-list")[1] and COLLEAGUE in flash
    assert not any(stored(store, n) for n in (0, 1, 2)) and stored(store, 3)
    assert store._one("SELECT COUNT(*) FROM skipped WHERE reason='blocked sender' AND message_id LIKE 'block-%'") == 3
    assert not store._one("SELECT COUNT(*) FROM participants WHERE email=?", (SPAM,))

    # the next sync honours it exactly as the config's blocklist: new mail from them is not stored
    add_mail(config_path.parent, 5, SPAM, day=5)
    crm("sync")
    assert not stored(store, 5) and stored(store, 3)
    assert any(r["logged"] is False for r in crm.json("explain", "block-5@example"))

    # the whole domain: the colleague goes too
    client.post("/review", data={"csrf": token, "email": COLLEAGUE, "action": "block", "scope": "domain"})
    assert not stored(store, 3) and COLLEAGUE not in client.get("/review").text.split("review-list")[1]

    # visible to the CLI, the web's blocks beside the config's
    listed = {b["entry"]: b for b in crm.json("blocks", "list")}
    assert listed[SPAM]["origin"] == "store" and listed[SPAM]["by"] == "bob"
    assert listed["reklame-gmbh.example"]["kind"] == "domain"
    assert listed["betriebsrat@stadtwerke-lindenau.de"]["origin"] == "config"
    text = crm("blocks", "list").stdout
    assert SPAM in text and "by bob at 20" in text and "Z" not in text.split(SPAM)[1].splitlines()[0]

    # admins see them with an unblock; unblocking brings the mail back at the next sync
    admin = app.test_client()
    admin_token = login(admin, "anna")
    listing = admin.get("/admin/blocks").text
    assert SPAM in listing and "reklame-gmbh.example" in listing and 'name="entry"' in listing
    assert "betriebsrat@stadtwerke-lindenau.de" in listing  # the config's, not unblockable here
    assert listing.count('class="unblock-button"') == 2
    for entry in (SPAM, "reklame-gmbh.example"):
        assert admin.post("/admin/blocks/unblock", data={"csrf": admin_token, "entry": entry}).status_code == 302
    refused = admin.post("/admin/blocks/unblock", data={"csrf": admin_token, "entry": "betriebsrat@stadtwerke-lindenau.de"})
    assert refused.status_code == 302 and "Konfiguration" in admin.get("/admin/blocks").text
    crm("sync")
    assert all(stored(store, n) for n in (0, 1, 2, 3, 5))
    assert SPAM in client.get("/review").text


def test_what_cannot_be_blocked_is_refused_in_plain_words(office):
    config_path, _crm, store = office
    client = make_app(config_path).test_client()
    token = login(client, "bob")
    client.post("/review", data={"csrf": token, "email": FREEMAIL, "action": "block", "scope": "domain"})
    assert "Freemail-Anbieter" in client.get("/review").text and stored(store, 4)
    with pytest.raises(StoreError, match="belongs to the customer"):
        blocks.block(store, "stadtwerke-lindenau.de")
    store.add_customer("Filiale Nord", ["nord.filiale-x.example"])
    with pytest.raises(StoreError, match="belongs to the customer Filiale Nord"):
        blocks.block(store, "filiale-x.example")  # above a customer's domain
    with pytest.raises(StoreError, match="public suffix"):
        blocks.block(store, "co.uk")
    with pytest.raises(StoreError, match="own domains"):
        blocks.block(store, "nordlicht-haustechnik.de")
    with pytest.raises(StoreError, match="neither an address nor a domain"):
        blocks.block(store, "no such thing")
    for bad in ("<script>@x.example", "a@b@c.example", "x.example;drop", "@"):
        with pytest.raises(StoreError, match="neither an address nor a domain"):
            blocks.block(store, bad)
    with pytest.raises(StoreError, match="not blocked"):
        blocks.unblock(store, SPAM)
    assert blocks.listing(store) == [b for b in blocks.listing(store) if b["origin"] == "config"]


def test_a_running_sync_honours_a_block_made_meanwhile(office):
    """The sync's store was opened before the block: its next batch still skips the blocked sender."""
    config_path, _crm, web = office
    config = load_config(str(config_path))
    syncing = Store(config.store_path, config.linking)  # opened at the start of a run
    blocks.block(web, "neu@spaeter.example", "bob")
    policy = SourcePolicy("anna-mail", owner=frozenset({"anna.weber@nordlicht-haustechnik.de"}))
    when = datetime(2026, 11, 6, 9, tzinfo=timezone.utc)
    mail = MailRecord(Location("INBOX", "late-1"), "late-1@spaeter.example",
                      sender=Address("neu@spaeter.example", "Neu"),
                      to=(Address("anna.weber@nordlicht-haustechnik.de", "Anna"),), date=when, subject="Spät")
    other = MailRecord(Location("INBOX", "late-2"), "late-2@spaeter.example",
                       sender=Address("anders@spaeter.example", "Anders"),
                       to=(Address("anna.weber@nordlicht-haustechnik.de", "Anna"),), date=when + timedelta(hours=1),
                       subject="Auch spät")
    with syncing.transaction():
        stats = syncing.apply_batch(policy, Batch(records=[mail, other]))
    assert stats.skipped == 1 and stats.added == 1
    assert syncing._one("SELECT reason FROM skipped WHERE local_id='late-1'").startswith("blocked sender")
    syncing.close()


def test_the_cli_adds_and_removes_blocks(office):
    config_path, crm, store = office
    out = crm("blocks", "add", SPAM.upper()).stdout
    assert f"blocked {SPAM}; 3 stored mails" in out and not stored(store, 0)
    failed = crm("blocks", "remove", "nobody@nowhere.example", ok=False)
    assert failed.exit_code != 0 and "not blocked" in failed.output and "Traceback" not in failed.output
    assert "unblocked" in crm("blocks", "remove", SPAM).stdout
    assert store._one("SELECT COUNT(*) FROM sources WHERE rescan=1") >= 1
    crm("sync")
    assert stored(store, 0)


def test_block_writes_need_a_login_csrf_and_admin_for_unblock(office):
    config_path, _crm, store = office
    app = make_app(config_path)
    anonymous = app.test_client()
    for path, data in (("/review", {"email": SPAM, "action": "block"}), ("/admin/blocks/unblock", {"entry": SPAM})):
        done = anonymous.post(path, data=data)
        assert done.status_code == 302 and done.headers["Location"].startswith("/login"), path
    assert anonymous.get("/admin/blocks").headers["Location"].startswith("/login")
    staff = app.test_client()
    token = login(staff, "bob")
    assert staff.post("/review", data={"email": SPAM, "action": "block"}).status_code == 403  # no CSRF token
    assert staff.post("/review", data={"csrf": "forged", "email": SPAM, "action": "block"}).status_code == 403
    assert stored(store, 0)
    blocks.block(store, SPAM, "anna")
    assert staff.get("/admin/blocks").status_code == 403
    assert staff.post("/admin/blocks/unblock", data={"csrf": token, "entry": SPAM}).status_code == 403
    admin = app.test_client()
    login(admin, "anna")
    assert admin.post("/admin/blocks/unblock", data={"entry": SPAM}).status_code == 403  # no CSRF token
    assert [b["entry"] for b in blocks.listing(store) if b["origin"] == "store"] == [SPAM]


def test_inline_answers_for_javascript_and_the_dismiss_without_reload(office):
    config_path, _crm, store = office
    client = make_app(config_path).test_client()
    token = login(client, "bob")
    page = client.get("/review").text
    assert 'src="/static/inline.js"' in page and "inline-js" in page
    done = client.post("/review", data={"csrf": token, "email": COLLEAGUE, "action": "dismiss"},
                       headers={"X-Requested-With": "fetch"})
    assert done.status_code == 200 and done.json == {"ok": True, "message": "Verworfen."}
    refused = client.post("/review", data={"csrf": token, "email": FREEMAIL, "action": "block", "scope": "domain"},
                          headers={"X-Requested-With": "fetch"})
    assert refused.status_code == 400 and refused.json["ok"] is False and "gmail.com" in refused.json["message"]
    blocked = client.post("/review", data={"csrf": token, "email": SPAM, "action": "block", "scope": "address"},
                          headers={"X-Requested-With": "fetch"})
    assert blocked.json["ok"] is True and SPAM in blocked.json["message"] and "3" in blocked.json["message"]
    assert client.get("/static/inline.js").status_code == 200


def test_a_store_of_version_3_gets_the_blocks_table(tmp_path):
    from crm_bridge.crm_core.schema import MIGRATIONS, SCHEMA_VERSION

    store = Store(tmp_path / "old.db")
    store.conn.execute("DROP TABLE blocks")
    store.conn.execute("UPDATE meta SET value='3' WHERE key='schema_version'")
    store.close()
    store = Store(tmp_path / "old.db")
    assert store.schema_version() == SCHEMA_VERSION >= 4
    with store.transaction():
        MIGRATIONS[4](store)  # idempotent
    blocks.block(store, "a@b.example")
    assert blocks.listing(store)[0]["entry"] == "a@b.example"
    store.close()


def test_an_inline_answer_of_a_refused_action_is_in_the_page_language(office):
    config_path, _crm, _store = office
    client = make_app(config_path).test_client()
    token = login(client, "bob")
    refused = client.post("/review", data={"csrf": token, "email": SPAM, "action": "customer", "name": " "},
                          headers={"X-Requested-With": "fetch"})
    assert refused.status_code == 400 and refused.json == {"ok": False, "message": "Ein Kunde braucht einen Namen."}
    # without JavaScript: the same words, flashed
    client.post("/review", data={"csrf": token, "email": SPAM, "action": "customer", "name": " "})
    assert "Ein Kunde braucht einen Namen." in client.get("/review").text
