"""The store's side of the targeted re-read (crm_core.rereads): ``unread_texts`` names only places
that still hold a mail stored without its text, so the table does not grow with every place that
went away, was read with its text or no longer shows the mail."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from crm_bridge.crm_core.domains import AddressSet
from crm_bridge.crm_core.records import Address, Batch, Location, MailRecord
from crm_bridge.crm_core.settings import LinkingSettings, SourcePolicy
from crm_bridge.crm_core.store import Store
from tests.test_store_batch import fts_check

OWNER = "anna@nordlicht.example"
POLICY = SourcePolicy(name="mail", owner=frozenset({OWNER}))
BASE = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)


def settings(**kw) -> LinkingSettings:
    return LinkingSettings(internal_domains=AddressSet(["nordlicht.example"]), **kw)


def mail(i: int, sender: str = "olaf@andere.example", no_text: bool = False, uidvalidity: int = 1,
         flags: tuple[str, ...] = (), reply_to: int | None = None) -> MailRecord:
    """Mail ``i`` as IMAP reads it: without its text (``no_text``, only the header's subject) or with it."""
    refs = (f"m{reply_to}@x",) if reply_to is not None else ()
    return MailRecord(
        location=Location("INBOX", f"{uidvalidity}:{i}", ""), message_id=f"m{i}@x", sender=Address(sender, "Olaf"),
        to=(Address(OWNER, "Anna"),), date=BASE + timedelta(minutes=i), subject=f"Angebot wort{i}",
        snippet="" if no_text else f"Guten Tag, text{i} zum Angebot.", no_text=no_text, flags=flags,
        in_reply_to=refs, references=refs)


def unread(store: Store) -> list[str]:
    return [r[0] for r in store.conn.execute("SELECT local_id FROM unread_texts ORDER BY local_id")]


def test_unread_texts_forgets_places_gone_read_with_text_hidden_or_erased(tmp_path):
    store = Store(tmp_path / "crm.db", settings(on_delete="erase"))
    with store.transaction():
        store.add_customer("Kunde GmbH", ["kunde.example"])
        store.apply_batch(POLICY, Batch(records=[mail(i, no_text=True) for i in range(1, 6)]))
    assert unread(store) == ["1:1", "1:2", "1:3", "1:4", "1:5"]
    with store.transaction():
        store.apply_batch(POLICY, Batch(removed=[Location("INBOX", "1:1")]))  # expunged on the server
        store.apply_batch(POLICY, Batch(records=[mail(2)]))  # read again, with its text (a rescan)
        store.apply_batch(POLICY, Batch(records=[mail(3, flags=("$Private",))]))  # made private: skipped
    assert unread(store) == ["1:4", "1:5"]
    with store.transaction():  # a new UIDVALIDITY: the old places go, the mail is seen under new ones
        store.apply_batch(POLICY, Batch(records=[mail(4, no_text=True, uidvalidity=2)],
                                        removed=[Location("INBOX", "1:4")]))
    assert unread(store) == ["1:5", "2:4"]
    with store.transaction():  # the mail erased some other way (a blocked sender): its places go with it
        iid = store._one("SELECT id FROM interactions WHERE message_id='m4@x'")
        store._erase_interaction(iid)
    assert unread(store) == ["1:5"]
    assert [loc.local_id for loc in store.wanted_texts("mail")] == []
    store.close()


def test_a_mail_read_without_text_and_linked_later_ends_as_a_fresh_read_stores_it(tmp_path):
    """Linked by a reply in the same page (its row written again whole), then read by name: subject,
    snippet, visibility and the search index as a sync that read its text at once leaves them."""
    fresh = Store(tmp_path / "fresh.db", settings())
    store = Store(tmp_path / "crm.db", settings())
    for s, no_text in ((fresh, False), (store, True)):
        with s.transaction():
            s.add_customer("Kunde GmbH", ["kunde.example"])
            s.apply_batch(POLICY, Batch(records=[mail(1, no_text=no_text), mail(2, "kim@kunde.example", reply_to=1),
                                                 mail(3, no_text=no_text)]))
    row = "SELECT subject, snippet, visibility FROM interactions WHERE message_id=?"
    assert store.conn.execute(row, ("m1@x",)).fetchone() == ("Angebot wort1", None, "subject")
    assert [loc.local_id for loc in store.wanted_texts("mail")] == ["1:1"]
    fts_check(store)
    with store.transaction():
        store.apply_batch(POLICY, Batch(records=[mail(1)], rereads=[Location("INBOX", "1:1")]))
    for mid in ("m1@x", "m2@x", "m3@x"):  # one row each (the text's dedup key differs: found by Message-ID)
        assert store.conn.execute(row, (mid,)).fetchall() == fresh.conn.execute(row, (mid,)).fetchall()
    fts_check(store)
    assert [r["message_id"] for r in store.search("text1")] == ["m1@x"]
    assert unread(store) == ["1:3"] and store.wanted_texts("mail") == []
    store.close()
    fresh.close()


def test_the_engine_view_reads_its_rereads_ahead_only_until_a_batch_is_stored(tmp_path):
    """StoreView.read_ahead answers the reader process's first question while it starts; once a batch is
    being stored (stale), the answer is the store's again."""
    from crm_bridge.sync.engine import StoreView

    store = Store(tmp_path / "crm.db", settings())
    with store.transaction():
        store.add_customer("Kunde GmbH", ["kunde.example"])
        store.apply_batch(POLICY, Batch(records=[mail(1, no_text=True), mail(2, "kim@kunde.example", reply_to=1)]))
    view = StoreView(store, "mail")
    view.read_ahead()
    with store.transaction():  # changes the answer after it was read ahead
        store.apply_batch(POLICY, Batch(records=[mail(1)], rereads=[Location("INBOX", "1:1")]))
    assert [loc.local_id for loc in view.rereads()] == ["1:1"]  # read ahead: no batch stored in the pull yet
    assert view.rereads() == []  # asked again: the store's answer
    view.read_ahead()
    with store.transaction():
        store.apply_batch(POLICY, Batch(records=[mail(3, no_text=True), mail(4, "kim@kunde.example", reply_to=3)]))
    view.stale()  # what the engine says before it stores a batch of the pull
    assert [loc.local_id for loc in view.rereads()] == ["1:3"]
    store.close()
